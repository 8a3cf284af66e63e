"""One input of `uscl prepare`: decode, preprocess, write its array (and mask); in this process or a worker.

:func:`ingest_one` does the work and returns the record (no labels yet) and the
source frames decoded. :func:`outcome_of` turns what it raises into the
:class:`Outcome` both paths report alike: a :class:`DecodeError`'s message, or
"could not be ingested (Type: message)", or a full disk (which stops the run).
:func:`run_task` is what a worker process runs (uscl.utils.ordered_pool): it
writes the array itself (atomically, as in-process) and sends back only the
small record, never the frames, so a video is in memory in one process only.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from uscl.store.frame_store import StoreWriter, VideoRecord, array_sha256
from uscl.store.masks import DEFAULT_MASK_CLASSES, MaskError, MaskSource, load_masks, mask_counts
from uscl.store.preprocess import PrepareOptions, decode_for, preprocess_masks, preprocess_with_plan
from uscl.video.decoded import DecodeError
from uscl.video.discover import VideoInput
from uscl.video.formats import natural_key

CRASHED = ("the worker process decoding it died (killed by the system, out of memory?, or a crash in a decoder); "
           "skipped")


@dataclass
class Outcome:
    """What ingesting one input gave: a record, or the reason it was skipped."""

    record: VideoRecord | None = None
    decoded: int = 0  # source frames decoded
    reason: str | None = None  # why it was skipped (record is None)
    disk_full: bool = False  # the reason is a full disk: the run must stop


@dataclass(frozen=True)
class IngestTask:
    """Everything a worker needs for one input (picklable)."""

    inp: VideoInput
    video_id: str
    options: PrepareOptions
    root: Path  # the store folder
    mask: MaskSource | None = None
    mask_classes: tuple[str, ...] | None = None


def outcome_of(ingest: Callable[..., tuple[VideoRecord, int]], task: IngestTask, writer: StoreWriter) -> Outcome:
    """``ingest(...)`` of one task, its exceptions turned into the reason it is skipped (one bad file never
    stops a run; a full disk does, in the caller)."""
    try:
        record, decoded = ingest(task.inp, task.video_id, task.options, writer, task.mask,
                                 list(task.mask_classes) if task.mask_classes else None)
        return Outcome(record=record, decoded=decoded)
    except DecodeError as exc:
        return Outcome(reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad file never aborts the run
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return Outcome(reason=f"disk full ({exc})", disk_full=True)
        return Outcome(reason=f"could not be ingested ({type(exc).__name__}: {exc})")


_WRITERS: dict[Path, StoreWriter] = {}  # per worker process: one writer per store


def run_task(task: IngestTask) -> Outcome:
    """A worker's job: :func:`ingest_one` of one task, as an :class:`Outcome`."""
    writer = _WRITERS.get(task.root)
    if writer is None:
        writer = _WRITERS[task.root] = StoreWriter(task.root)
    return outcome_of(ingest_one, task, writer)


def crashed_outcome(task: IngestTask, exc: BaseException) -> Outcome:
    """The outcome of an input whose worker process died while ingesting it (ordered_map's ``crashed``)."""
    return Outcome(reason=CRASHED)


def ingest_one(inp: VideoInput, video_id: str, options: PrepareOptions, writer: StoreWriter,
               mask: MaskSource | None = None, mask_classes: list[str] | None = None) -> tuple[VideoRecord, int]:
    """Decode, preprocess and write one input (and its mask); returns its record (no labels yet) and frames decoded."""
    # one decoder thread: prepare's parallelism is across videos (one process per core), and FFmpeg's
    # default slice threads would have every worker compete for every core
    video = decode_for(inp.path, options, kind=inp.kind, files=list(inp.files) or None, threads=1)
    frames, plan = preprocess_with_plan(video.frames, options)
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise DecodeError("no pixels left after preprocessing")
    video.frames = None  # the native frames are no longer needed: free them before the mask is decoded
    stored_mask, mask_skipped = None, None
    if mask is not None:
        try:
            stored_mask = preprocess_masks(load_masks(inp, video, mask, mask_classes or DEFAULT_MASK_CLASSES,
                                                      video.notes), plan, options)
        except MaskError as exc:
            mask_skipped = [{"path": exc.rel, "reason": str(exc)}]
    rel_array = writer.write_array(video_id, frames)
    t, h, w, c = frames.shape
    record = VideoRecord(
        video_id=video_id, source=inp.rel, array=rel_array, num_frames=int(t), height=int(h), width=int(w),
        channels=int(c), fps=video.fps, orig_fps=video.orig_fps, orig_num_frames=video.orig_num_frames,
        orig_height=video.orig_height, orig_width=video.orig_width, content_hash=inp.content_hash(),
        array_hash=array_sha256(frames), kind=inp.kind,
    )
    if stored_mask is not None:
        record.mask = writer.write_mask(video_id, stored_mask)
        record.mask_hash = array_sha256(stored_mask)
        record.extra["mask_source"] = list(mask.rels)
        record.extra["mask_counts"] = mask_counts(stored_mask, mask_classes or DEFAULT_MASK_CLASSES)
    elif mask_skipped:
        record.extra["mask_skipped"] = mask_skipped
    if video.notes:
        record.extra["ingest_notes"] = list(video.notes)
    members = sorted([*inp.unreadable, *video.dropped], key=lambda m: natural_key(m[0].name))
    if members:  # unreadable images of a frame folder: left out of the video, reported as skipped
        record.extra["skipped_members"] = [
            {"path": f"{inp.rel}/{p.name}", "reason": f"unreadable frame of {inp.rel} (left out of that video): {r}"}
            for p, r in members
        ]
    decoded = video.orig_num_frames if inp.kind != "frames" else int(t)
    return record, int(decoded)
