"""k-fold fine-tuning and evaluation: :func:`finetune` (the Python API behind ``uscl finetune``).

One run = one init x one mode over the folds of one split (all of them, or
``only_folds``). Per fold it writes ``fold{k}/model.safetensors`` (+ JSON
metadata with the classes and the preprocessing, enough for ``uscl predict``),
``history.csv``, ``predictions.csv`` and, last, ``metrics.json``; the run root
gets ``config.yaml``, ``splits.json`` and ``metrics.json`` (per fold and
summary, with ``folds_run`` and ``complete``: whether every fold of the split
is in it). ``resume`` keeps the complete folds of a matching run folder and
redoes the rest (:mod:`uscl.finetune.run_folder`).

Model selection is honest by default: the model after the fixed epoch budget
(``select=last``) or the best epoch on a validation split carved from the
training fold by video (``select=val``). ``select_on_test`` reproduces the
original release's per-fold choice of the best *test* epoch and labels every
output with :data:`~uscl.finetune.config.SELECTED_ON_TEST`.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uscl.finetune import metrics as M
from uscl.finetune.config import SELECTED_ON_TEST, FinetuneConfig
from uscl.finetune.init import InitSpec, apply_init, load_init, name_for, parse_init
from uscl.finetune.predictions import Predictions, read_predictions, write_predictions
from uscl.finetune.pretraining_labels import check_pretraining_labels
from uscl.finetune.run_folder import clear_fold, fold_dir, open_run
from uscl.finetune.splits import (
    Splits,
    carve_validation,
    check_leakage,
    load_splits,
    make_splits,
    select_folds,
)
from uscl.utils.atomic import (
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
)
from uscl.utils.device import autocast_for, resolve_device
from uscl.utils.progress import progress

METRICS_FORMAT = "uscl-finetune-metrics"


@dataclass
class FinetuneResult:
    run_dir: Path
    metrics: dict  # what metrics.json holds
    splits: Splits
    init_name: str


class FinetunedClassifier(nn.Module):
    """ResNet trunk (fc = Identity) + a linear head; state dict keys ``backbone.*``, ``head.*``."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.backbone(x), 1))


# -- setup ------------------------------------------------------------------------------
def build_splits(cfg: FinetuneConfig, store) -> Splits:
    """The folds of a run: imported/reused (``cfg.splits``) or generated; always leakage-checked."""
    if cfg.splits:
        splits = load_splits(cfg.splits, store, classes=cfg.classes, where=cfg.where or None)
        if any(f.val for f in splits.folds) and cfg.select != "val":
            for f in splits.folds:  # a reused splits.json of a --select val run: fold val back into train
                f.train, f.val = sorted(f.train + f.val), []
    else:
        splits = make_splits(store, cfg.folds, cfg.seed, cfg.classes, cfg.where or None, cfg.merge_small_folds)
    if cfg.select == "val" and not any(f.val for f in splits.folds):
        splits = carve_validation(splits, cfg.val_fraction, cfg.seed)
    check_leakage(splits, store)
    return splits


def build_model(arch: str, num_classes: int, init_sd, source: str) -> FinetunedClassifier:
    from uscl.models import build_backbone

    backbone, dim = build_backbone(arch)
    apply_init(backbone, init_sd, arch, source)
    return FinetunedClassifier(backbone, dim, num_classes)


def set_trainable(model: FinetunedClassifier, mode: str) -> list[str]:
    """paper: last residual block of layer4 + head; full: everything; linear/knn: nothing."""
    for p in model.parameters():
        p.requires_grad_(mode == "full")
    if mode == "paper":
        for p in model.backbone.layer4[-1].parameters():
            p.requires_grad_(True)
        for p in model.head.parameters():
            p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def train_mode(model: nn.Module, freeze_bn_stats: bool) -> None:
    """model.train(), but fully frozen BatchNorm layers keep their statistics when asked."""
    model.train()
    if freeze_bn_stats:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                m.eval()


# -- data -------------------------------------------------------------------------------
def _loader(store, indices, class_to_index, cfg: FinetuneConfig, *, train: bool, seed: int, max_frames=None):
    from uscl.data.frame_dataset import FrameDataset
    from uscl.data.loader import BatchReader
    from uscl.utils.seed import make_generator, worker_init_fn

    ds = FrameDataset(store, indices, class_to_index, max_frames_per_video=max_frames)
    n = len(ds)
    generator = make_generator(seed)
    order = torch.utils.data.RandomSampler(ds, generator=generator) if train else torch.utils.data.SequentialSampler(ds)
    batches = torch.utils.data.BatchSampler(order, cfg.batch_size,
                                            drop_last=train and n > 1 and n % cfg.batch_size == 1)  # 1-image batch: BatchNorm fails
    return torch.utils.data.DataLoader(
        BatchReader(ds),  # one read per batch, straight into the batch tensor
        batch_size=None,
        sampler=batches,
        num_workers=cfg.workers,
        worker_init_fn=worker_init_fn if cfg.workers else None,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


class _Runner:
    """Device placement, precision and preprocessing shared by training and evaluation."""

    def __init__(self, cfg: FinetuneConfig, device: torch.device):
        from uscl.augment import BatchAugment, finetune_augment_config

        self.cfg = cfg
        self.device = device
        self.cuda = device.type == "cuda"
        self.amp = self.cuda and cfg.amp
        aug = finetune_augment_config(cfg.image_size)
        aug.mean, aug.std = cfg_mean_std(cfg)
        self.augment = BatchAugment(aug)

    def prepare(self, images: torch.Tensor, train: bool, generator=None) -> torch.Tensor:
        from uscl.augment import eval_transform

        x = images.to(self.device, non_blocking=True)
        mean, std = cfg_mean_std(self.cfg)
        # grey frames stay 1-channel: the backbone's first convolution takes them as RGB-repeated
        out_c = 1 if x.shape[1] == 1 else 3
        x = self.augment.augment(x, generator, out_channels=out_c) if train else \
            eval_transform(x, self.cfg.image_size, mean, std, out_c)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self):
        return autocast_for("bf16" if self.amp else "fp32", self.device)

    def predict(self, model: nn.Module, loader, desc: str = "eval") -> tuple[np.ndarray, ...]:
        """(videos, frames, labels, probs) over a loader, fp32 softmax."""
        return self._over_frames(model, loader, desc, lambda out: torch.softmax(out.float(), 1))

    def features(self, backbone: nn.Module, loader, desc: str = "features") -> tuple[np.ndarray, ...]:
        """(videos, frames, labels, backbone features) over a loader."""
        return self._over_frames(backbone, loader, desc, lambda out: torch.flatten(out.float(), 1))

    @torch.no_grad()
    def _over_frames(self, net: nn.Module, loader, desc: str, head) -> tuple[np.ndarray, ...]:
        net.eval()
        vids, frames, labels, values = [], [], [], []
        for batch in progress(loader, desc=desc):
            with self.autocast():
                out = net(self.prepare(batch["image"], train=False))
            values.append(head(out).cpu().numpy())
            vids.append(batch["video"].numpy())
            frames.append(batch["frame"].numpy())
            labels.append(batch["label"].numpy())
        return np.concatenate(vids), np.concatenate(frames), np.concatenate(labels), np.concatenate(values)


def cfg_mean_std(cfg: FinetuneConfig) -> tuple[float, float]:
    return 0.5, 0.25  # the original's normalisation for every init (pretrained and ImageNet alike)


# -- the modes --------------------------------------------------------------------------
def train_fold(cfg, runner: _Runner, model, loaders, fold_seed: int, *, desc: str = "") -> tuple[nn.Module, list[dict], int | None]:
    """Gradient fine-tuning (paper/full); returns (selected model, history rows, selected epoch)."""
    from uscl.utils.seed import make_generator

    model.to(runner.device)
    if runner.cuda:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    gen = make_generator(fold_seed, runner.device if runner.cuda else None)
    history, best, best_epoch, best_score = [], None, None, -1.0
    watch = "test" if cfg.select_on_test else ("val" if cfg.select == "val" else None)
    for epoch in progress(range(1, cfg.epochs + 1), desc=f"{desc} epochs", leave=False):
        train_mode(model, cfg.freeze_bn_stats)
        tot_loss, tot_correct, tot_n = 0.0, 0, 0
        lr = opt.param_groups[0]["lr"]
        for batch in progress(loaders["train"], desc=f"epoch {epoch}"):
            x = runner.prepare(batch["image"], train=True, generator=gen)
            y = batch["label"].to(runner.device, non_blocking=True)
            with runner.autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = len(y)
            tot_loss += float(loss.detach()) * n
            tot_correct += int((logits.argmax(1) == y).sum())
            tot_n += n
        sched.step()
        row = {"epoch": epoch, "lr": lr, "train_loss": tot_loss / max(1, tot_n), "train_acc": tot_correct / max(1, tot_n)}
        for side in ("val", "test"):
            if side == "val" and "val" not in loaders:
                continue
            if side == "test" and not cfg.select_on_test:
                continue  # the test fold is looked at only after training, unless reproducing the flaw
            _, _, yl, pr = runner.predict(model, loaders[side], desc=side)
            row[f"{side}_loss"] = float(F.nll_loss(torch.log(torch.from_numpy(pr).clamp_min(1e-12)), torch.from_numpy(yl)))
            row[f"{side}_acc"] = float((pr.argmax(1) == yl).mean())
        history.append(row)
        if watch and row[f"{watch}_acc"] > best_score:
            best_score, best_epoch = row[f"{watch}_acc"], epoch
            best = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if watch:
        model.load_state_dict(best)
        return model, history, best_epoch
    return model, history, cfg.epochs


def _full_probs(partial: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """sklearn gives columns only for classes seen in training; pad to all k classes."""
    out = np.zeros((len(partial), k))
    out[:, seen] = partial
    return out


def fit_linear(cfg, model: FinetunedClassifier, train_feats, train_labels, k: int):
    """Standardised logistic regression, then folded into ``model.head`` (so the saved model predicts alone)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_feats)
    clf = LogisticRegression(C=cfg.linear_c, max_iter=2000, random_state=cfg.seed)
    clf.fit(scaler.transform(train_feats), train_labels)
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


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_probs(bank: np.ndarray, bank_labels: np.ndarray, feats: np.ndarray, k_neigh: int, k: int) -> np.ndarray:
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=min(k_neigh, len(bank)))
    knn.fit(_l2(bank), bank_labels)
    return _full_probs(knn.predict_proba(_l2(feats)), knn.classes_, k)


# -- saving -------------------------------------------------------------------------------
def save_model(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """uscl.checkpoint.save_weights when present; the JSON metadata also rides in the safetensors header."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    try:
        from uscl.checkpoint import save_weights
    except ImportError:
        save_weights = None
    if save_weights is not None:
        save_weights(path, tensors, meta)
        return
    from safetensors.torch import save_file

    header = {"uscl": json.dumps(meta, default=str)}
    atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=header), suffix=".safetensors")
    atomic_write_json(path.with_suffix(".json"), meta)


def write_history(path: Path, rows: list[dict]) -> None:
    cols = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: (f"{v:.6g}" if isinstance(v, float) else v) for c, v in r.items()})
    atomic_write_text(path, buf.getvalue())


# -- the run --------------------------------------------------------------------------
def finetune(cfg: FinetuneConfig, *, splits: Splits | None = None, log=print, log_splits: bool = True) -> FinetuneResult:
    """Fine-tune and evaluate one init over the folds; see the module docstring for the outputs.

    Every input is checked (store, labels, folds, ``only_folds``, leakage, init
    weights and architecture, and with ``resume`` the saved settings) before
    anything is written, so bad input never touches an existing run folder.
    """
    from uscl.store import FrameStore
    from uscl.utils.seed import seed_everything

    cfg.validate()
    t0 = time.time()
    store = FrameStore(cfg.store)
    if splits is None:
        splits = build_splits(cfg, store)
    else:
        check_leakage(splits, store)
    classes = splits.classes
    class_to_index = {c: i for i, c in enumerate(classes)}
    spec: InitSpec = parse_init(cfg.init)
    init_sd, init_meta = load_init(spec, unsafe_pickle=cfg.unsafe_pickle)
    arch = cfg.arch or init_meta.get("arch") or "resnet18"
    build_model(arch, len(classes), init_sd, spec.spec)  # validates keys/arch before any output exists
    init_name = name_for(spec, init_meta)
    leakage = check_pretraining_labels(store, splits, spec, cfg.allow_pretraining_labels, log=log)
    device = resolve_device(cfg.device)
    selected = select_folds(splits, cfg.only_folds)

    run, kept = open_run(cfg, splits, store.store_id, log=log)
    log(f"finetune {init_name} ({spec.spec}) mode={cfg.mode} arch={arch} on {device}; {splits.summary() if log_splits else 'the folds above'}")
    if cfg.only_folds is not None:
        log(f"--only-folds: training fold(s) {', '.join(str(f.index) for f in selected)} of {splits.n_folds}")
    if cfg.select_on_test:
        log(f"WARNING: {SELECTED_ON_TEST}")

    runner = _Runner(cfg, device)
    mean, std = cfg_mean_std(cfg)
    base_meta = {
        "kind": "uscl-finetuned",
        "arch": arch,
        "classes": classes,
        "num_classes": len(classes),
        "image_size": cfg.image_size,
        "channels": store.channels,
        "out_channels": 3,
        "mean": mean,
        "std": std,
        "store_options": store.options,
        "store_id": store.store_id,
        "init": spec.spec,
        "init_name": init_name,
        "mode": cfg.mode,
        "selection": cfg.selection,
        "selected_on_test": cfg.select_on_test,
    }
    done: dict[int, dict] = {k: kf.metrics for k, kf in kept.items()}  # fold index -> its metrics.json
    trained = []
    for fold in selected:
        if fold.index in kept:
            log(f"  fold {fold.index}: complete outputs found, kept (--resume)")
            continue
        fdir = fold_dir(run, fold.index)
        if clear_fold(fdir):
            log(f"  fold {fold.index}: deleted the partial outputs of an unfinished run, redoing it")
        fold_seed = cfg.seed * 1000 + fold.index
        seed_everything(fold_seed)
        idx = {side: [store.index_of(v) for v in getattr(fold, side)] for side in ("train", "val", "test")}
        model = build_model(arch, len(classes), init_sd, spec.spec)
        trainable = set_trainable(model, cfg.mode)
        loaders = {
            "train": _loader(store, idx["train"], class_to_index, cfg, train=cfg.mode in ("paper", "full"),
                             seed=fold_seed, max_frames=cfg.max_frames_per_video),
            "test": _loader(store, idx["test"], class_to_index, cfg, train=False, seed=fold_seed),
        }
        if idx["val"]:
            loaders["val"] = _loader(store, idx["val"], class_to_index, cfg, train=False, seed=fold_seed)
        desc = f"fold {fold.index}"
        tensors_extra, meta_extra, history, sel_epoch = {}, {}, [], None
        if cfg.mode in ("paper", "full"):
            model, history, sel_epoch = train_fold(cfg, runner, model, loaders, fold_seed, desc=desc)
            vids, frames, labels, probs = runner.predict(model, loaders["test"], desc=f"{desc} test")
            meta_extra = {"head": "linear", "trainable": _summarise_trainable(trainable), "epochs": cfg.epochs,
                          "lr": cfg.learning_rate, "selected_epoch": sel_epoch}
        else:
            model.to(device)
            _, _, tr_labels, tr_feats = runner.features(model.backbone, loaders["train"], desc=f"{desc} train features")
            vids, frames, labels, te_feats = runner.features(model.backbone, loaders["test"], desc=f"{desc} test features")
            if cfg.mode == "linear":
                fit_linear(cfg, model, tr_feats, tr_labels, len(classes))
                with torch.no_grad():  # the folded head on the test features = what the saved model predicts
                    head = model.head.to("cpu")
                    probs = torch.softmax(head(torch.from_numpy(te_feats).float()), 1).numpy()
                meta_extra = {"head": "linear", "linear_c": cfg.linear_c}
            else:
                probs = knn_probs(tr_feats, tr_labels, te_feats, cfg.knn_k, len(classes))
                tensors_extra = {"knn.bank": torch.from_numpy(_l2(tr_feats)).float(),
                                 "knn.labels": torch.from_numpy(tr_labels.astype(np.int64))}
                meta_extra = {"head": "knn", "knn_k": cfg.knn_k}
        video_ids = [store.videos[int(v)].video_id for v in vids]
        pred = Predictions(video_ids, vids, frames, labels, probs, classes)
        write_predictions(fdir / "predictions.csv", pred)
        if history:
            write_history(fdir / "history.csv", history)
        state = {k: v for k, v in model.state_dict().items() if not (cfg.mode == "knn" and k.startswith("head."))}
        state.update(tensors_extra)
        save_model(fdir / "model.safetensors", state,
                   {**base_meta, **meta_extra, "fold": fold.index, "train_videos": len(fold.train),
                    "test_videos": fold.test, "val_videos": fold.val})
        fm = M.fold_metrics(video_ids, labels, probs, classes)
        fres = {"fold": fold.index, "selected_epoch": sel_epoch, "n_train_videos": len(fold.train),
                "n_val_videos": len(fold.val), "n_test_videos": len(fold.test), **fm}
        atomic_write_json(fdir / "metrics.json", fres)  # last: its presence marks the fold complete
        done[fold.index] = fres
        trained.append(fold.index)
        log(f"  fold {fold.index}: frame acc {fm['frame']['accuracy']:.3f}, video acc {fm['video']['accuracy']:.3f}"
            + (f" (epoch {sel_epoch} {'ON TEST' if cfg.select_on_test else 'on val'})" if cfg.select_on_test or cfg.select == "val" else ""))
        del model, loaders

    folds_run = [f.index for f in splits.folds if f.index in done]
    fold_results = [done[k] for k in folds_run]
    # pooled over the saved predictions, so a resumed run and `uscl report` give the same numbers
    all_pred = [read_predictions(fold_dir(run, k) / "predictions.csv", classes) for k in folds_run]
    pooled = M.pooled_metrics(
        [v for p in all_pred for v in p.video_ids], np.concatenate([p.labels for p in all_pred]),
        np.concatenate([p.probs for p in all_pred]), classes)
    coverage = M.folds_coverage(folds_run, splits.n_folds)
    metrics = {
        "format": METRICS_FORMAT,
        "version": 1,
        "init": init_name,
        "init_spec": spec.spec,
        "init_meta": {k: v for k, v in init_meta.items() if isinstance(v, (str, int, float, bool)) or v is None},
        "mode": cfg.mode,
        "arch": arch,
        "classes": classes,
        "selection": cfg.selection,
        "selected_on_test": cfg.select_on_test,
        "warning": "; ".join(w for w in (SELECTED_ON_TEST if cfg.select_on_test else None,
                                         leakage["note"] if leakage else None) if w) or None,
        "pretraining_label_leakage": leakage,
        "n_folds": splits.n_folds,
        "folds_run": folds_run,
        "complete": coverage is None,  # False: a partial k-fold run (--only-folds), not a full estimate
        "coverage": coverage,
        "folds_trained_now": trained,
        "folds_kept": sorted(k for k in kept if k in done),
        "split_method": splits.method,
        "store": str(cfg.store),
        "store_id": store.store_id,
        "device": str(device),
        "elapsed_s": round(time.time() - t0, 2),
        "folds": fold_results,
        "summary": M.summarize(fold_results, classes, pooled),
    }
    atomic_write_json(run / "metrics.json", metrics)
    s = metrics["summary"]
    log(f"{init_name}: frame acc {_pm(s['frame']['accuracy'])}, video acc {_pm(s['video']['accuracy'])}"
        + (f"  [{coverage}: not a full {splits.n_folds}-fold estimate]" if coverage else "")
        + (f"  [{SELECTED_ON_TEST}]" if cfg.select_on_test else ""))
    if trained and (run / "report.md").is_file():
        log(f"note: {run}/report.md predates this run's new folds; refresh it with `uscl report {run}`")
    return FinetuneResult(run, metrics, splits, init_name)


def _pm(d: dict) -> str:
    return "n/a" if d["mean"] is None else f"{d['mean']:.3f} ± {d['std']:.3f}"


def _summarise_trainable(names: list[str]) -> list[str]:
    """Trainable parameter names collapsed to their modules (layer4.1, head)."""
    out = []
    for n in names:
        parts = n.split(".")
        mod = ".".join(parts[1:3]) if parts[0] == "backbone" and parts[1].startswith("layer") else (
            parts[0] if parts[0] == "head" else ".".join(parts[:2]))
        if mod not in out:
            out.append(mod)
    return out
