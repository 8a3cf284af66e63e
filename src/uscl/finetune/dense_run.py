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

**Boxes** (``boxes``: a CSV, :mod:`uscl.finetune.detect.boxes`): ``detect`` trains a Faster R-CNN on the
CSV's boxes instead, over the folds of the videos with at least one boxed frame
(:func:`uscl.finetune.splits.make_box_splits`, the same grouping and strata), on the boxed frames only
(a frame without a row is unannotated, not empty). There are no masks, so no label maps, Dice, IoU or HD95:
a fold writes ``detections.json`` (each test frame's truth boxes, detections and box-match score) instead
of ``per_image.csv`` and ``test_masks.npz``, and the run's summary holds box mAP@0.5 and mAP@[.5:.95]
(per fold also the per-class AP@0.5).

Model selection is honest: the last epoch, or the best mean Dice on a
validation split carved from the training fold by video (``select='val'``).
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

from uscl.checkpoint.inits import InitSpec, load_init, name_for, parse_init
from uscl.data.loader import BatchReader
from uscl.data.box_frames import BoxFrameDataset
from uscl.data.mask_frames import MaskFrameDataset
from uscl.errors import UsclError
from uscl.finetune.config import FinetuneConfig
from uscl.finetune.model_card import write_run_card
from uscl.finetune.outputs import model_meta, save_model, write_history
from uscl.finetune.run_folder import METRICS_FORMAT, FinetuneResult, clear_fold, fold_dir, open_run
from uscl.finetune.detect.boxes import BoxTable, load_boxes
from uscl.finetune.detect.evaluate import image_box_match
from uscl.finetune.detect.fold import detect_boxes_fold, detect_fold, make_detector
from uscl.finetune.segment.engine import DenseFit, score_images, segment_fold
from uscl.finetune.segment.metrics import fold_summary, summarise
from uscl.finetune.splits import Fold, Splits, carve_validation, check_leakage, load_splits, make_box_splits, make_mask_splits, \
    select_folds
from uscl.models.segmenter import build_segmenter
from uscl.store import FrameStore
from uscl.utils.atomic import atomic_write_json, atomic_write_text, atomic_write_with
from uscl.utils.intervals import t_interval
from uscl.utils.device import resolve_device
from uscl.utils.seed import derive_seed, make_generator, seed_everything, worker_init_fn

PER_IMAGE = "per_image.csv"
TEST_MASKS = "test_masks.npz"
DETECTIONS = "detections.json"  # a boxes run's test frames: truth boxes, detections, box-match score
DETECTIONS_FORMAT = "uscl-detections"
PER_IMAGE_COLUMNS = ("image_id", "video_id", "frame", "class", "class_name", "dice", "iou", "hd95", "truth_area",
                     "pred_area", "empty_truth")


def _make_segmenter(arch: str, num_classes: int, init_sd, source: str, cfg: FinetuneConfig):
    return build_segmenter(arch, num_classes, init_sd, source)


# task -> (network builder (arch, K, init state dict, init source, cfg), fold function)
TASKS = {"segment": (_make_segmenter, segment_fold), "detect": (make_detector, detect_fold)}
# detection's per-fold COCO metrics summarised over folds (and paired in comparisons)
DETECTION_METRICS = ("bbox_map50", "bbox_map", "segm_map50", "segm_map")
BOX_METRICS = ("bbox_map50", "bbox_map")  # a boxes run has no masks


def detection_keys(metrics: dict) -> tuple[str, ...]:
    """The COCO metrics a detection run's metrics.json summarises."""
    return BOX_METRICS if metrics.get("annotations") == "boxes" else DETECTION_METRICS


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
    boxes: BoxTable | None = None  # detection from a boxes CSV

    @property
    def classes(self) -> list[str]:
        return self.splits.classes


def build_mask_splits(cfg: FinetuneConfig, store, boxes: BoxTable | None = None) -> Splits:
    """The folds of a segmentation or detection run: reused (``cfg.splits``) or generated over the masked
    videos, or with ``cfg.boxes`` over the videos with boxes (``boxes``: the CSV read already)."""
    if cfg.boxes and boxes is None:
        boxes = load_boxes(cfg.boxes, store)
    classes = boxes.classes if boxes is not None else store.mask_classes
    if cfg.splits:
        splits = load_splits(cfg.splits, store, where=cfg.where or None)
        if splits.classes != classes:
            what = f"the classes of {cfg.boxes}" if boxes is not None else "this store's mask classes"
            raise UsclError(f"{cfg.splits} is a split of classes {', '.join(splits.classes)}, not of {what} "
                            f"{', '.join(classes)}", param="splits")
        if any(f.val for f in splits.folds) and cfg.select != "val":
            for f in splits.folds:
                f.train, f.val = sorted(f.train + f.val), []
    elif boxes is not None:
        boxed = {store.videos[v].video_id for v in boxes.video_indices()}
        splits = make_box_splits(store, boxed, classes, cfg.folds, cfg.seed, cfg.where or None)
    else:
        splits = make_mask_splits(store, cfg.folds, cfg.seed, cfg.where or None)
    if boxes is not None:
        check_boxed(splits, store, boxes)
    if cfg.select == "val" and not any(f.val for f in splits.folds):
        splits = carve_validation(splits, cfg.val_fraction, cfg.seed)
    check_leakage(splits, store)
    return splits


def check_boxed(splits: Splits, store, boxes: BoxTable) -> None:
    """A split given to a boxes run must be of the CSV's classes and hold only videos with boxes."""
    if splits.classes != boxes.classes:
        raise UsclError(f"the folds are of classes {', '.join(splits.classes)}, not of the classes of "
                        f"{boxes.path} ({', '.join(boxes.classes)})", param="splits")
    boxed = {store.videos[v].video_id for v in boxes.video_indices()}
    missing = sorted({v for f in splits.folds for v in f.train + f.val + f.test} - boxed)
    if missing:
        raise UsclError(f"{len(missing)} video(s) of the folds have no box in {boxes.path}: "
                        f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}", param="splits")


def plan_dense(cfg: FinetuneConfig, splits: Splits | None, log=print) -> _Plan:
    """Open the store, make or check the folds, load and check the init: everything, before any output."""
    store = FrameStore(cfg.store)
    boxes = load_boxes(cfg.boxes, store) if cfg.boxes else None
    splits = build_mask_splits(cfg, store, boxes) if splits is None else splits
    if boxes is not None:
        check_boxed(splits, store, boxes)
    check_leakage(splits, store)
    spec = parse_init(cfg.init)
    init_sd, init_meta = load_init(spec, unsafe_pickle=cfg.unsafe_pickle)
    arch = cfg.arch or init_meta.get("arch") or "resnet18"
    TASKS[cfg.task][0](arch, len(splits.classes), init_sd, spec.spec, cfg)  # key/arch problems before any output
    return _Plan(cfg, store, splits, spec, init_sd, init_meta, name_for(spec, init_meta), arch,
                 resolve_device(cfg.device), select_folds(splits, cfg.only_folds), boxes)


def finetune_dense(cfg: FinetuneConfig, *, splits: Splits | None = None, log=print,
                   log_splits: bool = True) -> FinetuneResult:
    """Fine-tune and evaluate one init for segmentation or detection over the folds; see the module docstring."""
    cfg.validate()
    if cfg.task not in TASKS:
        raise UsclError(f"task {cfg.task} is not a segmentation or detection task", param="task")
    t0 = time.time()
    plan = plan_dense(cfg, splits, log)
    run, kept = open_run(cfg, plan.splits, plan.store.store_id, log=log,
                         boxes_sha256=plan.boxes.sha256 if plan.boxes else None)
    log(f"finetune --task {cfg.task} {plan.init_name} ({plan.spec.spec}) mode={cfg.mode} arch={plan.arch} on "
        f"{plan.device}; classes {', '.join(plan.classes)}; "
        + (plan.splits.summary().splitlines()[0] if log_splits else "the folds above"))
    base_meta = {**model_meta(cfg, plan.store, plan.arch, plan.classes, plan.spec.spec, plan.init_name),
                 "task": cfg.task}
    if plan.boxes is not None:
        base_meta.update(annotations="boxes", box_classes=plan.classes, boxes_csv=str(plan.boxes.path),
                         boxes_sha256=plan.boxes.sha256)
        log(f"boxes from {plan.boxes.path}: {plan.boxes.n_boxes} boxes on {len(plan.boxes.targets)} frames of "
            f"{len(plan.boxes.video_indices())} videos; Faster R-CNN (no masks)")
    else:
        base_meta["mask_classes"] = plan.classes
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
    cover = f" ({metrics['coverage']})" if metrics["coverage"] else ""
    if plan.boxes is None:
        s = metrics["summary"]["image"]["dice"]
        log(f"{plan.init_name}: mean Dice {_num(s['mean'])} [{_num(s['lo'])}, {_num(s['hi'])}] over "
            f"{len(metrics['folds_run'])} folds" + cover)
    else:
        log(f"{plan.init_name}: over {len(metrics['folds_run'])} folds{cover}")
    for key in detection_keys(metrics) if cfg.task == "detect" else ():
        d = metrics["summary"]["detection"][key]
        log(f"{plan.init_name}: {key} {_num(d['mean'])} [{_num(d['lo'])}, {_num(d['hi'])}]")
    return FinetuneResult(run, metrics, plan.splits, plan.init_name)


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _loader(store, videos: list[int], cfg: FinetuneConfig, *, train: bool, seed: int, max_frames=None,
            boxes: BoxTable | None = None):
    ds = MaskFrameDataset(store, videos, max_frames_per_video=max_frames) if boxes is None else \
        BoxFrameDataset(store, videos, boxes, max_frames_per_video=max_frames)
    generator = make_generator(seed)
    order = torch.utils.data.RandomSampler(ds, generator=generator) if train else \
        torch.utils.data.SequentialSampler(ds)
    n = len(ds)
    batches = torch.utils.data.BatchSampler(order, cfg.batch_size,
                                            drop_last=train and n > 1 and n % cfg.batch_size == 1)
    return torch.utils.data.DataLoader(BatchReader(ds), batch_size=None, sampler=batches, num_workers=cfg.workers,
                                       worker_init_fn=worker_init_fn if cfg.workers else None, generator=generator)


def fold_loaders(store, fold: Fold, cfg: FinetuneConfig, seed: int, boxes: BoxTable | None = None) -> dict:
    """``{"train", "test"[, "val"]}`` loaders of a fold's masked frames (``boxes``: its boxed frames)."""
    idx = {side: [store.index_of(v) for v in getattr(fold, side)] for side in ("train", "val", "test")}
    loaders = {"train": _loader(store, idx["train"], cfg, train=True, seed=derive_seed(seed, "loader", "train"),
                                max_frames=cfg.max_frames_per_video, boxes=boxes),
               "test": _loader(store, idx["test"], cfg, train=False, seed=derive_seed(seed, "loader", "test"),
                               boxes=boxes)}
    if idx["val"]:
        loaders["val"] = _loader(store, idx["val"], cfg, train=False, seed=derive_seed(seed, "loader", "val"),
                                 boxes=boxes)
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
    if plan.boxes is not None:
        fold_fn = detect_boxes_fold
    model = build(plan.arch, len(plan.classes), plan.init_sd, plan.spec.spec, cfg)
    loaders = fold_loaders(plan.store, fold, cfg, fold_seed, plan.boxes)
    video_ids = [v.video_id for v in plan.store.videos]
    fit = fold_fn(cfg, plan.device, model, loaders, fold_seed, video_ids, plan.classes, desc=f"fold {fold.index}")
    if plan.boxes is not None:
        fres = write_box_fold(plan, fdir, fold, fit, base_meta, video_ids)
        c = fres["coco"]
        log(f"  fold {fold.index}: box mAP@0.5 {_num(c.get('bbox_map50'))}, mAP@[.5:.95] {_num(c.get('bbox_map'))} "
            f"on {fres['n_test_images']} boxed test frames")
        return fres
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
    return _finish_fold(fdir, fold, fit, base_meta,
                        {"n_test_images": int(len(fit.pred["frames"])), "summary": summarise(rows)})


def _finish_fold(fdir: Path, fold: Fold, fit: DenseFit, base_meta: dict, scores: dict) -> dict:
    """history.csv, the model, and last the fold's metrics.json (its presence marks the fold complete)."""
    write_history(fdir / "history.csv", fit.history)
    save_model(fdir / "model.safetensors", fit.tensors,
               {**base_meta, **fit.meta, "fold": fold.index, "train_videos": len(fold.train),
                "test_videos": fold.test, "val_videos": fold.val})
    fres = {"fold": fold.index, "selected_epoch": fit.selected_epoch, "n_train_videos": len(fold.train),
            "n_val_videos": len(fold.val), "n_test_videos": len(fold.test), "test_videos": sorted(fold.test),
            **scores, **fit.extra}
    atomic_write_json(fdir / "metrics.json", fres)
    return fres


def _boxes_json(boxes, digits: int = 2) -> list[list[float]]:
    return [[round(float(x), digits) for x in b] for b in boxes.reshape(-1, 4).tolist()]


def write_detections(path: Path, fit: DenseFit, classes: list[str], video_ids: list[str]) -> list[float]:
    """``detections.json`` of a boxes fold's test frames; returns each frame's box-match score."""
    images, matches = [], []
    for v, t, truth, det in zip(fit.pred["videos"], fit.pred["frames"], fit.pred["targets"], fit.pred["detections"]):
        match = image_box_match(truth, det)
        matches.append(match)
        images.append({"video_id": video_ids[int(v)], "frame": int(t), "box_match": round(match, 4),
                       "truth": {"boxes": _boxes_json(truth["boxes"]), "labels": truth["labels"].tolist()},
                       "detections": {"boxes": _boxes_json(det["boxes"]), "labels": det["labels"].tolist(),
                                      "scores": [round(float(x), 4) for x in det["scores"].tolist()]}})
    atomic_write_json(path, {
        "format": DETECTIONS_FORMAT, "version": 1, "classes": classes,
        "boxes": "x1, y1, x2, y2 in pixels of the stored frame, x2/y2 exclusive; labels 1..K = classes[k - 1]",
        "box_match": "detections scoring >= 0.5 greedily matched (by score) to same-class truth boxes; "
                     "sum of matched IoUs / (truth boxes + unmatched detections)",
        "images": images})
    return matches


def write_box_fold(plan: _Plan, fdir: Path, fold: Fold, fit: DenseFit, base_meta: dict, video_ids: list[str]) -> dict:
    """detections.json, history.csv, the model, and last its metrics.json (a fold of a boxes run)."""
    fdir.mkdir(parents=True, exist_ok=True)
    matches = write_detections(fdir / DETECTIONS, fit, plan.classes, video_ids)
    return _finish_fold(fdir, fold, fit, base_meta, {
        "n_test_images": len(matches), "n_test_boxes": int(sum(len(t["labels"]) for t in fit.pred["targets"])),
        "mean_box_match": float(np.mean(matches)) if matches else None})


def read_detections(path: Path) -> dict:
    """A boxes fold's detections.json."""
    return json.loads(Path(path).read_text())


def run_metrics(plan: _Plan, run: Path, done: dict[int, dict], trained: list[int], kept: list[int],
                t0: float) -> dict:
    """The run's metrics.json: per fold, mean and CI over folds, and the summary pooled over every test image."""
    from uscl.finetune.metrics import folds_coverage

    cfg, splits = plan.cfg, plan.splits
    folds_run = [f.index for f in splits.folds if f.index in done]
    fold_results = [done[k] for k in folds_run]
    coverage = folds_coverage(folds_run, splits.n_folds)
    if plan.boxes is not None:  # no masks: box mAP only, nothing pooled per image
        summary = {"n_folds": len(fold_results), "detection": detection_summary(fold_results, keys=BOX_METRICS)}
        pooled = None
    else:
        pooled = summarise([r for k in folds_run for r in read_per_image(fold_dir(run, k) / PER_IMAGE)])
        summary = {**fold_summary([f["summary"] for f in fold_results]),
                   **({"detection": detection_summary(fold_results)} if cfg.task == "detect" else {})}
    return {
        "format": METRICS_FORMAT, "version": 1, "task": cfg.task,
        "annotations": "boxes" if plan.boxes is not None else "masks",
        **({"boxes": str(plan.boxes.path), "boxes_sha256": plan.boxes.sha256} if plan.boxes is not None else {}),
        "init": plan.init_name, "init_spec": plan.spec.spec,
        "init_meta": {k: v for k, v in plan.init_meta.items() if isinstance(v, (str, int, float, bool)) or v is None},
        "mode": cfg.mode, "arch": plan.arch, "classes": plan.classes, "selection": cfg.selection,
        "selected_on_test": False, "warning": None, "pretraining_label_leakage": None,
        "n_folds": splits.n_folds, "folds_run": folds_run, "complete": coverage is None, "coverage": coverage,
        "folds_trained_now": trained, "folds_kept": kept, "split_method": splits.method,
        "store": str(cfg.store), "store_id": plan.store.store_id, "device": str(plan.device),
        "elapsed_s": round(time.time() - t0, 2), "folds": fold_results,
        "summary": summary,
        "pooled": pooled,
    }


def detection_summary(fold_results: list[dict], confidence: float = 0.95,
                      keys: tuple[str, ...] = DETECTION_METRICS) -> dict:
    """Mean, std and t-interval over folds of each COCO metric ``keys`` (NaN: nothing to measure in that fold)."""
    out = {}
    for key in keys:
        values = [f.get("coco", {}).get(key) for f in fold_results]
        values = [None if v is None or v != v else float(v) for v in values]
        vals = [v for v in values if v is not None]
        iv = t_interval(vals, confidence, "fold") if vals else None
        out[key] = {"mean": iv.mean if iv else None, "std": iv.std if iv else None, "lo": iv.lo if iv else None,
                    "hi": iv.hi if iv else None, "n": len(vals), "values": values}
    return out
