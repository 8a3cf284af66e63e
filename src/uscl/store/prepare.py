"""`uscl prepare`: ingest a folder of videos, DICOM, images and frame folders into a frame store.

>>> from uscl.store.prepare import prepare, PrepareOptions
>>> summary = prepare("data/pocus", "pocus_store", PrepareOptions(fps=3, max_frames=30, crop=True, size=224),
...                   labels_csv="data/pocus/labels.csv")
>>> print(summary.format())

Per input: decode (uscl.video) → sample → crop → resize → channels
(uscl.store.preprocess) → array written atomically → sidecar (uscl.store.ingest_log).
The manifest is written last. A bad file is skipped with its reason
(skipped.csv), never aborting the run. A file whose decoding breaks after some
frames (a truncated video) keeps the frames that decoded, with a note in the
record (``extra["ingest_notes"]``) and in the summary. An unreadable image of
a folder of frames is left out of that video (which stays one video) and
listed as skipped, with the folder named in the reason (and in the record's
``extra["skipped_members"]``, so a re-run that reuses the video reports it too).

Masks (uscl.store.masks): from the labels CSV's ``mask`` column, or found
beside each input by ``mask_suffix``; ``mask_classes`` names the values 1..K
(default ``["foreground"]``: binary masks). A video's mask is cut to the same
kept frames, crop box and size as its frames and written to
``masks/<video_id>.npy``; the record says so (``mask``, ``mask_hash``,
``extra["mask_source"]``, ``extra["mask_counts"]``). A mask that cannot be
used is left out with its reason in skipped.csv (and ``extra["mask_skipped"]``);
its image or video is ingested all the same.

Large archives: ``workers=N`` decodes in N processes (uscl.utils.ordered_pool;
default: the cores available). Each worker runs the same
:func:`uscl.store.ingest_one.ingest_one` (it writes the array itself and
sends back only the record); the parent saves each sidecar as its video
finishes and puts the records in input order, so the store is the one a
single process makes, byte for byte. A worker that dies (out of memory) skips
its file with that reason; the run goes on. ``shard="K/N"`` ingests the K-th
of N shards and writes a shard manifest instead of the store's
(uscl.store.shards); a plain run over the same OUT, or
:func:`uscl.store.merge.merge_shards` over separate folders, finishes it.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from uscl.errors import UsclError
from uscl.store.frame_store import ARRAYS, MANIFEST, MASKS, StoreWriter, VideoRecord
from uscl.store.ingest_log import INGEST_DIR, IngestLog
from uscl.store.ingest_one import IngestTask, Outcome, crashed_outcome, ingest_one, outcome_of, run_task
from uscl.store.masks import (
    DEFAULT_MASK_CLASSES,
    MaskSource,
    check_mask_classes,
    csv_masks,
    mask_sources,
)
from uscl.store.preprocess import PrepareOptions, preprocess_frames, read_and_preprocess
from uscl.store.shards import SHARDS, listing_digest, parse_shard, shard_of, write_shard_manifest
from uscl.store.video_ids import make_video_ids
from uscl.utils.atomic import atomic_write_text
from uscl.utils.ordered_pool import (
    WorkersCannotStart,
    available_cores,
    ordered_map,
    starting_worker,
    workers_cannot_start,
)
from uscl.utils.progress import progress
from uscl.video.discover import VideoInput, discover_inputs
from uscl.video.labels import (
    FoundLabelsError,
    LabelInfo,
    LabelResolver,
    parse_prefix_map,
    parse_where,
    read_labels_csv,
    root_labels_csv,
)

SKIPPED = "skipped.csv"
UNLABELLED = "unlabelled"
# what ingestion itself records in ``record.extra`` (the rest comes from the labels CSV)
INGEST_FIELDS = ("ingest_notes", "skipped_members", "mask_source", "mask_skipped", "mask_counts")

__all__ = ["PrepareOptions", "PrepareSummary", "prepare", "preprocess_frames", "read_and_preprocess"]


@dataclass
class PrepareSummary:
    """What a prepare run did; ``format()`` is the closing report the CLI prints."""

    out: str
    videos: int = 0
    frames: int = 0
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)  # label → {videos, frames}
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, note): kept with a warning
    decoded: int = 0  # videos decoded in this run
    reused: int = 0  # videos taken from an earlier run
    filtered: int = 0  # inputs left out by where
    ignored: list[str] = field(default_factory=list)  # files that are not media
    unmatched_labels: list[str] = field(default_factory=list)  # CSV rows naming no input
    removed: int = 0  # stale arrays of sources no longer present
    labels_csv: str | None = None  # the labels CSV used, if any
    labels_found: bool = False  # it is SRC/labels.csv, used because no labels option was given
    label_from: str | None = None  # parent | prefix, for inputs the CSV does not name
    frames_decoded: int = 0  # source frames decoded in this run
    seconds: float = 0.0
    mask_classes: list[str] = field(default_factory=list)  # names of mask values 1..K ([]: no masks)
    with_masks: int = 0  # videos stored with a mask
    without_masks: int = 0
    mask_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # class → {videos, frames, pixels}
    orphan_masks: list[str] = field(default_factory=list)  # files named as masks that match no input
    workers: int = 1  # processes that decoded (1: this one)
    shard: str | None = None  # "K/N": this run ingested one shard (no manifest; see shard_manifest)
    shard_manifest: str | None = None  # the shard manifest this run wrote
    merged_from: list[str] = field(default_factory=list)  # a merge: the shard folders it read

    @property
    def frames_per_second(self) -> float:
        """Decoding throughput of this run (source frames decoded per second)."""
        return self.frames_decoded / self.seconds if self.seconds > 0 else 0.0

    def format(self, names: dict[str, str] | None = None) -> str:
        """The closing report; its hints name ``prepare``'s parameters (``labels_csv``...), or
        what ``names`` maps them to (the CLI passes its flags: ``--labels``...)."""
        def name(param: str) -> str:
            return (names or {}).get(param, param)

        lines = [f"frame store {self.out}: {self.videos} videos, {self.frames} frames"]
        if self.shard:
            lines = [f"shard {self.shard} of frame store {self.out}: {self.videos} videos, {self.frames} frames "
                     f"(shard manifest {self.shard_manifest}; no manifest.json until every shard is in: then "
                     f"prepare SRC {self.out} without {name('shard')}, or {name('merge')} the shard folders)"]
        if self.labels_found:
            lines.append(f"labels from {self.labels_csv} (found at the root of the source; "
                         f"pass {name('labels_csv')} to choose another)")
        elif self.videos and set(self.per_label) == {UNLABELLED} and not self.labels_csv and not self.label_from:
            lines.append(f"no labels: every video is unlabelled (give a labels CSV with {name('labels_csv')}, "
                         f"or take labels from folder names with {name('label_from')} parent)")
        width = max([len(k) for k in self.per_label] + [5])
        lines.append(f"  {'label':<{width}}  videos  frames")
        for label, c in self.per_label.items():
            lines.append(f"  {label:<{width}}  {c['videos']:>6}  {c['frames']:>6}")
        if self.merged_from:
            lines.append(f"merged from {len(self.merged_from)} shard folders ({', '.join(self.merged_from)}) "
                         f"in {self.seconds:.1f} s")
        else:
            lines.append(
                f"decoded {self.decoded}, reused {self.reused} from an earlier run"
                + (f", {self.filtered} left out by {name('where')}" if self.filtered else "")
                + f"; {self.frames_decoded} frames in {self.seconds:.1f} s ({self.frames_per_second:.0f} frames/s"
                + (f", {self.workers} worker processes)" if self.workers > 1 else ")")
            )
        if self.mask_classes:
            lines.append(f"masks: {self.with_masks} with masks, {self.without_masks} without "
                         f"(values 1..{len(self.mask_classes)} = {', '.join(self.mask_classes)}, 0 = background)")
            if self.with_masks:
                cw = max([len(k) for k in self.mask_counts] + [5])
                lines.append(f"  {'class':<{cw}}  videos  frames  pixels")
                for cls, c in self.mask_counts.items():
                    lines.append(f"  {cls:<{cw}}  {c['videos']:>6}  {c['frames']:>6}  {c['pixels']:>6}")
        if self.orphan_masks:
            shown = ", ".join(self.orphan_masks[:5]) + (" ..." if len(self.orphan_masks) > 5 else "")
            lines.append(f"{len(self.orphan_masks)} files named as masks match no input (not ingested): {shown}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} files (listed in {SKIPPED}):")
            lines += [f"  {p}: {r}" for p, r in self.skipped]
        if self.notes:
            lines.append(f"kept with warnings ({len(self.notes)}):")
            lines += [f"  {p}: {n}" for p, n in self.notes]
        if self.unmatched_labels:
            shown = ", ".join(self.unmatched_labels[:5]) + (" ..." if len(self.unmatched_labels) > 5 else "")
            lines.append(f"{len(self.unmatched_labels)} labels CSV rows name no input found: {shown}")
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} files that are not videos, DICOM or images")
        if self.removed:
            lines.append(f"removed {self.removed} arrays of sources no longer ingested")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["frames_per_second"] = self.frames_per_second
        return data


def _options_diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _existing_options(out: Path) -> dict | None:
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            return dict(json.loads(manifest.read_text()).get("options", {}))
        except (json.JSONDecodeError, AttributeError):
            return {}
    return IngestLog(out).read_options()


def _clear_store(out: Path) -> None:
    """Remove the files a store consists of (nothing else in the folder)."""
    (out / MANIFEST).unlink(missing_ok=True)
    (out / SKIPPED).unlink(missing_ok=True)
    for folder in (out / ARRAYS, out / MASKS):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.is_file() and p.name.endswith(".npy"):
                    p.unlink()
    IngestLog(out).clear()


def _check_out_folder(out: Path, overwrite: bool) -> bool:
    """Refuse an out that is a file, or a non-empty folder holding no store (unless ``overwrite``);
    True when it holds a store whose options are still to be compared. Runs before the source is read."""
    if out.exists() and not out.is_dir():
        raise UsclError(f"{out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if _existing_options(out) is None:
        if {p.name for p in out.iterdir()} <= {ARRAYS, MASKS, INGEST_DIR, SHARDS}:
            return False  # a store being made: another shard's run starting, or a run killed at its start
        if not overwrite:
            raise UsclError(f"output folder {out} is not empty and holds no frame store; "
                            "choose another out folder or set overwrite", param="overwrite")
        return False
    return True


def _check_out(out: Path, options: dict, overwrite: bool) -> None:
    if not _check_out_folder(out, overwrite):
        return
    existing = _existing_options(out)
    if existing != options or overwrite:
        if not overwrite:
            raise UsclError(
                f"{out} holds a store prepared with different options ({_options_diff(existing, options)}); "
                "choose another out folder, or set overwrite to replace it", param="overwrite"
            )
        _clear_store(out)


def _write_skipped(out: Path, skipped: list[tuple[str, str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "reason"])
    w.writerows(skipped)
    atomic_write_text(out / SKIPPED, buf.getvalue())


_ingest_one = ingest_one  # the in-process path looks it up here (tests replace it)


@dataclass
class _Plan:
    """What prepare() found and decided before ingesting anything."""

    src: Path
    out: Path
    options: PrepareOptions
    opts: dict  # the options recorded in the store (mask classes included)
    selected: list[VideoInput]  # in input order
    ids: dict[str, str]
    infos: dict[str, LabelInfo]
    masks: dict[str, MaskSource]
    mask_classes: list[str] | None
    summary: PrepareSummary
    shard: tuple[int, int] | None = None
    inputs: int = 0  # inputs of the whole run (all shards)
    listing: str = ""  # digest of the whole run's inputs (shards of one run agree on it)
    positions: dict[str, int] = field(default_factory=dict)  # rel → position in the whole run's input order


@dataclass
class _Job:
    """One selected input: reused from an earlier run, skipped before decoding, or to ingest (``task``)."""

    inp: VideoInput
    video_id: str
    fingerprint: dict | None = None
    record: VideoRecord | None = None
    reason: str | None = None
    task: IngestTask | None = None


@dataclass
class _Entry:
    """One selected input's result, in input order: its final record (labels set) or none, and the
    (path, reason) pairs it adds to skipped.csv."""

    index: int
    rel: str
    record: VideoRecord | None
    skipped: list[tuple[str, str]]

    def to_json(self) -> dict:
        return {"index": self.index, "source": self.rel, "record": self.record.to_json() if self.record else None,
                "skipped": [list(s) for s in self.skipped]}


def _resolver(src: Path, labels_csv, label_from, prefix_map) -> tuple[LabelResolver, dict, Path | None, bool]:
    """The labels of the inputs: (resolver, CSV rows, the CSV used, whether it was found at the root of SRC)."""
    labels_found = False
    if labels_csv is None and label_from is None:  # no labels option: SRC/labels.csv, if there is one
        labels_csv = root_labels_csv(src)
        labels_found = labels_csv is not None
    try:
        rows = read_labels_csv(labels_csv, src) if labels_csv else {}
    except UsclError as exc:
        if labels_found:
            raise FoundLabelsError(labels_csv, str(exc)) from None
        raise
    if isinstance(prefix_map, str) or prefix_map is None:
        prefix_map = parse_prefix_map(prefix_map)
    return LabelResolver(rows, label_from=label_from, prefix_map=prefix_map), rows, labels_csv, labels_found


def _plan(src: Path, out: Path, options: PrepareOptions, *, labels_csv, label_from, prefix_map, where,
          frame_folders: bool, overwrite: bool, mask_suffix, mask_classes, shard) -> _Plan:
    """Check the arguments and OUT, discover and label the inputs, choose this run's (or shard's) share."""
    if not src.is_dir():
        raise UsclError(f"source folder not found: {src}" if not src.exists() else f"{src} is not a folder")
    shard = parse_shard(shard)
    if shard and overwrite:
        raise UsclError("overwrite cannot be combined with shard (shard runs may share OUT): empty OUT first, "
                        "or run without shard", param="overwrite")
    opts = options.to_dict()
    if mask_suffix is not None and (not mask_suffix.strip() or "/" in mask_suffix or "\\" in mask_suffix):
        raise UsclError(f"mask_suffix must be a non-empty file-name ending such as '_mask', got {mask_suffix!r}",
                        param="mask_suffix")
    mask_classes = check_mask_classes(mask_classes)
    _check_out_folder(out, overwrite)  # the options (mask classes from discovery) are compared below
    resolver, rows, labels_csv, labels_found = _resolver(src, labels_csv, label_from, prefix_map)
    where = parse_where(where) if isinstance(where, list) else (where or {})

    from_csv = csv_masks(rows, src)
    discovery = discover_inputs(src, exclude=[out], stills=set(rows), frame_folders=frame_folders,
                                mask_suffix=mask_suffix, not_inputs=set(from_csv.values()))
    if not discovery.inputs:
        raise UsclError(
            f"no usable file under {src}: found no videos (mp4, avi, mov, mpeg, gif...), DICOM, "
            f"images (png, jpg, bmp, tif) or frame folders"
            + (f" ({len(discovery.ignored)} other files ignored)" if discovery.ignored else "")
        )
    masks = mask_sources(discovery.inputs, src, from_csv, discovery.masks)
    if masks or mask_classes:  # store-level: other classes never reuse an array
        mask_classes = mask_classes or list(DEFAULT_MASK_CLASSES)
        opts["mask_classes"] = mask_classes
    _check_out(out, opts, overwrite)
    infos = {inp.rel: resolver.resolve(inp.rel) for inp in discovery.inputs}
    ids = make_video_ids([i.rel for i in discovery.inputs], {i.rel for i in discovery.inputs if i.kind == "frames"})
    selected = [i for i in discovery.inputs if not where or LabelResolver.matches(infos[i.rel], where)]
    summary = PrepareSummary(out=str(out), ignored=discovery.ignored, filtered=len(discovery.inputs) - len(selected),
                             unmatched_labels=resolver.unmatched_rows(),
                             labels_csv=str(labels_csv) if labels_csv else None, labels_found=labels_found,
                             label_from=label_from, mask_classes=list(mask_classes or []),
                             orphan_masks=discovery.orphan_masks, shard=f"{shard[0]}/{shard[1]}" if shard else None)
    if not selected:
        raise UsclError(f"where {where} left none of the {len(discovery.inputs)} inputs under {src}", param="where")
    listing = listing_digest([[i.rel, ids[i.rel], infos[i.rel].label, infos[i.rel].patient, infos[i.rel].extra,
                               masks[i.rel].rels if i.rel in masks else None] for i in selected])
    positions = {inp.rel: n for n, inp in enumerate(selected)}
    inputs = len(selected)
    if shard:
        selected = [i for i in selected if shard_of(i.rel, shard[1]) == shard[0]]
    return _Plan(src=src, out=out, options=options, opts=opts, selected=selected, ids=ids, infos=infos, masks=masks,
                 mask_classes=mask_classes, summary=summary, shard=shard, inputs=inputs, listing=listing,
                 positions=positions)


def _job(plan: _Plan, log: IngestLog, inp: VideoInput) -> _Job:
    """Reuse the input's finished record if nothing it depends on changed; else what to ingest."""
    job = _Job(inp=inp, video_id=plan.ids[inp.rel])
    try:
        job.fingerprint = inp.fingerprint()
        if inp.rel in plan.masks:  # a changed, added or removed mask file is ingested again
            job.fingerprint["masks"] = plan.masks[inp.rel].fingerprint()
        job.record = log.lookup(job.video_id, inp.rel, job.fingerprint, plan.opts)
    except Exception as exc:  # noqa: BLE001 - one bad file never aborts the run
        job.reason = f"could not be ingested ({type(exc).__name__}: {exc})"
        return job
    if job.record is None:
        job.task = IngestTask(inp=inp, video_id=job.video_id, options=plan.options, root=plan.out,
                              mask=plan.masks.get(inp.rel),
                              mask_classes=tuple(plan.mask_classes) if plan.mask_classes else None)
    return job


def _disk_full(out: Path, exc: BaseException | str) -> UsclError:
    return UsclError(f"disk full while writing {out}: free space and re-run (finished videos are kept; {exc})")


def worker_count(workers: int | None, to_decode: int) -> int:
    """Worker processes for ``to_decode`` files: ``workers`` (default: the cores available), at most one per
    file; 1 means in this process."""
    if workers is not None and workers < 1:
        raise UsclError(f"workers must be at least 1 (1: decode in this process), got {workers}", param="workers")
    if workers is None and workers_cannot_start():  # this script's workers die as they start (no main guard)
        return 1
    return max(1, min(workers or available_cores(), to_decode))


def _outcomes(plan: _Plan, log: IngestLog, jobs: list[_Job], workers: int, bar, explicit: bool) -> Iterator[Outcome]:
    """The outcome of every job that needs ingesting, in input order; sidecars are saved as each finishes.
    Where no worker can start (a script without the main guard), workers the caller asked for are an
    error; the default falls back to this process."""
    by_id = {j.video_id: j for j in jobs if j.task}

    def on_done(task: IngestTask, outcome: Outcome) -> None:
        bar.update(1)
        if outcome.disk_full:
            raise _disk_full(plan.out, outcome.reason)
        if outcome.record is not None:
            try:
                log.save(outcome.record, by_id[task.video_id].fingerprint, plan.opts)
            except OSError as exc:
                raise (_disk_full(plan.out, exc) if exc.errno == errno.ENOSPC else exc) from exc

    tasks = [j.task for j in jobs if j.task]
    writer = StoreWriter(plan.out)

    def here(task: IngestTask) -> Outcome:
        return outcome_of(_ingest_one, task, writer)  # looked up at call time

    done = 0
    try:
        for _, outcome in ordered_map(here if workers <= 1 else run_task, tasks, workers, on_done=on_done,
                                      crashed=crashed_outcome, preload=("uscl.store.ingest_one",)):
            done += 1
            yield outcome
    except WorkersCannotStart as exc:
        if explicit:
            raise UsclError(f"{exc} (workers=1)", param="workers") from None
        warnings.warn(f"{exc}; decoding in this process instead", RuntimeWarning, stacklevel=2)
        plan.summary.workers = 1
        for task, outcome in ordered_map(here, tasks[done:], 1, on_done=on_done):
            yield outcome


def _ingest_all(plan: _Plan, workers: int | None, show_progress: bool) -> list[_Entry]:
    """Every selected input, reused or ingested (in ``workers`` processes), as entries in input order."""
    log = IngestLog(plan.out)
    log.write_options(plan.opts)
    StoreWriter(plan.out)  # the arrays folder
    jobs = [_job(plan, log, inp) for inp in plan.selected]
    to_decode = sum(1 for j in jobs if j.task)
    if to_decode:  # the store is about to change: an old manifest must not describe new arrays
        (plan.out / MANIFEST).unlink(missing_ok=True)
    requested = workers
    plan.summary.workers = worker_count(workers, to_decode) if to_decode else 1
    bar = progress(total=len(jobs), desc="prepare", unit="video", **({} if show_progress else {"disable": True}))
    bar.update(len(jobs) - to_decode)
    outcomes = _outcomes(plan, log, jobs, plan.summary.workers, bar, explicit=requested is not None)
    entries = []
    for job in jobs:
        if job.task:
            outcome = next(outcomes)
            job.record, job.reason = outcome.record, outcome.reason
            plan.summary.decoded += outcome.record is not None
            plan.summary.frames_decoded += outcome.decoded
        elif job.record is not None:
            plan.summary.reused += 1
        entries.append(_entry(plan, job))
    next(outcomes, None)  # run the pool to its end: it waits for its workers to exit
    bar.close()
    return entries


def _entry(plan: _Plan, job: _Job) -> _Entry:
    """The job's final record (labels and CSV fields added to what ingestion recorded) and its skipped lines."""
    entry = _Entry(index=plan.positions[job.inp.rel], rel=job.inp.rel, record=None, skipped=[])
    if job.record is None:
        entry.skipped.append((job.inp.rel, job.reason or "could not be ingested"))
        return entry
    record = job.record
    info = plan.infos[job.inp.rel]
    record.label, record.patient = info.label, info.patient
    kept = {k: record.extra[k] for k in INGEST_FIELDS if record.extra.get(k)}
    record.extra = {**info.extra, **kept}
    entry.skipped += [(m["path"], m["reason"]) for m in kept.get("skipped_members", [])]
    entry.skipped += [(m["path"], m["reason"]) for m in kept.get("mask_skipped", [])]
    entry.record = record
    return entry


def _collect(summary: PrepareSummary, entries: list) -> list[VideoRecord]:
    """The records of ``entries`` (in order); their skipped lines and notes go to ``summary``."""
    records = []
    for e in entries:
        summary.skipped += e.skipped
        if e.record is not None:
            summary.notes += [(e.rel, n) for n in e.record.extra.get("ingest_notes", [])]
            records.append(e.record)
    return records


def tally(summary: PrepareSummary, records: list[VideoRecord], mask_classes: list[str] | None) -> None:
    """Videos, frames and mask counts of ``records``, per label and per mask class, into ``summary``."""
    per_label: dict[str, dict[str, int]] = defaultdict(lambda: {"videos": 0, "frames": 0})
    for r in records:
        c = per_label[r.label if r.label is not None else UNLABELLED]
        c["videos"] += 1
        c["frames"] += r.num_frames
    summary.per_label = dict(sorted(per_label.items()))
    if mask_classes:
        counts = {c: {"videos": 0, "frames": 0, "pixels": 0} for c in mask_classes}
        for r in records:
            for c, n in (r.extra.get("mask_counts") or {}).items():
                if c in counts:
                    counts[c]["videos"] += int(n["frames"] > 0)
                    counts[c]["frames"] += n["frames"]
                    counts[c]["pixels"] += n["pixels"]
        summary.mask_counts = counts
        summary.with_masks = sum(1 for r in records if r.mask)
        summary.without_masks = len(records) - summary.with_masks
    summary.videos = len(records)
    summary.frames = sum(r.num_frames for r in records)


def no_usable_file(where: str, inputs: int, skipped: list[tuple[str, str]], out: Path) -> UsclError:
    reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
    return UsclError(f"no usable file under {where}: all {inputs} inputs were skipped ({reasons}"
                     f"{' ...' if len(skipped) > 3 else ''}); see {out / SKIPPED}")


def write_store(out: Path, opts: dict, records: list[VideoRecord], skipped: list[tuple[str, str]],
                inputs: int, where: str) -> int:
    """skipped.csv, then the manifest; stale arrays, masks, sidecars and shard manifests removed. Returns how
    many stale arrays went."""
    _write_skipped(out, skipped)
    if not records:
        raise no_usable_file(where, inputs, skipped, out)
    StoreWriter(out, options=opts).write_manifest(records)
    keep = {r.video_id for r in records}
    removed = _remove_stale_arrays(out, keep)
    _remove_stale_arrays(out, {r.video_id for r in records if r.mask}, MASKS)
    IngestLog(out).prune(keep)
    shutil.rmtree(out / SHARDS, ignore_errors=True)  # the shards' work is in the store now
    return removed


def _finish(plan: _Plan, entries: list[_Entry]) -> None:
    """The store (or, for a shard, its shard manifest) from the entries."""
    summary = plan.summary
    records = _collect(summary, entries)
    if plan.shard:
        path = write_shard_manifest(plan.out, plan.shard, plan.opts, plan.inputs, plan.listing,
                                    [e.to_json() for e in entries])
        summary.shard_manifest = str(path)
    else:
        summary.removed = write_store(plan.out, plan.opts, records, summary.skipped, len(plan.selected),
                                      str(plan.src))
    tally(summary, records, plan.mask_classes)


def prepare(
    src: str | os.PathLike,
    out: str | os.PathLike,
    options: PrepareOptions | None = None,
    *,
    labels_csv: str | os.PathLike | None = None,
    label_from: str | None = None,
    prefix_map: dict[str, str] | str | None = None,
    where: list[str] | dict[str, set[str]] | None = None,
    frame_folders: bool = True,
    overwrite: bool = False,
    show_progress: bool = True,
    mask_suffix: str | None = None,
    mask_classes: list[str] | str | None = None,
    workers: int | None = None,
    shard: str | tuple[int, int] | None = None,
) -> PrepareSummary:
    """Ingest every input under ``src`` into the frame store ``out``; see the module docstring.

    Labels: ``labels_csv`` (path,label[,patient], extra columns kept in
    ``record.extra``), then ``label_from`` ('parent' or 'prefix' with
    ``prefix_map``) for inputs the CSV does not name. With neither,
    ``src/labels.csv`` is used if present (``summary.labels_found``, and the
    summary says so). ``where``: keep only
    inputs whose CSV/label fields match (``["probe=convex"]``).
    Masks: the CSV's ``mask`` column, else files named by ``mask_suffix``
    (``"_mask"``: ``x.png`` → ``x_mask.png``); ``mask_classes`` names the
    values 1..K (default ``["foreground"]``); see uscl.store.masks.
    Re-running into the same ``out`` with the same options is incremental;
    other options (mask classes included) are refused unless ``overwrite``.
    ``workers``: decode in that many processes (default: the cores available; 1: in this process);
    the store is the same byte for byte. ``shard``: ``"K/N"``, ingest only the K-th of N shards and
    write ``out/shards/K-of-N.json`` instead of the manifest (uscl.store.shards).
    """
    start = time.perf_counter()
    if starting_worker():  # the script's top level, run again in a worker: not a second prepare there
        raise RuntimeError("prepare() called while a worker process starts: keep the script's top-level code "
                           "under `if __name__ == \"__main__\":`")
    if workers is not None:
        worker_count(workers, 1)  # refused before anything is read
    plan = _plan(Path(src), Path(out), options or PrepareOptions(), labels_csv=labels_csv, label_from=label_from,
                 prefix_map=prefix_map, where=where, frame_folders=frame_folders, overwrite=overwrite,
                 mask_suffix=mask_suffix, mask_classes=mask_classes, shard=shard)
    entries = _ingest_all(plan, workers, show_progress)
    _finish(plan, entries)
    plan.summary.seconds = time.perf_counter() - start
    return plan.summary


def _remove_stale_arrays(out: Path, keep: set[str], folder: str = ARRAYS) -> int:
    """Arrays (and leftover temp files) of videos that are not in the new manifest (``folder``: or masks)."""
    removed = 0
    arrays = out / folder
    for p in arrays.iterdir() if arrays.is_dir() else []:
        if p.is_file() and p.name.endswith(".npy") and (p.name.startswith(".") or p.name[:-4] not in keep):
            p.unlink(missing_ok=True)
            removed += 0 if p.name.startswith(".") else 1
    return removed
