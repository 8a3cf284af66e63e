"""`uscl export`: a fine-tuned model as TorchScript, ONNX or plain torchvision safetensors.

The exported file runs without `uscl`:

* ``torchscript`` (``.pt``, ``torch.jit.load``) and ``onnx`` (``.onnx``,
  onnxruntime): input ``input`` float32 N×3×H×W, already normalised;
  output ``probabilities`` N×K (softmax of the head; for a run folder
  without --fold, the mean over its folds).
* ``safetensors``: one fold's weights in torchvision's key layout
  (``conv1.weight`` … ``layer4.*``, ``fc.weight``, ``fc.bias`` of a ResNet; the head
  under each family's classifier key, :mod:`uscl.models.families`), so
  ``torchvision.models.<arch>(num_classes=K).load_state_dict(load_file(path))``
  rebuilds it; that network returns *logits* (apply softmax).

A segmentation model (``uscl finetune --task segment``) exports the same
way: torchscript and onnx return ``probabilities`` N×(K+1)×H×W (softmax
per pixel over the background, channel 0, and the K mask classes, at the
input size; an ensemble: the mean over its folds); ``safetensors`` holds one
fold's segmenter (keys ``backbone.*``, ``decoder.*``, ``head.*``, logits),
which :func:`uscl.models.segmenter.build_segmenter` rebuilds.

A detection fold (``uscl finetune --task detect``) exports its torchvision
Mask R-CNN instead (:mod:`uscl.infer.export_detect`): one fold (``fold``,
default the run's first; detectors are not averaged), input the preprocessed
frame in [0, 1], output boxes, labels, scores and instance masks.

A JSON beside the file (same stem) holds the preprocessing (store options,
input size, mean/std, class names, input layout, output kind), and a model card
beside it (``MODEL_CARD.md`` + ``model_card.json``, or ``STEM.MODEL_CARD.md``
… when the file is not called ``model``; :mod:`uscl.finetune.model_card`)
says what the model is, how its run evaluated it and how to load the file. Before the
file is moved into place it is loaded back with the runtime a user would use
and compared with the original model on the same input; the largest absolute
difference is reported and a mismatch is an error.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision import models as tvm

from uscl import __version__
from uscl.errors import UsclError
from uscl.finetune.model_card import (
    DENSE_TASKS, build_card, card_task, card_paths, data_summary, dense_data_summary, export_card, find_run,
    read_pretraining, read_run, write_card,
)
from uscl.infer.model import DETECT, SEGMENT, LoadedModel, ProbabilityModel, SegmentProbabilityModel, load_model
from uscl.models.families import family_of
from uscl.models.segmenter import build_segmenter
from uscl.store.preprocess import store_steps
from uscl.utils.atomic import atomic_path, atomic_write_json

if TYPE_CHECKING:
    from uscl.infer.export_detect import DetectExportResult

FORMATS = {"torchscript": ".pt", "onnx": ".onnx", "safetensors": ".safetensors"}
TOLERANCE = 1e-4  # probabilities (or logits) may differ by float rounding only
ONNX_OPSET = 17


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    format: str
    output: str  # "probabilities" | "logits"
    max_abs_diff: float
    verified_with: str

    def format_report(self) -> str:
        return (f"wrote {self.path} ({self.format}; output: {self.output}) and {self.sidecar.name}\n"
                f"verified with {self.verified_with}: max abs difference {self.max_abs_diff:.3g} "
                f"(tolerance {TOLERANCE:g})")


def output_path(out: str | os.PathLike, fmt: str) -> Path:
    """OUT as given (the format's extension added when it has none); a folder gets model<ext> inside."""
    ext = FORMATS[fmt]
    p = Path(out)
    if p.is_dir() or str(out).endswith(("/", os.sep)):
        return p / f"model{ext}"
    return p if p.suffix == ext else Path(f"{p}{ext}") if p.suffix == "" else p


def preprocessing_meta(model: LoadedModel, fmt: str, output: str, fold_ids: list) -> dict:
    pp = model.preprocessing
    s = pp.image_size
    opts = pp.store_options
    steps = [
        *store_steps(opts),
        f"resize to {s}x{s} (bilinear, antialiased), scale to [0, 1]",
        f"normalise (x - {pp.mean}) / {pp.std}; repeat grey to 3 channels",
        f"stack to float32 N x 3 x {s} x {s}",
    ]
    meta = {
        "format": "uscl-exported-model",
        "version": 1,
        "model_format": fmt,
        "arch": pp.arch,
        "classes": pp.classes,
        "num_classes": len(pp.classes),
        "input": {"name": "input", "layout": "NCHW", "dtype": "float32", "shape": ["N", 3, s, s],
                  "normalised": True},
        "output": {"name": "probabilities" if output == "probabilities" else "logits", "kind": output,
                   "shape": ["N", len(pp.classes)],
                   "note": "softmax over classes" if output == "probabilities"
                   else "apply softmax for probabilities"},
        "image_size": s,
        "mean": pp.mean,
        "std": pp.std,
        "store_channels": pp.channels,
        "store_options": opts,
        "preprocessing_steps": steps,
        "folds": fold_ids,
        "combine": "mean of the folds' probabilities" if len(fold_ids) > 1 else None,
        "source": str(model.source),
        "mode": model.folds[0].meta.get("mode"),
        "init": model.folds[0].meta.get("init_name") or model.folds[0].meta.get("init"),
        "exported_by": f"uscl {__version__}",
    }
    if model.task == SEGMENT:
        k = len(pp.classes)
        meta.update({
            "output": {"name": "probabilities" if output == "probabilities" else "logits", "kind": output,
                       "shape": ["N", k + 1, s, s],
                       "note": ("softmax per pixel over background (channel 0) and the mask classes" if
                                output == "probabilities" else "apply softmax over dim 1 for probabilities")
                       + "; mask = arg-max over dim 1 (0 background, k = mask class k); resize the probabilities "
                         "(bilinear) to the stored frame size for masks at that size, as uscl predict does"},
            "task": SEGMENT, "mask_classes": list(pp.classes), "labels": model.labels,
            "combine": "mean of the folds' per-pixel probabilities" if len(fold_ids) > 1 else None,
        })
    return meta


def torchvision_state(net: ProbabilityModel) -> dict[str, torch.Tensor]:
    """backbone.* → torchvision names, head → the family's classifier Linear (``fc.*`` of a ResNet or
    ShuffleNet, ``classifier.*`` of DenseNet, ``classifier.3.*`` / ``classifier.1.*`` of MobileNetV3 /
    EfficientNet): loads strictly into ``torchvision.models.<arch>(num_classes=K)``."""
    if net.is_knn:
        raise UsclError("a kNN model has no linear head to save as torchvision weights; "
                        "export it as torchscript or onnx")
    key = family_of(net.arch).classifier
    sd = {k: v.detach().cpu().contiguous() for k, v in net.backbone.state_dict().items()}
    sd[f"{key}.weight"] = net.head.weight.detach().cpu().contiguous()
    sd[f"{key}.bias"] = net.head.bias.detach().cpu().contiguous()
    return sd


def rebuild_torchvision(path: str | os.PathLike, arch: str, num_classes: int) -> nn.Module:
    """What a user without uscl does: the plain torchvision model + safetensors weights (strict)."""
    net = getattr(tvm, arch)(weights=None, num_classes=num_classes)
    net.load_state_dict(load_file(str(path)), strict=True)
    return net.eval()


def segmenter_state(net: SegmentProbabilityModel) -> dict[str, torch.Tensor]:
    """The segmenter's own state dict (``backbone.*``, ``decoder.*``, ``head.*``): loads into build_segmenter."""
    return {k: v.detach().cpu().contiguous() for k, v in net.segmenter.state_dict().items()}


def rebuild_segmenter(path: str | os.PathLike, arch: str, num_classes: int) -> nn.Module:
    """``build_segmenter(arch, num_classes)`` + the safetensors weights (strict): what loading the export does."""
    net = build_segmenter(arch, num_classes)
    net.load_state_dict(load_file(str(path)), strict=True)
    return net.eval()


def example_input(model: LoadedModel, n: int = 2, seed: int = 0) -> torch.Tensor:
    s = model.preprocessing.image_size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, s, s, generator=g)


def export_model(model_path: str | os.PathLike, out: str | os.PathLike, fmt: str, *, fold: int | None = None,
                 overwrite: bool = False, verify_batch: int = 3) -> ExportResult | DetectExportResult:
    """Export a run folder (``fold`` or the ensemble of all folds; a detection run: ``fold`` or its first fold)
    or one model file; see the module docstring."""
    if fmt not in FORMATS:
        raise UsclError(f"fmt must be one of {', '.join(FORMATS)}, not {fmt!r}", param="fmt")
    model = load_model(model_path, fold).to(torch.device("cpu"))
    if fmt == "safetensors" and model.is_ensemble:
        raise UsclError(f"{model_path} has {len(model.folds)} folds; "
                        + ("a segmenter's weights hold one network: " if model.task == SEGMENT else
                           "torchvision weights hold one network: ")
                        + "pick one with fold=K (or export the averaging ensemble as torchscript or onnx)",
                        param="fold")
    path = output_path(out, fmt)
    sidecar = path.with_suffix(".json")
    for p in (path, sidecar, *card_paths(path.parent, _card_stem(path))):
        if p.exists() and not overwrite:
            raise UsclError(f"{p} exists; choose another out or set overwrite", param="overwrite")
    if model.task == DETECT:  # one fold's Mask R-CNN (load_model gave one): its own module
        from uscl.infer.export_detect import export_detector

        result, meta = export_detector(model, path, fmt)
        write_export_card(model, path, sidecar, meta)
        return result
    module = model.module().eval()
    example = example_input(model, 2, seed=0)  # what the exporter traces
    x = example_input(model, verify_batch, seed=1)  # what the check runs: another batch size and content
    with torch.no_grad():
        ref_probs = module(x).float()
    output = "logits" if fmt == "safetensors" else "probabilities"
    with atomic_path(path, suffix=FORMATS[fmt]) as tmp:
        if fmt == "torchscript":
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, still works
                traced = torch.jit.trace(module, example, check_trace=False)
                torch.jit.save(traced, str(tmp))
                loaded = torch.jit.load(str(tmp), map_location="cpu").eval()
                got = loaded(x).float()
            ref, how = ref_probs, "torch.jit.load"
        elif fmt == "onnx":
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (example,), str(tmp), dynamo=False, input_names=["input"],
                                  output_names=["probabilities"], opset_version=ONNX_OPSET,
                                  dynamic_axes={"input": {0: "N"}, "probabilities": {0: "N"}})
            got, how = torch.from_numpy(_run_onnx(tmp, x.numpy())), "onnxruntime (CPU)"
            ref = ref_probs
        elif model.task == SEGMENT:
            net, k = model.folds[0].net, len(model.classes)
            save_file(segmenter_state(net), str(tmp), metadata={"format": "pt", "classes": ",".join(model.labels)})
            rebuilt = rebuild_segmenter(tmp, model.preprocessing.arch, k)
            with torch.no_grad():
                got, ref = rebuilt(x).float(), net.logits(x).float()
            how = f"uscl.models.segmenter.build_segmenter({model.preprocessing.arch!r}, {k}) + load_state_dict"
        else:
            net = model.folds[0].net
            save_file(torchvision_state(net), str(tmp), metadata={"format": "pt", "classes": ",".join(model.classes)})
            rebuilt = rebuild_torchvision(tmp, model.preprocessing.arch, len(model.classes))
            with torch.no_grad():
                got, ref = rebuilt(x).float(), net.logits(x).float()
            how = f"torchvision.models.{model.preprocessing.arch}(num_classes={len(model.classes)}) + load_state_dict"
        diff = float((got - ref).abs().max())
        if not np.isfinite(diff) or diff > TOLERANCE or got.shape != ref.shape:
            raise UsclError(f"the exported {fmt} model does not reproduce the original (max abs difference "
                            f"{diff:.3g}, shapes {tuple(got.shape)} vs {tuple(ref.shape)}); nothing was written")
    meta = preprocessing_meta(model, fmt, output, [f.fold for f in model.folds])
    meta["file"] = path.name
    meta["verification"] = {"runtime": how, "max_abs_diff": diff, "tolerance": TOLERANCE,
                            "input": f"{verify_batch} x 3 x {model.preprocessing.image_size}^2 standard normal "
                                     "(traced/exported with a batch of 2)"}
    atomic_write_json(sidecar, meta)
    write_export_card(model, path, sidecar, meta)
    return ExportResult(path, sidecar, fmt, output, diff, how)


def _card_stem(path: Path) -> str | None:
    """``model.onnx`` gets MODEL_CARD.md; any other name its own STEM.MODEL_CARD.md (exports may share a folder)."""
    return None if path.stem == "model" else path.stem


def write_export_card(model: LoadedModel, path: Path, sidecar: Path, meta: dict) -> Path:
    """The card of the run the model came from (unknowns where there is none), with this export's section.

    The card follows the model's task: a segmentation export gets the full segmentation card (mask classes,
    Dice/IoU/HD95 over folds, per class) of its run, and the loading code of the exported format."""
    first = model.folds[0].meta
    run = find_run(model.source)
    summary = dense_data_summary if card_task(first) in DENSE_TASKS else data_summary
    inputs = read_run(run) if run is not None else {
        "metrics": {}, "config": {}, "data": summary({}, None, None, first.get("store_id")),
        "pretraining": read_pretraining(first.get("init"), {})}
    inputs["model_meta"] = first  # the exported network's own metadata
    export = {"format": meta["model_format"], "file": path.name, "sidecar": sidecar.name,
              "output": meta["output"]["kind"], "combine": meta["combine"], "source": str(model.source),
              "run": str(run) if run is not None else "unknown", "verified_with": meta["verification"]["runtime"],
              "max_abs_diff": meta["verification"]["max_abs_diff"]}
    card = export_card(build_card(**inputs), export, first, [f.fold for f in model.folds])
    return write_card(card, path.parent, _card_stem(path))[0]


def _run_onnx(path: str | os.PathLike, x: np.ndarray) -> np.ndarray:
    try:  # optional dependency (the `export` extra): imported only for an ONNX export
        import onnxruntime as ort
    except ImportError as exc:
        raise UsclError("onnxruntime is not installed, so the ONNX export cannot be checked") from exc
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.astype(np.float32)})[0]
