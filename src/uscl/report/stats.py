"""Statistics of a study table: per-(init, seed, fold) scores -> means, 95% intervals, paired differences.

A study fine-tunes every init on the same video-level folds, once per
pretraining seed. Its table maps each init to its *cells*, ``{(seed, fold):
score}`` (e.g. video accuracy). An init that has no pretraining seed (``random``,
``imagenet`` evaluated once per fold) uses ``seed=None`` for all of its cells.

Which unit the interval is over (``unit``):

* ``"cell"``: a Student-t interval over all n (seed, fold) cells. The cells are
  not independent: the folds of one seed share most of their training videos,
  and each seed's folds are the same videos, so this interval is optimistic
  (too narrow). It shows the spread of single evaluations.
* ``"seed"``: the folds of each seed are averaged first, then a t-interval over
  the seeds. Seeds are independent pretraining runs, so this is the honest
  interval for "how much does the pretraining method help", but with 3 seeds it
  is wide (t_{0.975, 2} = 4.30). An init without seeds has one unit: no interval.

Every table and interval records the unit it used. Fewer than 2 units give no
interval (``lo``/``hi`` are None) rather than a made-up one.

Paired differences (``a - b`` on the same cells) remove the fold-to-fold
variation that both inits share. A seedless side pairs by fold: its fold-k
score is reused against every seed's fold-k cell of the other side (the same
baseline evaluation is the reference for each pretraining seed). Those reused
scores make the cell differences of one fold correlated across seeds, one more
reason to prefer ``unit="seed"`` for claims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from uscl.errors import ConfigError, UsclError
from uscl.utils.intervals import Interval, t_interval
from uscl.utils.intervals import check_confidence as _check_confidence

Cell = tuple[int | None, int]  # (pretraining seed or None, fold index)
Scores = Mapping[Cell, float]  # one init's cells
Table = Mapping[str, Scores]  # init name -> its cells
UNITS = ("cell", "seed")
TIE_TOL = 1e-12  # |a - b| at or below this counts as a tie (scores computed two ways differ by rounding)


@dataclass(frozen=True)
class Paired:
    """``a - b`` per shared cell, their mean and interval, and the cells ``a`` won, lost and tied."""

    a: str
    b: str
    diffs: dict[Cell, float]
    interval: Interval
    won: int
    lost: int
    tied: int
    pairing: str  # "cell" (same seed and fold) or "fold" (a seedless side reused for every seed)

    @property
    def n(self) -> int:
        return len(self.diffs)


@dataclass(frozen=True)
class BestBaseline:
    """The baseline with the highest mean and each method's paired difference against it."""

    name: str
    interval: Interval
    means: dict[str, Interval]  # every baseline's mean, to show what was chosen from
    diffs: dict[str, Paired] = field(default_factory=dict)


# -- checks ---------------------------------------------------------------------------------------
def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ConfigError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}", param="unit")


def _cell_name(cell: Cell) -> str:
    seed, fold = cell
    return f"fold {fold}" if seed is None else f"seed {seed} fold {fold}"


def _cells_text(cells: Iterable[Cell], limit: int = 10) -> str:
    cells = sorted(cells, key=lambda c: (-1 if c[0] is None else c[0], c[1]))
    more = f" (and {len(cells) - limit} more)" if len(cells) > limit else ""
    return ", ".join(_cell_name(c) for c in cells[:limit]) + more


def _who(name: str) -> str:
    return f"init {name!r}" if name else "the init"


def _seedless(scores: Scores, name: str, param: str) -> bool:
    """Whether an init's cells have no pretraining seed; mixing None and int seeds is an error."""
    if not scores:
        raise UsclError(f"{param}: {_who(name)} has no scores", param=param)
    kinds = {seed is None for seed, _ in scores}
    if len(kinds) > 1:
        raise UsclError(f"{param}: {_who(name)} mixes cells without a seed and cells with one; "
                        "give every cell a seed or none", param=param)
    return kinds.pop()


def _check_scores(scores: Scores, name: str, param: str) -> None:
    bad = [c for c, v in scores.items() if v is None or not math.isfinite(float(v))]
    if bad:
        raise UsclError(f"{param}: {_who(name)} has no finite score for {_cells_text(bad)}", param=param)
    _seedless(scores, name, param)


# -- building a table -------------------------------------------------------------------------
def score_table(rows: Iterable[tuple[str, int | None, int, float]]) -> dict[str, dict[Cell, float]]:
    """``[(init, seed, fold, score), ...]`` -> ``{init: {(seed, fold): score}}``, inits in first-seen order.

    A cell given twice, a non-finite score, or an init mixing ``seed=None`` with
    seeds is an error: silently keeping one would change the statistics.
    """
    table: dict[str, dict[Cell, float]] = {}
    for init, seed, fold, score in rows:
        cells = table.setdefault(str(init), {})
        cell = (None if seed is None else int(seed), int(fold))
        if cell in cells:
            raise UsclError(f"rows: init {init!r} has {_cell_name(cell)} twice", param="rows")
        if score is None or not math.isfinite(float(score)):
            raise UsclError(f"rows: init {init!r} {_cell_name(cell)} has no finite score ({score!r})", param="rows")
        cells[cell] = float(score)
    for name, cells in table.items():
        _seedless(cells, name, "rows")
    return table


# -- means and intervals ------------------------------------------------------------------------
def seed_means(scores: Scores) -> dict[int | None, float]:
    """Each seed's mean over its folds (one entry, key None, for a seedless init), seeds sorted."""
    by_seed: dict[int | None, list[float]] = {}
    for (seed, _), v in scores.items():
        by_seed.setdefault(seed, []).append(float(v))
    keys = sorted(by_seed, key=lambda s: -1 if s is None else s)
    return {s: float(np.mean(by_seed[s])) for s in keys}


def _same_folds_per_seed(scores: Scores, name: str, param: str) -> None:
    """Seed means are comparable only when every seed has the same folds."""
    folds = {f for _, f in scores}
    seeds = {s for s, _ in scores}
    missing = [(s, f) for s in seeds for f in folds if (s, f) not in scores]
    if missing:
        raise UsclError(f"{param}: {_who(name)} lacks {_cells_text(missing)}; with unit='seed' every seed "
                        "needs the same folds (or use unit='cell')", param=param)


def summarize(scores: Scores, unit: str = "cell", confidence: float = 0.95, name: str = "") -> Interval:
    """One init's mean and interval over its cells (``unit="cell"``) or its seeds' fold means (``"seed"``)."""
    _check_unit(unit)
    _check_scores(scores, name, "scores")
    if unit == "cell":
        return t_interval(list(scores.values()), confidence, "cell")
    _same_folds_per_seed(scores, name, "scores")
    return t_interval(list(seed_means(scores).values()), confidence, "seed")


def per_seed(scores: Scores, confidence: float = 0.95, name: str = "") -> dict[int | None, Interval]:
    """Each seed's mean and t-interval over its folds (the per-seed rows of a study)."""
    _check_scores(scores, name, "scores")
    by_seed: dict[int | None, list[float]] = {}
    for (seed, fold), v in sorted(scores.items(), key=lambda kv: (-1 if kv[0][0] is None else kv[0][0], kv[0][1])):
        by_seed.setdefault(seed, []).append(float(v))
    return {s: t_interval(v, confidence, "fold") for s, v in by_seed.items()}


# -- paired differences -----------------------------------------------------------------------------
def paired_differences(a: Scores, b: Scores, unit: str = "cell", confidence: float = 0.95,
                       names: tuple[str, str] = ("a", "b")) -> Paired:
    """``a - b`` on the cells both were evaluated on, with the interval over ``unit`` and won/lost/tied.

    Pairing: two seeded inits (or two seedless ones) pair cell by cell and must
    have the same (seed, fold) cells. A seedless side pairs by fold with every
    seed of the other side: its fold-k score is reused for each seed's fold k.
    A cell (or, for a seedless side, a fold) present on one side only is an
    error naming it. Won/lost/tied always count cells (|a - b| <= 1e-12 is a tie);
    with ``unit="seed"`` the interval is over the seeds' fold-averaged differences.
    """
    _check_unit(unit)
    _check_confidence(confidence)
    _check_scores(a, names[0], "a")
    _check_scores(b, names[1], "b")
    a_free, b_free = _seedless(a, names[0], "a"), _seedless(b, names[1], "b")
    pairing = "fold" if a_free != b_free else "cell"
    if pairing == "cell":
        pairs = {c: (float(a[c]), float(b[c])) for c in a if c in b}
        only_a, only_b = set(a) - set(b), set(b) - set(a)
    else:
        free, seeded = (a, b) if a_free else (b, a)
        by_fold = {f: float(v) for (_, f), v in free.items()}
        seeded_folds = {f for _, f in seeded}
        only_free = {(None, f) for f in by_fold if f not in seeded_folds}
        only_seeded = {c for c in seeded if c[1] not in by_fold}
        only_a, only_b = (only_free, only_seeded) if a_free else (only_seeded, only_free)
        pairs = {c: ((by_fold[c[1]], float(v)) if a_free else (float(v), by_fold[c[1]]))
                 for c, v in seeded.items() if c[1] in by_fold}
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"only {names[0]!r} has {_cells_text(only_a)}")
        if only_b:
            parts.append(f"only {names[1]!r} has {_cells_text(only_b)}")
        raise UsclError(f"{names[0]!r} and {names[1]!r} are not evaluated on the same cells: "
                        + "; ".join(parts), param="b" if only_a else "a")
    order = sorted(pairs, key=lambda c: (-1 if c[0] is None else c[0], c[1]))
    diffs = {c: pairs[c][0] - pairs[c][1] for c in order}
    d = np.asarray(list(diffs.values()))
    won, lost = int((d > TIE_TOL).sum()), int((d < -TIE_TOL).sum())
    if unit == "cell":
        interval = t_interval(d, confidence, "cell")
    else:
        _same_folds_per_seed(diffs, f"{names[0]} - {names[1]}", "a")
        interval = t_interval(list(seed_means(diffs).values()), confidence, "seed")
    return Paired(names[0], names[1], diffs, interval, won, lost, len(d) - won - lost, pairing)


def best_baseline(table: Table, methods: Sequence[str], baselines: Sequence[str], unit: str = "cell",
                  confidence: float = 0.95) -> BestBaseline:
    """The baseline with the highest mean (the first listed on a tie) and every method's ``method - best``
    (a method that is itself the best baseline is left out of ``diffs``).

    Comparing against the best baseline, not only ``random``, keeps a method from
    looking good by beating a weak reference.
    """
    _check_unit(unit)
    if not baselines:
        raise ConfigError("baselines: give at least one baseline", param="baselines")
    unknown = [n for n in [*methods, *baselines] if n not in table]
    if unknown:
        raise UsclError(f"table has no scores for {', '.join(map(repr, unknown))} "
                        f"(it has: {', '.join(table)})", param="methods" if unknown[0] in methods else "baselines")
    means = {n: summarize(table[n], unit, confidence, n) for n in baselines}
    best = max(baselines, key=lambda n: means[n].mean)  # max keeps the first of equal means
    diffs = {m: paired_differences(table[m], table[best], unit, confidence, (m, best)) for m in methods if m != best}
    return BestBaseline(best, means[best], means, diffs)


# -- markdown -----------------------------------------------------------------------------------------
def _num(x: float) -> str:
    return f"{x:.3f}"


def format_interval(iv: Interval, signed: bool = False) -> str:
    """``0.812 [0.701, 0.923]``; ``0.800 (no CI: n=1)`` when there is no interval."""
    f = (lambda x: f"{x:+.3f}") if signed else _num
    if not iv.has_ci:
        return f"{f(iv.mean)} (no CI: n={iv.n})"
    return f"{f(iv.mean)} [{f(iv.lo)}, {f(iv.hi)}]"


def _unit_caption(unit: str, confidence: float) -> str:
    pct = f"{confidence:.0%}"
    if unit == "cell":
        return (f"Mean and {pct} Student-t interval over the (seed, fold) cells (n = cells). The folds of one "
                "seed share training videos, so this interval is optimistic.")
    return (f"Mean and {pct} Student-t interval over seeds (n = seeds; each seed's folds averaged first). "
            "An init without pretraining seeds has one unit and no interval.")


def summary_table(table: Table, unit: str = "cell", confidence: float = 0.95, metric: str = "score") -> str:
    """One row per init: ``| init | metric mean [lo, hi] | n |``, with a caption naming the unit."""
    _check_unit(unit)
    pct = f"{confidence:.0%}"
    lines = [_unit_caption(unit, confidence), "", f"| init | {metric} mean [{pct} CI] | n |", "|---|---|---|"]
    for name, scores in table.items():
        iv = summarize(scores, unit, confidence, name)
        lines.append(f"| {name} | {format_interval(iv)} | {iv.n} |")
    return "\n".join(lines)


def per_seed_table(table: Table, confidence: float = 0.95, metric: str = "score") -> str:
    """One row per (init, seed): mean over folds [t-interval over folds], n folds, each fold's score."""
    pct = f"{confidence:.0%}"
    lines = [f"| init | seed | {metric} mean [{pct} CI over folds] | folds | per fold |", "|---|---|---|---|---|"]
    for name, scores in table.items():
        for seed, iv in per_seed(scores, confidence, name).items():
            folds = sorted((f, v) for (s, f), v in scores.items() if s == seed)
            per = ", ".join(f"{f}: {_num(v)}" for f, v in folds)
            lines.append(f"| {name} | {'-' if seed is None else seed} | {format_interval(iv)} | {iv.n} | {per} |")
    return "\n".join(lines)


def differences_table(diffs: Mapping[str, Paired] | Sequence[Paired], confidence: float | None = None) -> str:
    """``| init | vs | Δ mean [lo, hi] | won/lost/tied | n |``; positive Δ: the init scored higher."""
    items = list(diffs.values()) if isinstance(diffs, Mapping) else list(diffs)
    if not items:
        return "_No paired differences._"
    conf = confidence if confidence is not None else items[0].interval.confidence
    units = sorted({p.interval.unit for p in items})
    unit_text = "seeds (fold-averaged differences)" if units == ["seed"] else "cells"
    caption = (f"Paired difference init − vs on the same cells (positive: the init scored higher); {conf:.0%} "
               f"Student-t interval over {unit_text}; won/lost/tied count cells.")
    if any(p.pairing == "fold" for p in items):
        caption += " A side without seeds is paired by fold: its fold score is reused for every seed."
    lines = [caption, "",
             f"| init | vs | Δ mean [{conf:.0%} CI] | won/lost/tied | n |", "|---|---|---|---|---|"]
    for p in items:
        lines.append(f"| {p.a} | {p.b} | {format_interval(p.interval, signed=True)} | "
                     f"{p.won}/{p.lost}/{p.tied} | {p.n} |")
    return "\n".join(lines)


def study_markdown(table: Table, methods: Sequence[str], baselines: Sequence[str], reference: str | None = "random",
                   unit: str = "cell", confidence: float = 0.95, metric: str = "score") -> str:
    """The study's tables: summary, per-seed rows, differences vs ``reference`` and vs the best baseline."""
    parts = ["## Summary", "", summary_table(table, unit, confidence, metric), "",
             "## Per seed", "", per_seed_table(table, confidence, metric)]
    if reference is not None:
        if reference not in table:
            raise UsclError(f"reference {reference!r} has no scores (the table has: {', '.join(table)})",
                            param="reference")
        vs_ref = {m: paired_differences(table[m], table[reference], unit, confidence, (m, reference))
                  for m in methods if m != reference}
        parts += ["", f"## Against {reference}", "", differences_table(vs_ref, confidence)]
    if baselines:
        best = best_baseline(table, methods, baselines, unit, confidence)
        parts += ["", f"## Against the best baseline ({best.name}, {format_interval(best.interval)})", "",
                  differences_table(best.diffs, confidence)]
    return "\n".join(parts)
