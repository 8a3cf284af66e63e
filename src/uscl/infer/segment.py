"""Label masks of a segmentation model on new files: :func:`predict_segments` (`uscl predict` on such a model).

Each input is read and preprocessed with the store options recorded in the
model (:func:`uscl.infer.inputs.load_frames`, what `uscl prepare` does), the
frames are resized and normalised as at fine-tuning, and each fold's logits
are resized (bilinear) to the stored frame size, as fine-tuning's evaluation
scores them; the mask is the per-pixel arg-max of the softmax probabilities
(an ensemble: of their mean over the folds). Mask values: 0 background, k the
model's k-th mask class.

With an output folder (:class:`SegmentWriter` per input, then
:func:`write_segment_outputs`), every file written atomically::

    DIR/<input stem>/masks/frame_00000.png     label map, 8-bit grey, value = class index
    DIR/<input stem>/overlays/frame_00000.png  the frame with each class's fill and contour
    DIR/<input stem>/overlay.mp4               the overlays as an H.264 clip (inputs of 2+ frames)
    DIR/segments.csv                           per input and frame: the area in pixels of each label
    DIR/predictions.json                       per input: frames, per-class mean area, share of frames present
    DIR/skipped.csv                            the inputs that could not be read, and why (when any)

An input that cannot be read is recorded in ``skipped`` and the rest goes on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from uscl.errors import UsclError
from uscl.infer.inputs import InputItem, gather_inputs, to_model_input
from uscl.infer.mask_overlay import display_scale, draw_masks, legend
from uscl.infer.model import SEGMENT, LoadedModel, check_task, load_model
from uscl.infer.overlay import InputFolders, write_clip, write_frame_pngs
from uscl.infer.predict import _clip, _csv, read_inputs, write_skipped
from uscl.store.preprocess import PrepareOptions
from uscl.utils.atomic import atomic_write_json, atomic_write_text
from uscl.utils.device import autocast_for, resolve_device

SEGMENTS_CSV = "segments.csv"
PREDICTIONS_JSON = "predictions.json"
SKIPPED_CSV = "skipped.csv"
MASK_RULE = ("each fold's logits resized (bilinear) to the stored frame size, softmax over background and mask "
             "classes; mask = per-pixel arg-max (0 background, k = mask class k)")


@dataclass
class SegmentPrediction:
    """The label masks of one input."""

    name: str
    kind: str
    masks: np.ndarray  # uint8 (T, H, W): 0 background, k = mask class k
    labels: list[str]  # ["background", *mask classes]: the name of each mask value
    frames: np.ndarray | None = None  # uint8 (T, H, W, C) as preprocessed (what the masks are drawn on)
    folder: str | None = None  # where its files went, relative to the output folder
    files: dict = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return self.labels[1:]

    @property
    def num_frames(self) -> int:
        return int(self.masks.shape[0])

    @property
    def pixels(self) -> int:
        """Pixels per frame (the stored frame size)."""
        return int(self.masks.shape[1] * self.masks.shape[2])

    @property
    def areas(self) -> np.ndarray:
        """(T, K+1) pixel counts of each label per frame (column 0: background)."""
        n = len(self.labels)
        return np.stack([np.bincount(m.ravel(), minlength=n)[:n] for m in self.masks]).astype(np.int64)

    @property
    def presence(self) -> np.ndarray:
        """(K+1,) share of frames where the label has at least one pixel."""
        return (self.areas > 0).mean(0)

    def to_dict(self) -> dict:
        areas, presence = self.areas, self.presence
        return {
            "input": self.name,
            "kind": self.kind,
            "num_frames": self.num_frames,
            "mask_size": [int(self.masks.shape[1]), int(self.masks.shape[2])],
            "pixels_per_frame": self.pixels,
            "classes": {c: {"value": k, "mean_area": round(float(areas[:, k].mean()), 4),
                            "mean_fraction": round(float(areas[:, k].mean()) / self.pixels, 6),
                            "present_frames": round(float(presence[k]), 6)}
                        for k, c in enumerate(self.labels) if k > 0},
            "background_mean_area": round(float(areas[:, 0].mean()), 4),
            "folder": self.folder,
            "files": self.files,
        }


@dataclass
class SegmentRun:
    """Everything one segmentation predict call produced."""

    model: LoadedModel
    results: list[SegmentPrediction] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    device: str = "cpu"

    @property
    def classes(self) -> list[str]:
        return self.model.classes


@torch.no_grad()
def segment_probabilities(model: LoadedModel, x: torch.Tensor, size: tuple[int, int] | None = None, *,
                          device: torch.device | str = "cpu", amp: bool = True) -> torch.Tensor:
    """Per-pixel probabilities (N, K+1, H, W) of normalised inputs, averaged over the folds of an ensemble.

    ``size``: resize each fold's logits (bilinear) to it before the softmax
    (None: the input's size, what the exported network returns).
    """
    device = torch.device(device)
    x = x.to(device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    total = None
    with autocast_for("bf16" if amp else "fp32", device):  # bf16, as fine-tuning used
        for f in model.folds:
            logits = f.net.logits(x).float()
            if size is not None and tuple(logits.shape[-2:]) != tuple(size):
                logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
            p = torch.softmax(logits, dim=1)
            total = p if total is None else total + p
    return total / len(model.folds)


def predict_segment_frames(model: LoadedModel, frames: np.ndarray, *, batch_size: int = 16,
                           device: torch.device | str = "cpu", amp: bool = True) -> np.ndarray:
    """Label masks uint8 (T, H, W) of uint8 preprocessed frames (T, H, W, C) of one input, at their size."""
    pp = model.preprocessing
    size = tuple(frames.shape[1:3])
    out = []
    for i in range(0, len(frames), batch_size):
        x = to_model_input(frames[i:i + batch_size], pp.image_size, pp.mean, pp.std, device)
        probs = segment_probabilities(model, x, size, device=device, amp=amp)
        out.append(probs.argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *size), np.uint8)


def predict_segment_items(model: LoadedModel, items: Iterable[InputItem], *, batch_size: int = 16,
                          device: torch.device | str = "cpu", amp: bool = True, keep_frames: bool = False,
                          on_skip: Callable[[str, str], None] | None = None,
                          on_result: Callable[[SegmentPrediction], None] | None = None,
                          show_progress: bool = True, workers: int = 1) -> SegmentRun:
    """Masks of every item, input by input.

    ``on_result(prediction)`` is called as soon as an input is done, with its
    preprocessed frames attached (a :class:`SegmentWriter` writes its files
    then); the frames are dropped afterwards unless ``keep_frames``.
    """
    check_task(model.task, SEGMENT, str(model.source))
    device = torch.device(device)
    model.to(device)
    options = PrepareOptions.from_dict(model.preprocessing.store_options)
    run = SegmentRun(model=model, device=str(device))
    for item, frames in read_inputs(items, options, run.skipped, on_skip, desc="segment", show_progress=show_progress,
                                    workers=workers):
        masks = predict_segment_frames(model, frames, batch_size=batch_size, device=device, amp=amp)
        result = SegmentPrediction(item.name, item.source.kind, masks, model.labels, frames=frames)
        if on_result:
            on_result(result)
        if not keep_frames:
            result.frames = None
        run.results.append(result)
    return run


def predict_segments(model_path: str | os.PathLike, inputs: list[str | os.PathLike], *, fold: int | None = None,
                     out: str | os.PathLike | None = None, batch_size: int = 16, device: str = "auto",
                     amp: bool = True, keep_frames: bool = False, on_skip: Callable[[str, str], None] | None = None,
                     show_progress: bool = True) -> SegmentRun:
    """Load a segmentation model (``fold`` or the ensemble of all folds) and predict masks on files/folders.

    With ``out`` (an existing folder is reused as is; the CLI refuses a non-empty
    one unless --overwrite), every output file is written there.

    >>> run = predict_segments("runs/seg_fold", ["clip.mp4", "still.png"], out="masks")
    >>> [(r.name, r.presence) for r in run.results], run.skipped
    """
    if batch_size < 1:
        raise UsclError(f"batch_size must be at least 1, got {batch_size}", param="batch_size")
    if not inputs:
        raise UsclError("no inputs given", param="inputs")
    model = load_model(model_path, fold)
    check_task(model.task, SEGMENT, str(model_path))
    writer = SegmentWriter(model, out) if out is not None else None
    run = predict_segment_items(model, gather_inputs(inputs), batch_size=batch_size, device=resolve_device(device),
                                amp=amp, keep_frames=keep_frames, on_skip=on_skip, on_result=writer,
                                show_progress=show_progress)
    if out is not None:
        write_segment_outputs(run, out)
    return run


# -- output ---------------------------------------------------------------------------------
class SegmentWriter:
    """Writes one input's mask PNGs, overlay PNGs and (clips) overlay MP4 under ``out/<input stem>/``."""

    def __init__(self, model: LoadedModel, out: str | os.PathLike, *, display_size: int = 224, alpha: float = 0.35,
                 fps: float | None = None):
        self.model = model
        self.out = Path(out)
        self.display_size = display_size
        self.alpha = alpha
        self.fps = fps or model.preprocessing.store_options.get("fps") or 10.0
        # the run-level files are never shadowed by an input's folder
        self.folders = InputFolders(out, (SEGMENTS_CSV, PREDICTIONS_JSON, SKIPPED_CSV))

    def __call__(self, pred: SegmentPrediction) -> None:
        if pred.frames is None:
            raise ValueError("the prediction carries no frames to draw on")
        stem, folder = self.folders.new(pred.name)
        write_frame_pngs(folder / "masks", pred.masks)
        scale = display_scale(max(pred.masks.shape[1:]), self.display_size)
        drawn = draw_masks(pred.frames, pred.masks, len(pred.classes), alpha=self.alpha, scale=scale)
        write_frame_pngs(folder / "overlays", drawn)
        mp4 = write_clip(folder / "overlay.mp4", drawn, float(self.fps))
        pred.folder = stem
        pred.files = {"masks": f"{stem}/masks", "overlays": f"{stem}/overlays",
                      "mp4": f"{stem}/overlay.mp4" if mp4 else None}


def write_segment_outputs(run: SegmentRun, out: str | os.PathLike, extra: dict | None = None) -> dict[str, Path]:
    """segments.csv, predictions.json (and skipped.csv when inputs were skipped), atomically."""
    out = Path(out)
    m = run.model
    labels = m.labels
    rows = [["input", "frame", "pixels", *(f"area_{c}" for c in labels)]]
    for r in run.results:
        for t, a in enumerate(r.areas):
            rows.append([r.name, t, r.pixels, *(int(v) for v in a)])
    paths = {"segments": out / SEGMENTS_CSV, "json": out / PREDICTIONS_JSON}
    atomic_write_text(paths["segments"], _csv(rows))
    atomic_write_json(paths["json"], {
        "format": "uscl-segmentations",
        "version": 1,
        "task": SEGMENT,
        "model": str(m.source),
        "folds": [f.fold for f in m.folds],
        "ensemble": m.is_ensemble,
        "combine": "mean of the folds' per-pixel probabilities" if m.is_ensemble else None,
        "mask_rule": MASK_RULE,
        "classes": m.classes,
        "mask_values": {str(k): c for k, c in enumerate(labels)},
        "legend": legend(m.classes),
        "overlay": "frame enlarged to at least 224 px (integer factor), each class filled at 35% opacity "
                   "and its contour drawn opaque in the legend's colour",
        "preprocessing": m.preprocessing.to_dict(),
        "device": run.device,
        **(extra or {}),
        "inputs": [r.to_dict() for r in run.results],
        "skipped": [{"input": n, "reason": why} for n, why in run.skipped],
    })
    if run.skipped:
        paths["skipped"] = write_skipped(out, run.skipped)
    return paths


def format_segment_table(run: SegmentRun, max_name: int = 48) -> str:
    """The terminal table: per input, each class's mean share of the frame and share of frames where present."""
    classes = run.classes
    names = [_clip(r.name, max_name) for r in run.results]
    w = max([len(n) for n in names] + [5])
    cws = [max(len(c) + len(" area/present"), 16) for c in classes]
    head = f"{'input':<{w}}  {'frames':>6}  " + "  ".join(f"{c + ' area/present':>{cw}}" for c, cw in zip(classes, cws))
    lines = [head, "-" * len(head)]
    for n, r in zip(names, run.results):
        a, p = r.areas, r.presence
        cells = [f"{a[:, k].mean() / r.pixels:>{cw - 9}.1%} {p[k]:>8.0%}"
                 for k, cw in zip(range(1, len(r.labels)), cws)]
        lines.append(f"{n:<{w}}  {r.num_frames:>6}  " + "  ".join(cells))
    if run.skipped:
        lines.append(f"skipped {len(run.skipped)} input(s):")
        lines += [f"  {n}: {why}" for n, why in run.skipped]
    return "\n".join(lines)


__all__ = ["SegmentPrediction", "SegmentRun", "SegmentWriter", "format_segment_table",
           "predict_segment_frames", "predict_segment_items", "predict_segments", "segment_probabilities",
           "write_segment_outputs"]
