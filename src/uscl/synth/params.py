"""Per-video knobs of the simulator, and how they are drawn for each class.

A :class:`VideoParams` fully describes what a video shows (probe, anatomy,
findings, motion, display settings); the textures themselves (speckle, the
shape of tissue layers, bronchogram branches) are drawn from the same random
generator when the video is rendered. Tests and notebooks override single
fields, e.g. ``render_video("covid", 8, 64, rng, b_line_positions=[0.5])``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uscl.errors import UsclError

CLASSES = ("covid", "pneumonia", "regular")
# File-name prefixes as in the POCUS collection, so the prefix label rule also works.
PREFIXES = {"covid": "Cov", "pneumonia": "Pneu", "regular": "Reg"}
PROBES = ("convex", "linear")


@dataclass
class Consolidation:
    """A subpleural consolidation: tissue-like lung with air bronchograms.

    ``center`` and ``width`` are lateral fractions of the sector, ``depth`` is
    how far it reaches below the pleura as a fraction of the image depth.
    """

    center: float = 0.5
    width: float = 0.4
    depth: float = 0.3
    bronchograms: int = 3  # number of branching air-bronchogram trees
    brightness: float = 0.55  # echogenicity relative to chest-wall muscle


@dataclass
class VideoParams:
    """Everything that makes one synthetic video differ from another.

    Lateral positions are fractions of the sector width (0 = left beam,
    1 = right beam), depths are fractions of the imaged depth.
    """

    label: str
    probe: str = "convex"
    sector_angle_deg: float = 65.0  # convex: opening angle of the fan
    probe_radius: float = 0.4  # convex: radius of the probe face / imaged depth
    linear_width: float = 0.75  # linear: width of the image / frame width
    pleura_depth: float = 0.22
    pleura_thickness: float = 0.010
    pleura_brightness: float = 3.0
    pleura_irregularity: float = 0.0  # 0 smooth .. 1 jagged depth
    pleura_fragmentation: float = 0.0  # 0 continuous .. 1 broken into pieces
    a_line_strength: float = 0.8
    b_line_positions: list[float] = field(default_factory=list)
    b_line_widths: list[float] = field(default_factory=list)  # lateral fractions; empty: drawn
    b_line_strength: float = 1.0
    subpleural_notches: int = 0  # small subpleural consolidations (covid)
    consolidation: Consolidation | None = None
    effusion_thickness: float = 0.0  # anechoic band above a consolidation; 0 = none
    ribs: list[float] = field(default_factory=list)  # lateral positions of rib shadows
    wall_brightness: float = 1.0
    lung_brightness: float = 0.12  # low-level reverberation texture below the pleura
    gain_db: float = 0.0
    dynamic_range_db: float = 52.0
    attenuation_db: float = 8.0  # net darkening from top to bottom after TGC
    noise_level: float = 0.02
    speckle_axial: float = 0.9  # PSF std in pixels of a 256-px image
    speckle_lateral: float = 2.2
    breath_period_s: float = 4.0
    breath_amp: float = 0.008  # vertical chest motion, fraction of depth
    slide_amp: float = 0.03  # lung sliding amplitude, fraction of width
    drift_speed: float = 0.01  # probe drift, fraction of width per second
    shimmer_rate: float = 1.2  # speckle decorrelation of the lung, radians per second
    motion_scale: float = 1.0  # multiplies all motion; 0 gives a still scene (shimmer aside)
    fps: float = 10.0

    def validate(self) -> None:
        if self.label not in CLASSES:
            raise UsclError(f"unknown class {self.label!r}; known: {', '.join(CLASSES)}")
        if self.probe not in PROBES:
            raise UsclError(f"probe must be one of {', '.join(PROBES)}, not {self.probe!r}")
        for name in ("b_line_positions", "ribs"):
            bad = [p for p in getattr(self, name) if not 0.0 <= float(p) <= 1.0]
            if bad:
                raise UsclError(f"{name} must be lateral fractions in [0, 1]; got {bad}")
        if not 0.05 <= self.pleura_depth <= 0.6:
            raise UsclError(f"pleura_depth must be in [0.05, 0.6], not {self.pleura_depth}")
        if self.fps <= 0:
            raise UsclError(f"fps must be positive, not {self.fps}")


def apply_overrides(params: VideoParams, overrides: dict[str, Any]) -> VideoParams:
    """Return ``params`` with some fields replaced; unknown names are an error."""
    known = {f.name for f in dataclasses.fields(VideoParams)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsclError(f"unknown video parameter(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    overrides = dict(overrides)
    if isinstance(overrides.get("consolidation"), dict):
        overrides["consolidation"] = Consolidation(**overrides["consolidation"])
    if "b_line_positions" in overrides and "b_line_widths" not in overrides:
        overrides["b_line_widths"] = []
    for name in ("b_line_positions", "b_line_widths", "ribs"):
        if name in overrides:
            overrides[name] = [float(v) for v in overrides[name]]
    out = dataclasses.replace(params, **overrides)
    out.validate()
    return out


def _spread_positions(n: int, rng: np.random.Generator, lo: float = 0.12, hi: float = 0.88,
                      min_gap: float = 0.09) -> list[float]:
    """``n`` lateral positions in [lo, hi], at least ``min_gap`` apart where possible."""
    best: list[float] = []
    for _ in range(20):
        pos = sorted(float(p) for p in rng.uniform(lo, hi, n))
        if all(b - a >= min_gap for a, b in zip(pos, pos[1:])):
            return pos
        best = pos
    return best


def sample_video_params(label: str, rng: np.random.Generator) -> VideoParams:
    """Draw the knobs of one video of class ``label``.

    The draw order is fixed, so one generator state always gives the same
    video. Classes share the display and geometry distributions and differ in
    their findings (pleura, A-lines, B-lines, consolidation) and motion.
    """
    if label not in CLASSES:
        raise UsclError(f"unknown class {label!r}; known: {', '.join(CLASSES)}")
    p = VideoParams(label=label)
    # Geometry and display: shared by all classes.
    p.probe = "convex" if rng.random() < 0.8 else "linear"
    p.sector_angle_deg = float(rng.uniform(45, 70))
    p.probe_radius = float(rng.uniform(0.25, 0.6))
    p.linear_width = float(rng.uniform(0.6, 0.95))
    p.pleura_depth = float(rng.uniform(0.15, 0.28) if p.probe == "convex" else rng.uniform(0.22, 0.36))
    p.gain_db = float(rng.uniform(-4, 4))
    p.dynamic_range_db = float(rng.uniform(46, 58))
    p.attenuation_db = float(rng.uniform(4, 14))
    p.noise_level = float(rng.uniform(0.005, 0.02))
    p.speckle_axial = float(rng.uniform(0.7, 1.2))
    p.speckle_lateral = float(rng.uniform(1.6, 2.8))
    p.wall_brightness = float(rng.uniform(0.8, 1.2))
    p.lung_brightness = float(rng.uniform(0.04, 0.09))
    n_ribs = int(rng.choice([0, 1, 2], p=[0.4, 0.3, 0.3]))
    if n_ribs == 1:
        p.ribs = [float(rng.choice([rng.uniform(0.0, 0.12), rng.uniform(0.88, 1.0)]))]
    elif n_ribs == 2:
        p.ribs = [float(rng.uniform(0.0, 0.1)), float(rng.uniform(0.9, 1.0))]
    # Motion.
    p.breath_period_s = float(rng.uniform(2.5, 5.0))
    p.breath_amp = float(rng.uniform(0.005, 0.02))
    p.drift_speed = float(rng.uniform(0.01, 0.04))
    p.pleura_thickness = float(rng.uniform(0.007, 0.012))
    p.pleura_brightness = float(rng.uniform(2.5, 4.0))

    if label == "regular":
        p.a_line_strength = float(rng.uniform(0.6, 1.0))
        p.slide_amp = float(rng.uniform(0.02, 0.05))
        p.shimmer_rate = float(rng.uniform(1.0, 2.0))
        p.pleura_irregularity = float(rng.uniform(0.0, 0.1))
        p.pleura_fragmentation = float(rng.uniform(0.0, 0.1))
        if rng.random() < 0.1:  # a lone faint B-line is normal
            p.b_line_positions = _spread_positions(1, rng)
            p.b_line_strength = float(rng.uniform(0.12, 0.22))
    elif label == "covid":
        p.a_line_strength = float(rng.uniform(0.0, 0.25))
        p.slide_amp = float(rng.uniform(0.005, 0.025))
        p.shimmer_rate = float(rng.uniform(0.5, 1.5))
        p.pleura_thickness *= float(rng.uniform(1.5, 2.5))
        p.pleura_irregularity = float(rng.uniform(0.4, 1.0))
        p.pleura_fragmentation = float(rng.uniform(0.3, 0.8))
        p.b_line_positions = _spread_positions(int(rng.integers(2, 7)), rng)
        p.b_line_strength = float(rng.uniform(0.8, 1.3))
        p.subpleural_notches = int(rng.integers(0, 4))
    else:  # pneumonia
        p.a_line_strength = float(rng.uniform(0.1, 0.5))
        p.slide_amp = float(rng.uniform(0.005, 0.025))
        p.shimmer_rate = float(rng.uniform(0.5, 1.2))
        p.pleura_irregularity = float(rng.uniform(0.1, 0.4))
        p.pleura_fragmentation = float(rng.uniform(0.1, 0.4))
        width = float(rng.uniform(0.3, 0.65))
        p.consolidation = Consolidation(
            center=float(rng.uniform(0.3, 0.7)),
            width=width,
            depth=float(rng.uniform(0.2, 0.5)),
            bronchograms=int(rng.integers(1, 5)),
            brightness=float(rng.uniform(0.3, 0.5)),
        )
        if rng.random() < 0.4:
            p.effusion_thickness = float(rng.uniform(0.05, 0.12))
        if rng.random() < 0.3:
            c = p.consolidation
            edge = c.center + (c.width / 2 + 0.05) * (1 if rng.random() < 0.5 else -1)
            if 0.05 < edge < 0.95:
                p.b_line_positions = [float(edge)]
                p.b_line_strength = float(rng.uniform(0.5, 0.8))
    p.validate()
    return p
