"""Which frames to keep: a target rate (nearest frame to each multiple of 1/fps) and a cap.

The rate sampler works on a stream, so a reader can convert only the frames it
keeps; a decision about frame i is known once frame i+1 (or the end) arrives.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np


class NearestTimeSampler:
    """Keeps, for each target time t0 + k/fps (k = 0, 1, ...) up to the last frame,
    the frame whose timestamp is nearest (ties go to the earlier frame). A frame
    nearest to several targets (source slower than the target rate) is kept once.
    """

    def __init__(self, fps: float):
        if not fps or fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.step = 1.0 / float(fps)
        self._t0: float | None = None
        self._k = 0
        self._prev: tuple[float, Any, bool] | None = None  # (time, payload, kept)

    def _target(self) -> float:
        return self._t0 + self._k * self.step  # type: ignore[operator]

    def push(self, t: float, payload: Any) -> list[Any]:
        """Offer the next frame (timestamps must increase); returns payloads now known to be kept."""
        out: list[Any] = []
        if self._t0 is None:
            self._t0 = t
        cur_kept = False
        while self._target() <= t + 1e-9:
            target = self._target()
            prev = self._prev
            if prev is not None and abs(prev[0] - target) <= abs(t - target):
                if not prev[2]:
                    out.append(prev[1])
                    self._prev = prev = (prev[0], prev[1], True)
            elif not cur_kept:
                cur_kept = True
            self._k += 1
        if cur_kept:
            out.append(payload)
        self._prev = (t, payload, cur_kept)
        return out


def fps_indices(times: Iterable[float], fps: float) -> list[int]:
    """Indices of the frames :class:`NearestTimeSampler` keeps for these timestamps."""
    sampler = NearestTimeSampler(fps)
    kept: list[int] = []
    for i, t in enumerate(times):
        kept.extend(sampler.push(float(t), i))
    return kept


def even_indices(n: int, cap: int | None) -> list[int]:
    """``cap`` indices spread evenly over range(n), first and last included; all if n <= cap."""
    if cap is None or n <= cap:
        return list(range(n))
    if cap <= 0:
        raise ValueError(f"max_frames must be >= 1, got {cap}")
    if cap == 1:
        return [0]
    return [int(i) for i in np.round(np.linspace(0, n - 1, cap)).astype(int)]


class MonotonicClock:
    """Fixes timestamps on a stream: a missing one, a repeat or a backstep becomes
    the previous time plus one frame period."""

    def __init__(self, fallback_fps: float | None):
        self.period = 1.0 / fallback_fps if fallback_fps and fallback_fps > 0 else 1.0
        self.last: float | None = None

    def __call__(self, t: float | None) -> float:
        if t is None:
            t = self.last + self.period if self.last is not None else 0.0
        elif self.last is not None and t <= self.last:
            t = self.last + self.period
        self.last = float(t)
        return self.last


def monotonic_times(raw: Iterable[float | None], fallback_fps: float | None) -> list[float]:
    clock = MonotonicClock(fallback_fps)
    return [clock(t) for t in raw]
