"""Loading fine-tuned models (one fold, or the ensemble of a run's folds) for inference.

A `uscl finetune` run folder holds ``fold{k}/model.safetensors`` plus a JSON
sidecar with the class names and the preprocessing. :func:`load_model` turns a
run folder (all folds, or ``fold=k``) or one ``model.safetensors`` into a
:class:`LoadedModel`: fold networks that return class *probabilities*, and the
:class:`Preprocessing` recorded at training time, so nothing is re-specified
by hand.

A segmentation run (``uscl finetune --task segment``; metadata ``task:
"segment"``) loads the same way into :class:`SegmentProbabilityModel` folds:
per-pixel probabilities (N, K+1, H, W) of the background (channel 0) and the
mask classes; an ensemble averages them. ``load_model(..., task=...)`` refuses
a model of the other task with a message naming both.

A detection run (``uscl finetune --task detect``; metadata ``task: "detect"``)
loads into a :class:`DetectionModel`: the fold's torchvision Mask R-CNN rebuilt
exactly as trained (:func:`build_detect_net`). Its folds are **not** an
ensemble: each fold's detector returns its own set of instances (boxes, masks,
scores), and two such sets do not average the way probabilities do - combining
them would take a new method (e.g. weighted box fusion), which uscl does not
claim. So a detection run folder loads *one* fold: ``fold=k``, or by default
the first finished fold (``LoadedModel.fold_note`` says so).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from uscl.checkpoint import load_weights, strip_wrappers
from uscl.errors import UsclError
from uscl.finetune.outputs import MODEL_KIND
from uscl.finetune.run_folder import FOLD_METRICS
from uscl.models import FinetunedClassifier, build_backbone
from uscl.models.backbone import identify_arch
from uscl.models.detector import build_detector
from uscl.models.segmenter import Segmenter

MODEL_FILE = "model.safetensors"
_FOLD_DIR = re.compile(r"^fold(\d+)$")
CLASSIFY, SEGMENT, DETECT = "classify", "segment", "detect"
TASK_NAMES = {CLASSIFY: "classification", SEGMENT: "segmentation", DETECT: "detection"}
BACKGROUND = "background"


def model_task(meta: dict) -> str:
    """The task a fine-tuned model's metadata records: "classify" (also when it records none), "segment" or
    "detect"."""
    return str(meta.get("task") or CLASSIFY)


# the predict function of each task (the default hint of a task mix-up)
PREDICT_APIS = {CLASSIFY: "uscl.infer.predict", SEGMENT: "uscl.infer.predict_segments",
                DETECT: "uscl.infer.predict_detections"}


def check_task(have: str, want: str | None, where: str, hint: str | None = None) -> None:
    """A clear error when a model of task ``have`` is given where one of task ``want`` is needed.

    ``hint`` (default: the predict function of task ``have``) ends the message."""
    if hint is None:
        hint = (f"predict with {PREDICT_APIS[have]} (`uscl predict` picks the task by itself)"
                if have in PREDICT_APIS else "")
    if want is not None and have != want:
        raise UsclError(f"{where} is a {TASK_NAMES.get(have, have)} model (task {have!r}), but a "
                        f"{TASK_NAMES.get(want, want)} model (task {want!r}) is needed here"
                        + (f"; {hint}" if hint else ""))


@dataclass
class Preprocessing:
    """Everything that turns a raw file into the model's input, as recorded by `uscl finetune`.

    ``store_options``: the `uscl prepare` options (fps, max_frames, crop, size,
    channels...) → uint8 frames (T, S, S, C). Then: resize to ``image_size``
    (bilinear, antialiased), scale to [0, 1], ``(x - mean) / std``, grey
    repeated to 3 channels → float32 N×3×H×W.
    """

    classes: list[str]
    image_size: int
    mean: float
    std: float
    store_options: dict
    channels: int = 1
    out_channels: int = 3
    arch: str = "resnet18"

    @classmethod
    def from_meta(cls, meta: dict, where: str) -> "Preprocessing":
        missing = [k for k in ("classes", "image_size", "mean", "std", "store_options") if meta.get(k) is None]
        if missing:
            raise UsclError(f"{where}: the model metadata lacks {', '.join(missing)}; "
                            "is it a model written by `uscl finetune`?")
        if not meta["store_options"]:
            raise UsclError(f"{where}: the model records no preprocessing options of its frame store")
        return cls(classes=list(meta["classes"]), image_size=int(meta["image_size"]), mean=float(meta["mean"]),
                   std=float(meta["std"]), store_options=dict(meta["store_options"]),
                   channels=int(meta.get("channels") or 1), out_channels=int(meta.get("out_channels") or 3),
                   arch=str(meta.get("arch") or "resnet18"))

    def to_dict(self) -> dict:
        return asdict(self)


class KnnHead(nn.Module):
    """Cosine k-nearest-neighbour vote against the training features stored with the model.

    Same rule as `uscl finetune --mode knn` (sklearn's uniform kNN on
    L2-normalised features): the share of each class among the k most similar
    training frames. Differentiable nowhere useful, so Grad-CAM refuses it.
    """

    def __init__(self, bank: torch.Tensor, labels: torch.Tensor, k: int, num_classes: int):
        super().__init__()
        self.register_buffer("bank", nn.functional.normalize(bank.float(), dim=1))
        self.register_buffer("labels", labels.long())
        self.k = int(min(k, bank.shape[0]))
        self.num_classes = int(num_classes)
        self.register_buffer("class_ids", torch.arange(num_classes))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        sims = nn.functional.normalize(feats.float(), dim=1) @ self.bank.t()
        nearest = torch.topk(sims, self.k, dim=1).indices
        votes = (self.labels[nearest].unsqueeze(-1) == self.class_ids).float()
        return votes.mean(1)


class ProbabilityModel(nn.Module):
    """One fold's :class:`~uscl.models.classifier.FinetunedClassifier`, returning class probabilities.

    ``forward`` gives probabilities: softmax of the linear head's scores
    (paper/full/linear modes), or the neighbour votes of a :class:`KnnHead`
    (knn mode, which has no logits).
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    @property
    def backbone(self) -> nn.Module:
        return self.classifier.backbone

    @property
    def head(self) -> nn.Module:
        return self.classifier.head

    @property
    def is_knn(self) -> bool:
        return isinstance(self.classifier.head, KnnHead)

    @property
    def arch(self) -> str:
        return self.classifier.arch

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_knn:
            raise UsclError("a kNN model has no class scores (logits); use a model fine-tuned with a linear head")
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(x)
        return out if self.is_knn else torch.softmax(out.float(), dim=1)


class SegmentProbabilityModel(nn.Module):
    """One fold's :class:`~uscl.models.segmenter.Segmenter`, returning per-pixel class probabilities.

    ``forward``: softmax over the K+1 channels (background, then the mask
    classes) of the logits (N, K+1, H, W), at the input's size.
    """

    is_knn = False

    def __init__(self, segmenter: Segmenter):
        super().__init__()
        self.segmenter = segmenter

    @property
    def backbone(self) -> nn.Module:
        return self.segmenter.backbone

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmenter(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.segmenter(x).float(), dim=1)


class DetectionModel(nn.Module):
    """One fold's torchvision Mask R-CNN (:func:`uscl.models.detector.build_detector`), as trained.

    ``forward(images)``: a list of float (C, H, W) images in [0, 1] at the stored frame size (C = 1 for
    grey; the detector resizes and normalises them itself) -> per image a dict of ``boxes`` (N, 4) xyxy
    in the image's pixels, ``labels`` (1..K), ``scores`` and ``masks`` (N, 1, H, W) probabilities.
    """

    is_knn = False

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    @property
    def backbone(self) -> nn.Module:
        return self.detector.backbone.body

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.detector(images)


class EnsembleModel(nn.Module):
    """Average of the fold models' probabilities."""

    def __init__(self, members: list[ProbabilityModel] | list[SegmentProbabilityModel]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.members[0](x)
        for m in self.members[1:]:
            probs = probs + m(x)
        return probs / len(self.members)


@dataclass
class FoldModel:
    """One fold's network with where it came from and its metadata."""

    net: ProbabilityModel | SegmentProbabilityModel | DetectionModel
    path: Path
    meta: dict
    fold: int | None


@dataclass
class LoadedModel:
    """The models ``uscl predict`` / ``export`` use: one fold or an ensemble over folds."""

    folds: list[FoldModel]
    preprocessing: Preprocessing
    source: Path
    extra: dict = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return self.preprocessing.classes

    @property
    def is_ensemble(self) -> bool:
        return len(self.folds) > 1

    @property
    def task(self) -> str:
        """"classify", "segment" or "detect" (see :func:`model_task`)."""
        return model_task(self.folds[0].meta)

    @property
    def fold_note(self) -> str | None:
        """For a detection run loaded without a fold: which fold was taken and why (None otherwise)."""
        return self.extra.get("fold_note")

    @property
    def labels(self) -> list[str]:
        """A segmentation model's mask values in order: background (0), then the mask classes (1..K)."""
        return [BACKGROUND, *self.classes]

    @property
    def is_knn(self) -> bool:
        return any(f.net.is_knn for f in self.folds)

    def describe(self) -> str:
        which = (f"ensemble of {len(self.folds)} folds ({', '.join(str(f.fold) for f in self.folds)})"
                 if self.is_ensemble else f"fold {self.folds[0].fold}" if self.folds[0].fold is not None
                 else self.folds[0].path.name)
        if self.fold_note:
            which += f" ({self.fold_note})"
        meta = self.folds[0].meta
        return (f"{self.source}: {which}, {self.preprocessing.arch}, {meta.get('mode', '?')} mode, "
                f"init {meta.get('init_name', meta.get('init', '?'))}, classes {', '.join(self.classes)}")

    def module(self) -> nn.Module:
        """One nn.Module returning probabilities (the fold's net, or the averaging ensemble; a detection model
        has one fold, its :class:`DetectionModel`)."""
        return self.folds[0].net if len(self.folds) == 1 else EnsembleModel([f.net for f in self.folds])

    def to(self, device: torch.device) -> "LoadedModel":
        for f in self.folds:
            f.net.to(device).eval()
        return self


def build_fold_net(state: dict[str, torch.Tensor], meta: dict, where: str) -> ProbabilityModel:
    """Rebuild backbone + head from a fine-tuned state dict (keys ``backbone.*``, ``head.*`` / ``knn.*``).

    The network is built on the meta device and takes the file's tensors
    (``assign=True``): no random initialisation that would be overwritten anyway.
    """
    state = strip_wrappers(state)
    classes = meta.get("classes") or []
    bb_state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not bb_state:
        raise UsclError(f"{where} holds no backbone.* weights: is it a `uscl finetune` model "
                        "(not a pretraining backbone, which has no classifier)?")
    arch = _recorded_arch(meta, bb_state, where)
    with torch.device("meta"):
        backbone, dim = build_backbone(arch)
        classifier = FinetunedClassifier(backbone, dim, len(classes), arch)
    _check_keys(bb_state, backbone.state_dict(), f"{where} does not match architecture {arch}")
    backbone.load_state_dict(bb_state, strict=True, assign=True)
    if meta.get("head") == "knn" or "knn.bank" in state:
        if "knn.bank" not in state or "knn.labels" not in state:
            raise UsclError(f"{where}: a kNN model without its feature bank (knn.bank, knn.labels)")
        classifier.head = KnnHead(state["knn.bank"], state["knn.labels"], int(meta.get("knn_k") or 10), len(classes))
    else:
        w, b = state.get("head.weight"), state.get("head.bias")
        if w is None or b is None:
            raise UsclError(f"{where} holds no classifier head (head.weight, head.bias)")
        if tuple(w.shape) != (len(classes), dim):
            raise UsclError(f"{where}: head is {tuple(w.shape)} but the metadata names {len(classes)} classes "
                            f"on {dim}-d features")
        classifier.head.load_state_dict({"weight": w, "bias": b}, assign=True)
    return ProbabilityModel(classifier).eval()


def _recorded_arch(meta: dict, bb_state: dict[str, torch.Tensor], where: str) -> str:
    """The metadata's ``arch`` (older files without one: read from the weights' keys); weights of another
    architecture than the recorded one are an error naming both."""
    found = identify_arch(bb_state)
    arch = meta.get("arch") or found or "resnet18"
    if found is not None and found != arch:
        raise UsclError(f"{where}: its metadata records arch {arch}, but its weights are a {found} backbone")
    return arch


def build_segment_net(state: dict[str, torch.Tensor], meta: dict, where: str) -> SegmentProbabilityModel:
    """Rebuild a segmenter (keys ``backbone.*``, ``decoder.*``, ``head.*``) from a fine-tuned state dict."""
    state = strip_wrappers(state)
    arch = meta.get("arch") or "resnet18"
    classes = meta.get("mask_classes") or meta.get("classes") or []
    if not classes:
        raise UsclError(f"{where}: a segmentation model whose metadata names no mask classes")
    with torch.device("meta"):
        backbone, _ = build_backbone(arch)
        segmenter = Segmenter(backbone, len(classes))
    if not any(k.startswith("decoder.") for k in state):
        raise UsclError(f"{where} holds no decoder.* weights: its metadata says task 'segment' but it is not a "
                        "segmenter saved by `uscl finetune --task segment`")
    _check_keys(state, segmenter.state_dict(), f"{where} does not match a {arch} segmenter with {len(classes)} "
                f"mask classes ({', '.join(classes)})")
    segmenter.load_state_dict(state, strict=True, assign=True)
    return SegmentProbabilityModel(segmenter).eval()


def build_detect_net(state: dict[str, torch.Tensor], meta: dict, where: str) -> DetectionModel:
    """Rebuild a fold's Mask R-CNN exactly as `uscl finetune --task detect` built it, and load it strictly.

    The recorded ``arch``, K = ``len(mask_classes)``, ``frozen_bn`` (which BatchNorm the trunk had: the
    state dicts differ), ``min_size`` / ``max_size`` (the detector's own resize) and ``detector`` (the
    torchvision keywords, e.g. the RoI budget of ``uscl.finetune.detect.fold.CPU_DETECTOR``). Built on
    the CPU, not the meta device: torchvision's anchor generator keeps tensors outside the state dict.
    """
    state = strip_wrappers(state)
    arch = meta.get("arch") or "resnet18"
    classes = meta.get("mask_classes") or meta.get("classes") or []
    if not classes:
        raise UsclError(f"{where}: a detection model whose metadata names no mask classes")
    head = meta.get("head") or "mask-rcnn"
    if head not in ("mask-rcnn", "faster-rcnn"):
        raise UsclError(f"{where}: unknown detection head {head!r} (known: mask-rcnn, faster-rcnn)")
    missing = [k for k in ("min_size", "max_size", "frozen_bn") if meta.get(k) is None]
    if missing:
        raise UsclError(f"{where}: the detection model's metadata lacks {', '.join(missing)}, needed to rebuild "
                        "the detector as it was trained")
    kwargs = dict(meta.get("detector") or {})
    try:
        detector = build_detector(arch, len(classes), None, "random", with_masks=head == "mask-rcnn",
                                  frozen_bn=bool(meta["frozen_bn"]), min_size=int(meta["min_size"]),
                                  max_size=int(meta["max_size"]), **kwargs)
    except TypeError as exc:  # a keyword this torchvision does not know
        raise UsclError(f"{where}: cannot rebuild the detector with its recorded options {kwargs}: {exc}") from exc
    if not any(k.startswith("roi_heads.") for k in state):
        raise UsclError(f"{where} holds no roi_heads.* weights: its metadata says task 'detect' but it is not a "
                        "detector saved by `uscl finetune --task detect`")
    _check_keys(state, detector.state_dict(), f"{where} does not match a {arch} {head} detector with "
                f"{len(classes)} mask classes ({', '.join(classes)}), frozen_bn={bool(meta['frozen_bn'])}")
    detector.load_state_dict(state, strict=True)
    return DetectionModel(detector).eval()


BUILDERS = {CLASSIFY: build_fold_net, SEGMENT: build_segment_net, DETECT: build_detect_net}


def _check_keys(state: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(ref) - set(state))
    unexpected = sorted(set(state) - set(ref))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(ref[k].shape)}" for k in set(ref) & set(state)
                    if tuple(state[k].shape) != tuple(ref[k].shape))
    problems = [f"{name} ({len(v)}): {', '.join(v[:6])}{' ...' if len(v) > 6 else ''}"
                for name, v in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes))
                if v]
    if problems:
        raise UsclError(f"{what}; " + "; ".join(problems))


def fold_paths(path: str | Path, fold: int | None = None) -> list[tuple[Path, int | None]]:
    """The model files of a run folder (every fold, or ``fold``) or the one file given."""
    p = Path(path)
    if p.is_file() or p.suffix in (".safetensors", ".json"):
        if p.suffix == ".json":
            p = p.with_suffix(".safetensors")
        if not p.is_file():
            raise UsclError(f"model file not found: {path}")
        if fold is not None:
            raise UsclError(f"fold picks a fold of a run folder; {path} is already one model file", param="fold")
        m = _FOLD_DIR.match(p.parent.name)
        return [(p, int(m.group(1)) if m else None)]
    if not p.is_dir():
        raise UsclError(f"model not found: {path} (give a `uscl finetune` run folder or a model.safetensors)")
    if (p / MODEL_FILE).is_file() and fold is None:
        m = _FOLD_DIR.match(p.name)
        return [(p / MODEL_FILE, int(m.group(1)) if m else None)]
    found = sorted(((int(m.group(1)), d / MODEL_FILE) for d in p.iterdir()
                    if d.is_dir() and (m := _FOLD_DIR.match(d.name)) and (d / MODEL_FILE).is_file()))
    # a fold is finished once its metrics.json is written (last, atomically); a model without
    # it is what an interrupted run leaves behind
    complete = [(k, f) for k, f in found if (f.parent / FOLD_METRICS).is_file()]
    unfinished = [k for k, f in found if (k, f) not in complete]
    if not complete:
        raise UsclError(f"{p} holds no finished fold*/{MODEL_FILE}"
                        + (f" (folds {', '.join(map(str, unfinished))} were interrupted: fine-tuning again with resume"
                           " completes them)" if unfinished else ": is it a `uscl finetune` run folder?"))
    if fold is None:
        if unfinished:
            warnings.warn(f"{p}: folds {', '.join(map(str, unfinished))} did not finish (no metrics.json); "
                          "the ensemble uses the finished ones only", stacklevel=2)
        return [(f, k) for k, f in complete]
    for k, f in complete:
        if k == fold:
            return [(f, k)]
    if fold in unfinished:
        raise UsclError(f"fold {fold} of {p} did not finish (no metrics.json); fine-tuning again with resume "
                        "completes it", param="fold")
    raise UsclError(f"{p} has no fold {fold} (folds: {', '.join(str(k) for k, _ in complete)})", param="fold")


_SHARED_KEYS = ("classes", "image_size", "mean", "std", "store_options", "arch", "task", "mask_classes")


def load_model(path: str | Path, fold: int | None = None, task: str | None = None) -> LoadedModel:
    """A run folder (ensemble of its folds, or ``fold``) or one model file → :class:`LoadedModel` (on CPU, eval).

    Classification models get :class:`ProbabilityModel` folds, segmentation
    models (metadata ``task: "segment"``) :class:`SegmentProbabilityModel`
    folds, detection models (``task: "detect"``) one :class:`DetectionModel`:
    ``fold``, or the first finished fold of a run folder (detectors are not
    averaged; see the module docs). ``task`` ("classify" | "segment" |
    "detect"): the task the caller needs; a model of another one is an error
    naming both. A task uscl does not know is an error naming the known ones.
    """
    if task is not None and task not in TASK_NAMES:
        raise UsclError(f"task must be one of {', '.join(TASK_NAMES)}, not {task!r}", param="task")
    folds: list[FoldModel] = []
    first_meta: dict | None = None
    extra: dict = {}
    paths = fold_paths(path, fold)
    for file, k in list(paths):
        state, meta = load_weights(file)
        if meta.get("kind") not in (None, MODEL_KIND):
            raise UsclError(f"{file} is a {meta.get('kind')!r} file, not a fine-tuned model")
        if model_task(meta) not in BUILDERS:
            raise UsclError(f"{file} records task {model_task(meta)!r}, which this uscl cannot load (known tasks: "
                            + ", ".join(f"{t!r} ({n})" for t, n in TASK_NAMES.items()) + ")")
        check_task(model_task(meta), task, str(path))
        if model_task(meta) == DETECT and len(paths) > 1:
            # instance sets of different detectors do not average: one fold, the first (see the module docs)
            extra["fold_note"] = (f"the first of folds {', '.join(str(j) for _, j in paths)}: a detection run's "
                                  "folds are not averaged; --fold K picks another")
            paths = paths[:1]
        Preprocessing.from_meta(meta, str(file))  # every fold must be complete
        if first_meta is not None:
            diff = [key for key in _SHARED_KEYS if meta.get(key) != first_meta.get(key)]
            if diff:
                raise UsclError(f"{file} differs from fold {folds[0].fold} in {', '.join(diff)}: "
                                "its folds cannot be averaged; pick one with fold", param="fold")
        else:
            first_meta = meta
        folds.append(FoldModel(BUILDERS[model_task(meta)](state, meta, str(file)), file, meta,
                               meta.get("fold", k) if k is None else k))
        if len(folds) == len(paths):
            break
    assert first_meta is not None
    return LoadedModel(folds, Preprocessing.from_meta(first_meta, str(folds[0].path)), Path(path), extra)
