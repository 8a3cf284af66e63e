"""Probe geometry: from beam space (depth × lateral) to the displayed image.

The scene is rendered in beam space, where a depth is a row and a beam is a
column, as a scanner acquires it: reverberations (A-lines) are rows and
comet tails (B-lines) are columns. Scan conversion then bends the beams into
a fan (convex probe) or places them side by side (linear probe); everything
outside the imaged sector is black.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TOP_MARGIN = 0.02  # fraction of the image above the probe face
SIDE_MARGIN = 0.01
FAN_OVERFLOW = 1.35 # a convex fan may be this much wider than the image


@dataclass
class ProbeGeometry:
    """Scan converter of one video; build it with :func:`probe_geometry`."""

    probe: str
    size: int
    beam_rows: int
    beam_cols: int
    sector_angle_deg: float
    probe_radius: float
    linear_width: float
    scale: float  # image pixels per unit of depth
    origin_x: float
    origin_y: float
    mask: np.ndarray  # (size, size) bool, True inside the sector
    _flat: np.ndarray  # flat indices (top-left) of the valid pixels into the beam image
    _fy: np.ndarray
    _fx: np.ndarray

    def to_image(self, depth: float | np.ndarray, lateral: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image pixel coordinates (y, x) of beam-space fractions (depth, lateral) in [0, 1]."""
        depth = np.asarray(depth, np.float64)
        lateral = np.asarray(lateral, np.float64)
        if self.probe == "convex":
            half = math.radians(self.sector_angle_deg) / 2
            rho = self.probe_radius + depth
            phi = (lateral - 0.5) * 2 * half
            x = rho * np.sin(phi)
            y = rho * np.cos(phi)
            return self.origin_y + y * self.scale, self.origin_x + x * self.scale
        return self.origin_y + depth * self.scale, self.origin_x + lateral * self.linear_width * self.size

    def scan_convert(self, beam: np.ndarray) -> np.ndarray:
        """Resample a (beam_rows, beam_cols) float image onto the (size, size) display."""
        out = np.zeros((self.size, self.size), np.float32)
        flat = beam.reshape(-1)
        i = self._flat
        cols = self.beam_cols
        a, b = flat[i], flat[i + 1]
        c, d = flat[i + cols], flat[i + cols + 1]
        top = a + self._fx * (b - a)
        bottom = c + self._fx * (d - c)
        out[self.mask] = top + self._fy * (bottom - top)
        return out


def probe_geometry(probe: str, size: int, beam_rows: int, beam_cols: int, *,
                   sector_angle_deg: float = 65.0, probe_radius: float = 0.4,
                   linear_width: float = 0.75) -> ProbeGeometry:
    """Lay the sector into a ``size``×``size`` image and precompute the resampling."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    top = TOP_MARGIN * size
    if probe == "convex":
        half = math.radians(sector_angle_deg) / 2
        r0 = probe_radius
        width = 2 * (r0 + 1) * math.sin(half)
        y_min = r0 * math.cos(half)
        height = r0 + 1 - y_min
        # Fill the depth; let a wide fan run off the sides a little, as cropped scanner frames do.
        scale = min(FAN_OVERFLOW * size * (1 - 2 * SIDE_MARGIN) / width, (size - top - 1) / height)
        origin_x = (size - 1) / 2
        origin_y = top - y_min * scale  # the apex, above the image
        x = (xs - origin_x) / scale
        y = (ys - origin_y) / scale
        depth = np.hypot(x, y) - r0
        lateral = np.arctan2(x, y) / (2 * half) + 0.5
    else:
        scale = size - top - 1
        w = linear_width * size
        origin_x = (size - w) / 2
        origin_y = top
        depth = (ys - origin_y) / scale
        lateral = (xs - origin_x) / w
    mask = (depth >= 0) & (depth <= 1) & (lateral >= 0) & (lateral <= 1)
    row = np.clip(depth[mask], 0, 1) * (beam_rows - 1)
    col = np.clip(lateral[mask], 0, 1) * (beam_cols - 1)
    i0 = np.minimum(np.floor(row).astype(np.int64), beam_rows - 2)
    j0 = np.minimum(np.floor(col).astype(np.int64), beam_cols - 2)
    return ProbeGeometry(
        probe=probe, size=size, beam_rows=beam_rows, beam_cols=beam_cols,
        sector_angle_deg=sector_angle_deg, probe_radius=probe_radius, linear_width=linear_width,
        scale=scale, origin_x=origin_x, origin_y=origin_y, mask=mask,
        _flat=i0 * beam_cols + j0,
        _fy=(row - i0).astype(np.float32), _fx=(col - j0).astype(np.float32),
    )
