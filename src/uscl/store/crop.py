"""Crop to the content: drop black margins and burnt-in static overlays.

Ultrasound exports carry a black frame around the image and burnt-in text,
scales and logos that never change. Over the frames of a video:

* the *live* image is the pixels that are not black (temporal max above
  ``black_level``) and change over time (max − min above ``static_tolerance``);
* the crop box is the bounding box of the largest connected live region
  (small gaps closed first), so text in the margins, even changing text such
  as a clock, is cut away;
* static pixels left *inside* the box that are clearly bright (temporal max
  above ``OVERLAY_LEVEL``: text, markers, scales, logos over or beside the
  sector), plus the dimmer static pixels touching them (anti-aliased glyph
  edges), are masked to black. Dim static pixels elsewhere (quiet dark tissue,
  a flat grey background) are left as they are. Masking needs at least ``MIN_FRAMES_FOR_MASK``
  frames, so that chance stillness of tissue between a few frames is not
  taken for an overlay.

A still image, or a video in which (almost) nothing changes, has no usable
temporal signal: it is cropped to its non-black region only, unmasked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from uscl.video.decoded import luma

MIN_FRAMES_FOR_MASK = 8
OVERLAY_LEVEL = 40  # static pixels brighter than this are overlays
MIN_LIVE_FRACTION = 0.01  # below this share of moving pixels a video counts as static
_STATS_FRAMES = 96  # frames sampled for the statistics of a long video
_GRID = 160  # the region search runs on a mask at most this many cells a side


@dataclass
class CropPlan:
    """Where the content is: a box (y0, y1, x0, x1) and an optional mask of overlay pixels in it."""

    box: tuple[int, int, int, int]
    overlay: np.ndarray | None = None  # bool (y1-y0, x1-x0): pixels set to black

    def apply(self, frames: np.ndarray) -> np.ndarray:
        y0, y1, x0, x1 = self.box
        out = frames[:, y0:y1, x0:x1]
        if self.overlay is not None and self.overlay.any():
            out = out.copy()
            out[:, self.overlay] = 0
        return out


def _grey(frames: np.ndarray) -> np.ndarray:
    return frames[..., 0] if frames.shape[-1] == 1 else luma(frames)


def largest_region_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box of the largest connected region of ``mask`` (gaps of a few cells closed)."""
    h, w = mask.shape
    k = max(1, int(np.ceil(max(h, w) / _GRID)))
    hp, wp = -(-h // k) * k, -(-w // k) * k
    padded = np.zeros((hp, wp), bool)
    padded[:h, :w] = mask
    small = padded.reshape(hp // k, k, wp // k, k).any(axis=(1, 3))
    if not small.any():
        return None
    closed = ndimage.binary_closing(small, structure=np.ones((3, 3), bool), iterations=2, border_value=0) | small
    labels, n = ndimage.label(closed, structure=np.ones((3, 3), bool))
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    region = labels == (int(np.argmax(sizes)) + 1)
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    # back to pixels, then tighten to the real mask inside the coarse box
    y0, y1 = rows[0] * k, min(h, (rows[-1] + 1) * k)
    x0, x1 = cols[0] * k, min(w, (cols[-1] + 1) * k)
    inner = mask[y0:y1, x0:x1]
    r = np.flatnonzero(inner.any(axis=1))
    c = np.flatnonzero(inner.any(axis=0))
    if r.size == 0 or c.size == 0:
        return None
    return int(y0 + r[0]), int(y0 + r[-1] + 1), int(x0 + c[0]), int(x0 + c[-1] + 1)


def plan_crop(frames: np.ndarray, *, black_level: int = 10, static_tolerance: int = 2) -> CropPlan:
    """Find the content of uint8 (T, H, W, C) frames (see the module docstring)."""
    t, h, w = frames.shape[:3]
    full = CropPlan(box=(0, h, 0, w))
    if t == 0 or h == 0 or w == 0:
        return full
    idx = np.unique(np.linspace(0, t - 1, min(t, _STATS_FRAMES)).round().astype(int))
    grey = _grey(frames[idx])
    hi = grey.max(axis=0)
    bright = hi > black_level
    moving = False
    varying = None
    if len(idx) >= 2:
        varying = (hi.astype(np.int16) - grey.min(axis=0)) > static_tolerance
        moving = (varying & bright).mean() >= MIN_LIVE_FRACTION
    live = (varying & bright) if moving else bright
    box = largest_region_box(live)
    if box is None:
        return full
    plan = CropPlan(box=box)
    if moving and len(idx) >= MIN_FRAMES_FOR_MASK:
        y0, y1, x0, x1 = box

        static = bright[y0:y1, x0:x1] & ~varying[y0:y1, x0:x1]
        core = static & (hi[y0:y1, x0:x1] > OVERLAY_LEVEL)
        if core.any():
            overlay = static & ndimage.binary_dilation(core, structure=np.ones((3, 3), bool), iterations=2)
            plan.overlay = overlay
    return plan
