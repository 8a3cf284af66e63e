"""The folder of a fine-tuning run: start it, replace it (``--overwrite``) or continue it (``--resume``).

A run folder holds ``config.yaml``, ``splits.json`` and one ``fold{k}/`` per
fold trained. A fold is *complete* when its ``metrics.json`` exists: it is
written last and atomically, after the predictions, the history and the
model, so a killed run never leaves a fold that looks finished. Resuming keeps
the complete folds and redoes the others from scratch (their partial files are
deleted first), but only when the saved settings and folds match the ones
asked for; otherwise the differing keys are named and nothing is touched.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from uscl.errors import UsclError
from uscl.finetune.config import GRADIENT_MODES, FinetuneConfig, default_lr
from uscl.finetune.predictions import Predictions, read_predictions
from uscl.finetune.splits import Fold, Splits
from uscl.utils.atomic import atomic_write_text
from uscl.utils.config import dump_yaml, load_yaml, setting_differences

CONFIG_FILE = "config.yaml"
SPLITS_FILE = "splits.json"
FOLD_METRICS = "metrics.json"  # per fold; written last
METRICS_FORMAT = "uscl-finetune-metrics"  # the run's own metrics.json

# settings that may change between a run and its resumption: where and how it runs, and which
# folds this invocation trains. The store and the splits are compared by content instead of by
# path (store id of the kept folds' models; the folds' video lists).
RESUME_FREE = ("out", "overwrite", "resume", "only_folds", "device", "workers", "unsafe_pickle", "store", "splits")

_FOLD_DIR = re.compile(r"fold(\d+)$")


@dataclass
class FinetuneResult:
    """What a fine-tuning run (any task) returns: its folder, its metrics.json, its folds, the init's name."""

    run_dir: Path
    metrics: dict  # what metrics.json holds
    splits: Splits
    init_name: str


@dataclass
class KeptFold:
    """A complete fold of an earlier invocation: its metrics.json and its predictions."""

    metrics: dict
    predictions: Predictions | None  # classification only


def fold_dir(run: Path, index: int) -> Path:
    return run / f"fold{index}"


# what a complete segmentation / detection fold holds besides metrics.json
DENSE_FOLD_FILES = ("per_image.csv", "test_masks.npz", "model.safetensors", "model.json", "history.csv")
# ... and a detection fold trained on a boxes CSV (no masks: no label maps, no per-image Dice)
BOX_FOLD_FILES = ("detections.json", "model.safetensors", "model.json", "history.csv")


def fold_files(mode: str, task: str = "classify", boxes: bool = False) -> list[str]:
    """What a complete fold holds besides metrics.json (``boxes``: a detection run on a boxes CSV)."""
    if task == "detect" and boxes:
        return list(BOX_FOLD_FILES)
    if task != "classify":
        return list(DENSE_FOLD_FILES)
    return ["predictions.csv", "model.safetensors", "model.json"] + (["history.csv"] if mode in GRADIENT_MODES else [])


def open_run(cfg: FinetuneConfig, splits: Splits, store_id: str, log=print,
             boxes_sha256: str | None = None) -> tuple[Path, dict[int, KeptFold]]:
    """Create, replace or continue ``cfg.out``; returns the folder and the complete folds to keep.

    ``boxes_sha256``: the hash of the boxes CSV of a ``boxes`` run; a kept fold trained on other boxes is refused.

    Called after every input was checked, so a refusal here leaves the folder as it was.
    """
    run = Path(cfg.out)
    if run.exists() and not run.is_dir():
        raise UsclError(f"{run} exists and is not a folder")
    occupied = run.is_dir() and any(run.iterdir())
    kept: dict[int, KeptFold] = {}
    if occupied and cfg.resume:
        check_resumable(run, cfg, splits)
        kept = complete_folds(run, splits, cfg.mode, store_id, classes=splits.classes, task=cfg.task,
                              boxes_sha256=boxes_sha256)
        log(f"resuming {run}: " + (f"fold(s) {', '.join(map(str, sorted(kept)))} complete, kept" if kept
                                   else "no complete fold yet"))
    elif occupied and not cfg.overwrite:
        is_run = (run / CONFIG_FILE).is_file() and (run / SPLITS_FILE).is_file()
        hint = " (it holds a fine-tuning run: continue it with resume)" if is_run else ""
        raise UsclError(f"output folder {run} is not empty{hint}; choose another out folder, or set overwrite",
                        param="overwrite")
    elif occupied:  # overwrite: the old run's folds must not mix with the new ones
        old = [d for d in run.iterdir() if d.is_dir() and _FOLD_DIR.match(d.name)]
        for d in old:
            shutil.rmtree(d)
        if old:
            log(f"overwrite: removed {len(old)} fold folder(s) of the previous run in {run}")
    elif cfg.resume:
        log(f"resume: nothing to resume in {run}, starting a new run")
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / CONFIG_FILE, dump_yaml(replace(cfg, resume=False, overwrite=False)))
    if not (run / SPLITS_FILE).is_file() or not cfg.resume:
        splits.save(run / SPLITS_FILE)
    return run, kept


def check_resumable(run: Path, cfg: FinetuneConfig, splits: Splits) -> None:
    """Refuse to continue ``run`` unless its saved settings and folds are the ones asked for."""
    path = run / CONFIG_FILE
    if not path.is_file():
        raise UsclError(f"cannot resume {run}: no {CONFIG_FILE} (is it a fine-tuning run folder?)", param="out")
    diffs = config_differences(load_yaml(path), cfg)
    if diffs:
        raise UsclError(
            f"cannot resume {run}: its settings differ from the ones given: {'; '.join(diffs)}. "
            f"Use the run's settings (see {path}) or another out folder", param="out"
        )
    if (run / SPLITS_FILE).is_file():
        problem = splits_difference(json.loads((run / SPLITS_FILE).read_text()), splits)
        if problem:
            raise UsclError(f"cannot resume {run}: {problem} (its {SPLITS_FILE} vs the folds asked for); "
                            "use the same folds/seed/splits/classes or another out folder", param="out")


def config_differences(saved: dict, cfg: FinetuneConfig) -> list[str]:
    """``key (run: X, now: Y)`` for every setting that decides the results and differs."""
    def used(name, value, side):
        if name == "lr":  # unset means the mode's default; compare what was used
            return value if value is not None else default_lr(side.get("task") or "classify", side.get("mode"))
        if name == "where":
            return value or {}
        return value

    return setting_differences(saved, cfg, free=RESUME_FREE, normalise=used)


def splits_difference(saved: dict, splits: Splits) -> str | None:
    """Why the saved splits.json is not these folds, or None when the folds are the same."""
    if list(saved.get("classes", [])) != list(splits.classes):
        return f"classes differ (run: {','.join(saved.get('classes', []))}, now: {','.join(splits.classes)})"
    old = {int(f["index"]): f for f in saved.get("folds", [])}
    if sorted(old) != [f.index for f in splits.folds]:
        return f"the run has {len(old)} folds, the split asked for has {splits.n_folds}"
    for f in splits.folds:
        for side in ("train", "val", "test"):
            if sorted(old[f.index].get(side, [])) != sorted(getattr(f, side)):
                return f"fold {f.index} has other {side} videos"
    return None


def complete_folds(run: Path, splits: Splits, mode: str, store_id: str, classes,
                   task: str = "classify", boxes_sha256: str | None = None) -> dict[int, KeptFold]:
    """The folds of ``run`` whose outputs are complete and fit ``splits``; partial ones are left for redoing."""
    kept = {}
    for fold in splits.folds:
        k = load_complete_fold(fold_dir(run, fold.index), fold, mode, store_id, classes, task, boxes_sha256)
        if k is not None:
            kept[fold.index] = k
    return kept


def load_complete_fold(d: Path, fold: Fold, mode: str, store_id: str, classes,
                       task: str = "classify", boxes_sha256: str | None = None) -> KeptFold | None:
    files = fold_files(mode, task, boxes=boxes_sha256 is not None)
    if not (d / FOLD_METRICS).is_file() or not all((d / name).is_file() for name in files):
        return None
    try:
        metrics = json.loads((d / FOLD_METRICS).read_text())
        meta = json.loads((d / "model.json").read_text())
        preds = read_predictions(d / "predictions.csv", classes) if task == "classify" else None
    except (OSError, ValueError, UsclError):
        return None
    if metrics.get("fold") != fold.index or metrics.get("n_test_videos") != len(fold.test):
        return None
    if preds is not None and set(preds.video_ids) != set(fold.test):
        return None
    if preds is None and sorted(metrics.get("test_videos", [])) != sorted(fold.test):
        return None
    if meta.get("store_id") != store_id:
        raise UsclError(
            f"cannot resume: {d} was trained on a frame store with id {meta.get('store_id')}, but the store "
            f"given has id {store_id} (its content changed); start a new run with another out folder", param="store"
        )
    if boxes_sha256 is not None and meta.get("boxes_sha256") != boxes_sha256:
        raise UsclError(
            f"cannot resume: {d} was trained on a boxes CSV with sha256 {meta.get('boxes_sha256')}, but the boxes "
            f"given have sha256 {boxes_sha256} (the file changed); start a new run with another out folder",
            param="boxes")
    return KeptFold(metrics, preds)


def clear_fold(d: Path) -> bool:
    """Delete a fold folder's partial outputs before the fold is redone; True when there were any."""
    if d.is_dir() and any(d.iterdir()):
        shutil.rmtree(d)
        return True
    return False
