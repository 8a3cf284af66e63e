"""Readable, unique video ids from relative source paths.

``pocus_videos/convex/Cov-Atlas+(44).gif`` → ``pocus_videos__convex__Cov-Atlas_44``:
the extension dropped, folders joined by ``__``, anything but letters, digits,
``-`` and ``.`` turned into ``_``. Ids that would collide (``a.mp4`` and
``a.avi``; or ids equal but for case, which clash on case-insensitive file
systems) all get a short hash of their path appended, so every id is the
same whatever other files sit beside it except its own twins.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import PurePosixPath

_BAD = re.compile(r"[^A-Za-z0-9.\-]+")
MAX_LEN = 120


def base_id(rel: str, is_dir: bool = False) -> str:
    path = PurePosixPath(rel)
    parts = list(path.parts)
    if not parts:
        return "video"
    if not is_dir:
        parts[-1] = path.stem or path.name
    clean = []
    for part in parts:
        part = _BAD.sub("_", part).strip("_.")
        if part:
            clean.append(part)
    text = "__".join(clean) or "video"
    if len(text) > MAX_LEN:
        text = text[: MAX_LEN - 9].rstrip("_.") + "-" + _short_hash(rel)
    return text


def _short_hash(rel: str) -> str:
    return hashlib.sha1(rel.encode("utf-8")).hexdigest()[:8]


def make_video_ids(rels: list[str], dirs: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    """{relative path: unique id}; a short path hash is added only where ids collide."""
    bases = {rel: base_id(rel, rel in dirs) for rel in rels}
    groups: dict[str, list[str]] = defaultdict(list)
    for rel, b in bases.items():
        groups[b.lower()].append(rel)
    ids: dict[str, str] = {}
    for members in groups.values():
        for rel in members:
            ids[rel] = bases[rel] if len(members) == 1 else f"{bases[rel]}-{_short_hash(rel)[:6]}"
    return ids
