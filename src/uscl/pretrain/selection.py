"""Which videos a run uses: data rate, the validation hold-out (by patient), label rate.

All draws come from the run's seed, so the same seed gives the same split.
"""

from __future__ import annotations

from collections import defaultdict

from uscl.utils.seed import derive_rng


def select_videos(num_videos: int, data_rate: float, seed: int) -> list[int]:
    """A random ``data_rate`` fraction of the videos (at least 2 when there are 2)."""
    if data_rate >= 1:
        return list(range(num_videos))
    k = max(min(2, num_videos), int(round(data_rate * num_videos)))
    return sorted(int(i) for i in derive_rng(seed, "data-rate").choice(num_videos, size=k, replace=False))


def split_train_val(store, indices: list[int], valid_size: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out about ``valid_size`` of the videos, whole patients at a time (a video without
    patient is its own group); the training side keeps at least 2 videos."""
    if valid_size <= 0 or len(indices) < 4:
        return list(indices), []
    groups: dict[str, list[int]] = defaultdict(list)
    for i in indices:
        rec = store.videos[i]
        groups[f"p:{rec.patient}" if rec.patient else f"v:{rec.video_id}"].append(i)
    keys = sorted(groups)
    order = derive_rng(seed, "validation-split").permutation(len(keys))
    target = int(round(valid_size * len(indices)))
    val: list[int] = []
    for j in order:
        if len(val) >= target:
            break
        g = groups[keys[j]]
        if len(indices) - len(val) - len(g) < 2:
            continue
        val += g
    val_set = set(val)
    return [i for i in indices if i not in val_set], sorted(val)


def choose_labelled(store, train: list[int], label_rate: float, seed: int) -> list[bool]:
    """Mask over ``train``: whose labels are used. Stratified by class; at least one video per
    class when label_rate > 0."""
    mask = [False] * len(train)
    if label_rate <= 0:
        return mask
    by_class: dict[str, list[int]] = defaultdict(list)
    for pos, i in enumerate(train):
        lab = store.videos[i].label
        if lab is not None:
            by_class[lab].append(pos)
    rng = derive_rng(seed, "label-rate")
    for lab in sorted(by_class):
        members = by_class[lab]
        k = len(members) if label_rate >= 1 else max(1, int(round(label_rate * len(members))))
        for pos in rng.choice(members, size=k, replace=False):
            mask[int(pos)] = True
    return mask
