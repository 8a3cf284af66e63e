"""Instances found by a detection model on new files: :func:`predict_detections` (`uscl predict` on such a model).

Each input is read and preprocessed with the store options recorded in the
model (:func:`uscl.infer.inputs.load_frames`, what `uscl prepare` does), and
each frame goes to the fold's Mask R-CNN exactly as fine-tuning fed it: the
stored frame as float (C, H, W) in [0, 1] (the detector's own transform
resizes it to ``min_size`` and normalises it; boxes and masks come back at the
stored frame's size), through :func:`uscl.finetune.detect.engine.predict`
(instance masks = mask probability >= 0.5). Detections scoring below
``score_threshold`` (default 0.5, what fine-tuning's label maps keep) are
dropped; 0 keeps every one the detector returns (down to its own 0.05).

One fold, never an ensemble: two detectors' instance sets do not average the
way probabilities do (combining them, e.g. by weighted box fusion, would be a
new method), so a run folder predicts with ``fold`` or its first finished fold
(:func:`uscl.infer.model.load_model`; ``run.model.fold_note`` says which).

With an output folder (:class:`DetectWriter` per input, then
:func:`write_detect_outputs`), every file written atomically::

    DIR/<input stem>/overlays/frame_00000.png  the frame with each instance's mask outline, box and "class score"
    DIR/<input stem>/overlay.mp4               the overlays as an H.264 clip (inputs of 2+ frames)
    DIR/detections.csv                         one row per detection: input, frame, class, score, x1, y1, x2, y2
                                               (stored-frame pixels, x2/y2 exclusive)
    DIR/predictions.json                       per input: frames; per class the detections and share of frames
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

from uscl.errors import UsclError
from uscl.finetune.detect.engine import predict as detector_predict
from uscl.finetune.detect.fold import SCORE_THRESHOLD
from uscl.infer.inputs import InputItem, gather_inputs
from uscl.infer.mask_overlay import display_scale, draw_detections, legend
from uscl.infer.model import DETECT, LoadedModel, check_task, load_model
from uscl.infer.overlay import InputFolders, write_clip, write_frame_pngs
from uscl.infer.predict import _clip, _csv, read_inputs, write_skipped
from uscl.store.preprocess import PrepareOptions
from uscl.utils.atomic import atomic_write_json, atomic_write_text
from uscl.utils.device import resolve_device

DETECTIONS_CSV = "detections.csv"
PREDICTIONS_JSON = "predictions.json"
SKIPPED_CSV = "skipped.csv"
FOLD_RULE = ("one fold's detector (instance sets of different folds do not average; combining them would be a new "
             "method such as weighted box fusion)")


@dataclass
class FrameDetections:
    """The instances of one frame that scored at least the threshold."""

    boxes: np.ndarray  # float32 (N, 4) x1, y1, x2, y2 in stored-frame pixels, x2/y2 exclusive
    labels: np.ndarray  # int64 (N,) 1..K: mask class labels[k - 1]
    scores: np.ndarray  # float32 (N,)
    masks: np.ndarray | None = None  # uint8 (N, H, W) binary, at the stored frame size (dropped once drawn)

    def __len__(self) -> int:
        return int(len(self.scores))


@dataclass
class DetectPrediction:
    """The detections of one input, frame by frame."""

    name: str
    kind: str
    detections: list[FrameDetections]
    classes: list[str]  # the mask classes: label k is classes[k - 1]
    frame_size: tuple[int, int]  # (H, W) of the stored frames
    frames: np.ndarray | None = None  # uint8 (T, H, W, C) as preprocessed (what the overlays are drawn on)
    folder: str | None = None
    files: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.detections)

    @property
    def counts(self) -> np.ndarray:
        """(T, K) number of detections of each class per frame."""
        k = len(self.classes)
        if not self.detections:
            return np.zeros((0, k), np.int64)
        return np.stack([np.bincount(d.labels.astype(np.int64), minlength=k + 1)[1:k + 1] for d in self.detections])

    @property
    def presence(self) -> np.ndarray:
        """(K,) share of frames with at least one detection of the class."""
        c = self.counts
        return (c > 0).mean(0) if len(c) else np.zeros(len(self.classes))

    def to_dict(self) -> dict:
        counts, presence = self.counts, self.presence
        out = {}
        for j, c in enumerate(self.classes):
            scores = [float(s) for d in self.detections for s, lab in zip(d.scores, d.labels) if lab == j + 1]
            out[c] = {"label": j + 1, "detections": int(counts[:, j].sum()) if len(counts) else 0,
                      "present_frames": round(float(presence[j]), 6),
                      "mean_score": round(float(np.mean(scores)), 6) if scores else None}
        return {"input": self.name, "kind": self.kind, "num_frames": self.num_frames,
                "frame_size": [int(self.frame_size[0]), int(self.frame_size[1])],
                "detections": int(sum(len(d) for d in self.detections)), "classes": out,
                "folder": self.folder, "files": self.files}


@dataclass
class DetectRun:
    """Everything one detection predict call produced."""

    model: LoadedModel
    score_threshold: float = SCORE_THRESHOLD
    results: list[DetectPrediction] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    device: str = "cpu"

    @property
    def classes(self) -> list[str]:
        return self.model.classes


def detector_images(frames: np.ndarray) -> list[torch.Tensor]:
    """uint8 (T, H, W, C) preprocessed frames → the detector's inputs: float (C, H, W) in [0, 1], one per frame
    (as fine-tuning feeds it, ``uscl.finetune.detect.fold``: the stored frame / 255)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    return list(x.unbind(0))


def detect_frames(model: LoadedModel, frames: np.ndarray, *, score_threshold: float = SCORE_THRESHOLD,
                  batch_size: int = 4, device: torch.device | str = "cpu") -> list[FrameDetections]:
    """The detections (score >= ``score_threshold``) of uint8 preprocessed frames (T, H, W, C) of one input."""
    check_task(model.task, DETECT, str(model.source))
    if len(model.folds) != 1:
        raise UsclError(f"{model.source}: a detection model predicts with one fold, not {len(model.folds)}; "
                        "load it with fold=K")
    detector = model.folds[0].net.detector
    out = []
    batch_size = max(1, int(batch_size))
    for start in range(0, len(frames), batch_size):  # float copies of one batch at a time
        # fp32 (no autocast), as fine-tuning's evaluation ran it
        for d in detector_predict(detector, detector_images(frames[start:start + batch_size]), device,
                                  batch_size=batch_size):
            keep = d["scores"] >= score_threshold
            out.append(FrameDetections(d["boxes"][keep].numpy().astype(np.float32),
                                       d["labels"][keep].numpy().astype(np.int64),
                                       d["scores"][keep].numpy().astype(np.float32),
                                       d["masks"][keep].numpy() if "masks" in d else None))
    return out


def predict_detect_items(model: LoadedModel, items: Iterable[InputItem], *,
                         score_threshold: float = SCORE_THRESHOLD, batch_size: int = 4,
                         device: torch.device | str = "cpu", keep_frames: bool = False,
                         on_skip: Callable[[str, str], None] | None = None,
                         on_result: Callable[[DetectPrediction], None] | None = None,
                         show_progress: bool = True, workers: int = 1) -> DetectRun:
    """Detections of every item, input by input.

    ``on_result(prediction)`` is called as soon as an input is done, with its
    preprocessed frames and instance masks attached (a :class:`DetectWriter`
    draws them then); both are dropped afterwards unless ``keep_frames``.
    """
    check_task(model.task, DETECT, str(model.source))
    if not 0.0 <= score_threshold <= 1.0:
        raise UsclError(f"score_threshold must be in [0, 1], got {score_threshold}", param="score_threshold")
    device = torch.device(device)
    model.to(device)
    options = PrepareOptions.from_dict(model.preprocessing.store_options)
    run = DetectRun(model=model, score_threshold=float(score_threshold), device=str(device))
    for item, frames in read_inputs(items, options, run.skipped, on_skip, desc="detect", show_progress=show_progress,
                                    workers=workers):
        dets = detect_frames(model, frames, score_threshold=score_threshold, batch_size=batch_size, device=device)
        result = DetectPrediction(item.name, item.source.kind, dets, list(model.classes),
                                  (int(frames.shape[1]), int(frames.shape[2])), frames=frames)
        if on_result:
            on_result(result)
        if not keep_frames:
            result.frames = None
            for d in dets:
                d.masks = None
        run.results.append(result)
    return run


def predict_detections(model_path: str | os.PathLike, inputs: list[str | os.PathLike], *, fold: int | None = None,
                       out: str | os.PathLike | None = None, score_threshold: float = SCORE_THRESHOLD,
                       batch_size: int = 4, device: str = "auto", keep_frames: bool = False,
                       on_skip: Callable[[str, str], None] | None = None, show_progress: bool = True) -> DetectRun:
    """Load a detection model (``fold``, default the run's first fold) and detect instances in files/folders.

    With ``out`` (an existing folder is reused as is; the CLI refuses a non-empty
    one unless --overwrite), every output file is written there.

    >>> run = predict_detections("runs/det", ["clip.mp4", "still.png"], fold=0, out="dets")
    >>> [(r.name, r.counts.sum(0)) for r in run.results], run.skipped
    """
    if batch_size < 1:
        raise UsclError(f"batch_size must be at least 1, got {batch_size}", param="batch_size")
    if not inputs:
        raise UsclError("no inputs given", param="inputs")
    model = load_model(model_path, fold, task=DETECT)
    writer = DetectWriter(model, out) if out is not None else None
    run = predict_detect_items(model, gather_inputs(inputs), score_threshold=score_threshold, batch_size=batch_size,
                               device=resolve_device(device), keep_frames=keep_frames, on_skip=on_skip,
                               on_result=writer, show_progress=show_progress)
    if out is not None:
        write_detect_outputs(run, out)
    return run


# -- output ---------------------------------------------------------------------------------
class DetectWriter:
    """Writes one input's overlay PNGs and (clips) overlay MP4 under ``out/<input stem>/``."""

    def __init__(self, model: LoadedModel, out: str | os.PathLike, *, display_size: int = 224,
                 fps: float | None = None):
        self.model = model
        self.out = Path(out)
        self.display_size = display_size
        self.fps = fps or model.preprocessing.store_options.get("fps") or 10.0
        self.folders = InputFolders(out, (DETECTIONS_CSV, PREDICTIONS_JSON, SKIPPED_CSV))

    def __call__(self, pred: DetectPrediction) -> None:
        if pred.frames is None:
            raise ValueError("the prediction carries no frames to draw on")
        stem, folder = self.folders.new(pred.name)
        scale = display_scale(max(pred.frame_size), self.display_size)
        drawn = np.stack([draw_detections(f, d.boxes, d.labels, d.scores, d.masks, pred.classes, scale=scale)
                          for f, d in zip(pred.frames, pred.detections)])
        write_frame_pngs(folder / "overlays", drawn)
        mp4 = write_clip(folder / "overlay.mp4", drawn, float(self.fps))
        pred.folder = stem
        pred.files = {"overlays": f"{stem}/overlays", "mp4": f"{stem}/overlay.mp4" if mp4 else None}


def detection_rows(run: DetectRun) -> list[list]:
    """detections.csv's rows (header first): one per detection, boxes in stored-frame pixels, x2/y2 exclusive."""
    rows: list[list] = [["input", "frame", "class", "score", "x1", "y1", "x2", "y2"]]
    for r in run.results:
        for t, d in enumerate(r.detections):
            for box, lab, score in zip(d.boxes, d.labels, d.scores):
                rows.append([r.name, t, r.classes[int(lab) - 1], f"{float(score):.6f}",
                             *(f"{float(v):.2f}" for v in box)])
    return rows


def write_detect_outputs(run: DetectRun, out: str | os.PathLike, extra: dict | None = None) -> dict[str, Path]:
    """detections.csv, predictions.json (and skipped.csv when inputs were skipped), atomically."""
    out = Path(out)
    m = run.model
    fold = m.folds[0]
    paths = {"detections": out / DETECTIONS_CSV, "json": out / PREDICTIONS_JSON}
    atomic_write_text(paths["detections"], _csv(detection_rows(run)))
    atomic_write_json(paths["json"], {
        "format": "uscl-detections",
        "version": 1,
        "task": DETECT,
        "model": str(m.source),
        "folds": [fold.fold],
        "ensemble": False,
        "fold_rule": FOLD_RULE,
        "fold_note": m.fold_note,
        "classes": m.classes,
        "labels": {str(k): c for k, c in enumerate(m.classes, start=1)},
        "legend": legend(m.classes),
        "score_threshold": run.score_threshold,
        "detector": {"head": fold.meta.get("head"), "min_size": fold.meta.get("min_size"),
                     "max_size": fold.meta.get("max_size"), "options": fold.meta.get("detector")},
        "boxes": "x1, y1, x2, y2 in stored-frame pixels (the preprocessed frame), x2/y2 exclusive",
        "masks": "mask probability >= 0.5, at the stored frame size (drawn as outlines, not saved)",
        "overlay": "frame enlarged to at least 224 px (integer factor); per detection its mask outline, box and "
                   "'class score' label in the legend's colour, the most confident drawn last",
        "preprocessing": m.preprocessing.to_dict(),
        "device": run.device,
        **(extra or {}),
        "inputs": [r.to_dict() for r in run.results],
        "skipped": [{"input": n, "reason": why} for n, why in run.skipped],
    })
    if run.skipped:
        paths["skipped"] = write_skipped(out, run.skipped)
    return paths


def format_detect_table(run: DetectRun, max_name: int = 48) -> str:
    """The terminal table: per input, each class's number of detections and share of frames with one."""
    classes = run.classes
    names = [_clip(r.name, max_name) for r in run.results]
    w = max([len(n) for n in names] + [5])
    cws = [max(len(c) + len(" n/present"), 14) for c in classes]
    head = f"{'input':<{w}}  {'frames':>6}  " + "  ".join(f"{c + ' n/present':>{cw}}" for c, cw in zip(classes, cws))
    lines = [head, "-" * len(head)]
    for n, r in zip(names, run.results):
        c, p = r.counts, r.presence
        cells = [f"{int(c[:, k].sum()) if len(c) else 0:>{cw - 9}d} {p[k]:>8.0%}" for k, cw in enumerate(cws)]
        lines.append(f"{n:<{w}}  {r.num_frames:>6}  " + "  ".join(cells))
    lines.append(f"(detections with score >= {run.score_threshold:g})")
    if run.skipped:
        lines.append(f"skipped {len(run.skipped)} input(s):")
        lines += [f"  {n}: {why}" for n, why in run.skipped]
    return "\n".join(lines)


__all__ = ["DetectPrediction", "DetectRun", "DetectWriter", "FrameDetections", "detect_frames", "detector_images",
           "format_detect_table", "predict_detect_items", "predict_detections", "write_detect_outputs"]
