"""The backbone ``uscl embed`` looks at, from what the user names (BACKBONE_OR_RUN):

* a ``uscl pretrain`` run folder (its ``backbone.safetensors``; ``best`` for a run killed before exporting)
* a ``uscl finetune`` run folder (fold ``--fold``'s trunk; its training used labels), a fold folder,
  or a ``model.safetensors``; any other ``.safetensors`` backbone file
* ``random`` (torchvision's initialisation of ``--arch``, seeded by ``--seed``)
* an init spec as ``uscl finetune --init`` takes it: ``imagenet:PATH``, ``checkpoint:RUN``, ``uscl-official:PATH``

The weights go through the init machinery (:mod:`uscl.checkpoint.inits`, :mod:`uscl.checkpoint.weights`),
the architecture comes from the weights' metadata (or their keys), and so does the preprocessing:
the image size and mean/std the backbone was trained with, unless ``image_size`` overrides the size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from uscl.checkpoint.inits import KINDS, load_init, parse_init
from uscl.checkpoint.run_files import CONFIG_FILE, LABELLED_FILE
from uscl.checkpoint.weights import backbone_state, load_weights, resolve_backbone_path
from uscl.errors import UsclError
from uscl.finetune.outputs import MODEL_KIND
from uscl.finetune.run_folder import SPLITS_FILE
from uscl.models.backbone import build_backbone
from uscl.models.classifier import apply_init, infer_arch
from uscl.pretrain.config import saved_config
from uscl.utils.seed import derive_seed

FOLD_MODEL = "model.safetensors"


@dataclass
class Source:
    """A backbone ready for :func:`uscl.models.features.extract_features`, and what it is."""

    backbone: nn.Module
    arch: str
    image_size: int | None  # what it was trained at (None: unknown; the caller picks)
    mean: float
    std: float
    description: dict = field(default_factory=dict)  # for embedding.json / embed.md
    labelled: list[dict] = field(default_factory=list)  # videos whose labels its training used (when listed)


def resolve_source(text: str, *, fold: int = 0, arch: str = "resnet18", seed: int = 0,
                   unsafe_pickle: bool = False) -> Source:
    """The backbone named by ``text`` (see the module docstring), in eval mode on the CPU."""
    text = str(text).strip()
    if text == "random":
        return _random(arch, seed)
    kind = text.partition(":")[0].lower()
    if kind in KINDS and ":" in text and not Path(text).exists():
        return _init_spec(text, unsafe_pickle)
    path = Path(text)
    if not path.exists():
        raise UsclError(f"{text}: no such run folder or file; give a pretraining or fine-tuning run folder, "
                        "random, or imagenet:PATH / checkpoint:RUN / uscl-official:PATH", param="backbone")
    if path.is_dir() and (path / SPLITS_FILE).is_file():
        return _finetune_fold(path, fold)
    if (path.is_dir() and (path / FOLD_MODEL).is_file()) or path.name == FOLD_MODEL:
        return _weights_file(path / FOLD_MODEL if path.is_dir() else path, "finetune-fold")
    return _weights_file(resolve_backbone_path(path), "pretrain-run" if path.is_dir() else "weights-file",
                         run=path if path.is_dir() else None)


def _random(arch: str, seed: int) -> Source:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "embed-random-init") % 2**63)
        net, _ = build_backbone(arch)
    return Source(net.eval(), arch, None, 0.5, 0.25,
                  {"source": "random", "kind": "random", "arch": arch, "seed": seed, "labels_used": False})


def _init_spec(text: str, unsafe_pickle: bool) -> Source:
    spec = parse_init(text)
    if spec.kind == "checkpoint":
        where = Path(spec.path)
        return _weights_file(resolve_backbone_path(where), "pretrain-run" if where.is_dir() else "weights-file",
                             run=where if where.is_dir() else None)
    sd, meta = load_init(spec, unsafe_pickle=unsafe_pickle)
    arch = meta.get("arch") or infer_arch(sd)
    net = _built(arch, sd, text)
    return Source(net, arch, None, 0.5, 0.25, {"source": text, "kind": spec.kind, "arch": arch,
                                               "weights": spec.path, "weights_sha256": _sha256(Path(spec.path)),
                                               "labels_used": spec.kind == "uscl-official"})


def _finetune_fold(run: Path, fold: int) -> Source:
    folds = sorted(int(d.name[4:]) for d in run.glob("fold*") if d.name[4:].isdigit() and (d / FOLD_MODEL).is_file())
    if fold not in folds:
        have = ", ".join(map(str, folds)) or "none"
        raise UsclError(f"{run} has no trained fold {fold} (folds with a model: {have})", param="fold")
    src = _weights_file(run / f"fold{fold}" / FOLD_MODEL, "finetune-fold", fold=fold)
    try:  # the fold's training and validation videos: their labels trained (and chose) this trunk
        saved = {int(f["index"]): f for f in json.loads((run / SPLITS_FILE).read_text()).get("folds", [])}
        src.labelled = [{"video_id": v} for side in ("train", "val") for v in saved.get(fold, {}).get(side, [])]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return src


def _weights_file(path: Path, kind: str, *, run: Path | None = None, fold: int | None = None) -> Source:
    state, meta = load_weights(path)
    finetuned = meta.get("kind") == MODEL_KIND or kind == "finetune-fold"
    if meta.get("task") == "detect":
        raise UsclError(f"{path} is a detection model (Mask R-CNN); embed takes a classification or segmentation "
                        "model's trunk, or a pretraining run", param="backbone")
    sd = backbone_state(state)
    arch = meta.get("arch") or infer_arch(sd)
    net = _built(arch, sd, str(path))
    image_size, mean, std = meta.get("image_size"), meta.get("mean"), meta.get("std")
    labelled: list[dict] = []
    if run is not None:
        image_size, mean, std = _run_preprocessing(run, image_size, mean, std)
        labelled = _labelled(run)
    desc = {"source": str(run or path), "kind": "finetune-fold" if finetuned else kind, "arch": arch,
            "weights": str(path), "weights_sha256": _sha256(path),
            **{k: meta[k] for k in ("method", "epoch", "source", "init", "init_name", "mode", "store_id")
               if k in meta and k != "source"},
            "labels_used": True if finetuned else bool(labelled)}
    if fold is not None:
        desc["fold"] = fold
    if "source" in meta:
        desc["checkpoint"] = meta["source"]  # best | last (a pretraining export)
    return Source(net, arch, image_size, float(mean if mean is not None else 0.5),
                  float(std if std is not None else 0.25), desc, labelled)


def _run_preprocessing(run: Path, image_size, mean, std):
    """A pretraining run's training size and normalisation (its config.yaml) where the weights' JSON lacks them."""
    if not (run / CONFIG_FILE).is_file():
        return image_size, mean, std
    try:
        cfg = saved_config(run)
    except UsclError:
        return image_size, mean, std
    return (image_size or cfg.dataset.image_size, cfg.augment.mean if mean is None else mean,
            cfg.augment.std if std is None else std)


def _labelled(run: Path) -> list[dict]:
    path = run / LABELLED_FILE
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text()).get("videos") or [])
    except (OSError, ValueError):
        return []


def _built(arch: str, sd: dict[str, torch.Tensor] | None, where: str) -> nn.Module:
    net, _ = build_backbone(arch)
    apply_init(net, sd, arch, where)
    return net.eval()


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
