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
    """One row per query: the query frame (red border) and its nearest frames from other videos, as
    one montage (a single image is much quicker to draw than an axes per frame)."""
    plt = pyplot()
    rows, cols = len(images), max(len(r) for r in images)
    h, w = images[0][0].shape[:2]
    scale = max(0.9, 80 / max(h, w))  # inches per 100 px of canvas: small frames are drawn larger
    pad, cap = 3, max(h // 4, int(36 / scale))  # border, caption band of two 5 pt lines under each tile (px)
    cell_h, cell_w = h + 2 * pad + cap, w + 2 * pad
    canvas = np.full((rows * cell_h, cols * cell_w, 3), 255, np.uint8)
    for r, row in enumerate(images):
        for c, img in enumerate(row):
            y, x = r * cell_h, c * cell_w
            if c == 0:
                canvas[y:y + h + 2 * pad, x:x + w + 2 * pad] = (220, 30, 30)
            rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]
            canvas[y + pad:y + pad + h, x + pad:x + pad + w] = rgb
    fig, ax = plt.subplots(figsize=(canvas.shape[1] / 100 * scale + 0.2, canvas.shape[0] / 100 * scale + 0.4))
    ax.imshow(canvas, interpolation="nearest")
    chars = max(6, int(0.75 * cell_w / 100 * scale * 72 / (5 * 0.62)))  # 5 pt characters that fit under a tile
    for r, row in enumerate(captions):
        for c, text in enumerate(row):
            ax.text(c * cell_w + cell_w / 2, r * cell_h + h + 2 * pad + 1, _fit(text, chars), ha="center", va="top",
                    fontsize=5)
    for c in range(cols):
        ax.text(c * cell_w + cell_w / 2, -2, "query" if c == 0 else f"#{c}", ha="center", va="bottom", fontsize=6)
    ax.axis("off")
    ax.set_title(title, fontsize=8, pad=10)
    return save_figure(fig, path)


def _fit(text: str, chars: int) -> str:
    """Each line cut to ``chars`` characters, keeping its end (a video id's distinguishing number)."""
    return "\n".join(line if len(line) <= chars else "…" + line[-(chars - 1):] for line in text.split("\n"))
