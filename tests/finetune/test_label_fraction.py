"""Label-fraction subsets: nested, stratified, whole patients, test and val untouched, seeded."""

from collections import Counter

import pytest

from uscl.errors import ConfigError
from uscl.finetune.label_fraction import subsample_fold, subsample_splits, training_subset
from uscl.finetune.splits import Splits, carve_validation, check_leakage, make_splits
from uscl.store import FrameStore

FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def _splits(make_store, patients=False, n_videos=36):
    store = FrameStore(make_store(n_videos=n_videos, frames=1, size=8, patients=patients))
    return store, make_splits(store, n_folds=3, seed=0)


@pytest.mark.parametrize("patients", [False, True])
def test_fractions_are_nested_and_keep_every_class(make_store, patients):
    store, splits = _splits(make_store, patients)
    for seed in (0, 1):
        subs = [subsample_splits(splits, f, seed, store=store) for f in FRACTIONS]
        for k, full in enumerate(splits.folds):
            trains = [set(s.folds[k].train) for s in subs]
            assert all(small <= big for small, big in zip(trains, trains[1:]))  # 10% ⊂ 25% ⊂ 50% ⊂ 100%
            assert trains[-1] == set(full.train)
            classes = {store[v].label for v in full.train}
            for t in trains:
                assert {store[v].label for v in t} == classes


def test_stratified_sizes_without_patients(make_store):
    store, splits = _splits(make_store)
    fold = splits.folds[0]
    per_class = Counter(store[v].label for v in fold.train)
    for f in FRACTIONS:
        sub = subsample_fold(fold, splits.labels, f, seed=3)
        got = Counter(store[v].label for v in sub.train)
        # per class: the nearest count to f * n (halves down), at least one
        want = {c: max(1, int(f * n + 0.5 - 1e-9)) for c, n in per_class.items()}
        assert got == want
        assert abs(len(sub.train) - f * len(fold.train)) <= len(per_class)


def test_patients_stay_together_and_sizes_are_close(make_store):
    store, splits = _splits(make_store, patients=True)  # patient p{i//2}: 2 videos each
    patient_videos = Counter(v.patient for v in store.videos)
    sizes = []
    for f in FRACTIONS:
        sub = subsample_splits(splits, f, seed=0, store=store)
        for fold, full in zip(sub.folds, splits.folds):
            kept = Counter(store[v].patient for v in fold.train)
            assert all(n == patient_videos[p] for p, n in kept.items())  # no patient split
            assert not {store[v].patient for v in fold.train} & {store[v].patient for v in fold.test}
            n, target = len(fold.train), f * len(full.train)
            # at least one 2-video patient per class (3 classes), else within a patient per class of the target
            assert max(0, target - 3 * 2) <= n <= max(3 * 2, target + 3 * 2)
            sizes.append((f, fold.index, n))
    half = [n for f, _, n in sizes if f == 0.5]
    full = [len(fold.train) for fold in splits.folds]
    assert all(abs(h - x / 2) <= 2 for h, x in zip(half, full))


def test_val_and_test_never_change(make_store):
    store, splits = _splits(make_store, patients=True)
    splits = carve_validation(splits, 0.25, seed=0)
    for f in FRACTIONS:
        sub = subsample_splits(splits, f, seed=5, store=store)
        for a, b in zip(sub.folds, splits.folds):
            assert a.index == b.index and a.test == b.test and a.val == b.val
            assert set(a.train) <= set(b.train)
        check_leakage(sub, store)


def test_deterministic_per_seed_and_differs_across_seeds(make_store):
    store, splits = _splits(make_store)
    a = subsample_splits(splits, 0.25, seed=7, store=store)
    b = subsample_splits(splits, 0.25, seed=7, store=store)
    c = subsample_splits(splits, 0.25, seed=8, store=store)
    assert a.to_json() == b.to_json()
    assert [f.train for f in a.folds] != [f.train for f in c.folds]
    # the draw depends on the fold index too: the same videos under another index draw differently
    fold = splits.folds[0]
    labels = splits.labels
    assert training_subset(fold.train, labels, 0.25, 7, 0) != training_subset(fold.train, labels, 0.25, 7, 1)


def test_fraction_is_recorded_and_survives_json(make_store):
    store, splits = _splits(make_store)
    assert "label_fraction" not in splits.to_json()  # full splits files are unchanged
    sub = subsample_splits(splits, 0.5, seed=0, store=store)
    assert sub.label_fraction == 0.5 and any("label fraction: 50%" in n for n in sub.notes)
    assert splits.label_fraction == 1.0 and not any("label fraction" in n for n in splits.notes)  # input untouched
    back = Splits.from_json(sub.to_json())
    assert back.label_fraction == 0.5 and [f.train for f in back.folds] == [f.train for f in sub.folds]
    with pytest.raises(ConfigError) as e:
        subsample_splits(sub, 0.5, seed=0)
    assert e.value.param == "splits"


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), True, "0.5"])
def test_fraction_out_of_range(make_store, bad):
    store, splits = _splits(make_store, n_videos=12)
    with pytest.raises(ConfigError, match="fraction") as e:
        subsample_splits(splits, bad, seed=0, store=store)
    assert e.value.param == "fraction"


def test_a_class_only_inside_other_patients_still_keeps_a_video():
    # patient P holds two "a" videos and the only "c" video: P's majority is a, yet c must be kept
    labels = {"p1": "a", "p2": "a", "p3": "c", **{f"a{i}": "a" for i in range(8)}, **{f"b{i}": "b" for i in range(8)}}
    groups = {"p1": "patient:P", "p2": "patient:P", "p3": "patient:P"}
    train = sorted(labels)
    subsets = [training_subset(train, labels, f, seed=0, fold_index=0, groups=groups) for f in FRACTIONS]
    for sub in subsets:
        assert {"p1", "p2", "p3"} <= set(sub)  # the whole patient, for every fraction
        assert {labels[v] for v in sub} == {"a", "b", "c"}
    assert all(set(x) <= set(y) for x, y in zip(subsets, subsets[1:]))
    assert subsets[-1] == train
