"""Sample pair generation (SPG): which frames of a video make an item.

Draws are a pure function of (seed, epoch, video index), so they are the
same whatever the number of loader workers, and on resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from uscl.errors import ConfigError
from uscl.utils.seed import derive_rng, derive_seed

MODES = ("spg", "simclr")


@dataclass
class PairSamplingConfig:
    frames_per_item: int = 3  # 3: USCL's f1, f2 (anchor), f3; 2: two distinct frames, never mixed
    min_gap: int = 0  # min distance in frames between drawn frames
    max_gap: int | None = None  # max distance between the outermost drawn frames
    mode: str = "spg"  # "spg" (USCL) or "simclr" (two augmentations of one random frame)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"pairs.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.frames_per_item not in (2, 3):
            raise ConfigError(f"pairs.frames_per_item must be 2 or 3, got {self.frames_per_item}")
        if self.min_gap < 0:
            raise ConfigError(f"pairs.min_gap must be >= 0, got {self.min_gap}")
        if self.max_gap is not None:
            need = (self.frames_per_item - 1) * max(1, self.min_gap)
            if self.max_gap < need:
                raise ConfigError(
                    f"pairs.max_gap={self.max_gap} leaves no room for {self.frames_per_item} frames "
                    f"at least {max(1, self.min_gap)} apart (needs max_gap >= {need})"
                )


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise on uint64 (wrapping arithmetic)."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return x ^ (x >> np.uint64(31))


def item_uniforms(seed: int, epoch: int, videos, n: int) -> np.ndarray:
    """(len(videos), n) floats in [0, 1): a counter-based hash of (seed, epoch, video, j).

    A pure function of its arguments, like :func:`item_rng`, but for a whole
    batch in a few numpy operations (a numpy Generator per item costs more
    than reading the item's frames).
    """
    v = np.asarray(videos, dtype=np.uint64).reshape(-1, 1)
    with np.errstate(over="ignore"):
        key = _splitmix64(np.full(1, derive_seed(seed, "item-frames", int(epoch)), dtype=np.uint64))
        x = _splitmix64(key ^ _splitmix64(v * np.uint64(0x9E3779B97F4A7C15) + np.arange(n, dtype=np.uint64)))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def uses_fast_draws(cfg: PairSamplingConfig) -> bool:
    """No gap rule: frames are distinct and otherwise uniform, drawn in closed form per batch."""
    return cfg.min_gap <= 1 and cfg.max_gap is None


def batch_item_frames(num_frames, cfg: PairSamplingConfig, seed: int, epoch: int, videos) -> tuple[np.ndarray, np.ndarray]:
    """``(frames (N, 3) int64, mixable (N,) bool)`` for the items of ``videos`` in ``epoch``.

    Each row depends only on (seed, epoch, video): the same whatever batch,
    worker or rank draws it. Same rules as :func:`item_frames`: without gap
    rules, ``k`` distinct frames uniformly at random in random order (closed
    form, vectorised); with gap rules, :func:`draw_frames` item by item.
    """
    t = np.asarray(num_frames, dtype=np.int64).reshape(-1)
    videos = np.asarray(videos, dtype=np.int64).reshape(-1)
    if (t < 1).any():
        raise ValueError("a video has no frames")
    n = len(t)
    if not uses_fast_draws(cfg):
        rows = [item_frames(int(ti), cfg, item_rng(seed, epoch, int(v))) for ti, v in zip(t, videos)]
        return (np.array([r[0] for r in rows], dtype=np.int64).reshape(n, 3),
                np.array([r[1] for r in rows], dtype=bool).reshape(n))
    u = item_uniforms(seed, epoch, videos, 3)
    if cfg.mode == "simclr":
        f = np.minimum((u[:, 0] * t).astype(np.int64), t - 1)
        return np.repeat(f[:, None], 3, axis=1), np.zeros(n, dtype=bool)
    # ordered draws without replacement: a of t, b of the t-1 others, c of the t-2 left
    a = np.minimum((u[:, 0] * t).astype(np.int64), t - 1)
    b = np.minimum((u[:, 1] * np.maximum(t - 1, 1)).astype(np.int64), np.maximum(t - 2, 0))
    b = b + (b >= a)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    c = np.minimum((u[:, 2] * np.maximum(t - 2, 1)).astype(np.int64), np.maximum(t - 3, 0))
    c = c + (c >= lo)
    c = c + (c >= hi)
    three = (t >= 3) & (cfg.frames_per_item == 3)
    two = ~three & (t >= 2)
    frames = np.empty((n, 3), dtype=np.int64)
    frames[three] = np.stack([a, b, c], axis=1)[three]
    frames[two] = np.stack([a, a, b], axis=1)[two]  # two distinct frames as f1 and f3, never mixed
    one = t == 1
    frames[one] = 0
    return frames, three


def item_rng(seed: int, epoch: int, video: int) -> np.random.Generator:
    """The RNG of one (seed, epoch, video) triple, independent of worker and order."""
    return derive_rng(seed, "item-frames", int(epoch), int(video))


def draw_frames(num_frames: int, k: int, min_gap: int, max_gap: int | None, rng: np.random.Generator) -> list[int]:
    """``k`` distinct frame indices of a ``num_frames`` video, in random order.

    Uniform over all sets whose pairwise distances are >= max(1, min_gap) and
    whose span (last - first) is <= max_gap. A video too short for the gaps
    gets the largest gap that fits (frames as spread as the video allows);
    a video with fewer than ``k`` frames gets all its frames.
    """
    t = int(num_frames)
    if t <= k:
        idx = list(range(t))
        rng.shuffle(idx)
        return idx
    span = t - 1 if max_gap is None else min(int(max_gap), t - 1)
    d = max(1, int(min_gap))
    if (k - 1) * d > span:
        d = max(1, span // (k - 1))  # relax to the widest spacing that fits
    # p_i = q_i + i*(d-1) maps k strictly increasing q's onto k positions >= d apart
    slack = (k - 1) * (d - 1)
    if span >= t - 1:
        q = np.sort(rng.choice(t - slack, size=k, replace=False))
        first = 0
    else:
        # weight each first frame a by the number of valid completions within [a, a+span]
        lengths = np.minimum(span, t - 1 - np.arange(t)) - slack
        weights = np.array([math.comb(int(n), k - 1) if n >= k - 1 else 0 for n in lengths], dtype=np.float64)
        first = int(rng.choice(t, p=weights / weights.sum()))
        room = min(span, t - 1 - first) - slack
        q = np.concatenate([[0], np.sort(rng.choice(np.arange(1, room + 1), size=k - 1, replace=False))])
    pos = [int(first + qi + i * (d - 1)) for i, qi in enumerate(q)]
    order = rng.permutation(k)
    return [pos[i] for i in order]


def item_frames(num_frames: int, cfg: PairSamplingConfig, rng: np.random.Generator) -> tuple[list[int], bool]:
    """The (f1, f2, f3) frame indices of one item and whether its views may be mixed.

    Unmixable items (simclr mode, 2-frame draws, videos with < 3 frames) carry
    their two view frames as f1 and f3; f2 repeats f1 and is ignored.
    """
    if num_frames < 1:
        raise ValueError("a video has no frames")
    if cfg.mode == "simclr":
        t = int(rng.integers(num_frames))
        return [t, t, t], False
    k = cfg.frames_per_item if num_frames >= cfg.frames_per_item else min(num_frames, 2)
    drawn = draw_frames(num_frames, k, cfg.min_gap, cfg.max_gap, rng)
    if len(drawn) == 3:
        return drawn, True
    if len(drawn) == 2:
        return [drawn[0], drawn[0], drawn[1]], False
    return [drawn[0]] * 3, False
