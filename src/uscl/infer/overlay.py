"""Heat-map overlays, their PNGs, an H.264 clip and a contact sheet; every file written atomically.

Also the per-input output folders of the dense predicts (segmentation, detection): :class:`InputFolders`
names them, :func:`write_frame_pngs` and :func:`write_clip` fill them and delete what an earlier
(--overwrite'd) run left for frames this input does not have.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from uscl.infer.inputs import unique_stem
from uscl.utils.atomic import atomic_path
from uscl.video.mp4 import write_mp4

DEFAULT_CMAP = "jet"


def colorize(maps: np.ndarray, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """Maps in [0, 1] (..., H, W) → uint8 RGB (..., H, W, 3) through a matplotlib colour map."""
    import matplotlib  # heavy (about a second): imported only by the functions that draw

    lut = (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
    return lut[np.clip(np.asarray(maps) * 255 + 0.5, 0, 255).astype(np.uint8)]


def overlay(images: np.ndarray, maps: np.ndarray, alpha: float = 0.45, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """Blend a heat map onto frames: uint8 RGB (..., H, W, 3) + maps (..., H, W) → uint8 RGB.

    The colour's weight grows with the map value (``alpha * map``), so cold
    regions show the frame itself and nothing of the colour map's blue.
    """
    images = np.asarray(images, np.float32)
    maps = np.asarray(maps, np.float32)
    if images.shape[:-1] != maps.shape:
        raise ValueError(f"frames {images.shape} and maps {maps.shape} differ in size")
    w = (alpha * np.clip(maps, 0, 1))[..., None]
    out = images * (1 - w) + colorize(maps, cmap).astype(np.float32) * w
    return (out + 0.5).clip(0, 255).astype(np.uint8)


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) → (N, size, size, 3) for viewing (a small model input is hard to see)."""
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
    return path


def write_rgb_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0) -> Path:
    """uint8 RGB frames (T, H, W, 3) → H.264 .mp4, atomically; odd sizes are padded by one."""
    return write_mp4(path, frames, fps if fps and fps > 0 else 10.0, pad_odd=True)


def write_contact_sheet(path: str | os.PathLike, images: list[np.ndarray], captions: list[str], title: str,
                        columns: int = 4) -> Path:
    """A grid of overlays with a caption under each and a title (matplotlib, Agg backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(1, len(images))
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(3.0 * cols, 3.5 * rows + 1.0), dpi=100)
    FigureCanvasAgg(fig)
    for i, (img, cap) in enumerate(zip(images, captions)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(img)
        ax.set_title(cap, fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


class InputFolders:
    """One folder per input under ``out``, named after its stem, unique, never one of the run-level ``reserved``
    file names (``segments.csv``, ``predictions.json``, ...)."""

    def __init__(self, out: str | os.PathLike, reserved: tuple[str, ...] = ()):
        self.out = Path(out)
        self._used = {n.lower() for n in reserved}

    def new(self, name: str) -> tuple[str, Path]:
        """``(stem, out / stem)`` for input ``name``."""
        stem = unique_stem(name, self._used)
        return stem, self.out / stem


def write_frame_pngs(folder: str | os.PathLike, images) -> Path:
    """``folder/frame_00000.png`` ... one PNG per image; older ``frame_*.png`` beyond them are deleted."""
    folder = Path(folder)
    n = 0
    for t, im in enumerate(images):
        write_png(folder / f"frame_{t:05d}.png", im)
        n = t + 1
    keep = {f"frame_{t:05d}.png" for t in range(n)}
    for f in folder.glob("frame_*.png"):
        if f.name not in keep:
            f.unlink()
    return folder


def write_clip(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path | None:
    """The frames as an MP4 when there are 2 or more (returns its path); else None, and an older file is deleted."""
    path = Path(path)
    if len(frames) > 1:
        return write_rgb_mp4(path, frames, fps)
    if path.exists():
        path.unlink()
    return None
