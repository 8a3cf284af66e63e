"""Atomic writes: a file is either absent or complete, never half-written.

Everything a run writes goes through here (temp file in the same folder,
fsync, then os.replace), so a killed run leaves nothing a later run would
mistake for a finished result.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from uscl.errors import UsclError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    ``suffix`` keeps an extension on the temp file for writers that insist on one
    (np.save, PyAV, matplotlib). ``durable=False`` skips the fsync: still atomic
    against a killed process (the rename is), but after a power cut the file may
    be missing or empty; for caches that are rebuilt when unreadable (the
    sidecars of `uscl prepare`), where an fsync per file would cost more than
    the work it saves.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sfx = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{sfx}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; results should read like any file
    try:
        yield tmp_path
        if durable:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: str | os.PathLike, obj: Any, durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", durable=durable)


@dataclass(frozen=True)
class Streamed:
    """A placeholder in :func:`atomic_write_json_streamed`'s ``obj``: the list ``streams[key]()`` yields."""

    key: str


def atomic_write_json_streamed(path: str | os.PathLike, obj: dict, streams: dict[str, Callable[[], Iterator[Any]]]
                               ) -> None:
    """Write ``obj`` as :func:`atomic_write_json` does (byte for byte), where each ``Streamed(key)`` value
    (e.g. ``obj["inputs"] = Streamed("inputs")``) becomes the list of what ``streams[key]()`` yields,
    written element by element: the file can hold more than memory would."""
    marks = {key: f"@@stream-{os.getpid()}-{id(obj)}-{key}@@" for key in streams}
    placed = _place_marks(obj, streams, marks)
    text = json.dumps(placed, indent=2, sort_keys=False, default=_json_default) + "\n"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        pos = 0
        present = [(text.index(f'"{m}"'), k, m) for k, m in marks.items() if f'"{m}"' in text]
        for _, key, mark in sorted(present):
            at = text.index(f'"{mark}"')
            line_start = text.rindex("\n", 0, at) + 1
            pad = " " * (len(text[line_start:]) - len(text[line_start:].lstrip(" "))) + "  "
            fh.write(text[pos:at])
            first = True
            for item in streams[key]():
                fh.write(("[\n" if first else ",\n") + pad)
                fh.write(json.dumps(item, indent=2, default=_json_default).replace("\n", "\n" + pad))
                first = False
            fh.write("[]" if first else "\n" + pad[:-2] + "]")
            pos = at + len(mark) + 2
        fh.write(text[pos:])


def _place_marks(obj: Any, streams: dict, marks: dict[str, str]) -> Any:
    """A copy of ``obj`` with each placeholder string that names a stream replaced by its mark."""
    if isinstance(obj, dict):
        return {k: _place_marks(v, streams, marks) for k, v in obj.items()}
    if isinstance(obj, Streamed):
        return marks[obj.key]
    return obj


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None], suffix: str | None = None) -> None:
    """Call ``writer(tmp_path)`` then move the result onto ``path``."""
    with atomic_path(path, suffix=suffix) as tmp:
        writer(tmp)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def prepare_output_dir(path: str | os.PathLike, *, overwrite: bool = False, marker: str | None = None) -> Path:
    """Create ``path`` for a new run; refuse to reuse a non-empty folder.

    A user's results are never overwritten silently: an existing non-empty
    folder is an error unless ``overwrite`` is set. ``marker`` names a file
    whose presence means the folder holds a finished result of the same
    kind (used in the message).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsclError(f"{path} exists and is not a folder", param="out")
    if path.exists() and any(path.iterdir()) and not overwrite:
        what = f" (it holds {marker})" if marker and (path / marker).exists() else ""
        raise UsclError(
            f"output folder {path} is not empty{what}; choose another out folder or set overwrite", param="overwrite"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path
