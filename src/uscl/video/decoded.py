"""What every reader returns: the kept frames plus what was learnt about the source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DecodeError(Exception):
    """A file that cannot be read as frames; the message is the reason shown to the user."""


@dataclass
class DecodedVideo:
    """Kept frames, uint8 (T, H, W, C) with C = 1 (grey) or 3 (RGB).

    At native size unless the reader was asked to scale (``read_frames(size=)``);
    ``orig_height``/``orig_width`` are always the source's.
    """

    frames: np.ndarray
    kind: str  # video | dicom | image | frames
    orig_num_frames: int  # frames decoded from the source (before sampling)
    orig_height: int
    orig_width: int
    orig_fps: float | None = None
    fps: float | None = None  # average rate of the kept frames
    notes: list[str] = field(default_factory=list)  # e.g. a decode that stopped early
    # frame folders: (image file, reason) of members that could not be read, left out of ``frames``
    dropped: list[tuple[Path, str]] = field(default_factory=list)
    # which source frames ``frames`` are: indices into the frames decoded from the source (for a
    # frame folder: into the image files given to the reader), after fps sampling and max_frames.
    # What lines up a mask video (or any per-frame annotation) with the kept frames.
    kept_indices: list[int] | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def kept_rate(times: list[float] | None, orig_fps: float | None, n_decoded: int, n_kept: int) -> float | None:
    """Average frame rate of the kept frames, from their timestamps where known."""
    if times and len(times) >= 2 and times[-1] > times[0]:
        return round((len(times) - 1) / (times[-1] - times[0]), 4)
    if orig_fps and n_kept >= 1:
        if n_kept == n_decoded:
            return round(orig_fps, 4)
        if n_kept >= 2 and n_decoded >= 2:
            return round(orig_fps * (n_kept - 1) / (n_decoded - 1), 4)
    return None


def to_channels(frame: np.ndarray, channels: str) -> np.ndarray:
    """(H, W[, C]) uint8 → (H, W, 1) grey or (H, W, 3) RGB.

    Grey uses ITU-R 601 luma with PIL's integer rounding, so an RGB image
    converted here equals the same image converted by ``Image.convert('L')``.
    """
    if frame.ndim == 2:
        frame = frame[..., None]
    c = frame.shape[-1]
    if c == 4:  # RGBA: drop alpha
        frame, c = frame[..., :3], 3
    if c == 2:  # grey + alpha
        frame, c = frame[..., :1], 1
    if channels == "grey":
        if c == 1:
            return frame
        return luma(frame)[..., None]
    if channels == "rgb":
        if c == 3:
            return frame
        return np.repeat(frame, 3, axis=-1)
    raise ValueError(f"channels must be 'grey' or 'rgb', got {channels!r}")


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) → uint8 (...): L = 0.299 R + 0.587 G + 0.114 B (PIL's formula)."""
    r = rgb[..., 0].astype(np.uint32)
    g = rgb[..., 1].astype(np.uint32)
    b = rgb[..., 2].astype(np.uint32)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)
