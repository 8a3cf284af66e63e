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

This module is the run: :func:`plan_run` checks every input, :func:`run_fold`
trains one fold with the function of its mode (:mod:`uscl.finetune.modes`) and
:func:`write_fold` writes its outputs, :func:`run_metrics` summarises the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uscl.finetune import metrics as M
from uscl.finetune.config import GRADIENT_MODES, SELECTED_ON_TEST, FinetuneConfig
from uscl.finetune.engine import Runner
from uscl.checkpoint.inits import InitSpec, load_init, name_for, parse_init
from uscl.finetune.loaders import fold_loaders
from uscl.finetune.modes import FoldFit, knn_fold, linear_fold, train_fold
from uscl.finetune.outputs import model_meta, save_model, write_history
from uscl.finetune.predictions import Predictions, read_predictions, write_predictions
from uscl.finetune.pretraining_labels import check_pretraining_labels
from uscl.finetune.model_card import write_run_card
from uscl.finetune.run_folder import METRICS_FORMAT, FinetuneResult, clear_fold, fold_dir, open_run
from uscl.finetune.dense_run import build_mask_splits, finetune_dense
from uscl.finetune.splits import (
    Fold,
    Splits,
    carve_validation,
    check_leakage,
    load_splits,
    make_splits,
    select_folds,
)
from uscl.models.classifier import build_classifier
from uscl.store import FrameStore
from uscl.utils.atomic import atomic_write_json
from uscl.utils.device import resolve_device
from uscl.utils.seed import derive_seed, seed_everything


@dataclass
class _Plan:
    """The checked inputs of a run: everything :func:`finetune` needs before it writes anything."""

    cfg: FinetuneConfig
    store: FrameStore
    splits: Splits
    spec: InitSpec
    init_sd: dict | None
    init_meta: dict
    init_name: str
    arch: str
    leakage: dict | None
    device: torch.device
    selected: list[Fold]

    @property
    def classes(self) -> list[str]:
        return self.splits.classes


def build_splits(cfg: FinetuneConfig, store) -> Splits:
    """The folds of a run: imported/reused (``cfg.splits``) or generated; always leakage-checked.

    Segmentation and detection split the videos that have masks, or boxes with ``cfg.boxes``
    (:func:`build_mask_splits`)."""
    if cfg.task != "classify":
        return build_mask_splits(cfg, store)
    if cfg.splits:
        splits = load_splits(cfg.splits, store, classes=cfg.classes, where=cfg.where or None)
        if any(f.val for f in splits.folds) and cfg.select != "val":
            for f in splits.folds:  # a reused splits.json of a select=val run: fold val back into train
                f.train, f.val = sorted(f.train + f.val), []
    else:
        splits = make_splits(store, cfg.folds, cfg.seed, cfg.classes, cfg.where or None, cfg.merge_small_folds)
    if cfg.select == "val" and not any(f.val for f in splits.folds):
        splits = carve_validation(splits, cfg.val_fraction, cfg.seed)
    check_leakage(splits, store)
    return splits


# -- the run ------------------------------------------------------------------------------
def finetune(cfg: FinetuneConfig, *, splits: Splits | None = None, log=print, log_splits: bool = True) -> FinetuneResult:
    """Fine-tune and evaluate one init over the folds; see the module docstring for the outputs.

    Every input is checked (store, labels, folds, ``only_folds``, leakage, init
    weights and architecture, and with ``resume`` the saved settings) before
    anything is written, so bad input never touches an existing run folder.
    ``log_splits=False`` leaves the folds out of the log (a caller printed them already).
    """
    cfg.validate()
    if cfg.task != "classify":
        return finetune_dense(cfg, splits=splits, log=log, log_splits=log_splits)
    t0 = time.time()
    plan = plan_run(cfg, splits, log)
    run, kept = open_run(cfg, plan.splits, plan.store.store_id, log=log)
    _log_start(plan, log, log_splits)
    runner = Runner(cfg, plan.device)
    base_meta = model_meta(cfg, plan.store, plan.arch, plan.classes, plan.spec.spec, plan.init_name)
    done: dict[int, dict] = {k: kf.metrics for k, kf in kept.items()}  # fold index -> its metrics.json
    trained = []
    for fold in plan.selected:
        if fold.index in kept:
            log(f"  fold {fold.index}: complete outputs found, kept (resume)")
            continue
        done[fold.index] = run_fold(plan, runner, run, fold, base_meta, log)
        trained.append(fold.index)
    metrics = run_metrics(plan, run, done, trained, sorted(k for k in kept if k in done), t0)
    atomic_write_json(run / "metrics.json", metrics)
    write_run_card(run, plan.store)  # MODEL_CARD.md + model_card.json, from the files just written
    _log_summary(plan, metrics, log)
    if trained and (run / "report.md").is_file():
        log(f"note: {run}/report.md predates this run's new folds; refresh it with `uscl report {run}`")
    return FinetuneResult(run, metrics, plan.splits, plan.init_name)


def plan_run(cfg: FinetuneConfig, splits: Splits | None, log=print) -> _Plan:
    """Open the store, make or check the folds, load and check the init: everything, before any output."""
    store = FrameStore(cfg.store)
    if splits is None:
        splits = build_splits(cfg, store)
    else:
        check_leakage(splits, store)
    spec = parse_init(cfg.init)
    init_sd, init_meta = load_init(spec, unsafe_pickle=cfg.unsafe_pickle)
    arch = cfg.arch or init_meta.get("arch") or "resnet18"
    build_classifier(arch, len(splits.classes), init_sd, spec.spec)  # validates keys/arch before any output exists
    init_name = name_for(spec, init_meta)
    leakage = check_pretraining_labels(store, splits, spec, cfg.allow_pretraining_labels, log=log)
    return _Plan(cfg, store, splits, spec, init_sd, init_meta, init_name, arch, leakage,
                 resolve_device(cfg.device), select_folds(splits, cfg.only_folds))


def _mode_function(mode: str):
    """The fold function of ``mode``, looked up at call time (so a wrapped ``train_fold`` is the one used)."""
    if mode in GRADIENT_MODES:
        return train_fold
    return linear_fold if mode == "linear" else knn_fold


def run_fold(plan: _Plan, runner: Runner, run: Path, fold: Fold, base_meta: dict, log=print) -> dict:
    """Train (or fit) one fold from scratch and write its outputs; returns its metrics.json."""
    cfg = plan.cfg
    fdir = fold_dir(run, fold.index)
    if clear_fold(fdir):
        log(f"  fold {fold.index}: deleted the partial outputs of an unfinished run, redoing it")
    fold_seed = derive_seed(cfg.seed, "fold", fold.index)  # every stream of the fold derives from it
    seed_everything(fold_seed)
    model = build_classifier(plan.arch, len(plan.classes), plan.init_sd, plan.spec.spec)
    loaders = fold_loaders(plan.store, fold, {c: i for i, c in enumerate(plan.classes)}, cfg, fold_seed)
    fit = _mode_function(cfg.mode)(cfg, runner, model, loaders, fold_seed, desc=f"fold {fold.index}")
    fres = write_fold(plan, fdir, fold, fit, base_meta)
    selection = (f" (epoch {fit.selected_epoch} {'ON TEST' if cfg.select_on_test else 'on val'})"
                 if cfg.select_on_test or cfg.select == "val" else "")
    log(f"  fold {fold.index}: frame acc {fres['frame']['accuracy']:.3f}, "
        f"video acc {fres['video']['accuracy']:.3f}{selection}")
    return fres


def write_fold(plan: _Plan, fdir: Path, fold: Fold, fit: FoldFit, base_meta: dict) -> dict:
    """predictions.csv, history.csv, the model, and last its metrics.json (whose presence marks it complete)."""
    classes = plan.classes
    video_ids = [plan.store.videos[int(v)].video_id for v in fit.videos]
    write_predictions(fdir / "predictions.csv", Predictions(video_ids, fit.videos, fit.frames, fit.labels,
                                                            fit.probs, classes))
    if fit.history:
        write_history(fdir / "history.csv", fit.history)
    save_model(fdir / "model.safetensors", fit.tensors,
               {**base_meta, **fit.meta, "fold": fold.index, "train_videos": len(fold.train),
                "test_videos": fold.test, "val_videos": fold.val})
    fm = M.fold_metrics(video_ids, fit.labels, fit.probs, classes)
    fres = {"fold": fold.index, "selected_epoch": fit.selected_epoch, "n_train_videos": len(fold.train),
            "n_val_videos": len(fold.val), "n_test_videos": len(fold.test), **fm}
    atomic_write_json(fdir / "metrics.json", fres)  # last: its presence marks the fold complete
    return fres


def run_metrics(plan: _Plan, run: Path, done: dict[int, dict], trained: list[int], kept: list[int],
                t0: float) -> dict:
    """The run's metrics.json: per fold, and the summary pooled over the saved predictions of every fold run."""
    cfg, splits, classes = plan.cfg, plan.splits, plan.classes
    folds_run = [f.index for f in splits.folds if f.index in done]
    fold_results = [done[k] for k in folds_run]
    # pooled over the saved predictions, so a resumed run and `uscl report` give the same numbers
    all_pred = [read_predictions(fold_dir(run, k) / "predictions.csv", classes) for k in folds_run]
    pooled = M.pooled_metrics(
        [v for p in all_pred for v in p.video_ids], np.concatenate([p.labels for p in all_pred]),
        np.concatenate([p.probs for p in all_pred]), classes)
    coverage = M.folds_coverage(folds_run, splits.n_folds)
    leakage = plan.leakage
    return {
        "format": METRICS_FORMAT,
        "version": 1,
        "init": plan.init_name,
        "init_spec": plan.spec.spec,
        "init_meta": {k: v for k, v in plan.init_meta.items() if isinstance(v, (str, int, float, bool)) or v is None},
        "mode": cfg.mode,
        "arch": plan.arch,
        "classes": classes,
        "selection": cfg.selection,
        "selected_on_test": cfg.select_on_test,
        "warning": "; ".join(w for w in (SELECTED_ON_TEST if cfg.select_on_test else None,
                                         leakage["note"] if leakage else None) if w) or None,
        "pretraining_label_leakage": leakage,
        "n_folds": splits.n_folds,
        "folds_run": folds_run,
        "complete": coverage is None,  # False: a partial k-fold run (only_folds), not a full estimate
        "coverage": coverage,
        "folds_trained_now": trained,
        "folds_kept": kept,
        "split_method": splits.method,
        "store": str(cfg.store),
        "store_id": plan.store.store_id,
        "device": str(plan.device),
        "elapsed_s": round(time.time() - t0, 2),
        "folds": fold_results,
        "summary": M.summarize(fold_results, classes, pooled),
    }


# full fine-tuning of a pretrained backbone above this lr was measured to lose most of its gain
FULL_PRETRAINED_MAX_LR = 3e-4


def _log_start(plan: _Plan, log, log_splits: bool = True) -> None:
    cfg, splits = plan.cfg, plan.splits
    log(f"finetune {plan.init_name} ({plan.spec.spec}) mode={cfg.mode} arch={plan.arch} on {plan.device}; "
        f"{splits.summary() if log_splits else 'the folds above'}")
    if cfg.only_folds is not None:
        log(f"only_folds: training fold(s) {', '.join(str(f.index) for f in plan.selected)} of {splits.n_folds}")
    if cfg.select_on_test:
        log(f"WARNING: {SELECTED_ON_TEST}")
    if cfg.mode == "full" and plan.spec.kind != "random" and cfg.learning_rate > FULL_PRETRAINED_MAX_LR:
        log(f"note: lr {cfg.learning_rate:g} fully fine-tunes a pretrained backbone; above {FULL_PRETRAINED_MAX_LR:g} "
            "it can undo the pretraining (POCUS, 5 folds: a USCL backbone's gain over random init fell from "
            "+5.4 points at lr 1e-4, the default, to +2.7 at 1e-3)")


def _log_summary(plan: _Plan, metrics: dict, log) -> None:
    s, coverage = metrics["summary"], metrics["coverage"]
    log(f"{plan.init_name}: frame acc {_pm(s['frame']['accuracy'])}, video acc {_pm(s['video']['accuracy'])}"
        + (f"  [{coverage}: not a full {plan.splits.n_folds}-fold estimate]" if coverage else "")
        + (f"  [{SELECTED_ON_TEST}]" if plan.cfg.select_on_test else ""))


def _pm(d: dict) -> str:
    return "n/a" if d["mean"] is None else f"{d['mean']:.3f} ± {d['std']:.3f}"
