"""k-fold segmentation and detection fine-tuning: :func:`finetune_dense` (``uscl finetune --task segment|detect``).

One run = one init x one mode (frozen, paper, full) x one task over the folds
of the videos that have masks, grouped by patient (:func:`uscl.finetune.splits.make_mask_splits`),
with the same run folder rules as classification (:mod:`uscl.finetune.run_folder`:
refusal to overwrite, ``resume`` keeping complete folds, the leakage check).
The task decides the network and the fold function (:data:`TASKS`):
``segment`` trains the U-Net segmenter (:func:`uscl.finetune.segment.engine.segment_fold`),
``detect`` torchvision's Mask R-CNN (:func:`uscl.finetune.detect.fold.detect_fold`), both
on the same initialised ResNet. Both hand back label maps of the test frames
(a detector's kept instances painted by class), so both are scored by the same
Dice, IoU and HD95; detection adds COCO box and mask mAP per fold.

Per fold it writes ``model.safetensors`` (+ ``model.json``: task, mask classes,
preprocessing), ``history.csv``, ``per_image.csv`` (Dice, IoU, HD95 per test
image and class), ``test_masks.npz`` (the predicted label maps of the test
frames, for overlays) and last ``metrics.json``; the run root gets
``config.yaml``, ``splits.json`` and ``metrics.json`` (per fold, the mean and
95% CI over folds at image and video level, detection's mAPs the same way, and
the pooled per-image summary).

Model selection is honest: the last epoch, or the best mean Dice on a
validation split carved from the training fold by video (``select='val'``).
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uscl.checkpoint.inits import InitSpec, load_init, name_for, parse_init
from uscl.data.loader import BatchReader
from uscl.data.mask_frames import MaskFrameDataset
from uscl.errors import UsclError
from uscl.finetune.config import FinetuneConfig
from uscl.finetune.model_card import write_run_card
from uscl.finetune.outputs import model_meta, save_model, write_history
from uscl.finetune.run_folder import METRICS_FORMAT, clear_fold, fold_dir, open_run
from uscl.finetune.detect.fold import detect_fold, make_detector
from uscl.finetune.segment.engine import DenseFit, score_images, segment_fold
from uscl.finetune.segment.metrics import fold_summary, summarise
from uscl.finetune.splits import Fold, Splits, carve_validation, check_leakage, load_splits, make_mask_splits, select_folds
from uscl.models.segmenter import build_segmenter
from uscl.store import FrameStore
from uscl.utils.atomic import atomic_write_json, atomic_write_text, atomic_write_with
from uscl.utils.intervals import t_interval
from uscl.utils.device import resolve_device
from uscl.utils.seed import derive_seed, make_generator, seed_everything, worker_init_fn

PER_IMAGE = "per_image.csv"
TEST_MASKS = "test_masks.npz"
PER_IMAGE_COLUMNS = ("image_id", "video_id", "frame", "class", "class_name", "dice", "iou", "hd95", "truth_area",
                     "pred_area", "empty_truth")


def _make_segmenter(arch: str, num_classes: int, init_sd, source: str, cfg: FinetuneConfig):
    return build_segmenter(arch, num_classes, init_sd, source)


# task -> (network builder (arch, K, init state dict, init source, cfg), fold function)
TASKS = {"segment": (_make_segmenter, segment_fold), "detect": (make_detector, detect_fold)}
# detection's per-fold COCO metrics summarised over folds (and paired in comparisons)
DETECTION_METRICS = ("bbox_map50", "bbox_map", "segm_map50", "segm_map")


@dataclass
class DenseResult:
    run_dir: Path
    metrics: dict
    splits: Splits
    init_name: str


@dataclass
class _Plan:
    cfg: FinetuneConfig
    store: FrameStore
    splits: Splits
    spec: InitSpec
    init_sd: dict | None
    init_meta: dict
    init_name: str
    arch: str
    device: torch.device
    selected: list[Fold]

    @property
    def classes(self) -> list[str]:
        return self.splits.classes


def build_mask_splits(cfg: FinetuneConfig, store) -> Splits:
    """The folds of a segmentation run: reused (``cfg.splits``) or generated over the masked videos."""
    if cfg.splits:
        splits = load_splits(cfg.splits, store, where=cfg.where or None)
        if splits.classes != store.mask_classes:
            raise UsclError(f"{cfg.splits} is a split of classes {', '.join(splits.classes)}, not of this store's "
                            f"mask classes {', '.join(store.mask_classes)}", param="splits")
        if any(f.val for f in splits.folds) and cfg.select != "val":
            for f in splits.folds:
                f.train, f.val = sorted(f.train + f.val), []
    else:
        splits = make_mask_splits(store, cfg.folds, cfg.seed, cfg.where or None)
    if cfg.select == "val" and not any(f.val for f in splits.folds):
        splits = carve_validation(splits, cfg.val_fraction, cfg.seed)
    check_leakage(splits, store)
    return splits


def plan_dense(cfg: FinetuneConfig, splits: Splits | None, log=print) -> _Plan:
    """Open the store, make or check the folds, load and check the init: everything, before any output."""
    store = FrameStore(cfg.store)
    splits = build_mask_splits(cfg, store) if splits is None else splits
    check_leakage(splits, store)
    spec = parse_init(cfg.init)
    init_sd, init_meta = load_init(spec, unsafe_pickle=cfg.unsafe_pickle)
    arch = cfg.arch or init_meta.get("arch") or "resnet18"
    TASKS[cfg.task][0](arch, len(splits.classes), init_sd, spec.spec, cfg)  # key/arch problems before any output
    return _Plan(cfg, store, splits, spec, init_sd, init_meta, name_for(spec, init_meta), arch,
                 resolve_device(cfg.device), select_folds(splits, cfg.only_folds))


def finetune_dense(cfg: FinetuneConfig, *, splits: Splits | None = None, log=print,
                   log_splits: bool = True) -> DenseResult:
    """Fine-tune and evaluate one init for segmentation or detection over the folds; see the module docstring."""
    cfg.validate()
    if cfg.task not in TASKS:
        raise UsclError(f"task {cfg.task} is not a segmentation or detection task", param="task")
    t0 = time.time()
    plan = plan_dense(cfg, splits, log)
    run, kept = open_run(cfg, plan.splits, plan.store.store_id, log=log)
    log(f"finetune --task {cfg.task} {plan.init_name} ({plan.spec.spec}) mode={cfg.mode} arch={plan.arch} on "
        f"{plan.device}; classes {', '.join(plan.classes)}; "
        + (plan.splits.summary().splitlines()[0] if log_splits else "the folds above"))
    base_meta = {**model_meta(cfg, plan.store, plan.arch, plan.classes, plan.spec.spec, plan.init_name),
                 "task": cfg.task, "mask_classes": plan.classes}
    done = {k: kf.metrics for k, kf in kept.items()}
    trained = []
    for fold in plan.selected:
        if fold.index in kept:
            log(f"  fold {fold.index}: complete outputs found, kept (resume)")
            continue
        done[fold.index] = run_fold(plan, run, fold, base_meta, log)
        trained.append(fold.index)
    metrics = run_metrics(plan, run, done, trained, sorted(k for k in kept if k in done), t0)
    atomic_write_json(run / "metrics.json", metrics)
    write_run_card(run, plan.store)  # MODEL_CARD.md + model_card.json, from the files just written
    s = metrics["summary"]["image"]["dice"]
    log(f"{plan.init_name}: mean Dice {_num(s['mean'])} [{_num(s['lo'])}, {_num(s['hi'])}] over "
        f"{len(metrics['folds_run'])} folds" + (f" ({metrics['coverage']})" if metrics["coverage"] else ""))
    for key in DETECTION_METRICS if cfg.task == "detect" else ():
        d = metrics["summary"]["detection"][key]
        log(f"{plan.init_name}: {key} {_num(d['mean'])} [{_num(d['lo'])}, {_num(d['hi'])}]")
    return DenseResult(run, metrics, plan.splits, plan.init_name)


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _loader(store, videos: list[int], cfg: FinetuneConfig, *, train: bool, seed: int, max_frames=None):
    ds = MaskFrameDataset(store, videos, max_frames_per_video=max_frames)
    generator = make_generator(seed)
    order = torch.utils.data.RandomSampler(ds, generator=generator) if train else \
        torch.utils.data.SequentialSampler(ds)
    n = len(ds)
    batches = torch.utils.data.BatchSampler(order, cfg.batch_size,
                                            drop_last=train and n > 1 and n % cfg.batch_size == 1)
    return torch.utils.data.DataLoader(BatchReader(ds), batch_size=None, sampler=batches, num_workers=cfg.workers,
                                       worker_init_fn=worker_init_fn if cfg.workers else None, generator=generator)


def fold_loaders(store, fold: Fold, cfg: FinetuneConfig, seed: int) -> dict:
    """``{"train", "test"[, "val"]}`` loaders of a fold's masked frames."""
    idx = {side: [store.index_of(v) for v in getattr(fold, side)] for side in ("train", "val", "test")}
    loaders = {"train": _loader(store, idx["train"], cfg, train=True, seed=derive_seed(seed, "loader", "train"),
                                max_frames=cfg.max_frames_per_video),
               "test": _loader(store, idx["test"], cfg, train=False, seed=derive_seed(seed, "loader", "test"))}
    if idx["val"]:
        loaders["val"] = _loader(store, idx["val"], cfg, train=False, seed=derive_seed(seed, "loader", "val"))
    return loaders


def run_fold(plan: _Plan, run: Path, fold: Fold, base_meta: dict, log=print) -> dict:
    """Train one fold from scratch and write its outputs; returns its metrics.json."""
    cfg = plan.cfg
    fdir = fold_dir(run, fold.index)
    if clear_fold(fdir):
        log(f"  fold {fold.index}: deleted the partial outputs of an unfinished run, redoing it")
    fold_seed = derive_seed(cfg.seed, "fold", fold.index)
    seed_everything(fold_seed)
    build, fold_fn = TASKS[cfg.task]
    model = build(plan.arch, len(plan.classes), plan.init_sd, plan.spec.spec, cfg)
    loaders = fold_loaders(plan.store, fold, cfg, fold_seed)
    video_ids = [v.video_id for v in plan.store.videos]
    fit = fold_fn(cfg, plan.device, model, loaders, fold_seed, video_ids, plan.classes, desc=f"fold {fold.index}")
    fres = write_fold(plan, fdir, fold, fit, base_meta, video_ids)
    d = fres["summary"]["macro"]
    coco = fres.get("coco") or {}
    log(f"  fold {fold.index}: mean Dice {_num(d['dice'])}, IoU {_num(d['iou'])}, HD95 {_num(d['hd95'])} px, "
        f"video Dice {_num(d['video_dice'])}"
        + (f", box mAP@0.5 {_num(coco.get('bbox_map50'))}, mask mAP@0.5 {_num(coco.get('segm_map50'))}"
           if coco else "")
        + (f" (epoch {fit.selected_epoch} on val)" if cfg.select == "val" else ""))
    return fres


def write_per_image(path: Path, rows: list[dict], classes: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=PER_IMAGE_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**{k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in r.items()},
                    "class_name": classes[int(r["class"]) - 1]})
    atomic_write_text(path, buf.getvalue())


def read_per_image(path: Path) -> list[dict]:
    """The rows of a fold's per_image.csv, typed back (hd95 None where undefined)."""
    def num(v):
        return None if v in ("", None) else float(v)

    with open(path, newline="") as fh:
        return [{**r, "frame": int(r["frame"]), "class": int(r["class"]), "dice": num(r["dice"]), "iou": num(r["iou"]),
                 "hd95": num(r["hd95"]), "truth_area": int(float(r["truth_area"])),
                 "pred_area": int(float(r["pred_area"])), "empty_truth": r["empty_truth"] == "True"}
                for r in csv.DictReader(fh)]


def save_test_masks(path: Path, pred: dict[str, np.ndarray]) -> None:
    """The test frames' predicted label maps, compressed (np.load with allow_pickle=False reads them back)."""
    atomic_write_with(path, lambda tmp: np.savez_compressed(
        tmp, videos=pred["videos"], frames=pred["frames"], pred=pred["pred"]), suffix=".npz")


def write_fold(plan: _Plan, fdir: Path, fold: Fold, fit: DenseFit, base_meta: dict, video_ids: list[str]) -> dict:
    """per_image.csv, test_masks.npz, history.csv, the model, and last its metrics.json."""
    fdir.mkdir(parents=True, exist_ok=True)
    rows = score_images(fit.pred, len(plan.classes), video_ids)
    write_per_image(fdir / PER_IMAGE, rows, plan.classes)
    save_test_masks(fdir / TEST_MASKS, fit.pred)
    write_history(fdir / "history.csv", fit.history)
    save_model(fdir / "model.safetensors", fit.tensors,
               {**base_meta, **fit.meta, "fold": fold.index, "train_videos": len(fold.train),
                "test_videos": fold.test, "val_videos": fold.val})
    fres = {"fold": fold.index, "selected_epoch": fit.selected_epoch, "n_train_videos": len(fold.train),
            "n_val_videos": len(fold.val), "n_test_videos": len(fold.test), "test_videos": sorted(fold.test),
            "n_test_images": int(len(fit.pred["frames"])), "summary": summarise(rows), **fit.extra}
    atomic_write_json(fdir / "metrics.json", fres)  # last: its presence marks the fold complete
    return fres


def run_metrics(plan: _Plan, run: Path, done: dict[int, dict], trained: list[int], kept: list[int],
                t0: float) -> dict:
    """The run's metrics.json: per fold, mean and CI over folds, and the summary pooled over every test image."""
    from uscl.finetune.metrics import folds_coverage

    cfg, splits = plan.cfg, plan.splits
    folds_run = [f.index for f in splits.folds if f.index in done]
    fold_results = [done[k] for k in folds_run]
    pooled = summarise([r for k in folds_run for r in read_per_image(fold_dir(run, k) / PER_IMAGE)])
    coverage = folds_coverage(folds_run, splits.n_folds)
    return {
        "format": METRICS_FORMAT, "version": 1, "task": cfg.task,
        "init": plan.init_name, "init_spec": plan.spec.spec,
        "init_meta": {k: v for k, v in plan.init_meta.items() if isinstance(v, (str, int, float, bool)) or v is None},
        "mode": cfg.mode, "arch": plan.arch, "classes": plan.classes, "selection": cfg.selection,
        "selected_on_test": False, "warning": None, "pretraining_label_leakage": None,
        "n_folds": splits.n_folds, "folds_run": folds_run, "complete": coverage is None, "coverage": coverage,
        "folds_trained_now": trained, "folds_kept": kept, "split_method": splits.method,
        "store": str(cfg.store), "store_id": plan.store.store_id, "device": str(plan.device),
        "elapsed_s": round(time.time() - t0, 2), "folds": fold_results,
        "summary": {**fold_summary([f["summary"] for f in fold_results]),
                    **({"detection": detection_summary(fold_results)} if cfg.task == "detect" else {})},
        "pooled": pooled,
    }


def detection_summary(fold_results: list[dict], confidence: float = 0.95) -> dict:
    """Mean, std and t-interval over folds of each COCO metric (NaN: nothing to measure in that fold)."""
    out = {}
    for key in DETECTION_METRICS:
        values = [f.get("coco", {}).get(key) for f in fold_results]
        values = [None if v is None or v != v else float(v) for v in values]
        vals = [v for v in values if v is not None]
        iv = t_interval(vals, confidence, "fold") if vals else None
        out[key] = {"mean": iv.mean if iv else None, "std": iv.std if iv else None, "lo": iv.lo if iv else None,
                    "hi": iv.hi if iv else None, "n": len(vals), "values": values}
    return out
