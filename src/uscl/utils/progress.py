"""Progress bars that stay quiet where nobody is watching (CI, non-rank-0)."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    if os.environ.get("USCL_NO_PROGRESS"):
        return False
    if int(os.environ.get("RANK", "0")) != 0:
        return False
    return sys.stderr.isatty() or bool(os.environ.get("USCL_PROGRESS"))


def progress(iterable: Iterable[T] | None = None, **kwargs) -> "tqdm[T]":
    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
