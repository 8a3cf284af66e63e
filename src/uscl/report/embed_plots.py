"""The figures of ``uscl embed``: the 2-D map coloured by class and by video, and the nearest-neighbour grid."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from uscl.report.plots import pyplot, save_figure

VIDEO_LEGEND = 20  # videos named in the legend of map_video.png; the rest are counted


def map_by_class(path: Path, coords: np.ndarray, labels: np.ndarray, classes: Sequence[str], title: str) -> Path:
    """Scatter of the map, one colour per class; unlabelled frames grey, under the rest."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    none = labels < 0
    if none.any():
        ax.scatter(coords[none, 0], coords[none, 1], s=9, c="lightgrey", label=f"unlabelled ({int(none.sum())})")
    for i, name in enumerate(classes):
        sel = labels == i
        if sel.any():
            ax.scatter(coords[sel, 0], coords[sel, 1], s=9, color=cmap(i % cmap.N), alpha=0.8,
                       label=f"{name} ({int(sel.sum())})")
    _finish(ax, title)
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
    return save_figure(fig, path)


def map_by_video(path: Path, coords: np.ndarray, videos: np.ndarray, video_ids: Sequence[str], title: str) -> Path:
    """Scatter of the map, one colour per video (colours repeat after 20); the legend names the first
    :data:`VIDEO_LEGEND` videos and counts the others."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    cmap = plt.get_cmap("tab20")
    order = list(dict.fromkeys(int(v) for v in videos))
    for j, v in enumerate(order):
        sel = videos == v
        ax.scatter(coords[sel, 0], coords[sel, 1], s=9, color=cmap(j % cmap.N), alpha=0.8,
                   label=str(video_ids[v]) if j < VIDEO_LEGEND else None)
    _finish(ax, title)
    if len(order) > VIDEO_LEGEND:
        ax.scatter([], [], s=0, label=f"+{len(order) - VIDEO_LEGEND} more videos")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save_figure(fig, path)


def _finish(ax, title: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def neighbour_grid(path: Path, images: list[list[np.ndarray]], captions: list[list[str]], title: str) -> Path:
    """One row per query: the query frame (red frame) and its nearest frames from other videos."""
    plt = pyplot()
    rows, cols = len(images), max(len(r) for r in images)
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.45 * rows), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(images[r]):
                ax.axis("off")
                continue
            img = images[r][c]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
            ax.set_xlabel(captions[r][c], fontsize=5.5, labelpad=1)
            for spine in ax.spines.values():
                spine.set_edgecolor("red" if c == 0 else "lightgrey")
                spine.set_linewidth(2 if c == 0 else 0.5)
    axes[0][0].set_title("query", fontsize=7)
    for c in range(1, cols):
        axes[0][c].set_title(f"#{c}", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(wspace=0.08, hspace=0.45, top=1 - 0.5 / (1.45 * rows))
    return save_figure(fig, path)
