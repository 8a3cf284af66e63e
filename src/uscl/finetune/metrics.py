"""Classification metrics per fold and over folds, at frame and video level.

All arithmetic is sklearn's. Video-level scores average each video's frame
probabilities and take the arg-max (the clinically meaningful unit: one call
per clip). Over folds we report mean ± sample std (ddof=1) of each fold's
value and, separately, the metrics of all test predictions pooled (every video
is tested exactly once, so the pooled confusion matrix covers the data set).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy.stats import ttest_rel
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

SCALARS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")


def classification_metrics(y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, per-class P/R/F1, macro-F1, one-vs-rest ROC AUC, confusion matrix.

    ROC AUC is computed per class where the class and its complement both occur
    in ``y_true``; the macro value averages those, and is ``None`` when no class
    qualifies (a single-class fold).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(classes)
    if probs.ndim != 2 or probs.shape != (len(y_true), k):
        raise ValueError(f"probs must be (n, {k}), got {probs.shape} for {len(y_true)} labels")
    if len(y_true) == 0:
        raise ValueError("no predictions to score")
    y_pred = probs.argmax(1)
    labels = list(range(k))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = sorted(set(y_true.tolist()))
    auc = {}
    for c in labels:
        pos = y_true == c
        auc[classes[c]] = float(roc_auc_score(pos, probs[:, c])) if 0 < pos.sum() < len(y_true) else None
    valid = [v for v in auc.values() if v is not None]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        bal = float(balanced_accuracy_score(y_true, y_pred)) if present else float("nan")
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": bal,
        # macro over the classes present in y_true, so a class absent from a fold does not count as F1 = 0
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "roc_auc": float(np.mean(valid)) if valid else None,
        "per_class": {
            classes[c]: {
                "precision": float(p[c]),
                "recall": float(r[c]),
                "f1": float(f[c]),
                "support": int(s[c]),
                "roc_auc": auc[classes[c]],
            }
            for c in labels
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def video_level(videos: Sequence, y_true: Sequence[int], probs: np.ndarray):
    """Mean frame probabilities per video -> (video keys, video labels, video probs)."""
    videos = np.asarray(videos)
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    keys, inverse = np.unique(videos, return_inverse=True)
    sums = np.zeros((len(keys), probs.shape[1]))
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=len(keys))[:, None]
    labels = np.zeros(len(keys), dtype=np.int64)
    for i in range(len(keys)):
        ys = np.unique(y_true[inverse == i])
        if len(ys) != 1:
            raise ValueError(f"video {keys[i]} has frames with different labels {ys.tolist()}")
        labels[i] = ys[0]
    return keys, labels, sums / counts


def fold_metrics(videos: Sequence, y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Frame- and video-level metrics of one fold's test predictions."""
    _, yv, pv = video_level(videos, y_true, probs)
    return {
        "frame": classification_metrics(y_true, probs, classes),
        "video": classification_metrics(yv, pv, classes),
    }


def mean_std(values: Sequence[float | None]) -> dict:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return {"mean": None, "std": None, "values": list(values)}
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return {"mean": float(np.mean(vals)), "std": std, "values": [None if v is None else float(v) for v in values]}


def summarize(folds: Sequence[dict], classes: Sequence[str], pooled: dict | None = None) -> dict:
    """Mean ± std over folds of every scalar and per-class metric, per level; plus pooled metrics."""
    out = {}
    for level in ("frame", "video"):
        per = [f[level] for f in folds]
        summary = {m: mean_std([p[m] for p in per]) for m in SCALARS}
        summary["per_class"] = {
            c: {m: mean_std([p["per_class"][c][m] for p in per]) for m in ("precision", "recall", "f1", "roc_auc")}
            for c in classes
        }
        summary["confusion_matrix_sum"] = np.sum([p["confusion_matrix"] for p in per], axis=0).tolist()
        out[level] = summary
    if pooled is not None:
        out["pooled"] = pooled
    return out


def pooled_metrics(videos, y_true, probs, classes) -> dict:
    """Metrics of all folds' test predictions together (videos must be unique across folds)."""
    return fold_metrics(videos, y_true, probs, classes)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """Per-fold ``a - b`` on the same folds: mean, std, wins, and a paired t-test p-value.

    With 5 folds the t-test is weak (and folds share training data, so it is
    optimistic); the per-fold differences are the honest evidence.
    """
    a = np.asarray([np.nan if v is None else v for v in a], dtype=np.float64)
    b = np.asarray([np.nan if v is None else v for v in b], dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired difference needs the same folds, got {len(a)} and {len(b)} values")
    ok = ~(np.isnan(a) | np.isnan(b))
    d = (a - b)[ok]
    res = {
        "diff": [None if not m else float(x) for m, x in zip(ok, a - b)],
        "mean": float(d.mean()) if len(d) else None,
        "std": float(d.std(ddof=1)) if len(d) > 1 else (0.0 if len(d) else None),
        "wins": int((d > 0).sum()),
        "losses": int((d < 0).sum()),
        "ties": int((d == 0).sum()),
        "n": int(len(d)),
        "p_value": None,
    }
    if len(d) > 1 and np.any(d != d[0]):
        res["p_value"] = float(ttest_rel(a[ok], b[ok]).pvalue)
    return res


def folds_coverage(folds_run: Sequence[int], n_folds: int) -> str | None:
    """``"folds 0, 2 of 5 only"`` for a partial k-fold run (``only_folds``), ``None`` when every fold ran."""
    if len(set(folds_run)) >= n_folds:
        return None
    return f"fold{'s' if len(folds_run) != 1 else ''} {', '.join(str(k) for k in sorted(folds_run))} of {n_folds} only"
