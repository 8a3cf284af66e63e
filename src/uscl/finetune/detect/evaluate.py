"""COCO evaluation of detections (pycocotools), and the Dice of predicted masks.

:func:`coco_metrics` builds the ground-truth ``COCO`` object in memory from the
same target dicts the detector trains on (boxes xyxy with exclusive x2/y2,
labels 1..K, optional masks -> RLE), turns the predictions into COCO result
lists, and runs ``COCOeval`` for ``bbox`` (and ``segm`` when both sides have
masks). Its console output is silenced; its numbers are returned:

* ``{type}_map``   - mAP@[0.5:0.95] (COCO's primary metric, ``stats[0]``)
* ``{type}_map50`` - mAP@0.5 (``stats[1]``, the USCL paper's detection number)
* ``{type}_ap50_{class name}`` - per-class AP@0.5

Conventions: an image with neither ground truth nor predictions counts for
nothing; predictions on an image without ground truth are false positives.
No predictions at all (with some ground truth) is 0.0. A metric with no ground
truth to measure against (no instance at all, or none of a class) is NaN, as
COCO's own -1 "undefined" - never 0, which would read as a failed detector.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    b = boxes.astype(np.float64).reshape(-1, 4).copy()
    b[:, 2:] -= b[:, :2]
    return b


def _rle(masks: np.ndarray) -> list[dict]:
    """(N, H, W) binary masks -> COCO RLEs (counts as str, so the dicts are JSON-able)."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8).transpose(1, 2, 0)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def _masks(d: dict) -> np.ndarray | None:
    m = d.get("masks")
    if m is None:
        return None
    m = _np(m)
    if m.ndim == 4:  # torchvision's raw (N, 1, H, W) probabilities
        m = m[:, 0]
    if m.dtype.kind == "f":
        m = m >= 0.5
    return m.astype(np.uint8)


def _image_size(t: dict) -> tuple[int, int]:
    m = t.get("masks")
    if m is not None:
        return int(m.shape[-2]), int(m.shape[-1])
    if "size" in t:
        h, w = (int(v) for v in _np(t["size"]).reshape(-1)[:2])
        return h, w
    return 0, 0  # boxes only: COCO's bbox evaluation does not use the image size


def coco_ground_truth(targets: list[dict], class_names: list[str], with_masks: bool) -> COCO:
    """An in-memory ``COCO`` of the targets: image ids 0..n-1, category ids 1..K."""
    images, anns = [], []
    for img_id, t in enumerate(targets):
        h, w = _image_size(t)
        images.append({"id": img_id, "height": h, "width": w})
        boxes = _np(t["boxes"]).reshape(-1, 4)
        labels = _np(t["labels"]).reshape(-1)
        if labels.size and (labels.min() < 1 or labels.max() > len(class_names)):
            raise ValueError(f"target {img_id} has labels {sorted(set(labels.tolist()))} outside 1..{len(class_names)} "
                             f"(class_names: {', '.join(class_names)})")
        xywh = _xywh(boxes)
        masks = _masks(t) if with_masks else None
        rles = _rle(masks) if masks is not None else [None] * len(boxes)
        for j in range(len(boxes)):
            ann = {"id": len(anns) + 1, "image_id": img_id, "category_id": int(labels[j]),
                   "bbox": [float(v) for v in xywh[j]], "iscrowd": 0,
                   "area": float(xywh[j, 2] * xywh[j, 3])}
            if rles[j] is not None:
                ann["segmentation"] = rles[j]
                ann["area"] = float(masks[j].sum())
            anns.append(ann)
    cats = [{"id": i + 1, "name": str(n)} for i, n in enumerate(class_names)]
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": cats}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def coco_results(predictions: list[dict], iou_type: str) -> list[dict]:
    """Predictions (boxes xyxy, labels, scores, [masks]) per image -> a COCO results list."""
    out = []
    for img_id, p in enumerate(predictions):
        boxes = _np(p["boxes"]).reshape(-1, 4)
        labels = _np(p["labels"]).reshape(-1)
        scores = _np(p["scores"]).reshape(-1)
        xywh = _xywh(boxes)
        rles = _rle(_masks(p)) if iou_type == "segm" else None
        for j in range(len(boxes)):
            r = {"image_id": img_id, "category_id": int(labels[j]), "score": float(scores[j])}
            if iou_type == "segm":
                r["segmentation"] = rles[j]
            else:
                r["bbox"] = [float(v) for v in xywh[j]]
            out.append(r)
    return out


def _nan(v: float) -> float:
    return math.nan if v < 0 else float(v)


def _evaluate(gt: COCO, results: list[dict], iou_type: str, class_names: list[str]) -> dict[str, float]:
    n_gt = len(gt.dataset["annotations"])
    per_class_gt = {i + 1: 0 for i in range(len(class_names))}
    for a in gt.dataset["annotations"]:
        per_class_gt[a["category_id"]] = per_class_gt.get(a["category_id"], 0) + 1
    out: dict[str, float] = {}
    if not results:  # loadRes cannot take an empty list; nothing found is AP 0 wherever there was something
        out[f"{iou_type}_map"] = 0.0 if n_gt else math.nan
        out[f"{iou_type}_map50"] = 0.0 if n_gt else math.nan
        for i, name in enumerate(class_names):
            out[f"{iou_type}_ap50_{name}"] = 0.0 if per_class_gt[i + 1] else math.nan
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType=iou_type)
        ev.params.imgIds = sorted(gt.getImgIds())
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out[f"{iou_type}_map"] = _nan(ev.stats[0])
    out[f"{iou_type}_map50"] = _nan(ev.stats[1])
    # precision: [iou thresholds, recall points, categories, area ranges, max dets]; 0.5, all areas, 100 dets
    prec = ev.eval["precision"]
    t50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))
    for k, cat_id in enumerate(ev.params.catIds):
        p = prec[t50, :, k, 0, -1]
        p = p[p > -1]
        out[f"{iou_type}_ap50_{class_names[cat_id - 1]}"] = float(p.mean()) if p.size else math.nan
    return out


def coco_metrics(targets: list[dict], predictions: list[dict], class_names: list[str]) -> dict[str, float]:
    """bbox (and segm) mAP, mAP@0.5 and per-class AP@0.5 of ``predictions`` against ``targets``.

    ``targets[i]`` and ``predictions[i]`` are the same image. Targets: boxes (N, 4) xyxy, labels 1..K,
    optional masks (N, H, W). Predictions: boxes, labels, scores, optional masks (uint8, or
    probabilities thresholded at 0.5). ``segm`` is evaluated when every target and prediction has masks.
    ``class_names[k - 1]`` names label k.
    """
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions (one of each per image)")
    class_names = [str(c) for c in class_names]
    types = ["bbox"]
    if targets and all("masks" in t for t in targets) and all("masks" in p for p in predictions):
        types.append("segm")
    out: dict[str, float] = {}
    for iou_type in types:
        gt = coco_ground_truth(targets, class_names, with_masks=iou_type == "segm")
        out.update(_evaluate(gt, coco_results(predictions, iou_type), iou_type, class_names))
    return out


def mask_dice(prediction: dict, truth_mask, *, score_threshold: float = 0.5, mask_threshold: float = 0.5) -> float:
    """Dice of the union of the predicted instance masks against the truth's foreground (label > 0).

    Instances count when their score is >= ``score_threshold``; float masks (probabilities) are
    thresholded at ``mask_threshold``, uint8 masks (as :func:`uscl.finetune.detect.engine.predict`
    returns, already at 0.5) are taken as they are. An empty truth and an empty prediction agree: 1.0.
    This is the segmentation-style view of a detector: it ignores instance identity and class.
    """
    truth = _np(truth_mask) > 0
    masks = prediction.get("masks")
    pred = np.zeros_like(truth)
    if masks is not None and len(masks):
        m = _np(masks)
        if m.ndim == 4:
            m = m[:, 0]
        m = m >= mask_threshold if m.dtype.kind == "f" else m > 0
        keep = _np(prediction["scores"]).reshape(-1) >= score_threshold
        if keep.any():
            pred = m[keep].any(axis=0)
    denom = int(truth.sum()) + int(pred.sum())
    return 1.0 if denom == 0 else 2.0 * int((truth & pred).sum()) / denom


def image_box_match(target: dict, prediction: dict, *, score_threshold: float = 0.5) -> float:
    """One image's box agreement in [0, 1]: the detections scoring >= ``score_threshold``, in decreasing score,
    each take the unmatched truth box of their class they overlap most (IoU > 0); the score is the sum of the
    matched IoUs over (truth boxes + unmatched confident detections), so a miss and a false positive both
    cost. 1.0 when neither side has a box. Used to pick the report's best / median / worst test frames."""
    from torchvision.ops import box_iou

    tb, tl = torch.as_tensor(target["boxes"]).float().reshape(-1, 4), torch.as_tensor(target["labels"]).reshape(-1)
    keep = torch.as_tensor(prediction["scores"]).reshape(-1) >= score_threshold
    order = torch.argsort(torch.as_tensor(prediction["scores"]).reshape(-1)[keep], descending=True)
    pb = torch.as_tensor(prediction["boxes"]).float().reshape(-1, 4)[keep][order]
    pl = torch.as_tensor(prediction["labels"]).reshape(-1)[keep][order]
    if len(tb) == 0 and len(pb) == 0:
        return 1.0
    iou = box_iou(pb, tb) if len(pb) and len(tb) else torch.zeros((len(pb), len(tb)))
    used = torch.zeros(len(tb), dtype=torch.bool)
    total, matched = 0.0, 0
    for i in range(len(pb)):
        cand = iou[i].clone()
        cand[used | (tl != pl[i])] = 0.0
        if len(cand) and float(cand.max()) > 0:
            j = int(cand.argmax())
            used[j] = True
            total += float(cand[j])
            matched += 1
    return total / (len(tb) + len(pb) - matched)
