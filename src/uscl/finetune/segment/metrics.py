"""Segmentation metrics: Dice, IoU and HD95 per image and class, their summary per fold, and over folds.

Label maps are ``(H, W)`` integer arrays, 0 = background, 1..K = the
structures. Everything is per foreground class; background is never scored.

Per image (:func:`image_metrics`), for each class ``c`` with truth region
``T`` and predicted region ``P``:

* ``dice = 2|T∩P| / (|T| + |P|)``, ``iou = |T∩P| / |T∪P|``.
* ``hd95``: medpy's definition (``medpy.metric.binary.hd95``). The boundary of
  a region is its pixels with a 4-neighbour outside the region (or outside the
  image), i.e. the region minus its ``scipy.ndimage.binary_erosion`` by the
  4-connected cross. For every boundary pixel of ``P`` take the Euclidean
  distance to the nearest boundary pixel of ``T``, and vice versa; HD95 is the
  **larger of the two directed 95th percentiles** (numpy's linear
  interpolation), in pixels times ``spacing``. (Not the percentile over the
  union of both directed sets, which some other tools use; medpy's value is
  never smaller.)
* Empty regions, the rules that decide what a mean means:

  ============  ==========  =====================  ==========  =============
  truth         prediction  dice, iou              hd95        empty_truth
  ============  ==========  =====================  ==========  =============
  empty         empty       1.0, 1.0 (correct)     0.0         True
  empty         non-empty   0.0, 0.0               None        True
  non-empty     empty       0.0, 0.0 (a miss)      None        False
  non-empty     non-empty   as above               as above    False
  ============  ==========  =====================  ==========  =============

  A false positive on an empty-truth image is measured by its ``pred_area``. A
  missed structure gets ``hd95 = None`` (undefined, there is no predicted
  boundary) rather than a stand-in such as the image diagonal, which would
  depend on the image size and dominate the mean; :func:`summarise` counts
  such images as ``n_missing`` next to the HD95 mean over the rest.

Areas are pixel counts (not scaled by ``spacing``).

Per fold (:func:`summarise`), per class, over the images whose truth holds the
class: mean Dice, IoU and HD95 (HD95 over the images where it is defined,
with ``n_missing``), and the video-level means (each video's mean over its
images first, then the mean over videos, so a long clip counts once).
Empty-truth images are reported apart (how many, the share with any false
positive, the mean false-positive area), never mixed into the Dice mean. The
macro values average the classes.

Over folds (:func:`fold_summary`): mean, sample std and Student-t interval
(:func:`uscl.utils.intervals.t_interval`, unit ``"fold"``) of each fold's
macro Dice, IoU and HD95, at image and video level.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt

from uscl.utils.intervals import t_interval

METRICS = ("dice", "iou", "hd95")
LEVELS = ("image", "video")


# -- one image --------------------------------------------------------------------------------------
def _check_maps(pred, truth, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.ndim != 2 or pred.shape != truth.shape:
        raise ValueError(f"pred and truth must be (H, W) label maps of one shape, got {pred.shape} and {truth.shape}")
    for name, a in (("pred", pred), ("truth", truth)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise ValueError(f"{name} must hold integer class labels, got dtype {a.dtype}")
    if not (isinstance(num_classes, (int, np.integer)) and num_classes >= 1):
        raise ValueError(f"num_classes (foreground classes K) must be an int >= 1, got {num_classes!r}")
    pred = pred.astype(np.int64, copy=False)
    truth = truth.astype(np.int64, copy=False)
    for name, a in (("pred", pred), ("truth", truth)):
        if a.size and (a.min() < 0 or a.max() > num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes}], got [{a.min()}, {a.max()}]")
    return pred, truth


def _spacing(spacing) -> tuple[float, float]:
    try:
        sp = np.asarray(spacing, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        sp = np.zeros(0)
    if sp.size == 1:
        sp = np.repeat(sp, 2)
    if sp.size != 2 or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be a positive number or (row, column) pair, got {spacing!r}")
    return float(sp[0]), float(sp[1])


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Mask of pixels with a 4-neighbour of another label or outside the image.

    ``boundaries(L) & (L == c)`` is the boundary of class ``c``: exactly
    ``region & ~binary_erosion(region)`` with the 4-connected cross and the
    image edge counted as outside, for every class at once.
    """
    padded = np.pad(labels, 1, mode="constant", constant_values=-1)
    inner = ((padded[:-2, 1:-1] == labels) & (padded[2:, 1:-1] == labels)
             & (padded[1:-1, :-2] == labels) & (padded[1:-1, 2:] == labels))
    return ~inner


def _hd95(pred_b: np.ndarray, truth_b: np.ndarray, spacing: tuple[float, float]) -> float:
    """medpy HD95 of two non-empty boundary masks: max of the two directed 95th percentiles."""
    # crop to the boxes of both boundaries: the nearest boundary pixel of either lies inside, so distances are exact
    both = pred_b | truth_b
    rows = np.flatnonzero(both.any(1))
    cols = np.flatnonzero(both.any(0))
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    p, t = pred_b[window], truth_b[window]
    to_truth = distance_transform_edt(~t, sampling=spacing)[p]
    to_pred = distance_transform_edt(~p, sampling=spacing)[t]
    return float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


def image_metrics(pred, truth, num_classes: int, *, spacing: float | Sequence[float] = 1.0) -> list[dict]:
    """Dice, IoU, HD95 and areas of each foreground class 1..K of one ``(H, W)`` label map pair.

    Returns one row per class, ``{"class", "dice", "iou", "hd95", "truth_area",
    "pred_area", "empty_truth"}``. ``spacing``: the pixel size, one number or a
    (row, column) pair; HD95 is in those units. Empty regions follow the table
    in the module doc: both empty -> dice = iou = 1, hd95 = 0; only the truth
    empty -> dice = iou = 0, hd95 = None, the false-positive area is
    ``pred_area``; only the prediction empty (a miss) -> dice = iou = 0,
    hd95 = None.
    """
    pred, truth = _check_maps(pred, truth, num_classes)
    sp = _spacing(spacing)
    k1 = num_classes + 1
    joint = np.bincount((pred * k1 + truth).ravel(), minlength=k1 * k1).reshape(k1, k1)  # [pred, truth]
    inter = np.diag(joint)
    pred_area = joint.sum(1)
    truth_area = joint.sum(0)
    pred_edge = truth_edge = None
    rows = []
    for c in range(1, k1):
        a_t, a_p, i = int(truth_area[c]), int(pred_area[c]), int(inter[c])
        if a_t == 0 and a_p == 0:
            dice, iou, hd95 = 1.0, 1.0, 0.0
        elif a_t == 0 or a_p == 0:
            dice, iou, hd95 = 0.0, 0.0, None
        else:
            dice = 2 * i / (a_t + a_p)
            iou = i / (a_t + a_p - i)
            if pred_edge is None:  # computed once for all classes, and only if some class needs a distance
                pred_edge, truth_edge = boundaries(pred), boundaries(truth)
            hd95 = _hd95(pred_edge & (pred == c), truth_edge & (truth == c), sp)
        rows.append({"class": c, "dice": float(dice), "iou": float(iou), "hd95": hd95,
                     "truth_area": a_t, "pred_area": a_p, "empty_truth": a_t == 0})
    return rows


# -- one fold ----------------------------------------------------------------------------------------
def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarise(per_image: Sequence[dict]) -> dict:
    """Per-class and macro means of one fold's per-image rows.

    Each row: ``image_id``, ``video_id``, ``class``, ``dice``, ``iou``,
    ``hd95``, ``empty_truth``, ``pred_area`` (an :func:`image_metrics` row plus
    the two ids); one row per (image, class). Returns::

        {"classes": [c, ...],
         "per_class": {c: {"n_images", "dice", "iou", "hd95", "n_hd95", "n_missing",
                           "n_videos", "video_dice", "video_iou", "video_hd95",
                           "empty_truth": {"n", "fp_share", "mean_fp_area", "mean_fp_area_given_fp"}}},
         "macro": {"dice", "iou", "hd95", "video_dice", "video_iou", "video_hd95"}}

    Per class, ``dice``/``iou``/``hd95`` average the ``n_images`` images whose
    truth holds the class; ``hd95`` only those ``n_hd95`` where it is defined,
    ``n_missing`` counts the rest (structure present, nothing predicted). The
    ``video_*`` values average each video's mean over those images, then the
    ``n_videos`` videos (for HD95, videos with no defined value are left out).
    ``empty_truth``: the images without the class, the share of them with any
    predicted pixel of it, their mean predicted area (zeros included) and the
    mean over those with a false positive only. A value over no image is None.
    ``macro``: the mean over classes of each per-class value, over the classes
    where it is defined (a class absent from every truth of the fold is left out).
    """
    if not per_image:
        raise ValueError("no per-image rows to summarise")
    seen: set = set()
    video_of: dict = {}
    by_class: dict = defaultdict(list)
    for row in per_image:
        key = (row["image_id"], row["class"])
        if key in seen:
            raise ValueError(f"image {row['image_id']!r} has more than one row for class {row['class']}")
        seen.add(key)
        if video_of.setdefault(row["image_id"], row["video_id"]) != row["video_id"]:
            raise ValueError(f"image {row['image_id']!r} is in two videos: {video_of[row['image_id']]!r} "
                             f"and {row['video_id']!r}")
        by_class[row["class"]].append(row)

    classes = sorted(by_class)
    per_class = {}
    for c in classes:
        rows = by_class[c]
        present = [r for r in rows if not r["empty_truth"]]
        empty = [r for r in rows if r["empty_truth"]]
        for r in present:
            if r["dice"] is None or r["iou"] is None:
                raise ValueError(f"image {r['image_id']!r}, class {c}: dice and iou must be set where the truth "
                                 "holds the class")
        videos: dict = defaultdict(list)
        for r in present:
            videos[r["video_id"]].append(r)
        video_means = {m: [_mean(r[m] for r in vr) for vr in videos.values()] for m in METRICS}
        fp_areas = [float(r["pred_area"]) for r in empty]
        with_fp = [a for a in fp_areas if a > 0]
        per_class[c] = {
            "n_images": len(present),
            "dice": _mean(r["dice"] for r in present),
            "iou": _mean(r["iou"] for r in present),
            "hd95": _mean(r["hd95"] for r in present),
            "n_hd95": sum(r["hd95"] is not None for r in present),
            "n_missing": sum(r["hd95"] is None for r in present),
            "n_videos": len(videos),
            **{f"video_{m}": _mean(video_means[m]) for m in METRICS},
            "empty_truth": {
                "n": len(empty),
                "fp_share": len(with_fp) / len(empty) if empty else None,
                "mean_fp_area": _mean(fp_areas),
                "mean_fp_area_given_fp": _mean(with_fp),
            },
        }
    keys = list(METRICS) + [f"video_{m}" for m in METRICS]
    macro = {k: _mean(per_class[c][k] for c in classes) for k in keys}
    return {"classes": classes, "per_class": per_class, "macro": macro}


# -- over folds ----------------------------------------------------------------------------------------
def fold_summary(fold_results: Sequence[dict], confidence: float = 0.95) -> dict:
    """Mean, std and t-interval over folds of each fold's macro Dice, IoU and HD95, per level.

    ``fold_results``: one :func:`summarise` result per fold. Returns
    ``{"n_folds", "image": {m: stats}, "video": {m: stats}}`` for m in dice,
    iou, hd95, each ``stats = {"mean", "std", "lo", "hi", "n", "confidence",
    "values"}``: ``values`` holds every fold's value (None where a fold has
    none, e.g. no defined HD95), the rest come from
    :func:`~uscl.utils.intervals.t_interval` over the folds that have one
    (``std``/``lo``/``hi`` None below 2 folds, everything None with no value).
    """
    if not fold_results:
        raise ValueError("no fold results to summarise")
    out: dict = {"n_folds": len(fold_results)}
    for level in LEVELS:
        out[level] = {}
        for m in METRICS:
            key = m if level == "image" else f"video_{m}"
            values = [f["macro"][key] for f in fold_results]
            values = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
            vals = [v for v in values if v is not None]
            if vals:
                iv = t_interval(vals, confidence=confidence, unit="fold")
                stats = {"mean": iv.mean, "std": iv.std, "lo": iv.lo, "hi": iv.hi, "n": iv.n}
            else:
                stats = {"mean": None, "std": None, "lo": None, "hi": None, "n": 0}
            out[level][m] = {**stats, "confidence": confidence, "values": values}
    return out
