"""Frame store format and its reader/writer.

Layout of a store folder::

    manifest.json        # format, version, options used, one record per video
    arrays/<id>.npy      # uint8 array (T, H, W, C), C = 1 (grey) or 3 (RGB)
    skipped.csv          # files that could not be ingested, with the reason

``manifest.json`` is the only file the reader trusts: it is written last and
atomically, so arrays of a killed run are never taken as part of the store.
Arrays are opened with ``np.load(mmap_mode="r")``: reading one frame touches
only that frame's pages, so any frame is O(1) and memory stays flat however
large the store grows.
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

from uscl.errors import UsclError
from uscl.utils.atomic import atomic_write_json, atomic_write_with

FORMAT = "uscl-frame-store"
VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = "arrays"


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
    kind: str = "video"  # video | dicom | image | frames
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> "VideoRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        extra = {k: v for k, v in data.items() if k not in known}
        rec = cls(**{k: v for k, v in data.items() if k in known})
        rec.extra.update(extra)
        return rec

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class FrameStore:
    """Read-only view of a frame store folder.

    >>> store = FrameStore("pocus_store")
    >>> len(store), store.classes
    >>> store.frame(0, 5).shape        # (H, W, C) uint8, one frame, O(1)
    >>> store.frames("Cov-Atlas_44")   # memory-mapped (T, H, W, C)
    """

    def __init__(self, path: str | os.PathLike, *, cache_size: int = 256):
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
        self._cache_size = cache_size

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
        """Stable id of the store's content (video ids, sizes and source hashes)."""
        h = hashlib.sha256()
        for v in self.videos:
            h.update(f"{v.video_id}|{v.num_frames}|{v.height}|{v.width}|{v.channels}|{v.content_hash}\n".encode())
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
            except FileNotFoundError:
                raise UsclError(f"{path} is missing: the store is incomplete; re-run `uscl prepare`") from None
            self._cache[i] = arr
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(i)
        return arr

    def frame(self, key: int | str, t: int) -> np.ndarray:
        """One frame (H, W, C) uint8, read without touching the rest of the video."""
        return np.asarray(self.frames(key)[t])

    def __getstate__(self):
        # memmaps are reopened in each DataLoader worker rather than pickled
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
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

    def add_video(self, video_id: str, frames: np.ndarray, **meta: Any) -> VideoRecord:
        """Write one video's frames and record it (convenience for tests and tools)."""
        rel = self.write_array(video_id, frames)
        t, h, w, c = frames.shape
        meta.setdefault("source", video_id)
        rec = VideoRecord(video_id=video_id, array=rel, num_frames=t, height=h, width=w, channels=c, **meta)
        self.add(rec)
        return rec

    def write_manifest(self, records: Iterable[VideoRecord] | None = None) -> Path:
        recs = list(self.records if records is None else records)
        ids = [r.video_id for r in recs]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate video ids in manifest")
        from uscl import __version__

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
