"""Per-video sidecars that make `uscl prepare` incremental and safe to kill.

``OUT/.ingest/<video_id>.json`` is written (atomically) right after the
video's array, and records what the array was made from: the source's
relative path, size and modification time (and those of its mask files, if it
has masks: a changed mask is ingested again), and the preprocessing options.
A later run reuses the array only when all of these still match, so a run
killed half-way keeps its finished videos and a changed file is decoded again.
``OUT/.ingest/_options.json`` holds the options of the run that wrote them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from uscl.store.frame_store import VideoRecord, array_problem
from uscl.utils.atomic import atomic_write_json

INGEST_DIR = ".ingest"
OPTIONS_FILE = "_options.json"  # video ids never start with "_"


class IngestLog:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.dir = self.root / INGEST_DIR

    def sidecar(self, video_id: str) -> Path:
        return self.dir / f"{video_id}.json"

    def read_options(self) -> dict | None:
        try:
            return json.loads((self.dir / OPTIONS_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_options(self, options: dict) -> None:
        atomic_write_json(self.dir / OPTIONS_FILE, options)

    def lookup(self, video_id: str, rel: str, fingerprint: dict, options: dict) -> VideoRecord | None:
        """The finished record of this video if nothing it depends on changed, else None."""
        try:
            data = json.loads(self.sidecar(video_id).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if data.get("source") != rel or data.get("fingerprint") != fingerprint or data.get("options") != options:
            return None
        try:
            record = VideoRecord.from_json(data["record"])
        except (KeyError, TypeError):
            return None
        # the array must be whole: a missing, truncated or reshaped one is decoded again
        if array_problem(self.root / record.array, (record.num_frames, record.height, record.width, record.channels)):
            return None
        if record.mask and array_problem(self.root / record.mask, (record.num_frames, record.height, record.width)):
            return None
        return record

    def save(self, record: VideoRecord, fingerprint: dict, options: dict) -> None:
        # atomic but not fsynced: a sidecar is a cache (one lost or emptied by a power cut is unreadable, and
        # its video is decoded again), written after its array, which is fsynced; an fsync here doubled the
        # cost of ingesting a small file
        atomic_write_json(self.sidecar(record.video_id), {
            "source": record.source,
            "fingerprint": fingerprint,
            "options": options,
            "record": record.to_json(),
        }, durable=False)

    def prune(self, keep_ids: set[str]) -> int:
        """Delete sidecars of videos no longer in the store; returns how many."""
        removed = 0
        if not self.dir.is_dir():
            return 0
        for path in self.dir.glob("*.json"):
            if path.name != OPTIONS_FILE and path.stem not in keep_ids:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
