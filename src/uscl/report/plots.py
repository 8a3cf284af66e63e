"""PNG figures for reports (matplotlib, Agg backend: no display needed).

:func:`pyplot` and :func:`save_figure` are the two helpers every report figure
uses (fine-tuning here, pretraining in :mod:`uscl.report.pretrain`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from uscl.utils.atomic import atomic_write_with


def pyplot():
    """matplotlib.pyplot on the Agg backend.

    matplotlib is the one import kept inside a function in the report and infer
    modules: it is heavy (about a second) and only figures need it.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically and close it; returns ``path``."""
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"), suffix=".png")
    pyplot().close(fig)
    return path


def confusion_matrices(path: Path, matrices: dict[str, list], classes: Sequence[str], title: str) -> Path:
    """One panel per matrix (e.g. frame / video level), counts and row-normalised colour."""
    plt = pyplot()
    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.6, 3.4), squeeze=False)
    for ax, (name, cm) in zip(axes[0], matrices.items()):
        cm = np.asarray(cm, dtype=float)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                        color="white" if norm[i, j] > 0.6 else "black", fontsize=9)
        ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("true")
    fig.subplots_adjust(wspace=0.45)
    for ax, (name, _) in zip(axes[0], matrices.items()):
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def fold_accuracy(path: Path, per_init: dict[str, dict[str, list]], title: str,
                  fold_labels: Sequence[str] | None = None, metric: str = "accuracy") -> Path:
    """Grouped bars of a score in [0, 1] (``metric``): per fold, one bar per init; one panel per level.

    ``fold_labels`` names the bar groups (default ``fold 0..n-1``), for runs of only some folds.
    """
    plt = pyplot()
    levels = list(next(iter(per_init.values())).keys())
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 3.4), squeeze=False)
    names = list(per_init)
    width = 0.8 / max(1, len(names))
    for ax, level in zip(axes[0], levels):
        n_folds = max(len(v[level]) for v in per_init.values())
        x = np.arange(n_folds)
        for i, name in enumerate(names):
            vals = [np.nan if v is None else v for v in per_init[name][level]]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=name)
        ax.set_xticks(x, list(fold_labels) if fold_labels is not None else [f"fold {k}" for k in range(n_folds)])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"{level} {metric}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def roc_curves(path: Path, y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], title: str) -> Path:
    """One-vs-rest ROC per class of pooled test predictions (classes without both outcomes skipped)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    for c, name in enumerate(classes):
        pos = y_true == c
        if 0 < pos.sum() < len(y_true):
            fpr, tpr, _ = roc_curve(pos, probs[:, c])
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(pos, probs[:, c]):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def training_curves(path: Path, histories: dict[str, list[list[dict]]], title: str) -> Path:
    """Per init, mean over folds of train loss (left) and train/val accuracy (right) per epoch."""
    plt = pyplot()
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, folds in histories.items():
        if not folds:
            continue
        n_ep = min(len(h) for h in folds)
        ep = np.arange(1, n_ep + 1)

        def mean_of(key):
            vals = [[float(r[key]) for r in h[:n_ep]] for h in folds if h and r_has(h, key)]
            return np.mean(vals, axis=0) if vals else None

        loss = mean_of("train_loss")
        line = ax_l.plot(ep, loss, label=name)[0]
        ax_a.plot(ep, mean_of("train_acc"), color=line.get_color(), label=f"{name} train")
        for key, style in (("val_acc", "--"), ("test_acc", ":")):
            v = mean_of(key)
            if v is not None:
                ax_a.plot(ep, v, style, color=line.get_color(), label=f"{name} {key.split('_')[0]}")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("training loss (mean over folds)")
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("accuracy (mean over folds)")
    ax_a.set_ylim(0, 1.05)
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def r_has(history: list[dict], key: str) -> bool:
    return all(r.get(key) not in (None, "") for r in history)
