"""Label-fraction ablation: fine-tune on 10/25/50/100% of each training fold's videos.

Only a fold's ``train`` side shrinks; ``val`` and ``test`` are never touched, so
every fraction is scored on the same test videos (and picks its epoch on the
same validation videos: carve validation before subsampling, as
:func:`uscl.finetune.train.build_splits` does for a split passed in, if it
should not shrink with the fraction).

The subset is drawn by *group* (the patient when recorded, else the video), so a
patient's videos stay together, and stratified by class:

* each group is assigned the majority class of its training videos (a tie goes
  to the class with fewer training videos, then to a random one of the tied);
* per class, one random order of its groups is drawn from
  ``derive_rng(seed, "label-fraction", fold_index)``; the subset takes the
  prefix whose video count is closest to ``fraction`` of that class's videos
  (the shorter on a tie), and at least one group;
* every class present in the training side keeps at least one video: a class
  that no group is assigned to (all its videos sit in patients of another
  majority class) gets the first group, in a random order, that holds one of
  its videos, for every fraction.

The random orders do not depend on ``fraction`` and the prefix length grows
with it, so for one seed and fold the subsets are nested (10% ⊂ 25% ⊂ 50% ⊂
100%): a larger fraction only adds labelled videos. Without patients the
per-class counts are exact (``max(1, round(fraction * n_class))``, halves
rounded down); with patients they are approximate, by at most a group.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Mapping, Sequence

from uscl.errors import ConfigError, UsclError
from uscl.finetune.splits import Fold, Splits, check_leakage, group_of
from uscl.utils.seed import derive_rng

PURPOSE = "label-fraction"


def check_fraction(fraction: float) -> float:
    """``fraction`` as a float in (0, 1]; anything else is a ConfigError on ``fraction``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction) \
            or not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be within (0, 1], got {fraction!r}", param="fraction")
    return float(fraction)


def _closest_prefix(cum: Sequence[int], target: float) -> int:
    """The prefix length k >= 1 whose count ``cum[k-1]`` is closest to ``target`` (the shorter on a tie)."""
    best = min(range(len(cum)), key=lambda i: (abs(cum[i] - target), i))
    return best + 1


def training_subset(train: Sequence[str], labels: Mapping[str, str], fraction: float, seed: int,
                    fold_index: int, groups: Mapping[str, str] | None = None) -> list[str]:
    """The videos of ``train`` kept at ``fraction``, in ``train``'s order (see the module doc for the draw).

    ``labels``: video id -> class (every training video needs one); ``groups``:
    video id -> group (``patient:...``); a video missing from ``groups`` is its own group.
    """
    fraction = check_fraction(fraction)
    if not train:
        raise UsclError(f"train: fold {fold_index} has no training videos to subsample", param="train")
    unlabelled = [v for v in train if labels.get(v) in (None, "")]
    if unlabelled:
        raise UsclError(f"labels: training video(s) without a label: {', '.join(unlabelled[:5])}", param="labels")
    if len(set(train)) != len(train):
        dup = sorted(v for v, n in Counter(train).items() if n > 1)
        raise UsclError(f"train: fold {fold_index} lists video(s) twice: {', '.join(dup[:5])}", param="train")
    if fraction == 1:
        return list(train)
    groups = groups or {}
    members: dict[str, list[str]] = defaultdict(list)
    for v in train:
        members[groups.get(v) or f"video:{v}"].append(v)
    n_class = Counter(labels[v] for v in train)
    classes = sorted(n_class)
    rng = derive_rng(seed, PURPOSE, fold_index)
    by_class: dict[str, list[str]] = defaultdict(list)
    for g in sorted(members):  # every draw in a fixed order, independent of fraction: nested subsets
        counts = Counter(labels[v] for v in members[g])
        top = max(counts.values())
        rarest = min(n_class[c] for c in counts if counts[c] == top)
        tied = sorted(c for c in counts if counts[c] == top and n_class[c] == rarest)
        by_class[tied[int(rng.integers(len(tied)))] if len(tied) > 1 else tied[0]].append(g)
    chosen: set[str] = set()
    for c in classes:
        if not by_class[c]:
            continue
        order = [by_class[c][i] for i in rng.permutation(len(by_class[c]))]
        cum, total = [], 0
        for g in order:
            total += len(members[g])
            cum.append(total)
        chosen.update(order[:_closest_prefix(cum, fraction * total)])
    for c in classes:  # a class with no group of its own still keeps one video
        if by_class[c]:
            continue
        holders = [g for g in sorted(members) if any(labels[v] == c for v in members[g])]
        chosen.add(holders[int(rng.integers(len(holders)))])
    return [v for v in train if (groups.get(v) or f"video:{v}") in chosen]


def subsample_fold(fold: Fold, labels: Mapping[str, str], fraction: float, seed: int,
                   groups: Mapping[str, str] | None = None) -> Fold:
    """A copy of ``fold`` whose ``train`` holds ``fraction`` of its videos; ``val`` and ``test`` unchanged."""
    train = training_subset(fold.train, labels, fraction, seed, fold.index, groups)
    return Fold(fold.index, train, list(fold.test), list(fold.val))


def subsample_splits(splits: Splits, fraction: float, seed: int, store=None) -> Splits:
    """A new :class:`Splits` whose every fold trains on ``fraction`` of its training videos.

    Groups come from ``store`` when given (so an edited splits.json cannot split
    a patient), else from ``splits.groups``. The result records the fraction in
    ``label_fraction`` and a note, and passes :func:`check_leakage`. Subsampling
    splits that are already subsampled is refused: the fractions are nested only
    when drawn from the full training folds.
    """
    fraction = check_fraction(fraction)
    if splits.label_fraction < 1:
        raise ConfigError(f"splits: already subsampled to {splits.label_fraction:g} of the training videos; "
                          "subsample the full splits", param="splits")
    groups = dict(splits.groups)
    if store is not None:
        groups.update({v: group_of(store[v]) for v in splits.labels})
    folds = [subsample_fold(f, splits.labels, fraction, seed, groups) for f in splits.folds]
    notes = list(splits.notes)
    if fraction < 1:
        notes.append(f"label fraction: {fraction:.0%} of each fold's training videos (stratified by class, "
                     f"whole patients, nested across fractions), seed {seed}; val and test unchanged")
    out = replace(splits, folds=folds, labels=dict(splits.labels), groups=dict(splits.groups),
                  excluded=dict(splits.excluded), notes=notes, label_fraction=fraction)
    check_leakage(out, store)
    return out
