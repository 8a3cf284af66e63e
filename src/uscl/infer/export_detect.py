"""`uscl export` of a detection fold (``uscl finetune --task detect``): TorchScript, ONNX or safetensors.

One fold, as `uscl predict` uses it (``fold``, default the run's first fold: detectors' instance sets do not
average, so there is no ensemble export). The exported network is the fold's torchvision Mask R-CNN itself,
with its own transform: its input is the *preprocessed frame* (after the store options: fps, crop, size,
channels) as float (C, H, W) in [0, 1] (C = 1 for grey); it resizes (short side ``min_size``, long side at
most ``max_size``) and normalises ((x - 0.5) / 0.25) by itself, and returns boxes in the input's pixels.

* ``torchscript`` (``.pt``): ``torch.jit.script`` of the torchvision model (torchvision supports scripting its
  detection models). ``losses, detections = torch.jit.load(path)(images)``: ``images`` a list of
  (C, H, W) tensors; the scripted model always returns torchvision's ``(losses, detections)`` tuple
  (``losses`` empty in eval); ``detections`` per image a dict of ``boxes`` (N, 4) xyxy, ``labels`` (1..K),
  ``scores``, ``masks`` (N, 1, H, W) probabilities.
* ``onnx`` (``.onnx``): torchvision's supported ONNX path (the TorchScript-based ``torch.onnx.export``,
  opset :data:`ONNX_OPSET`), one image per call: input ``images`` (C, H, W), outputs ``boxes``, ``labels``,
  ``scores``, ``masks``.
* ``safetensors``: the detector's state dict; ``uscl.models.detector.build_detector`` with the options in the
  sidecar (``build_detector``) rebuilds it (strict load).

Before a file is moved into place it is loaded back (torch.jit.load, onnxruntime, build_detector) and run on
example images beside the original: the same number of detections with the same labels, boxes within
:data:`BOX_TOLERANCE` px, scores within :data:`SCORE_TOLERANCE`, mask probabilities within
:data:`MASK_TOLERANCE`; otherwise nothing is written. TorchScript and safetensors are also compared with the
score threshold lowered to 0 (every candidate the detector keeps), so the check never compares empty sets only.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from uscl import __version__
from uscl.errors import UsclError
from uscl.infer.model import DETECT, LoadedModel
from uscl.models.detector import GREY_MEAN, GREY_STD, build_detector
from uscl.store.preprocess import store_steps
from uscl.utils.atomic import atomic_path, atomic_write_json

ONNX_OPSET = 17  # torchvision's detection models export from opset 11 on
BOX_TOLERANCE = 1e-3  # pixels
SCORE_TOLERANCE = 1e-4
MASK_TOLERANCE = 1e-3


@dataclass
class DetectExportResult:
    path: Path
    sidecar: Path
    format: str
    output: str  # "detections"
    max_abs_diff: float  # the largest of the box (px), score and mask differences
    verified_with: str
    diffs: dict

    def format_report(self) -> str:
        d = self.diffs
        return (f"wrote {self.path} ({self.format}; output: detections) and {self.sidecar.name}\n"
                f"verified with {self.verified_with} on {d['images']} example images ({d['detections']} "
                f"detections compared): max abs difference boxes {d['boxes']:.3g} px (tolerance "
                f"{BOX_TOLERANCE:g}), scores {d['scores']:.3g} ({SCORE_TOLERANCE:g}), masks {d['masks']:.3g} "
                f"({MASK_TOLERANCE:g})")


def frame_shape(model: LoadedModel) -> tuple[int, int, int]:
    """(C, H, W) of the preprocessed frames the detector sees (store channels, store size)."""
    pp = model.preprocessing
    size = int(pp.store_options.get("size") or pp.image_size)
    return int(pp.channels), size, size


def example_images(model: LoadedModel, n: int = 2, seed: int = 1) -> list[torch.Tensor]:
    """``n`` uniform-noise frames (C, S, S) in [0, 1] with a bright disc each: what the check runs."""
    c, h, w = frame_shape(model)
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    out = []
    for _ in range(n):
        img = torch.rand(c, h, w, generator=g) * 0.5
        cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([h * 0.6, w * 0.6, min(h, w) * 0.15])
                     + torch.tensor([h * 0.2, w * 0.2, min(h, w) * 0.1]))
        img[:, (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2] += 0.4
        out.append(img.clamp(0, 1))
    return out


def compare_detections(ref: list[dict], got: list[dict]) -> dict:
    """Max abs differences of boxes, scores and masks of two detectors' outputs on the same images; counts or
    labels that differ are ``inf``."""
    d = {"boxes": 0.0, "scores": 0.0, "masks": 0.0, "detections": 0, "images": len(ref)}
    if len(ref) != len(got):
        return {**d, "boxes": math.inf, "scores": math.inf, "masks": math.inf}
    for r, g in zip(ref, got):
        if r["boxes"].shape != g["boxes"].shape or not torch.equal(r["labels"].long(), g["labels"].long()):
            return {**d, "boxes": math.inf, "scores": math.inf, "masks": math.inf}
        d["detections"] += len(r["boxes"])
        if not len(r["boxes"]):
            continue
        d["boxes"] = max(d["boxes"], float((r["boxes"].float() - g["boxes"].float()).abs().max()))
        d["scores"] = max(d["scores"], float((r["scores"].float() - g["scores"].float()).abs().max()))
        if "masks" in r:
            d["masks"] = max(d["masks"], float((r["masks"].float() - g["masks"].float()).abs().max()))
    return d


def _within(d: dict) -> bool:
    vals = (d["boxes"], d["scores"], d["masks"])
    return all(math.isfinite(v) for v in vals) and d["boxes"] <= BOX_TOLERANCE and \
        d["scores"] <= SCORE_TOLERANCE and d["masks"] <= MASK_TOLERANCE


def _merge(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] if k == "detections" else max(a[k], b[k]) for k in a}


class _ScoreThreshold:
    """Temporarily set ``roi_heads.score_thresh`` of the given models (eager or scripted) to ``value``."""

    def __init__(self, value: float, *models: nn.Module):
        self.value, self.models = value, models

    def __enter__(self):
        self.old = [m.roi_heads.score_thresh for m in self.models]
        for m in self.models:
            m.roi_heads.score_thresh = self.value

    def __exit__(self, *exc):
        for m, old in zip(self.models, self.old):
            m.roi_heads.score_thresh = old


def build_options(model: LoadedModel) -> dict:
    """The ``build_detector`` call that rebuilds the fold (what the safetensors export's sidecar records)."""
    meta = model.folds[0].meta
    return {"arch": model.preprocessing.arch, "num_classes": len(model.classes),
            "with_masks": (meta.get("head") or "mask-rcnn") == "mask-rcnn", "frozen_bn": bool(meta.get("frozen_bn")),
            "min_size": int(meta["min_size"]), "max_size": int(meta["max_size"]),
            "detector_kwargs": dict(meta.get("detector") or {})}


def rebuild_detector(path: str | os.PathLike, options: dict) -> nn.Module:
    """``build_detector(**options)`` + the safetensors weights (strict): what loading the export does."""
    o = dict(options)
    kwargs = o.pop("detector_kwargs")
    net = build_detector(o.pop("arch"), o.pop("num_classes"), **o, **kwargs)
    net.load_state_dict(load_file(str(path)), strict=True)
    return net.eval()


def _run_onnx(path: str | os.PathLike, images: list[torch.Tensor]) -> list[dict]:
    try:  # optional dependency (the `export` extra): imported only for an ONNX export
        import onnxruntime as ort
    except ImportError as exc:
        raise UsclError("onnxruntime is not installed, so the ONNX export cannot be checked") from exc
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out = []
    for im in images:
        res = dict(zip(names, sess.run(None, {"images": im.numpy()})))
        out.append({k: torch.from_numpy(v) for k, v in res.items()})
    return out


def _export_onnx(detector: nn.Module, example: list[torch.Tensor], tmp: Path) -> None:
    outputs = ["boxes", "labels", "scores", "masks"] if hasattr(detector.roi_heads, "mask_head") and \
        detector.roi_heads.mask_head is not None else ["boxes", "labels", "scores"]
    axes = {"images": {1: "H", 2: "W"}, **{o: {0: "N"} for o in outputs}}
    if "masks" in axes:
        axes["masks"] = {0: "N", 2: "H", 3: "W"}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(detector, (example[:1],), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["images"], output_names=outputs, dynamic_axes=axes)
    except Exception as exc:  # whatever this torch's exporter raises on torchvision's detector
        raise UsclError(f"this torch ({torch.__version__}) cannot export the Mask R-CNN to ONNX "
                        f"({type(exc).__name__}: {str(exc)[:300]}); export it as torchscript or safetensors") from exc


def export_detector(model: LoadedModel, path: Path, fmt: str) -> tuple[DetectExportResult, dict]:
    """Write ``path`` (the fold's detector in ``fmt``) after checking it reproduces the original, and its sidecar;
    returns the result and the sidecar's dict (the caller writes the model card)."""
    if model.task != DETECT or len(model.folds) != 1:
        raise UsclError("export_detector takes one fold of a detection model")
    detector = model.folds[0].net.detector.eval()
    x = example_images(model, 2, seed=1)
    sidecar = path.with_suffix(".json")
    with atomic_path(path, suffix=path.suffix) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation; "RCNN always returns a (Losses, Detections) tuple"
        ref = detector(x)
        if fmt == "torchscript":
            torch.jit.save(torch.jit.script(detector), str(tmp))
            loaded = torch.jit.load(str(tmp), map_location="cpu").eval()
            diffs = compare_detections(ref, loaded(x)[1])
            with _ScoreThreshold(0.0, detector, loaded):
                diffs = _merge(diffs, compare_detections(detector(x), loaded(x)[1]))
            how = "torch.jit.load"
        elif fmt == "onnx":
            _export_onnx(detector, x, tmp)
            diffs, how = compare_detections(ref, _run_onnx(tmp, x)), "onnxruntime (CPU)"
        else:
            opts = build_options(model)
            save_file({k: v.detach().cpu().contiguous() for k, v in detector.state_dict().items()}, str(tmp),
                      metadata={"format": "pt", "classes": ",".join(model.classes)})
            rebuilt = rebuild_detector(tmp, opts)
            diffs = compare_detections(ref, rebuilt(x))
            with _ScoreThreshold(0.0, detector, rebuilt):
                diffs = _merge(diffs, compare_detections(detector(x), rebuilt(x)))
            how = "uscl.models.detector.build_detector(**build_detector) + load_state_dict"
        if not _within(diffs):
            raise UsclError(f"the exported {fmt} detector does not reproduce the original (max abs differences: "
                            f"boxes {diffs['boxes']:.3g} px, scores {diffs['scores']:.3g}, masks "
                            f"{diffs['masks']:.3g}; inf = different detections); nothing was written")
    meta = detect_meta(model, fmt)
    meta["file"] = path.name
    meta["verification"] = {"runtime": how, "max_abs_diff": max(diffs["boxes"], diffs["scores"], diffs["masks"]),
                            "max_abs_diff_boxes_px": diffs["boxes"], "max_abs_diff_scores": diffs["scores"],
                            "max_abs_diff_masks": diffs["masks"], "detections_compared": diffs["detections"],
                            "tolerance": {"boxes_px": BOX_TOLERANCE, "scores": SCORE_TOLERANCE,
                                          "masks": MASK_TOLERANCE},
                            "input": f"{len(x)} frames {list(frame_shape(model))}: uniform noise in [0, 0.5] with a "
                                     "bright disc" + ("; also with roi_heads.score_thresh = 0"
                                                      if fmt != "onnx" else "")}
    atomic_write_json(sidecar, meta)
    result = DetectExportResult(path, sidecar, fmt, "detections", meta["verification"]["max_abs_diff"], how, diffs)
    return result, meta


OUTPUTS = {
    "torchscript": "losses, detections = net(images): images a list of (C, H, W) float tensors; losses {} in eval; "
                   "detections per image a dict of boxes (N, 4) x1, y1, x2, y2 in the input's pixels, labels "
                   "int64 (N,) 1..K, scores (N,), masks (N, 1, H, W) probabilities (>= 0.5: the instance)",
    "onnx": "one image per run: input 'images' (C, H, W); outputs boxes (N, 4) x1, y1, x2, y2 in the input's "
            "pixels, labels int64 (N,) 1..K, scores (N,), masks (N, 1, H, W) probabilities (>= 0.5: the instance)",
    "safetensors": "the state dict of build_detector(**build_detector); in eval, net(images) returns per image "
                   "boxes, labels (1..K), scores, masks (N, 1, H, W) probabilities",
}


def detect_meta(model: LoadedModel, fmt: str) -> dict:
    """The sidecar of an exported detector: input, output, preprocessing up to the stored frame, options."""
    pp, fold = model.preprocessing, model.folds[0]
    meta = fold.meta
    c, h, w = frame_shape(model)
    k = len(model.classes)
    return {
        "format": "uscl-exported-model",
        "version": 1,
        "model_format": fmt,
        "task": DETECT,
        "head": meta.get("head") or "mask-rcnn",
        "arch": pp.arch,
        "classes": list(model.classes),
        "mask_classes": list(model.classes),
        "num_classes": k,
        "labels": {str(j): cls for j, cls in enumerate(model.classes, start=1)},
        "input": {"name": "images", "layout": "list of CHW" if fmt != "onnx" else "CHW (one image)",
                  "dtype": "float32", "shape": [c, h, w], "range": [0, 1], "normalised": False,
                  "note": "the preprocessed frame / 255; the detector resizes (short side min_size, long side at "
                          f"most max_size) and normalises ((x - {GREY_MEAN[0]}) / {GREY_STD[0]}) by itself"},
        "output": {"kind": "detections", "note": OUTPUTS[fmt], "score_threshold_used_by_uscl_predict": 0.5,
                   "detector_score_threshold": float(fold.net.detector.roi_heads.score_thresh)},
        "image_size": pp.image_size,
        "min_size": meta.get("min_size"),
        "max_size": meta.get("max_size"),
        "frozen_bn": meta.get("frozen_bn"),
        "detector": meta.get("detector"),
        "build_detector": build_options(model),
        "store_channels": pp.channels,
        "store_options": pp.store_options,
        "preprocessing_steps": [*store_steps(pp.store_options),
                                f"scale to [0, 1] (x / 255): float32 {c} x H x W per frame; nothing else "
                                "(the detector resizes and normalises itself)"],
        "folds": [fold.fold],
        "fold_note": model.fold_note,
        "combine": None,
        "source": str(model.source),
        "mode": meta.get("mode"),
        "init": meta.get("init_name") or meta.get("init"),
        "exported_by": f"uscl {__version__}",
    }
