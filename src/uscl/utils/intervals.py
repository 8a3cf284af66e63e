"""A mean and its Student-t interval: the one formula every uncertainty in uscl uses.

It lives at the bottom of the package so that both the study statistics
(:mod:`uscl.report.stats`, which re-exports it) and the model card a
fine-tuning run writes (:mod:`uscl.finetune.model_card`) compute the same
interval; fine-tuning sits below the report stage and could not import it there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sstats

from uscl.errors import ConfigError, UsclError


@dataclass(frozen=True)
class Interval:
    """A mean and its Student-t interval over ``n`` units; ``lo``/``hi``/``std`` are None when n < 2."""

    mean: float
    lo: float | None
    hi: float | None
    n: int
    std: float | None
    unit: str = "cell"  # "cell", "seed", or "fold" (a per-seed row: over that seed's folds)
    confidence: float = 0.95

    @property
    def has_ci(self) -> bool:
        return self.lo is not None


def check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ConfigError(f"confidence must be within (0, 1), got {confidence!r}", param="confidence")


def t_interval(values: Sequence[float], confidence: float = 0.95, unit: str = "cell") -> Interval:
    """Mean ± t_{(1+confidence)/2, n-1} · s/√n of ``values`` (s: sample std, ddof=1).

    Assumes the values are independent draws; n = 1 gives no interval.
    """
    check_confidence(confidence)
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    if x.size == 0:
        raise UsclError("values: no values to average", param="values")
    if not np.all(np.isfinite(x)):
        raise UsclError("values: every value must be a finite number", param="values")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, None, None, 1, None, unit, confidence)
    std = float(x.std(ddof=1))
    half = float(sstats.t.ppf((1 + confidence) / 2, x.size - 1)) * std / math.sqrt(x.size)
    return Interval(mean, mean - half, mean + half, int(x.size), std, unit, confidence)
