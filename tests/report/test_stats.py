"""uscl.report.stats against hand computations."""

import math

import pytest

from uscl.errors import ConfigError, UsclError
from uscl.report.stats import (best_baseline, differences_table, paired_differences, per_seed, per_seed_table,
                               score_table, study_markdown, summarize, summary_table, t_interval)

T975_DF3 = 3.182446  # t_{0.975, 3}
T975_DF2 = 4.302653  # t_{0.975, 2}


def test_t_interval_hand_example():
    iv = t_interval([0.8, 0.9, 0.7, 0.85])
    mean = 3.25 / 4  # 0.8125
    s = math.sqrt((0.0125**2 + 0.0875**2 + 0.1125**2 + 0.0375**2) / 3)  # 0.085391...
    half = T975_DF3 * s / math.sqrt(4)
    assert iv.n == 4 and iv.unit == "cell" and iv.has_ci
    assert iv.mean == pytest.approx(mean, abs=1e-6)
    assert iv.std == pytest.approx(s, abs=1e-6)
    assert iv.lo == pytest.approx(mean - half, abs=1e-6)
    assert iv.hi == pytest.approx(mean + half, abs=1e-6)
    # the same, written out: s = 0.085391, half-width = 3.182446 * 0.085391 / 2 = 0.135877
    assert (iv.lo, iv.hi) == pytest.approx((0.676623, 0.948377), abs=1e-6)


def test_one_value_has_no_interval():
    iv = t_interval([0.75])
    assert iv.mean == 0.75 and iv.n == 1 and iv.lo is None and iv.hi is None and iv.std is None
    assert not iv.has_ci
    assert summarize({(None, 0): 0.75}).lo is None
    assert "0.750 (no CI: n=1)" in summary_table({"random": {(None, 0): 0.75}})


def test_cell_and_seed_units():
    scores = {(0, 0): 0.8, (0, 1): 0.9, (1, 0): 0.7, (1, 1): 0.75, (2, 0): 0.9, (2, 1): 1.0}
    cell = summarize(scores, unit="cell")
    assert cell.n == 6 and cell.unit == "cell"
    assert cell.mean == pytest.approx(5.05 / 6, abs=1e-9)
    seed = summarize(scores, unit="seed")
    means = [0.85, 0.725, 0.95]  # folds averaged within each seed
    m = sum(means) / 3
    s = math.sqrt(sum((x - m) ** 2 for x in means) / 2)
    assert seed.n == 3 and seed.unit == "seed"
    assert seed.mean == pytest.approx(0.841667, abs=1e-6)
    assert seed.lo == pytest.approx(m - T975_DF2 * s / math.sqrt(3), abs=1e-6)
    assert seed.hi == pytest.approx(m + T975_DF2 * s / math.sqrt(3), abs=1e-6)
    assert seed.hi - seed.lo > cell.hi - cell.lo  # seeds as the unit: wider, honest about 3 seeds
    # a seedless init has one seed unit: no interval
    assert summarize({(None, 0): 0.7, (None, 1): 0.8}, unit="seed").lo is None
    rows = per_seed(scores)
    assert list(rows) == [0, 1, 2] and rows[1].mean == pytest.approx(0.725) and rows[1].n == 2


def test_seed_unit_needs_the_same_folds_per_seed():
    with pytest.raises(UsclError, match="seed 1 fold 1") as e:
        summarize({(0, 0): 0.8, (0, 1): 0.9, (1, 0): 0.7}, unit="seed", name="uscl")
    assert e.value.param == "scores"


def test_paired_differences_hand_example():
    a = {(0, 0): 0.8, (0, 1): 0.7, (1, 0): 0.9, (1, 1): 0.6}
    b = {(0, 0): 0.7, (0, 1): 0.7, (1, 0): 0.8, (1, 1): 0.65}
    p = paired_differences(a, b, names=("uscl", "simclr"))
    d = [0.1, 0.0, 0.1, -0.05]
    m = sum(d) / 4  # 0.0375
    s = math.sqrt(sum((x - m) ** 2 for x in d) / 3)
    assert p.pairing == "cell" and p.n == 4
    assert [p.diffs[c] for c in [(0, 0), (0, 1), (1, 0), (1, 1)]] == pytest.approx(d, abs=1e-12)
    assert (p.won, p.lost, p.tied) == (2, 1, 1)
    assert p.interval.mean == pytest.approx(m, abs=1e-6)
    assert p.interval.lo == pytest.approx(m - T975_DF3 * s / 2, abs=1e-6)
    assert p.interval.hi == pytest.approx(m + T975_DF3 * s / 2, abs=1e-6)
    by_seed = paired_differences(a, b, unit="seed")
    assert by_seed.interval.n == 2 and by_seed.interval.mean == pytest.approx(m)
    assert (by_seed.won, by_seed.lost, by_seed.tied) == (2, 1, 1)  # always counted over cells


def test_seedless_baseline_pairs_by_fold_for_every_seed():
    a = {(0, 0): 0.8, (0, 1): 0.7, (1, 0): 0.9, (1, 1): 0.6}
    random = {(None, 0): 0.7, (None, 1): 0.6}  # evaluated once per fold
    p = paired_differences(a, random, names=("uscl", "random"))
    assert p.pairing == "fold"
    assert p.diffs == pytest.approx({(0, 0): 0.1, (0, 1): 0.1, (1, 0): 0.2, (1, 1): 0.0}, abs=1e-12)
    assert (p.won, p.lost, p.tied) == (3, 0, 1)
    assert p.interval.mean == pytest.approx(0.1, abs=1e-6) and p.interval.n == 4
    # the other way round: the same cells, negated
    q = paired_differences(random, a, names=("random", "uscl"))
    assert q.diffs == pytest.approx({c: -v for c, v in p.diffs.items()}, abs=1e-12)
    assert (q.won, q.lost, q.tied) == (0, 3, 1)
    # seed unit: each seed's mean difference (0.1, 0.1) -> mean 0.1, no spread
    s = paired_differences(a, random, unit="seed")
    assert s.interval.n == 2 and s.interval.mean == pytest.approx(0.1) and s.interval.std == pytest.approx(0, abs=1e-12)
    # a baseline evaluated once per fold per seed pairs cell by cell
    seeded = {(0, 0): 0.7, (0, 1): 0.6, (1, 0): 0.7, (1, 1): 0.6}
    assert paired_differences(a, seeded).diffs == pytest.approx(p.diffs)


def test_mismatched_cells_are_named():
    a = {(0, 0): 0.8, (0, 1): 0.7, (1, 0): 0.9, (1, 1): 0.6}
    b = {(0, 0): 0.7, (0, 1): 0.7, (1, 0): 0.8, (2, 0): 0.5}
    with pytest.raises(UsclError, match=r"only 'uscl' has seed 1 fold 1; only 'simclr' has seed 2 fold 0") as e:
        paired_differences(a, b, names=("uscl", "simclr"))
    assert e.value.param == "b"
    # a seedless baseline missing a fold: the seeded cells of that fold are named
    with pytest.raises(UsclError, match=r"only 'uscl' has seed 0 fold 1, seed 1 fold 1"):
        paired_differences(a, {(None, 0): 0.7}, names=("uscl", "random"))
    # ... and a fold the seeded side lacks
    with pytest.raises(UsclError, match=r"only 'random' has fold 2"):
        paired_differences(a, {(None, 0): 0.7, (None, 1): 0.6, (None, 2): 0.5}, names=("uscl", "random"))


def test_bad_arguments():
    with pytest.raises(ConfigError) as e:
        summarize({(0, 0): 0.5}, unit="fold")
    assert e.value.param == "unit"
    with pytest.raises(ConfigError) as e:
        t_interval([0.5, 0.6], confidence=1.5)
    assert e.value.param == "confidence"
    with pytest.raises(UsclError, match="seed 0 fold 1 twice") as e:
        score_table([("uscl", 0, 1, 0.5), ("uscl", 0, 1, 0.6)])
    assert e.value.param == "rows"
    with pytest.raises(UsclError, match="mixes"):
        score_table([("uscl", 0, 0, 0.5), ("uscl", None, 1, 0.6)])
    with pytest.raises(UsclError, match="finite"):
        score_table([("uscl", 0, 0, float("nan"))])


def _table():
    return score_table([
        ("random", None, 0, 0.6), ("random", None, 1, 0.7),
        ("imagenet", None, 0, 0.75), ("imagenet", None, 1, 0.65),
        ("uscl", 0, 0, 0.8), ("uscl", 0, 1, 0.7), ("uscl", 1, 0, 0.9), ("uscl", 1, 1, 0.6),
        ("simclr", 0, 0, 0.7), ("simclr", 0, 1, 0.7), ("simclr", 1, 0, 0.8), ("simclr", 1, 1, 0.65),
    ])


def test_best_baseline():
    table = _table()
    best = best_baseline(table, ["uscl", "simclr"], ["random", "imagenet"])
    assert best.name == "imagenet"  # 0.70 vs random's 0.65
    assert best.interval.mean == pytest.approx(0.7)
    assert set(best.means) == {"random", "imagenet"}
    d = best.diffs["uscl"]  # uscl - imagenet by fold: 0.05, 0.05, 0.15, -0.05
    assert d.b == "imagenet" and d.interval.mean == pytest.approx(0.05) and (d.won, d.lost, d.tied) == (3, 1, 0)
    with pytest.raises(UsclError, match="'mae'") as e:
        best_baseline(table, ["mae"], ["random"])
    assert e.value.param == "methods"


def test_markdown_tables():
    table = _table()
    text = summary_table(table, metric="video accuracy")
    # uscl: [0.8, 0.7, 0.9, 0.6]: mean 0.75, s = 0.129099, half = 3.182446 * s / 2 = 0.205426
    assert "| uscl | 0.750 [0.545, 0.955] | 4 |" in text
    assert "| random | 0.650 [0.015, 1.285] | 2 |" in text  # half = 12.706205 * 0.070711 / sqrt(2)
    assert "(seed, fold) cells" in text and "optimistic" in text
    assert "over seeds" in summary_table(table, unit="seed")
    assert "| random | 0.650 (no CI: n=1) | 1 |" in summary_table(table, unit="seed")
    rows = per_seed_table(table)
    assert "| uscl | 1 | 0.750 [-1.156, 2.656] | 2 | 0: 0.900, 1: 0.600 |" in rows
    assert "| random | - | 0.650 [0.015, 1.285] | 2 | 0: 0.600, 1: 0.700 |" in rows
    p = paired_differences(table["uscl"], table["random"], names=("uscl", "random"))
    diff = differences_table({"uscl": p})
    # uscl - random by fold: 0.2, 0.0, 0.3, -0.1 -> mean 0.1, s = 0.182574, half = 0.290516
    assert "| uscl | random | +0.100 [-0.191, +0.391] | 2/1/1 | 4 |" in diff
    assert "paired by fold" in diff
    full = study_markdown(table, ["uscl", "simclr"], ["random", "imagenet"], metric="video accuracy")
    assert "## Against random" in full and "## Against the best baseline (imagenet, 0.700 [" in full
    assert "| simclr | imagenet | +0.012 [" in full  # simclr - imagenet: -0.05, 0.05, 0.05, 0.0 -> 0.0125
