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
