"""Shards of one `uscl prepare` run, for several machines: which inputs are whose, and the shard manifest.

``prepare(..., shard=(K, N))`` ingests the inputs of shard K of N (arrays and
sidecars as usual) and writes ``OUT/shards/K-of-N.json`` instead of the
manifest: its records (labels included) and skipped files, each with its
position in the run's input order, the options, and a digest of the whole
input listing. Then either

* on a shared OUT: a plain ``prepare SRC OUT`` reuses every shard's sidecar and
  writes the manifest (the normal incremental run), or
* in separate folders: :func:`uscl.store.merge.merge_shards` builds OUT from the
  shard folders without SRC;

both give the store one run would have made, byte for byte.

Assignment: an input belongs to shard ``1 + sha1(relative path) mod N``. A
stable hash of the path, not its position in the sorted listing: adding or
removing a file moves no other file to another shard, so the shards of a
growing archive keep their finished work; the shards' sizes are even in
expectation (binomial), not exactly.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from uscl.errors import UsclError
from uscl.utils.atomic import atomic_write_json

SHARDS = "shards"
SHARD_FORMAT = "uscl-prepare-shard"
SHARD_VERSION = 1
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(value: str | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``"K/N"`` (or ``(K, N)``) → (K, N) with 1 ≤ K ≤ N; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        m = _SHARD.match(value)
        if not m:
            raise UsclError(f"shard must be K/N, e.g. 2/8 (the 2nd of 8 shards), got {value!r}", param="shard")
        k, n = int(m.group(1)), int(m.group(2))
    else:
        try:
            k, n = (int(x) for x in value)
        except (TypeError, ValueError):
            raise UsclError(f"shard must be K/N or (K, N), got {value!r}", param="shard") from None
    if n < 1:
        raise UsclError(f"shard {k}/{n}: the number of shards N must be at least 1", param="shard")
    if not 1 <= k <= n:
        raise UsclError(f"shard {k}/{n}: K must be between 1 and N={n} (shards are numbered 1..N)", param="shard")
    return k, n


def shard_of(rel: str, n: int) -> int:
    """The shard (1..n) of the input at relative path ``rel``."""
    return 1 + int.from_bytes(hashlib.sha1(rel.encode("utf-8")).digest()[:8], "big") % n


def shard_path(out: Path, k: int, n: int) -> Path:
    return Path(out) / SHARDS / f"{k}-of-{n}.json"


def listing_digest(rows: list[list]) -> str:
    """Digest of the whole run's inputs (relative path, id, labels, per input): shards of one run agree on it."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_shard_manifest(out: Path, shard: tuple[int, int], options: dict, inputs: int, listing: str,
                         entries: list[dict]) -> Path:
    """``entries``: {index, source, record (JSON or None), skipped: [[path, reason]...]} in input order."""
    k, n = shard
    path = shard_path(out, k, n)
    atomic_write_json(path, {"format": SHARD_FORMAT, "version": SHARD_VERSION, "shard": [k, n],
                             "options": options, "inputs": inputs, "listing": listing, "entries": entries})
    return path


def read_shard_manifests(folder: Path) -> list[tuple[Path, dict]]:
    """Every shard manifest in ``folder/shards`` (sorted by K), checked to be one."""
    found = []
    for path in sorted((Path(folder) / SHARDS).glob("*-of-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsclError(f"{path} cannot be read as a shard manifest ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT:
            raise UsclError(f"{path} is not a `uscl prepare --shard` manifest")
        if int(data.get("version", 0)) > SHARD_VERSION:
            raise UsclError(f"{path} was written by a newer uscl (shard manifest version {data['version']})")
        found.append((path, data))
    return sorted(found, key=lambda pd: pd[1]["shard"][0])
