"""Cross-validation folds split by video (and by patient where the store knows one).

Frames of one video are near-duplicates, so a frame-level split makes the task
trivial. Every fold here keeps each group (patient if recorded, else video)
wholly on one side, is stratified by class, and is deterministic for a seed.
:func:`check_leakage` runs on every split used for training, generated or
imported, and fails loudly.

Imported POCOVID-Net ``cross_val.json`` files list video file names
(``Cov-Atlas+(44).gif``) or frame file names (``Cov-Atlas+(44).gif_frame0.jpg``).
They are matched to store videos by *source stem*: the file name of
``VideoRecord.source`` with any ``_frame<N>.<ext>`` suffix and extensions removed
(``pocus_videos/convex/Cov-Atlas+(44).gif`` -> ``Cov-Atlas+(44)``); an exact
stem match wins, then a case-insensitive one, then the store's video id.
Names that match no store video, or more than one, are reported, not guessed.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from uscl.errors import UsclError
from uscl.utils.atomic import atomic_write_json
from uscl.utils.seed import derive_rng, derive_seed

SPLITS_FORMAT = "uscl-splits"


MASK_SPLIT_METHOD = "stratified-group-kfold (videos with masks)"  # classes are mask classes, labels video labels
BOX_SPLIT_METHOD = "stratified-group-kfold (videos with boxes)"  # classes are box classes, labels video labels
VIDEO_LABEL_STRATA = (MASK_SPLIT_METHOD, BOX_SPLIT_METHOD)  # splits whose labels are strata, not the classes


@dataclass
class Fold:
    """Video ids of one fold; ``val`` is carved from the training side when asked."""

    index: int
    train: list[str]
    test: list[str]
    val: list[str] = field(default_factory=list)


@dataclass
class Splits:
    folds: list[Fold]
    classes: list[str]
    labels: dict[str, str]  # video_id -> class of every video in any fold
    groups: dict[str, str]  # video_id -> group (patient:... or video:...)
    seed: int = 0
    method: str = "stratified-group-kfold"
    excluded: dict[str, str] = field(default_factory=dict)  # video_id -> why it was left out
    notes: list[str] = field(default_factory=list)
    label_fraction: float = 1.0  # < 1: folds train on that fraction of their videos (finetune.label_fraction)

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def to_json(self) -> dict:
        data = {
            "format": SPLITS_FORMAT,
            "version": 1,
            "method": self.method,
            "seed": self.seed,
            "classes": self.classes,
            "n_folds": self.n_folds,
            "notes": self.notes,
            "folds": [
                {"index": f.index, "train": f.train, "val": f.val, "test": f.test} for f in self.folds
            ],
            "labels": self.labels,
            "groups": self.groups,
            "excluded": self.excluded,
        }
        if self.label_fraction < 1:  # written only when set, so full splits files stay as they were
            data["label_fraction"] = self.label_fraction
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Splits":
        folds = [Fold(int(f["index"]), list(f["train"]), list(f["test"]), list(f.get("val", []))) for f in data["folds"]]
        return cls(
            folds=folds,
            classes=list(data["classes"]),
            labels=dict(data["labels"]),
            groups=dict(data.get("groups", {})),
            seed=int(data.get("seed", 0)),
            method=str(data.get("method", "imported")),
            excluded=dict(data.get("excluded", {})),
            notes=list(data.get("notes", [])),
            label_fraction=float(data.get("label_fraction", 1.0)),
        )

    def save(self, path: str | Path) -> Path:
        atomic_write_json(path, self.to_json())
        return Path(path)

    def summary(self) -> str:
        lines = [f"{self.n_folds} folds ({self.method}, seed {self.seed}), classes: {', '.join(self.classes)}"]
        for f in self.folds:
            counts = Counter(self.labels[v] for v in f.test)
            per = ", ".join(f"{c} {counts.get(c, 0)}" for c in self.classes) if self.method not in VIDEO_LABEL_STRATA \
                else "by video label: " + ", ".join(f"{c or 'unlabelled'} {n}" for c, n in
                                                    sorted(counts.items(), key=lambda x: str(x[0])))
            val = f", val {len(f.val)}" if f.val else ""
            lines.append(f"  fold {f.index}: train {len(f.train)} videos{val}, test {len(f.test)} videos ({per})")
        if self.excluded:
            reasons = Counter(self.excluded.values())
            lines.append("  left out: " + "; ".join(f"{n} ({r})" for r, n in reasons.most_common()))
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


# -- choosing the videos ------------------------------------------------------
def parse_where(items: Iterable[str] | dict | None) -> dict[str, str]:
    """``["probe=convex", "site=a"]`` -> ``{"probe": "convex", "site": "a"}``."""
    if not items:
        return {}
    if isinstance(items, dict):
        return {str(k): str(v) for k, v in items.items()}
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise UsclError(f"where expects key=value, got {item!r}", param="where")
        out[key.strip()] = value.strip()
    return out


def _record_value(rec, key: str):
    if key in rec.extra:
        return rec.extra[key]
    return getattr(rec, key, None) if not key.startswith("_") else None


def group_of(rec) -> str:
    """The unit that must never straddle train and test: the patient, else the video."""
    return f"patient:{rec.patient}" if rec.patient not in (None, "") else f"video:{rec.video_id}"


def select_videos(store, classes: Sequence[str] | None = None, where: dict[str, str] | None = None):
    """Labelled videos of the chosen classes that pass the ``where`` filter.

    Returns ``(video_ids, classes, excluded)``; raises if nothing usable is left.
    """
    labelled = [v for v in store.videos if v.label not in (None, "")]
    if not labelled:
        raise UsclError(
            f"the store {store.root} has no labelled videos; fine-tuning needs labels "
            "(prepare it with labels, e.g. from a labels.csv or one folder per class)", param="store"
        )
    available = sorted({v.label for v in labelled})
    if classes:
        classes = [c.strip() for c in classes if c.strip()]
        unknown = [c for c in classes if c not in available]
        if unknown:
            raise UsclError(
                f"class(es) {', '.join(unknown)} not in the store (it has: {', '.join(available)})", param="classes"
            )
        if len(set(classes)) != len(classes):
            raise UsclError(f"classes lists a class twice: {','.join(classes)}", param="classes")
    else:
        classes = available
    where = where or {}
    kept, excluded = [], {}
    for rec in store.videos:
        if rec.label in (None, ""):
            excluded[rec.video_id] = "no label"
            continue
        if rec.label not in classes:
            excluded[rec.video_id] = f"class {rec.label} not selected"
            continue
        miss = [k for k, v in where.items() if str(_record_value(rec, k)) != v]
        if miss:
            excluded[rec.video_id] = "filtered out by where " + ",".join(f"{k}={where[k]}" for k in miss)
            continue
        if rec.num_frames < 1:
            excluded[rec.video_id] = "no frames"
            continue
        kept.append(rec.video_id)
    if where and not kept:
        keys = sorted({k for v in store.videos for k in v.extra})
        raise UsclError(
            f"no video matches where {', '.join(f'{k}={v}' for k, v in where.items())} "
            f"(keys recorded in the store's extra: {', '.join(keys) or 'none'})", param="where"
        )
    present = {store[v].label for v in kept}
    missing = [c for c in classes if c not in present]
    if missing:
        raise UsclError(f"no video of class(es) {', '.join(missing)} left after filtering", param="classes")
    if len(present) < 2:
        raise UsclError(f"fine-tuning needs at least 2 classes; only {', '.join(present)} is left", param="classes")
    return kept, list(classes), excluded


# -- generated folds ------------------------------------------------------------
def make_splits(
    store,
    n_folds: int = 5,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    where: dict[str, str] | None = None,
    merge_small_folds: bool = False,
) -> Splits:
    """Stratified, grouped k folds (sklearn ``StratifiedGroupKFold``, shuffled by ``seed``).

    A class with fewer groups than folds cannot appear in every test fold: it
    is an error naming the class, unless ``merge_small_folds`` is set, in which
    case its videos go to as many test folds as it has groups and the others
    test without it (recorded in ``notes``).
    """
    if n_folds < 2:
        raise UsclError(f"folds must be at least 2, got {n_folds}", param="folds")
    ids, classes, excluded = select_videos(store, classes, where)
    ids = sorted(ids)  # independent of manifest order
    labels = {v: store[v].label for v in ids}
    groups = {v: group_of(store[v]) for v in ids}
    n_groups = len(set(groups.values()))
    if n_groups < n_folds:
        raise UsclError(f"only {n_groups} videos/patients to split, fewer than folds={n_folds}", param="folds")
    per_class = {c: len({groups[v] for v in ids if labels[v] == c}) for c in classes}
    small = {c: n for c, n in per_class.items() if n < n_folds}
    unit = "patients/videos" if any(g.startswith("patient:") for g in groups.values()) else "videos"
    notes = []
    if small:
        desc = ", ".join(f"{c} has {n} {unit}" for c, n in small.items())
        if not merge_small_folds:
            others = [c for c in classes if c not in small]
            hint = f"classes={','.join(others)}" if len(others) >= 2 else "another class selection"
            raise UsclError(
                f"class(es) with fewer {unit} than folds ({n_folds}): {desc}. "
                + (f"Use folds={min(small.values())} or fewer, " if min(small.values()) >= 2 else "")
                + f"leave the class out with {hint}, "
                "or set merge_small_folds to let it be tested in fewer folds", param="merge_small_folds"
            )
        notes.append(f"merge_small_folds: {desc}; it is tested in only that many of the {n_folds} folds")
    y = np.array([classes.index(labels[v]) for v in ids])
    g = np.array([groups[v] for v in ids])
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=derive_seed(seed, "folds") % 2**32)
    folds = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        try:
            for k, (tr, te) in enumerate(splitter.split(np.zeros(len(ids)), y, g)):
                folds.append(Fold(k, [ids[i] for i in tr], [ids[i] for i in te]))
        except ValueError:
            # sklearn refuses when every class is smaller than n_folds (merge_small_folds only)
            folds = _round_robin_folds(ids, y, g, n_folds, seed)
    empty = [f.index for f in folds if not f.test]
    if empty:
        raise UsclError(f"fold(s) {empty} got no test videos; use fewer folds", param="folds")
    splits = Splits(folds, list(classes), labels, groups, seed=seed, excluded=excluded, notes=notes)
    check_leakage(splits, store)
    return splits


def make_mask_splits(store, n_folds: int = 5, seed: int = 0, where: dict[str, str] | None = None) -> Splits:
    """k folds of the videos with a mask (segmentation, detection), grouped by patient, stratified by the
    video's label where the store has labels (sklearn ``StratifiedGroupKFold``, shuffled by ``seed``).

    ``classes`` of the result are the store's mask classes; ``labels`` map each video to its video label
    (None when unlabelled), the stratum. Videos without a mask are left out with the reason.
    """
    if n_folds < 2:
        raise UsclError(f"folds must be at least 2, got {n_folds}", param="folds")
    if not store.mask_classes:
        raise UsclError(f"the store {store.root} has no masks; segmentation and detection need them (prepare "
                        "it with a mask column in the labels CSV or with mask_suffix)", param="store")
    return _annotated_splits(store, lambda i, rec: store.has_mask(i), "mask", list(store.mask_classes), n_folds,
                             seed, where, MASK_SPLIT_METHOD)


def make_box_splits(store, boxed: Iterable[str], classes: Sequence[str], n_folds: int = 5, seed: int = 0,
                    where: dict[str, str] | None = None) -> Splits:
    """k folds of the videos ``boxed`` (the video ids with at least one box in a boxes CSV), exactly as
    :func:`make_mask_splits` makes them over the masked videos: grouped by patient, stratified by the
    video label. ``classes`` are the box classes; the other videos are left out with the reason."""
    if n_folds < 2:
        raise UsclError(f"folds must be at least 2, got {n_folds}", param="folds")
    boxed = set(boxed)
    return _annotated_splits(store, lambda i, rec: rec.video_id in boxed, "box", list(classes), n_folds, seed,
                             where, BOX_SPLIT_METHOD)


PLURAL = {"mask": "masks", "box": "boxes"}


def _annotated_splits(store, annotated, what: str, classes: list[str], n_folds: int, seed: int,
                      where: dict[str, str] | None, method: str) -> Splits:
    """The folds of the videos for which ``annotated(index, record)`` holds (``what``: mask, box)."""
    where = where or {}
    ids, excluded = [], {}
    for i, rec in enumerate(store.videos):
        miss = [k for k, v in where.items() if str(_record_value(rec, k)) != v]
        if miss:
            excluded[rec.video_id] = "filtered out by where " + ",".join(f"{k}={where[k]}" for k in miss)
        elif not annotated(i, rec):
            excluded[rec.video_id] = f"no {what}"
        elif rec.num_frames < 1:
            excluded[rec.video_id] = "no frames"
        else:
            ids.append(rec.video_id)
    if where and not ids:
        raise UsclError(f"no video with a {what} matches where {', '.join(f'{k}={v}' for k, v in where.items())}",
                        param="where")
    ids = sorted(ids)
    labels = {v: store[v].label for v in ids}  # the video's label (None: unlabelled), the stratum
    stratum = {v: labels[v] or "unlabelled" for v in ids}
    groups = {v: group_of(store[v]) for v in ids}
    n_groups = len(set(groups.values()))
    if n_groups < n_folds:
        raise UsclError(f"only {n_groups} videos/patients with {PLURAL[what]} to split, fewer than folds={n_folds}",
                        param="folds")
    strata = sorted(set(stratum.values()))
    per = {c: len({groups[v] for v in ids if stratum[v] == c}) for c in strata}
    notes = []
    if min(per.values()) < n_folds:  # a label too rare to stratify on: plain grouped folds
        notes.append("not stratified: " + ", ".join(f"{c} has {n} videos/patients" for c, n in per.items()
                                                     if n < n_folds) + f" (fewer than {n_folds} folds)")
        strata = ["all"]
    y = np.array([strata.index(stratum[v]) if len(strata) > 1 else 0 for v in ids])
    g = np.array([groups[v] for v in ids])
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=derive_seed(seed, "folds") % 2**32)
    folds = [Fold(k, [ids[i] for i in tr], [ids[i] for i in te])
             for k, (tr, te) in enumerate(splitter.split(np.zeros(len(ids)), y, g))]
    splits = Splits(folds, list(classes), labels, groups, seed=seed, method=method, excluded=excluded, notes=notes)
    check_leakage(splits, store)
    return splits


def _round_robin_folds(ids, y, g, n_folds: int, seed: int) -> list[Fold]:
    """Deal each class's groups (shuffled by seed) to the folds in turn, continuing across classes."""
    rng = derive_rng(seed, "folds-round-robin")
    group_label = {}
    for grp, lab in zip(g, y):
        group_label.setdefault(grp, Counter())[int(lab)] += 1
    fold_of, turn = {}, 0
    for lab in sorted(set(int(v) for v in y)):
        grps = sorted(grp for grp, c in group_label.items() if c.most_common(1)[0][0] == lab)
        for grp in rng.permutation(grps):
            fold_of[grp] = turn % n_folds
            turn += 1
    return [Fold(k, [v for v, grp in zip(ids, g) if fold_of[grp] != k], [v for v, grp in zip(ids, g) if fold_of[grp] == k])
            for k in range(n_folds)]


def carve_validation(splits: Splits, fraction: float = 0.2, seed: int = 0) -> Splits:
    """Hold out about ``fraction`` of each fold's training groups as validation, by video/patient.

    The test fold is never touched: validation only picks the epoch.
    """
    if not 0 < fraction < 1:
        raise UsclError(f"val_fraction must be between 0 and 1, got {fraction}", param="val_fraction")
    n_parts = max(2, int(round(1 / fraction)))
    for fold in splits.folds:
        ids = sorted(fold.train + fold.val)
        # the class; for mask splits (whose classes are mask classes) the video label is the stratum
        strata = list(splits.classes) + sorted({str(splits.labels[v]) for v in ids} - set(splits.classes))
        y = np.array([strata.index(str(splits.labels[v])) for v in ids])
        g = np.array([splits.groups.get(v, f"video:{v}") for v in ids])
        n_groups = len(set(g))
        if n_groups < 2:
            raise UsclError(f"fold {fold.index}: too few training videos ({n_groups}) to carve a validation split",
                            param="select")
        # sklearn needs n_splits <= the largest class's member count
        n_split = min(n_parts, n_groups, int(np.bincount(y).max()))
        if n_split < 2:
            raise UsclError(f"fold {fold.index}: too few training videos per class to carve a validation split",
                            param="select")
        splitter = StratifiedGroupKFold(n_splits=n_split, shuffle=True,
                                        random_state=derive_seed(seed, "fold-split", fold.index) % 2**32)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class")
            tr, va = next(iter(splitter.split(np.zeros(len(ids)), y, g)))
        fold.train = [ids[i] for i in tr]
        fold.val = [ids[i] for i in va]
    splits.notes.append(f"validation: {fraction:.0%} of each training fold, by video/patient, seed {seed}")
    check_leakage(splits)
    return splits


def select_folds(splits: Splits, only: Sequence[int] | None) -> list[Fold]:
    """The folds a run trains (``only_folds``), in split order; all of them when ``only`` is None.

    Selection never changes a fold's videos: the split is always made over all folds.
    """
    if only is None:
        return list(splits.folds)
    indices = [f.index for f in splits.folds]
    twice = sorted({k for k in only if list(only).count(k) > 1})
    if twice:
        raise UsclError(f"only_folds lists fold(s) {', '.join(map(str, twice))} more than once", param="only_folds")
    bad = [k for k in only if k not in indices]
    if bad:
        raise UsclError(
            f"only_folds {', '.join(map(str, bad))}: out of range; the split has {splits.n_folds} folds "
            f"(indices {min(indices)}-{max(indices)})", param="only_folds"
        )
    wanted = set(only)
    return [f for f in splits.folds if f.index in wanted]


# -- leakage ------------------------------------------------------------------
def check_leakage(splits: Splits, store=None) -> None:
    """Fail loudly if any video or patient sits on two sides of a fold.

    Checks train/val/test disjointness per fold by video id and by group; with
    ``store`` it re-derives groups from the store (so a stale or edited
    splits.json cannot hide a patient on both sides) and checks that every
    video exists and carries the recorded label.
    """
    problems = []
    groups = dict(splits.groups)
    if store is not None:
        for v in splits.labels:
            try:
                rec = store[v]
            except KeyError:
                problems.append(f"video {v} is not in the store")
                continue
            if rec.label != splits.labels[v]:
                problems.append(f"video {v} is labelled {rec.label!r} in the store but {splits.labels[v]!r} in the splits")
            groups[v] = group_of(rec)
    seen_test = Counter()
    for f in splits.folds:
        sides = {"train": f.train, "val": f.val, "test": f.test}
        for name, vids in sides.items():
            dup = [v for v, n in Counter(vids).items() if n > 1]
            if dup:
                problems.append(f"fold {f.index}: {name} lists video(s) twice: {', '.join(dup[:5])}")
        names = list(sides)
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                a, b = names[i], names[j]
                both = set(sides[a]) & set(sides[b])
                if both:
                    problems.append(f"fold {f.index}: video(s) on both {a} and {b}: {', '.join(sorted(both)[:5])}")
                ga = {groups.get(v, f"video:{v}") for v in sides[a]}
                gb = {groups.get(v, f"video:{v}") for v in sides[b]}
                shared = sorted(x for x in ga & gb if x.startswith("patient:"))
                if shared:
                    problems.append(
                        f"fold {f.index}: patient(s) on both {a} and {b}: {', '.join(s[8:] for s in shared[:5])}"
                    )
        if not f.test:
            problems.append(f"fold {f.index} has no test videos")
        if not f.train:
            problems.append(f"fold {f.index} has no training videos")
        seen_test.update(f.test)
    twice = [v for v, n in seen_test.items() if n > 1]
    if twice:
        problems.append(f"video(s) in more than one test fold: {', '.join(sorted(twice)[:5])}")
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise UsclError("LEAKAGE CHECK FAILED: " + "; ".join(problems[:8]) + more)


# -- loading and importing ----------------------------------------------------------
def load_splits(path: str | Path, store, classes: Sequence[str] | None = None, where=None) -> Splits:
    """Read our own splits.json or import a POCOVID-Net cross_val.json (auto-detected)."""
    path = Path(path)
    if not path.is_file():
        raise UsclError(f"splits file not found: {path}", param="splits")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UsclError(f"{path} is not valid JSON: {exc}", param="splits") from exc
    if isinstance(data, dict) and data.get("format") == SPLITS_FORMAT:
        splits = Splits.from_json(data)
        if classes and list(classes) != splits.classes:
            raise UsclError(
                f"{path} was made for classes {','.join(splits.classes)}, not {','.join(classes)}", param="classes"
            )
        if where:
            raise UsclError("where cannot be combined with a uscl splits.json (it already fixes the videos)",
                            param="where")
        check_leakage(splits, store)
        return splits
    return import_pocovid_splits(path, store, classes=classes, where=where, data=data)


_FRAME_SUFFIX = re.compile(r"_frame\d+(\.\w+)?$", re.IGNORECASE)


def source_stem(name: str) -> str:
    """``dir/Cov-Atlas+(44).gif_frame3.jpg`` -> ``Cov-Atlas+(44)`` (the POCOVID-Net video key)."""
    base = Path(str(name).replace("\\", "/")).name
    base = _FRAME_SUFFIX.sub("", base)
    return base.split(".")[0]


_POCOVID_LABELS = {"cov": "covid", "pne": "pneumonia", "reg": "regular", "vir": "viral"}


def _check_pocovid_layout(path: Path, data) -> None:
    if not isinstance(data, dict) or not data or not all(
        isinstance(v, dict) and "train" in v and "test" in v for v in data.values()
    ):
        raise UsclError(
            f"{path} is neither a uscl splits.json nor a POCOVID-Net cross_val.json "
            '({"0": {"train": [[files], [labels]], "test": [[files], [labels]]}, ...})', param="splits"
        )


def import_pocovid_splits(path, store, classes=None, where=None, data=None) -> Splits:
    """Map a POCOVID-Net ``cross_val.json`` onto store videos by source stem (see module doc)."""
    path = Path(path)
    if data is None:
        data = json.loads(Path(path).read_text())
    _check_pocovid_layout(path, data)
    allowed, classes, excluded = select_videos(store, classes, where)
    allowed = set(allowed)
    exact, lower = defaultdict(list), defaultdict(list)
    for rec in store.videos:
        stem = source_stem(rec.source)
        exact[stem].append(rec.video_id)
        lower[stem.lower()].append(rec.video_id)
    ids_by_id = {rec.video_id: rec.video_id for rec in store.videos}

    unmatched, ambiguous, left_out, label_conflicts = set(), set(), set(), []

    def match(name: str) -> str | None:
        stem = source_stem(name)
        cands = exact.get(stem) or lower.get(stem.lower()) or ([ids_by_id[stem]] if stem in ids_by_id else [])
        if not cands:
            unmatched.add(stem)
            return None
        if len(cands) > 1:
            ambiguous.add(f"{stem} -> {', '.join(cands)}")
            return None
        return cands[0]

    folds = []
    for k, key in enumerate(sorted(data, key=lambda s: (len(str(s)), str(s)))):
        sides = {}
        for side in ("train", "test"):
            entry = data[key][side]
            files = entry[0] if entry and isinstance(entry[0], list) else entry
            labs = entry[1] if entry and isinstance(entry[0], list) and len(entry) > 1 else [None] * len(files)
            vids = []
            for name, lab in zip(files, labs):
                vid = match(name)
                if vid is None:
                    continue
                if vid not in allowed:
                    left_out.add(vid)
                    continue
                if lab is not None:
                    want = _POCOVID_LABELS.get(str(lab)[:3].lower(), str(lab))
                    if want != store[vid].label:
                        label_conflicts.append(f"{name}: {lab} in the file, {store[vid].label} in the store")
                if vid not in vids:
                    vids.append(vid)
            sides[side] = vids
        folds.append(Fold(k, sides["train"], sides["test"]))
    if ambiguous:
        raise UsclError(f"{path}: names matching several store videos: {'; '.join(sorted(ambiguous)[:5])}",
                        param="splits")
    if label_conflicts:
        raise UsclError(f"{path}: labels disagree with the store: {'; '.join(label_conflicts[:5])}", param="splits")
    used = {v for f in folds for v in f.train + f.test}
    if not used:
        raise UsclError(f"{path}: no file name matches a video of the store (matched by source stem)", param="splits")
    notes = [f"imported from {path.name}; file names matched to store videos by source stem"]
    if unmatched:
        notes.append(f"{len(unmatched)} name(s) in the file match no store video: {', '.join(sorted(unmatched)[:10])}")
    if left_out:
        notes.append(f"{len(left_out)} matched video(s) left out by classes/where")
    not_in_file = sorted(allowed - used)
    for v in not_in_file:
        excluded[v] = "not listed in the imported splits"
    labels = {v: store[v].label for v in sorted(used)}
    groups = {v: group_of(store[v]) for v in labels}
    present = sorted(set(labels.values()))
    splits = Splits(folds, [c for c in classes if c in present], labels, groups, method=f"imported:{path.name}",
                    excluded=excluded, notes=notes)
    check_leakage(splits, store)
    return splits
