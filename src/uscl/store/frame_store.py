"""Frame store format and its reader/writer.

Layout of a store folder::

    manifest.json        # format, version, options used, one record per video
    arrays/<id>.npy      # uint8 array (T, H, W, C), C = 1 (grey) or 3 (RGB)
    masks/<id>.npy       # optional: uint8 (T, H, W) segmentation mask aligned with the frames
    skipped.csv          # files that could not be ingested, with the reason

``manifest.json`` is the only file the reader trusts: it is written last and
atomically, so arrays of a killed run are never taken as part of the store.
Arrays are opened with ``np.load(mmap_mode="r")``: reading one frame touches
only that frame's pages, so any frame is O(1) and memory stays flat however
large the store grows.

Opening a store checks every array against its record, cheaply (the .npy
header and the file size, no pixel read): a missing, truncated or reshaped
array is a UsclError naming the file and the fix, never a raw mmap error in
the middle of training. ``FrameStore.verify()`` also reads every array and
compares it with the sha256 recorded when it was written (``array_hash``).

Masks (uscl.store.masks): a video may have a mask, one (H, W) uint8 label map
per stored frame, same size: 0 is background and k is
``store.mask_classes[k-1]`` (the manifest's ``options["mask_classes"]``).
``store.masks(key)`` is the memory-mapped (T, H, W) array or None; masks are
checked on opening and by ``verify()`` (``mask_hash``) like the frame arrays.
A store without masks (any store of an older uscl) has ``mask_classes == []``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from uscl import __version__
from uscl.errors import UsclError
from uscl.utils.atomic import atomic_write_json, atomic_write_with

FORMAT = "uscl-frame-store"
VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = "arrays"
MASKS = "masks"


@dataclass
class VideoRecord:
    """One ingested video (or still image, a one-frame video)."""

    video_id: str
    source: str  # path relative to the ingested SRC folder (or absolute)
    array: str  # path of the .npy relative to the store root
    num_frames: int
    height: int
    width: int
    channels: int
    label: str | None = None
    patient: str | None = None
    fps: float | None = None  # frame rate of the kept frames
    orig_fps: float | None = None
    orig_num_frames: int | None = None
    orig_height: int | None = None
    orig_width: int | None = None
    content_hash: str | None = None  # sha256 of the source file bytes
    array_hash: str | None = None  # sha256 of the stored array's data bytes (what verify() checks)
    kind: str = "video"  # video | dicom | image | frames
    extra: dict[str, Any] = field(default_factory=dict)
    mask: str | None = None  # path of the (T, H, W) mask .npy relative to the store root; None: no mask
    mask_hash: str | None = None  # sha256 of the mask array's data bytes

    @classmethod
    def from_json(cls, data: dict) -> "VideoRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        extra = {k: v for k, v in data.items() if k not in known}
        rec = cls(**{k: v for k, v in data.items() if k in known})
        rec.extra.update(extra)
        return rec

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def array_sha256(frames: np.ndarray, chunk_frames: int = 64) -> str:
    """sha256 of an array's data bytes in C order (a memory-mapped one is read in chunks of frames)."""
    h = hashlib.sha256()
    for i in range(0, max(1, frames.shape[0]), chunk_frames):
        h.update(memoryview(np.ascontiguousarray(frames[i : i + chunk_frames])).cast("B"))
    return h.hexdigest()


def array_problem(path: Path, shape: tuple[int, ...]) -> str | None:
    """What is wrong with the .npy at ``path`` for a uint8 array of ``shape``, from its header and size; None if nothing.

    Cheap: reads the header only.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc})"
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                found, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                found, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            data_start = fh.tell()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # a header cut short or overwritten
        return f"is truncated or not a .npy array: its header cannot be read ({size} bytes; {exc})"
    if dtype != np.uint8 or fortran or tuple(found) != tuple(shape):
        return (f"holds a {dtype} array of shape {tuple(found)}{' (Fortran order)' if fortran else ''}, "
                f"the manifest says {tuple(shape)} uint8")
    needed = data_start + int(np.prod(shape, dtype=np.int64))
    if size < needed:
        return f"is truncated: {size} bytes, its header (shape {tuple(shape)} uint8) needs {needed}"
    if size > needed:
        return f"is longer than its header says: {size} bytes, {needed} expected"
    return None


class FrameStore:
    """Read-only view of a frame store folder.

    >>> store = FrameStore("pocus_store")
    >>> len(store), store.classes
    >>> store.frame(0, 5).shape        # (H, W, C) uint8, one frame, O(1)
    >>> store.frames("Cov-Atlas_44")   # memory-mapped (T, H, W, C)
    """

    def __init__(self, path: str | os.PathLike, *, cache_size: int = 256, check: bool = True):
        """``check``: test every array against its record on opening (header and size; see the module docstring)."""
        self.root = Path(path)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            if self.root.is_dir():
                raise UsclError(
                    f"{self.root} is not a frame store (no {MANIFEST}); create one with `uscl prepare SRC {self.root}`"
                )
            raise UsclError(f"frame store not found: {self.root}")
        try:
            data = json.loads(manifest.read_text())
        except json.JSONDecodeError as exc:
            raise UsclError(f"{manifest} is corrupt: {exc}") from exc
        if data.get("format") != FORMAT:
            raise UsclError(f"{manifest} is not a uscl frame store manifest")
        if int(data.get("version", 0)) > VERSION:
            raise UsclError(f"{self.root} was written by a newer uscl (store version {data['version']})")
        self.manifest: dict = data
        self.videos: list[VideoRecord] = [VideoRecord.from_json(v) for v in data.get("videos", [])]
        self._index = {v.video_id: i for i, v in enumerate(self.videos)}
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._mask_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        if check:
            self._raise_if_damaged(self._array_problems())

    # -- integrity ----------------------------------------------------------
    def _shape(self, v: VideoRecord) -> tuple[int, int, int, int]:
        return (v.num_frames, v.height, v.width, v.channels)

    def _mask_shape(self, v: VideoRecord) -> tuple[int, int, int]:
        return (v.num_frames, v.height, v.width)

    def _array_problems(self) -> list[tuple[VideoRecord, str, str]]:
        """(record, file, problem) of every frame or mask array that does not fit its record."""
        problems = []
        for v in self.videos:
            problem = array_problem(self.root / v.array, self._shape(v))
            if problem is not None:
                problems.append((v, v.array, problem))
            if v.mask:
                problem = array_problem(self.root / v.mask, self._mask_shape(v))
                if problem is not None:
                    problems.append((v, v.mask, problem))
        return problems

    def _raise_if_damaged(self, problems: list[tuple[VideoRecord, str, str]], fix: str | None = None) -> None:
        if not problems:
            return
        shown = [f"  {self.root / rel} {problem} (video {v.video_id}, source {v.source})"
                 for v, rel, problem in problems[:10]]
        more = [f"  ... and {len(problems) - 10} more"] if len(problems) > 10 else []
        fix = fix or (f"re-run `uscl prepare SRC {self.root}` with the same SRC and options: "
                      "it decodes the damaged videos again and keeps the others")
        n_arrays = len(self.videos) + sum(1 for v in self.videos if v.mask)
        raise UsclError("\n".join([f"frame store {self.root}: {len(problems)} of {n_arrays} arrays are "
                                    "damaged:", *shown, *more, f"fix: {fix}"]))

    def verify(self) -> int:
        """Check every array fully: header and size, then its sha256 against the recorded ``array_hash``
        (a mask array: ``mask_hash``).

        Reads the whole store. Returns the number of frame arrays whose content
        hash matched (records without a hash, from older stores, are size-checked
        only). Raises UsclError naming every damaged array and the fix.
        """
        problems = self._array_problems()
        self._raise_if_damaged(problems)
        checked, bad = 0, []
        changed = "differs from the sha256 recorded when it was written (its content changed)"
        for v in self.videos:
            if v.mask and v.mask_hash and array_sha256(np.load(self.root / v.mask, mmap_mode="r")) != v.mask_hash:
                bad.append((v, v.mask, changed))
            if not v.array_hash:
                continue
            if array_sha256(np.load(self.root / v.array, mmap_mode="r")) != v.array_hash:
                bad.append((v, v.array, changed))
            else:
                checked += 1
        self._raise_if_damaged(bad, fix=(f"delete the damaged arrays, then re-run `uscl prepare SRC {self.root}` "
                                         "with the same SRC and options: it decodes the missing videos again"))
        return checked

    # -- metadata -----------------------------------------------------------
    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key: int | str) -> VideoRecord:
        return self.videos[self.index_of(key)]

    def __iter__(self):
        return iter(self.videos)

    def __repr__(self) -> str:
        return f"FrameStore({str(self.root)!r}, videos={len(self)}, frames={self.num_frames})"

    def index_of(self, key: int | str) -> int:
        if isinstance(key, (int, np.integer)):
            if not -len(self.videos) <= key < len(self.videos):
                raise IndexError(f"video index {key} out of range (store has {len(self.videos)})")
            return int(key) % len(self.videos)
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"no video {key!r} in {self.root}") from None

    @property
    def store_id(self) -> str:
        """Stable id of the store's content (video ids, sizes and source hashes; the masks' hashes and classes
        where there are masks, so a changed mask is another store; a store without masks keeps its old id)."""
        h = hashlib.sha256()
        for v in self.videos:
            mask = f"|mask:{v.mask_hash}" if v.mask else ""
            h.update(f"{v.video_id}|{v.num_frames}|{v.height}|{v.width}|{v.channels}|{v.content_hash}{mask}\n".encode())
        if self.mask_classes:
            h.update(("mask_classes:" + ",".join(self.mask_classes)).encode())
        return h.hexdigest()[:16]

    @property
    def labels(self) -> list[str | None]:
        return [v.label for v in self.videos]

    @property
    def classes(self) -> list[str]:
        return sorted({v.label for v in self.videos if v.label is not None})

    @property
    def num_frames(self) -> int:
        return sum(v.num_frames for v in self.videos)

    @property
    def options(self) -> dict:
        """The ingestion options the store was made with (size, channels, fps...)."""
        return dict(self.manifest.get("options", {}))

    @property
    def channels(self) -> int:
        chans = {v.channels for v in self.videos}
        return chans.pop() if len(chans) == 1 else 3

    # -- pixels -------------------------------------------------------------
    def frames(self, key: int | str) -> np.ndarray:
        """Memory-mapped uint8 array (T, H, W, C) of one video."""
        i = self.index_of(key)
        arr = self._cache.get(i)
        if arr is None:
            path = self.root / self.videos[i].array
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:  # missing, or damaged after the store was opened
                problem = array_problem(path, self._shape(self.videos[i])) or f"cannot be read ({exc})"
                self._raise_if_damaged([(self.videos[i], self.videos[i].array, problem)])
                raise
            self._cache[i] = arr
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(i)
        return arr

    def frame(self, key: int | str, t: int) -> np.ndarray:
        """One frame (H, W, C) uint8, read without touching the rest of the video."""
        return np.asarray(self.frames(key)[t])

    # -- masks --------------------------------------------------------------
    @property
    def mask_classes(self) -> list[str]:
        """Names of the mask values 1..K (0 is background); [] when no video has a mask."""
        if not any(v.mask for v in self.videos):
            return []
        return list(self.options.get("mask_classes") or [])

    @property
    def videos_with_masks(self) -> list[int]:
        """Indices of the videos that have a mask."""
        return [i for i, v in enumerate(self.videos) if v.mask]

    def has_mask(self, key: int | str) -> bool:
        return bool(self.videos[self.index_of(key)].mask)

    def masks(self, key: int | str) -> np.ndarray | None:
        """Memory-mapped uint8 (T, H, W) mask of one video, aligned with ``frames(key)``; None if it has none."""
        i = self.index_of(key)
        v = self.videos[i]
        if not v.mask:
            return None
        arr = self._mask_cache.get(i)
        if arr is None:
            path = self.root / v.mask
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                problem = array_problem(path, self._mask_shape(v)) or f"cannot be read ({exc})"
                self._raise_if_damaged([(v, v.mask, problem)])
                raise
            self._mask_cache[i] = arr
            if len(self._mask_cache) > self._cache_size:
                self._mask_cache.popitem(last=False)
        else:
            self._mask_cache.move_to_end(i)
        return arr

    def mask(self, key: int | str, t: int) -> np.ndarray:
        """The mask (H, W) uint8 of frame ``t``; a UsclError if that video has no mask."""
        masks = self.masks(key)
        if masks is None:
            v = self.videos[self.index_of(key)]
            raise UsclError(f"video {v.video_id} (source {v.source}) of {self.root} has no mask "
                            f"({len(self.videos_with_masks)} of {len(self.videos)} videos have one; "
                            "test store.has_mask(key) first)")
        return np.asarray(masks[t])

    def __getstate__(self):
        # memmaps are reopened in each DataLoader worker rather than pickled
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        state["_mask_cache"] = OrderedDict()
        return state


class StoreWriter:
    """Writes arrays and the manifest of a store; every file lands atomically."""

    def __init__(self, root: str | os.PathLike, options: dict | None = None):
        self.root = Path(root)
        (self.root / ARRAYS).mkdir(parents=True, exist_ok=True)
        self.options = dict(options or {})
        self.records: list[VideoRecord] = []

    def array_path(self, video_id: str) -> Path:
        return self.root / ARRAYS / f"{video_id}.npy"

    def mask_path(self, video_id: str) -> Path:
        return self.root / MASKS / f"{video_id}.npy"

    def write_mask(self, video_id: str, masks: np.ndarray) -> str:
        """Save a (T, H, W) uint8 mask atomically; returns the path relative to the root."""
        masks = np.ascontiguousarray(masks)
        if masks.dtype != np.uint8 or masks.ndim != 3:
            raise ValueError(f"masks must be uint8 (T, H, W), got {masks.dtype} {masks.shape}")
        path = self.mask_path(video_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_with(path, lambda tmp: np.save(tmp, masks, allow_pickle=False), suffix=".npy")
        return str(path.relative_to(self.root))

    def write_array(self, video_id: str, frames: np.ndarray) -> str:
        """Save (T, H, W, C) uint8 atomically; returns the path relative to the root."""
        frames = np.ascontiguousarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3):
            raise ValueError(f"frames must be uint8 (T, H, W, 1|3), got {frames.dtype} {frames.shape}")
        path = self.array_path(video_id)
        atomic_write_with(path, lambda tmp: np.save(tmp, frames, allow_pickle=False), suffix=".npy")
        return str(path.relative_to(self.root))

    def add(self, record: VideoRecord) -> None:
        self.records.append(record)

    def add_video(self, video_id: str, frames: np.ndarray, *, masks: np.ndarray | None = None,
                  **meta: Any) -> VideoRecord:
        """Write one video's frames (and its (T, H, W) masks) and record it (convenience for tests and tools)."""
        rel = self.write_array(video_id, frames)
        t, h, w, c = frames.shape
        meta.setdefault("source", video_id)
        meta.setdefault("array_hash", array_sha256(frames))
        if masks is not None:
            if masks.shape != (t, h, w):
                raise ValueError(f"masks must be (T, H, W) = {(t, h, w)} like the frames, got {masks.shape}")
            meta["mask"] = self.write_mask(video_id, masks)
            meta["mask_hash"] = array_sha256(masks)
        rec = VideoRecord(video_id=video_id, array=rel, num_frames=t, height=h, width=w, channels=c, **meta)
        self.add(rec)
        return rec

    def write_manifest(self, records: Iterable[VideoRecord] | None = None) -> Path:
        recs = list(self.records if records is None else records)
        ids = [r.video_id for r in recs]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate video ids in manifest")

        data = {
            "format": FORMAT,
            "version": VERSION,
            "created_by": f"uscl {__version__}",
            "options": self.options,
            "videos": [r.to_json() for r in recs],
        }
        path = self.root / MANIFEST
        atomic_write_json(path, data)
        return path
