"""`uscl prepare --merge OUT_1 ... OUT_N OUT`: the shard folders of one run → the store one run would make.

Each folder holds what ``prepare --shard K/N`` wrote there (arrays, masks,
sidecars, ``shards/K-of-N.json``; one folder may hold several shards). The
merge checks that the shards are of one run (the same options, the same input
listing, N), that every shard 1..N is there once, that no video id is claimed
twice, and that every array is whole; then it hard-links (or, across file
systems, copies) the arrays, masks and sidecars into OUT and writes
skipped.csv and the manifest, the records in the order one run gives them.
SRC is not needed. OUT is a new or empty folder, or one of the shard folders
(merged in place). The sidecars come along, so a later ``prepare SRC OUT``
with the same options is incremental.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from uscl.errors import UsclError
from uscl.store.frame_store import ARRAYS, MASKS, VideoRecord, array_problem
from uscl.store.ingest_log import IngestLog
from uscl.store.prepare import PrepareSummary, tally, write_store
from uscl.store.shards import SHARDS, read_shard_manifests
from uscl.utils.atomic import atomic_path


def _load(folders: list[Path]) -> list[tuple[Path, Path, dict]]:
    """(folder, manifest path, manifest) of every shard, checked to be one run, complete, each shard once."""
    shards = []
    for folder in folders:
        if not folder.is_dir():
            raise UsclError(f"shard folder not found: {folder}", param="merge")
        found = read_shard_manifests(folder)
        if not found:
            raise UsclError(f"{folder} holds no shard manifest ({SHARDS}/K-of-N.json): "
                            "was it made by `uscl prepare --shard K/N`?", param="merge")
        shards += [(folder, path, data) for path, data in found]
    first_path, first = shards[0][1], shards[0][2]
    n = first["shard"][1]
    seen: dict[int, Path] = {}
    for _, path, data in shards:
        k, nk = data["shard"]
        if nk != n:
            raise UsclError(f"{path} is shard {k} of {nk}, {first_path} is of {n}: shards of different splits",
                            param="merge")
        if data["options"] != first["options"]:
            diff = ", ".join(f"{key} {first['options'].get(key)!r} vs {data['options'].get(key)!r}"
                             for key in sorted(set(first["options"]) | set(data["options"]))
                             if first["options"].get(key) != data["options"].get(key))
            raise UsclError(f"{path} was prepared with other options than {first_path} ({diff}): "
                            "shards of one store need the same options", param="merge")
        if data["listing"] != first["listing"] or data["inputs"] != first["inputs"]:
            raise UsclError(f"{path} and {first_path} saw different inputs (other SRC contents, labels or "
                            "where): run every shard on the same SRC with the same options", param="merge")
        if k in seen:
            raise UsclError(f"shard {k}/{n} is there twice: {seen[k]} and {path}", param="merge")
        seen[k] = path
    missing = [k for k in range(1, n + 1) if k not in seen]
    if missing:
        raise UsclError(f"shards {', '.join(f'{k}/{n}' for k in missing)} are missing (found "
                        f"{len(seen)} of {n}): run `uscl prepare SRC OUT --shard K/{n}` for them first",
                        param="merge")
    return shards


def _entries(shards: list[tuple[Path, Path, dict]]) -> list[tuple[Path, dict]]:
    """(folder, entry) of every input of the run, in the run's input order; a video id claimed twice refused."""
    entries = sorted(((folder, e) for folder, _, data in shards for e in data["entries"]), key=lambda fe: fe[1]["index"])
    ids: dict[str, str] = {}
    for folder, e in entries:
        if e["record"] is None:
            continue
        vid = e["record"]["video_id"]
        if vid in ids and ids[vid] != e["source"]:
            raise UsclError(f"video id {vid} is claimed by {ids[vid]} and {e['source']} ({folder}): "
                            "the shards are not of one run", param="merge")
        ids[vid] = e["source"]
    if len({e["index"] for _, e in entries}) != len(entries):
        raise UsclError("an input is in two shards: the shard folders are not of one run", param="merge")
    return entries


def _place(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src`` (a hard link where possible, else a copy), atomically; nothing if they are one file."""
    if dst.exists() and os.path.samefile(src, dst):
        return
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or no hard links there
            shutil.copyfile(src, tmp)


def _bring(folder: Path, record: VideoRecord, out: Path) -> None:
    """The record's array, mask and sidecar from its shard folder into ``out``, each checked to be whole."""
    shape = (record.num_frames, record.height, record.width, record.channels)
    for rel, shp in ((record.array, shape), (record.mask, shape[:3])):
        if not rel:
            continue
        problem = array_problem(folder / rel, shp)
        if problem:
            raise UsclError(f"{folder / rel} {problem} (video {record.video_id}, source {record.source}): re-run "
                            f"its shard's `uscl prepare --shard` into {folder}, then merge again", param="merge")
        _place(folder / rel, out / rel)
    sidecar = IngestLog(folder).sidecar(record.video_id)
    if sidecar.is_file():
        _place(sidecar, IngestLog(out).sidecar(record.video_id))


def _check_out(out: Path, folders: list[Path]) -> None:
    if out.exists() and not out.is_dir():
        raise UsclError(f"{out} exists and is not a folder")
    inside = out.is_dir() and any(out.iterdir())
    if inside and not any(f.is_dir() and os.path.samefile(f, out) for f in folders):
        raise UsclError(f"output folder {out} is not empty: merge into a new or empty folder, or into one of the "
                        "shard folders", param="merge")


def merge_shards(folders: list[str | os.PathLike], out: str | os.PathLike) -> PrepareSummary:
    """Merge the shard folders of one ``prepare --shard`` run into the store ``out``; see the module docstring."""
    start = time.perf_counter()
    folders, out = [Path(f) for f in folders], Path(out)
    if not folders:
        raise UsclError("merge needs the shard folders and then OUT", param="merge")
    unique: list[Path] = []
    for f in folders:  # the same folder named twice (or a shared OUT given for every shard) counts once
        if not any(u.is_dir() and f.is_dir() and os.path.samefile(u, f) for u in unique):
            unique.append(f)
    shards = _load(unique)
    _check_out(out, unique)
    opts = shards[0][2]["options"]
    entries = _entries(shards)
    (out / ARRAYS).mkdir(parents=True, exist_ok=True)
    if any(e["record"] and e["record"].get("mask") for _, e in entries):
        (out / MASKS).mkdir(exist_ok=True)
    IngestLog(out).write_options(opts)
    summary = PrepareSummary(out=str(out), mask_classes=list(opts.get("mask_classes") or []),
                             merged_from=[str(f) for f in unique])
    records = []
    for folder, e in entries:
        summary.skipped += [tuple(s) for s in e["skipped"]]
        if e["record"] is not None:
            record = VideoRecord.from_json(e["record"])
            _bring(folder, record, out)
            summary.notes += [(record.source, n) for n in record.extra.get("ingest_notes", [])]
            records.append(record)
    summary.removed = write_store(out, opts, records, summary.skipped, shards[0][2]["inputs"],
                                  f"the {len(shards)} shards")
    tally(summary, records, opts.get("mask_classes"))
    summary.reused = len(records)
    summary.seconds = time.perf_counter() - start
    return summary

