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
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from uscl.errors import UsclError
from uscl.store.frame_store import ARRAYS, MANIFEST, MASKS, StoreWriter, VideoRecord, array_sha256
from uscl.store.ingest_log import IngestLog
from uscl.store.masks import (
    DEFAULT_MASK_CLASSES,
    MaskError,
    MaskSource,
    check_mask_classes,
    csv_masks,
    load_masks,
    mask_counts,
    mask_sources,
)
from uscl.store.preprocess import (
    PrepareOptions,
    decode_for,
    preprocess_frames,
    preprocess_masks,
    preprocess_with_plan,
    read_and_preprocess,
)
from uscl.store.video_ids import make_video_ids
from uscl.utils.atomic import atomic_write_text
from uscl.utils.progress import progress
from uscl.video.decoded import DecodeError
from uscl.video.discover import VideoInput, discover_inputs
from uscl.video.formats import natural_key
from uscl.video.labels import (
    FoundLabelsError,
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
        lines.append(
            f"decoded {self.decoded}, reused {self.reused} from an earlier run"
            + (f", {self.filtered} left out by {name('where')}" if self.filtered else "")
            + f"; {self.frames_decoded} frames in {self.seconds:.1f} s ({self.frames_per_second:.0f} frames/s)"
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


def _ingest_one(inp: VideoInput, video_id: str, options: PrepareOptions, writer: StoreWriter,
                mask: MaskSource | None = None, mask_classes: list[str] | None = None) -> tuple[VideoRecord, int]:
    """Decode, preprocess and write one input (and its mask); returns its record (no labels yet) and frames decoded."""
    video = decode_for(inp.path, options, kind=inp.kind, files=list(inp.files) or None)
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
    """
    start = time.perf_counter()
    options = options or PrepareOptions()
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise UsclError(f"source folder not found: {src}" if not src.exists() else f"{src} is not a folder")
    opts = options.to_dict()
    if mask_suffix is not None and (not mask_suffix.strip() or "/" in mask_suffix or "\\" in mask_suffix):
        raise UsclError(f"mask_suffix must be a non-empty file-name ending such as '_mask', got {mask_suffix!r}",
                        param="mask_suffix")
    mask_classes = check_mask_classes(mask_classes)
    _check_out_folder(out, overwrite)  # the options (mask classes from discovery) are compared below

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
    resolver = LabelResolver(rows, label_from=label_from, prefix_map=prefix_map)
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
                             orphan_masks=discovery.orphan_masks)
    if not selected:
        raise UsclError(f"where {where} left none of the {len(discovery.inputs)} inputs under {src}", param="where")

    writer = StoreWriter(out, options=opts)
    log = IngestLog(out)
    log.write_options(opts)
    records: list[VideoRecord] = []
    manifest_dropped = False
    bar = progress(selected, desc="prepare", unit="video", **({} if show_progress else {"disable": True}))
    for inp in bar:
        video_id = ids[inp.rel]
        try:
            fingerprint = inp.fingerprint()
            if inp.rel in masks:  # a changed, added or removed mask file is ingested again
                fingerprint["masks"] = masks[inp.rel].fingerprint()
            record = log.lookup(video_id, inp.rel, fingerprint, opts)
            if record is None:
                if not manifest_dropped:
                    # the store is about to change: an old manifest must not describe new arrays
                    (out / MANIFEST).unlink(missing_ok=True)
                    manifest_dropped = True
                record, n_decoded = _ingest_one(inp, video_id, options, writer, masks.get(inp.rel), mask_classes)
                log.save(record, fingerprint, opts)
                summary.decoded += 1
                summary.frames_decoded += n_decoded
            else:
                summary.reused += 1
        except DecodeError as exc:
            summary.skipped.append((inp.rel, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one bad file never aborts the run
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise UsclError(f"disk full while writing {out}: free space and re-run (finished videos are kept)") from exc
            summary.skipped.append((inp.rel, f"could not be ingested ({type(exc).__name__}: {exc})"))
            continue
        info = infos[inp.rel]
        record.label, record.patient = info.label, info.patient
        kept = {k: record.extra[k] for k in INGEST_FIELDS if record.extra.get(k)}
        record.extra = {**info.extra, **kept}
        summary.notes += [(inp.rel, n) for n in kept.get("ingest_notes", [])]
        summary.skipped += [(m["path"], m["reason"]) for m in kept.get("skipped_members", [])]
        summary.skipped += [(m["path"], m["reason"]) for m in kept.get("mask_skipped", [])]
        records.append(record)
    bar.close()

    _write_skipped(out, summary.skipped)
    if not records:
        reasons = "; ".join(f"{p}: {r}" for p, r in summary.skipped[:3])
        raise UsclError(
            f"no usable file under {src}: all {len(selected)} inputs were skipped ({reasons}"
            f"{' ...' if len(summary.skipped) > 3 else ''}); see {out / SKIPPED}"
        )
    writer.write_manifest(records)
    keep = {r.video_id for r in records}
    summary.removed = _remove_stale_arrays(out, keep)
    _remove_stale_arrays(out, {r.video_id for r in records if r.mask}, MASKS)
    log.prune(keep)

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
    summary.seconds = time.perf_counter() - start
    return summary


def _remove_stale_arrays(out: Path, keep: set[str], folder: str = ARRAYS) -> int:
    """Arrays (and leftover temp files) of videos that are not in the new manifest (``folder``: or masks)."""
    removed = 0
    arrays = out / folder
    for p in arrays.iterdir() if arrays.is_dir() else []:
        if p.is_file() and p.name.endswith(".npy") and (p.name.startswith(".") or p.name[:-4] not in keep):
            p.unlink(missing_ok=True)
            removed += 0 if p.name.startswith(".") else 1
    return removed
