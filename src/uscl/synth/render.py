"""Render a video: move the anatomy over time, form the B-mode image, scan-convert.

Per frame the wall and lung canvases are windowed at their current offsets
(probe drift and breathing move both; lung sliding moves the lung frame
along the pleura), the lung speckle is rotated between two independent
fields (so it shimmers but stays Rayleigh), then depth attenuation, gain,
electronic noise and log compression give display grey levels, which are
scan-converted into the fan or rectangle of the probe. On request the same
loop also gives per-frame label maps of the drawn structures
(:mod:`uscl.synth.masks`).
"""

from __future__ import annotations

import math

import numpy as np

from uscl.errors import UsclError
from uscl.synth.anatomy import Anatomy, build_anatomy
from uscl.synth.fields import crop, crop_1d
from uscl.synth.geometry import ProbeGeometry, probe_geometry
from uscl.synth.masks import label_weights, labels_from_weights
from uscl.synth.params import VideoParams, apply_overrides, sample_video_params

TOP_DB = 16.0  # amplitude (relative to bright tissue) that maps to white, in dB


def geometry_for(params: VideoParams, size: int) -> ProbeGeometry:
    """The scan converter a video with ``params`` uses at ``size`` pixels.

    Use ``geometry_for(p, size).to_image(depth, lateral)`` to find where a
    beam-space position (e.g. a B-line at lateral fraction 0.3) lands in the image.
    """
    return probe_geometry(params.probe, size, size, size, sector_angle_deg=params.sector_angle_deg,
                          probe_radius=params.probe_radius, linear_width=params.linear_width)


class _Motion:
    """Offsets of the wall and lung windows and the shimmer phase at each frame."""

    def __init__(self, p: VideoParams, anat: Anatomy, rng: np.random.Generator):
        self.p, self.anat = p, anat
        self.breath_phase = float(rng.uniform(0, 2 * math.pi))
        self.drift_period = float(rng.uniform(8, 20))
        self.drift_phase = rng.uniform(0, 2 * math.pi, 2)
        self.shimmer_phase = float(rng.uniform(0, 2 * math.pi))
        self.flicker_phase = rng.uniform(0, 2 * math.pi, max(1, len(anat.b_lines)))

    def at(self, frame: int) -> tuple[float, float, float, float]:
        p, a = self.p, self.anat
        t = frame / p.fps
        ms = p.motion_scale
        phase = 2 * math.pi * t / p.breath_period_s + self.breath_phase
        breath_y = p.breath_amp * (a.rows - 1) * math.sin(phase)
        ax = min(p.drift_speed * (a.cols - 1) * self.drift_period / (2 * math.pi), 0.8 * a.mx)
        drift_x = ax * math.sin(2 * math.pi * t / self.drift_period + self.drift_phase[0])
        drift_y = min(0.3 * ax, 0.3 * a.my) * math.sin(2 * math.pi * t / (1.3 * self.drift_period) + self.drift_phase[1])
        slide = p.slide_amp * (a.cols - 1) * math.sin(phase - 0.6)
        oy = a.my - ms * (breath_y + drift_y)
        ox = a.mx - ms * drift_x
        lx = ox - ms * slide
        theta = p.shimmer_rate * t + self.shimmer_phase
        return oy, ox, lx, theta


def _b_line_profile(anat: Anatomy, lx: float, t: float, flicker_phase: np.ndarray) -> np.ndarray:
    """Lateral brightness of the B-lines in view columns (they ride on the lung)."""
    j = np.arange(anat.cols, dtype=np.float32)
    prof = np.zeros(anat.cols, np.float32)
    for k, (col, width, strength) in enumerate(anat.b_lines):
        flicker = 1 + 0.12 * math.sin(2 * math.pi * 0.7 * t + flicker_phase[k])
        prof += strength * flicker * np.exp(-(((j - (col - lx)) / width) ** 2))
    return prof


def render_frames(params: VideoParams, frames: int, size: int, rng: np.random.Generator, *,
                  masks: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render ``frames`` frames of a ``size``×``size`` video with ``params``; uint8 (T, H, W).

    With ``masks=True`` returns ``(video, labels)``: ``labels`` is a uint8
    (T, H, W) label map per frame (0 background, then ``MASK_CLASSES``; see
    :mod:`uscl.synth.masks`), computed from the same canvases, motion and scan
    conversion. It draws no random numbers, so ``video`` is the same either way.
    """
    if frames < 1:
        raise UsclError(f"frames must be at least 1, not {frames}")
    if size < 16:
        raise UsclError(f"size must be at least 16 pixels, not {size}")
    params.validate()
    rows = cols = size
    anat = build_anatomy(params, rows, cols, rng)
    geom = geometry_for(params, size)
    motion = _Motion(params, anat, rng)
    depth = np.linspace(0, 1, rows, dtype=np.float32)[:, None]
    att = (10 ** (-params.attenuation_db * depth / 20)).astype(np.float32)
    att_b = (10 ** (-0.4 * params.attenuation_db * depth / 20) * (1 - 0.2 * depth)).astype(np.float32)
    u = np.linspace(-1, 1, cols, dtype=np.float32)
    edge = (1 - 0.35 * u ** 6)[None, :] * 10 ** (params.gain_db / 20)
    lo_db = TOP_DB - params.dynamic_range_db
    scale = 255.0 / params.dynamic_range_db
    noise_off = rng.integers(0, 16, size=(frames, 2))
    out = np.empty((frames, size, size), np.uint8)
    labels = np.zeros((frames, size, size), np.uint8) if masks else None
    for f in range(frames):
        oy, ox, lx, theta = motion.at(f)
        wall, pleura, a_lines, mask = crop(anat.wall_layers, oy, ox, rows, cols)
        lung = crop(anat.lung, oy, lx, rows, cols)
        iy, ix = int(round(oy)), int(round(lx))
        z = (math.cos(theta) * anat.lung_speckle_a[iy:iy + rows, ix:ix + cols]
             + math.sin(theta) * anat.lung_speckle_b[iy:iy + rows, ix:ix + cols])
        spk = np.abs(z)
        a_w = crop_1d(anat.a_line_weight, lx, cols)[None, :]
        tissue = wall + pleura * (0.35 + 0.65 * spk) + mask * (lung + a_lines * a_w) * spk
        amp = tissue * att
        if anat.b_lines:
            b = _b_line_profile(anat, lx, f / params.fps, motion.flicker_phase)[None, :]
            amp += mask * b * att_b * (0.5 + 0.5 * spk)
        ny, nx = noise_off[f]
        amp = amp * edge + anat.noise[ny:ny + rows, nx:nx + cols]
        grey = (20 * np.log10(amp + 1e-5) - lo_db) * scale
        img = geom.scan_convert(np.clip(grey, 0, 255))
        out[f] = np.rint(img).astype(np.uint8)
        if labels is not None:
            labels[f] = labels_from_weights(label_weights(anat, oy, ox, lx, mask), geom)
    if labels is not None:
        return out, labels
    return out


def render_video(label: str, frames: int, size: int, rng: np.random.Generator, *, masks: bool = False,
                 **overrides) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render one synthetic lung-ultrasound video of class ``label``.

    Parameters are drawn with :func:`sample_video_params` from ``rng`` and then
    replaced by ``overrides`` (any :class:`VideoParams` field, e.g.
    ``probe="linear"``, ``b_line_positions=[0.3]``, ``consolidation=None`` or a
    dict of :class:`Consolidation` fields, ``motion_scale=0``). Returns uint8
    frames (T, H, W), black outside the imaged sector; with ``masks=True``, a
    pair ``(frames, labels)`` (see :func:`render_frames`).
    """
    params = apply_overrides(sample_video_params(label, rng), overrides)
    return render_frames(params, frames, size, rng, masks=masks)
