"""The fine-tuning modes, one function each, with one signature: ``(cfg, runner, model, loaders, fold_seed)``.

* :func:`train_fold`  - paper / full: gradient fine-tuning of the last block (a ResNet's last block of layer4;
  each family's in :mod:`uscl.models.families`) + the head, or of
  everything, with the model selection of ``cfg`` (last epoch, best validation epoch, or best test epoch)
* :func:`linear_fold` - logistic regression on frozen backbone features, folded into the linear head
* :func:`knn_fold`    - k nearest neighbours on frozen, L2-normalised features (the bank is saved with the model)

Each returns a :class:`FoldFit`: the tensors to save, the model metadata of the
mode and the test fold's frame predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from uscl.finetune.engine import Runner, evaluate, train_one_epoch
from uscl.models.classifier import FinetunedClassifier
from uscl.models.families import family_of, submodule
from uscl.models.features import fit_logistic, knn_probs, l2_normalise
from uscl.utils.progress import progress
from uscl.utils.seed import derive_seed, make_generator


@dataclass
class FoldFit:
    """What a mode hands back for one fold: the model to save and its test predictions."""

    tensors: dict[str, torch.Tensor]  # the saved state dict
    meta: dict  # the mode's entries of the model metadata
    videos: np.ndarray  # per test frame: store index of its video, frame index, label, class probabilities
    frames: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    history: list[dict] = field(default_factory=list)  # per epoch (gradient modes)
    selected_epoch: int | None = None


def set_trainable(model: FinetunedClassifier, mode: str) -> list[str]:
    """paper: the family's last block (a ResNet: the last residual block of layer4) + head; full: everything;
    linear/knn: nothing."""
    for p in model.parameters():
        p.requires_grad_(mode == "full")
    if mode == "paper":
        for path in family_of(model.arch).last_block:
            for p in submodule(model.backbone, path).parameters():
                p.requires_grad_(True)
        for p in model.head.parameters():
            p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def backbone_stages(backbone: nn.Module, arch: str) -> list[list[nn.Module]]:
    """The backbone's stages, input first (a ResNet: the stem conv1 + bn1, then layer1..layer4; the other
    families: the stem, then their blocks grouped by resolution; :mod:`uscl.models.families`)."""
    return [[submodule(backbone, path) for path in stage] for stage in family_of(arch).stages]


def param_groups(model: FinetunedClassifier, lr: float, layer_decay: float = 1.0) -> list[dict]:
    """The optimiser's groups: the head at ``lr``, and each backbone stage at ``layer_decay`` times the
    lr of the stage above it (a ResNet: layer4 at lr·d, layer3 at lr·d², ..., the stem at lr·d⁵; every family
    has five stages), so a
    pretrained trunk's early features move least. Frozen parameters are left out."""
    groups = [{"params": [p for p in model.head.parameters() if p.requires_grad], "lr": lr}]
    for depth, stage in enumerate(reversed(backbone_stages(model.backbone, model.arch)), start=1):
        params = [p for m in stage for p in m.parameters() if p.requires_grad]
        groups.append({"params": params, "lr": lr * layer_decay ** depth})
    return [g for g in groups if g["params"]]


# -- paper / full ----------------------------------------------------------------------
def train_fold(cfg, runner: Runner, model: FinetunedClassifier, loaders: dict, fold_seed: int, *,
               desc: str = "") -> FoldFit:
    """Gradient fine-tuning (Adam, cosine schedule) for ``cfg.epochs``, then the selected model on the test fold."""
    trainable = set_trainable(model, cfg.mode)
    model.to(runner.device)
    if runner.cuda:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(param_groups(model, cfg.learning_rate, cfg.layer_decay), lr=cfg.learning_rate,
                           weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    gen = make_generator(derive_seed(fold_seed, "augment"), runner.device if runner.cuda else None)
    history, best, best_epoch, best_score = [], None, None, -1.0
    watch = "test" if cfg.select_on_test else ("val" if cfg.select == "val" else None)
    for epoch in progress(range(1, cfg.epochs + 1), desc=f"{desc} epochs", leave=False):
        row = {"epoch": epoch, **train_one_epoch(model, loaders["train"], opt, runner, gen,
                                                 freeze_bn_stats=cfg.freeze_bn_stats, desc=f"epoch {epoch}")}
        sched.step()
        if "val" in loaders:
            row.update(evaluate(model, loaders["val"], runner, "val"))
        if cfg.select_on_test:  # the test fold is looked at only after training, unless reproducing the flaw
            row.update(evaluate(model, loaders["test"], runner, "test"))
        history.append(row)
        if watch and row[f"{watch}_acc"] > best_score:
            best_score, best_epoch = row[f"{watch}_acc"], epoch
            best = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if watch:
        model.load_state_dict(best)
    selected = best_epoch if watch else cfg.epochs
    vids, frames, labels, probs = runner.predict(model, loaders["test"], desc=f"{desc} test")
    meta = {"head": "linear", "trainable": summarise_trainable(trainable), "epochs": cfg.epochs,
            "lr": cfg.learning_rate, "layer_decay": cfg.layer_decay, "selected_epoch": selected}
    return FoldFit(model.state_dict(), meta, vids, frames, labels, probs, history, selected)


_CONTAINERS = ("features", "classifier")  # DenseNet, MobileNet, EfficientNet: their blocks are one level down


def summarise_trainable(names: list[str]) -> list[str]:
    """Trainable parameter names collapsed to their modules (layer4.1, features.denseblock4, head)."""
    out = []
    for n in names:
        parts = n.split(".")
        block = parts[0] == "backbone" and (parts[1].startswith(("layer", "stage")) or parts[1] in _CONTAINERS)
        mod = ".".join(parts[1:3]) if block else (
            parts[0] if parts[0] == "head" else ".".join(parts[:2]))
        if mod not in out:
            out.append(mod)
    return out


# -- linear / knn on frozen features -----------------------------------------------------
def frozen_features(runner: Runner, model: FinetunedClassifier, loaders: dict, desc: str) -> tuple[np.ndarray, ...]:
    """(train features, train labels, test videos, test frames, test labels, test features) of the frozen trunk."""
    model.to(runner.device)
    _, _, tr_labels, tr_feats = runner.features(model.backbone, loaders["train"], desc=f"{desc} train features")
    vids, frames, labels, te_feats = runner.features(model.backbone, loaders["test"], desc=f"{desc} test features")
    return tr_feats, tr_labels, vids, frames, labels, te_feats


def linear_fold(cfg, runner: Runner, model: FinetunedClassifier, loaders: dict, fold_seed: int, *,
                desc: str = "") -> FoldFit:
    """Logistic regression on frozen features; the saved model predicts alone (the fit is its head)."""
    set_trainable(model, cfg.mode)
    tr_feats, tr_labels, vids, frames, labels, te_feats = frozen_features(runner, model, loaders, desc)
    k = model.head.out_features
    fit_linear(cfg, model, tr_feats, tr_labels, k)
    with torch.no_grad():  # the folded head on the test features = what the saved model predicts
        head = model.head.to("cpu")
        probs = torch.softmax(head(torch.from_numpy(te_feats).float()), 1).numpy()
    return FoldFit(model.state_dict(), {"head": "linear", "linear_c": cfg.linear_c}, vids, frames, labels, probs)


def fit_linear(cfg, model: FinetunedClassifier, train_feats, train_labels, k: int):
    """Standardised logistic regression, then folded into ``model.head`` (so the saved model predicts alone)."""
    clf, scaler = fit_logistic(train_feats, train_labels, c=cfg.linear_c,
                               seed=derive_seed(cfg.seed, "linear-probe") % 2**32)
    coef, intercept = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:  # binary: sigmoid(w.x + b) == softmax([0, w.x + b])
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    w = coef / scale
    b = intercept - (coef * (scaler.mean_ / scale)).sum(1)
    weight = np.zeros((k, w.shape[1]))
    bias = np.full(k, -1e4)  # classes absent from the training fold are never predicted
    weight[clf.classes_] = w
    bias[clf.classes_] = b
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight).float())
        model.head.bias.copy_(torch.from_numpy(bias).float())
    return clf, scaler


def knn_fold(cfg, runner: Runner, model: FinetunedClassifier, loaders: dict, fold_seed: int, *,
             desc: str = "") -> FoldFit:
    """kNN vote among the training frames' features; the model is saved with that bank instead of a head."""
    set_trainable(model, cfg.mode)
    tr_feats, tr_labels, vids, frames, labels, te_feats = frozen_features(runner, model, loaders, desc)
    probs = knn_probs(tr_feats, tr_labels, te_feats, cfg.knn_k, model.head.out_features)
    tensors = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    tensors.update({"knn.bank": torch.from_numpy(l2_normalise(tr_feats)).float(),
                    "knn.labels": torch.from_numpy(tr_labels.astype(np.int64))})
    return FoldFit(tensors, {"head": "knn", "knn_k": cfg.knn_k}, vids, frames, labels, probs)


