"""Static anatomy of one video, drawn once on an oversized beam-space canvas.

Two canvases move independently over time: the *wall frame* (chest wall,
ribs, pleural line, A-line reverberations; it moves with the probe and the
chest) and the *lung frame* (aerated-lung texture, consolidation, air
bronchograms, B-lines; it also slides along the pleura with breathing).
Each frame is a window into both (see :mod:`uscl.synth.render`). Canvas
coordinates are pixels; ``my``/``mx`` are the margins that leave room for
motion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from uscl.synth.fields import gaussian_blur, smooth_noise_1d, smooth_noise_2d, speckle_field
from uscl.synth.params import VideoParams

# The pleura mask leaves out stretches where the line is drawn dimmer than this fraction of
# its nominal brightness (gaps between fragments, rib shadows): about 12 dB down, where the
# line is no brighter than the chest-wall muscle above it.
PLEURA_VISIBLE = 0.25


@dataclass
class Anatomy:
    rows: int  # beam-space view size (depth samples)
    cols: int  # beam-space view size (beams)
    my: int
    mx: int
    # wall frame: (4, H, W) float32, all already darkened by the rib shadows:
    #   [0] chest-wall tissue amplitude, speckle included, zero below the pleura
    #   [1] pleural-line envelope (times its brightness along the line)
    #   [2] A-line reverberation envelope
    #   [3] lung mask: 0 above the pleura, 1 below (soft edge)
    wall_layers: np.ndarray
    # lung frame
    lung: np.ndarray  # echogenicity below the pleura (air texture, consolidation, bronchograms)
    lung_speckle_a: np.ndarray  # two independent complex speckle fields, mixed per frame
    lung_speckle_b: np.ndarray
    a_line_weight: np.ndarray  # (canvas cols,) where aerated lung lets A-lines form
    b_lines: list[tuple[float, float, float]]  # (canvas column, width in px, strength)
    noise: np.ndarray  # electronic noise pool (magnitudes), larger than the view
    # Label weights for the segmentation masks (uscl.synth.masks), in [0, 1]; computed from the
    # same curves as the pixels above and drawing no random numbers. ``None`` where absent.
    pleura_weight: np.ndarray | None = None  # wall frame: pleural band where the line is drawn
    consolidation_weight: np.ndarray | None = None  # lung frame: tissue-like lung (consolidation, notches)
    effusion_weight: np.ndarray | None = None  # lung frame: anechoic effusion band


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _band(rows: np.ndarray, center: np.ndarray, half_width: np.ndarray | float) -> np.ndarray:
    """Gaussian band around a per-column depth curve."""
    return np.exp(-(((rows - center) / half_width) ** 2)).astype(np.float32)


def _lateral_window(cols: np.ndarray, center: float, half: float, soft: float) -> np.ndarray:
    """1 inside [center-half, center+half], smooth ramps of width ``soft`` outside."""
    d = np.abs(cols - center) - half
    return (1.0 - _smoothstep(d / max(soft, 1e-3))).astype(np.float32)


def _draw_bronchograms(shape: tuple[int, int], starts: list[tuple[float, float]], length: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Branching bright lines (air in the bronchi of consolidated lung), rasterised."""
    img = np.zeros(shape, np.float32)
    points: list[np.ndarray] = []
    stack = [(y, x, math.radians(rng.uniform(-40, 40)), length, 0) for y, x in starts]
    while stack:
        y, x, ang, ln, level = stack.pop()
        n = max(2, int(ln * 2))
        s = np.linspace(0, ln, n)
        wobble = np.cumsum(rng.normal(0, 0.04, n))
        ys = y + s * np.cos(ang + wobble)
        xs = x + s * np.sin(ang + wobble)
        keep = rng.random(n) < 0.8  # dotted: air bronchograms look beaded
        points.append(np.stack([ys[keep], xs[keep]], 1))
        if level < 3:
            for side in (-1, 1):
                if rng.random() < 0.8:
                    stack.append((ys[-1], xs[-1], ang + side * math.radians(rng.uniform(15, 40)),
                                  ln * rng.uniform(0.55, 0.8), level + 1))
    pts = np.concatenate(points) if points else np.zeros((0, 2))
    iy = np.round(pts[:, 0]).astype(int)
    ix = np.round(pts[:, 1]).astype(int)
    ok = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
    np.add.at(img, (iy[ok], ix[ok]), 1.0)
    return img


def build_anatomy(p: VideoParams, rows: int, cols: int, rng: np.random.Generator) -> Anatomy:
    """Draw the canvases of one video from its parameters and ``rng``."""
    px = rows / 256.0  # texture scales are given for a 256-px image
    my = int(math.ceil(0.05 * rows)) + 2
    mx = int(math.ceil(0.14 * cols)) + 2
    H, W = rows + 2 * my, cols + 2 * mx
    r = np.arange(H, dtype=np.float32)[:, None]
    c = np.arange(W, dtype=np.float32)
    depth_px = rows - 1  # pixels per unit depth
    width_px = cols - 1

    def col_of(u: float) -> float:
        return mx + u * width_px

    # --- pleural line depth per column (wall frame) ---
    d = (my + p.pleura_depth * depth_px
         + 0.006 * depth_px * smooth_noise_1d(W, 0.2 * W, rng)
         + p.pleura_irregularity * 0.012 * depth_px * smooth_noise_1d(W, 1.5 * px, rng)).astype(np.float32)
    thick = np.maximum(p.pleura_thickness * depth_px
                       * (1 + 0.6 * p.pleura_irregularity * smooth_noise_1d(W, 3 * px, rng)), 0.6 * px)
    lung_mask = _smoothstep((r - d[None, :]) / max(1.5 * px, 0.75) + 0.5)

    # --- chest wall: skin, fat with septa, fascia, muscle with striations ---
    t = (r - my) / np.maximum(d[None, :] - my, 1.0)  # 0 at the probe, 1 at the pleura
    f1 = float(rng.uniform(0.22, 0.42)) + 0.03 * smooth_noise_1d(W, 0.15 * W, rng)
    f2 = float(rng.uniform(0.55, 0.8)) + 0.03 * smooth_noise_1d(W, 0.15 * W, rng)
    skin = float(rng.uniform(0.05, 0.1))
    fat_e, muscle_e = float(rng.uniform(0.1, 0.22)), float(rng.uniform(0.4, 0.65))
    striae = np.clip(1 + 0.45 * smooth_noise_2d((H, W), 0.7 * px, 9 * px, rng), 0.1, None)
    septa = np.maximum(smooth_noise_2d((H, W), 0.6 * px, 10 * px, rng) - 0.8, 0)
    e_wall = np.where(t < skin, 0.9, np.where(t < f1[None, :], fat_e * (1 + 3.0 * septa),
                      muscle_e * striae)).astype(np.float32)
    wall_thick = np.maximum(d - my, 1.0)[None, :]
    for f in (f1, f2):  # bright fascia lines
        e_wall += 1.3 * _band(t * wall_thick, f[None, :] * wall_thick, 1.0 * px)
    e_wall *= p.wall_brightness * (1 - lung_mask)
    wall_speckle = np.abs(speckle_field((H, W), p.speckle_axial * px, p.speckle_lateral * px, rng))
    wall = (e_wall * wall_speckle).astype(np.float32)

    # --- pleural line, fragmented where diseased; dimmer over a consolidation ---
    frag = np.clip(1.0 - p.pleura_fragmentation * (0.6 + 0.9 * smooth_noise_1d(W, 2.5 * px, rng)), 0.15, 1.0)
    along = p.pleura_brightness * frag * (1 + 0.1 * smooth_noise_1d(W, 4 * px, rng))
    cons = p.consolidation
    cons_lat = np.zeros(W, np.float32)
    if cons is not None:
        cons_lat = _lateral_window(c, col_of(cons.center), cons.width / 2 * width_px, 0.08 * width_px)
        along = along * (1 - 0.4 * cons_lat)
    pleura_band = _band(r, d[None, :], thick[None, :])
    pleura = (pleura_band * along[None, :]).astype(np.float32)

    # --- A-lines: reverberations at multiples of the probe-pleura distance ---
    a_lines = np.zeros((H, W), np.float32)
    gap = d - my
    k = 2
    while True:
        center = my + k * gap
        if float(center.min()) > H:
            break
        amp = p.a_line_strength * 0.8 * 0.55 ** (k - 2)
        a_lines += amp * _band(r, center[None, :], thick[None, :] * (1.1 + 0.35 * (k - 1)))
        k += 1
    a_lines *= lung_mask

    # --- ribs: bright curved surface and an acoustic shadow beneath ---
    shadow = np.ones((H, W), np.float32)
    for u in p.ribs:
        half = float(rng.uniform(0.08, 0.14)) * width_px
        jc = col_of(u)
        top = d[int(np.clip(round(jc), 0, W - 1))] - float(rng.uniform(0.02, 0.05)) * depth_px
        curve = top + 0.03 * depth_px * ((c - jc) / half) ** 2
        lat = _lateral_window(c, jc, half, 3 * px)
        shadow *= 1 - 0.985 * lat[None, :] * _smoothstep((r - curve[None, :]) / (2 * px))
        wall += 1.8 * lat[None, :] * _band(r, curve[None, :], 1.5 * px) * wall_speckle

    # --- lung frame: aerated-lung haze, consolidation, effusion, bronchograms ---
    lung = p.lung_brightness * (1 + 0.35 * smooth_noise_2d((H, W), 4 * px, 8 * px, rng))
    lung = np.clip(lung, 0, None).astype(np.float32)
    a_line_weight = np.ones(W, np.float32)
    cons_weight = eff_weight = None
    if cons is not None:
        jc = col_of(cons.center)
        halfw = cons.width / 2 * width_px
        xs = np.clip((c - jc) / halfw, -1, 1)
        top = d + p.effusion_thickness * depth_px
        lean = float(rng.uniform(-0.5, 0.5))  # deepest point off-centre
        bottom = (top + cons.depth * depth_px * (1 - xs ** 2) * (1 + lean * xs)
                  * (1 + 0.15 * smooth_noise_1d(W, 0.1 * W, rng))
                  + 0.02 * depth_px * smooth_noise_1d(W, 3.5 * px, rng))  # shred border
        inside = (_smoothstep((r - top[None, :]) / (2 * px) + 0.5)
                  * _smoothstep((bottom[None, :] - r) / (3 * px) + 0.5) * cons_lat[None, :])
        tissue = cons.brightness * p.wall_brightness * (1 + 0.3 * smooth_noise_2d((H, W), 3 * px, 3 * px, rng))
        lung = lung * (1 - inside) + np.clip(tissue, 0.05, None) * inside
        cons_weight = inside
        shred = _band(r, bottom[None, :], 1.5 * px) * cons_lat[None, :] * (
            0.5 + 0.6 * smooth_noise_1d(W, 3 * px, rng))[None, :]
        lung += np.clip(shred, 0, None)
        if p.effusion_thickness > 0:
            eff_lat = _lateral_window(c, jc, halfw + 0.05 * width_px, 0.04 * width_px)
            eff = (_smoothstep((r - d[None, :]) / (1.5 * px)) * _smoothstep((top[None, :] - r) / (1.5 * px))
                   * eff_lat[None, :])
            lung *= 1 - 0.97 * eff
            eff_weight = eff
            lung += 1.2 * _band(r, top[None, :], 1.2 * px) * cons_lat[None, :]  # visceral pleura
        starts = []
        for _ in range(cons.bronchograms):
            x0 = jc + rng.uniform(-0.7, 0.7) * halfw
            j0 = int(np.clip(round(x0), 0, W - 1))
            starts.append((float(top[j0] + rng.uniform(0.1, 0.4) * (bottom[j0] - top[j0])), float(x0)))
        air = _draw_bronchograms((H, W), starts, 0.1 * depth_px, rng)
        air = gaussian_blur(air, 0.8 * px, 0.8 * px)
        air = np.clip(air / max(float(air.max()), 1e-6) * 4.0, 0, 1.6) * inside
        lung += air * 2.2
        a_line_weight *= 1 - cons_lat
    for _ in range(p.subpleural_notches):  # small subpleural consolidations under a broken pleura
        u = float(rng.choice(p.b_line_positions)) if p.b_line_positions else float(rng.uniform(0.1, 0.9))
        jc, half = col_of(u), float(rng.uniform(0.015, 0.035)) * width_px
        lat = _lateral_window(c, jc, half, 2 * px)
        deep = d + float(rng.uniform(0.02, 0.05)) * depth_px * np.sqrt(np.clip(1 - ((c - jc) / (half + 2 * px)) ** 2, 0, 1))
        notch = lat[None, :] * _smoothstep((deep[None, :] - r) / (1.5 * px))
        lung = lung * (1 - notch) + 0.45 * notch
        # The fraction of tissue-like echo after this notch, as ``lung`` mixes it.
        cons_weight = notch if cons_weight is None else 1 - (1 - cons_weight) * (1 - notch)

    b_lines = []
    widths = p.b_line_widths or [float(rng.choice([rng.uniform(0.012, 0.025), rng.uniform(0.03, 0.06)], p=[0.75, 0.25]))
                                 for _ in p.b_line_positions]
    for u, w in zip(p.b_line_positions, widths):
        b_lines.append((col_of(u), max(w * width_px, 0.8 * px), p.b_line_strength * float(rng.uniform(0.85, 1.15))))
        a_line_weight *= 1 - _lateral_window(c, col_of(u), w * width_px, 3 * px)

    # Air reverberation texture is smeared along the beams' lateral direction.
    spk_a = speckle_field((H, W), p.speckle_axial * px, 1.6 * p.speckle_lateral * px, rng)
    spk_b = speckle_field((H, W), p.speckle_axial * px, 1.6 * p.speckle_lateral * px, rng)
    noise = np.abs(speckle_field((rows + 16, cols + 16), 0.5, 0.5, rng)) * p.noise_level
    # Pleura label: the band relative to its sampled peak in each column (a thin line that falls
    # between two rows still gets its brightest row), where the line is drawn at least
    # PLEURA_VISIBLE of its nominal brightness (fragment gaps and rib shadows excluded).
    drawn = (along[None, :] * shadow) >= PLEURA_VISIBLE * p.pleura_brightness
    pleura_band = pleura_band / np.maximum(pleura_band.max(axis=0, keepdims=True), 1e-6)
    return Anatomy(
        rows=rows, cols=cols, my=my, mx=mx,
        wall_layers=np.stack([wall, pleura, a_lines, lung_mask]).astype(np.float32) * shadow[None],
        lung=lung.astype(np.float32), lung_speckle_a=spk_a, lung_speckle_b=spk_b,
        a_line_weight=a_line_weight.astype(np.float32), b_lines=b_lines, noise=noise.astype(np.float32),
        pleura_weight=(pleura_band * drawn).astype(np.float32),
        consolidation_weight=None if cons_weight is None else cons_weight.astype(np.float32),
        effusion_weight=None if eff_weight is None else eff_weight.astype(np.float32),
    )
