"""Which files are segmentation masks of which input, by name: ``x.png`` → ``x_mask.png``.

With a mask suffix (``_mask``), a file beside an input whose name is the
input's stem plus the suffix, optionally plus ``_<n>``, and any media
extension, is a mask of that input: ``x.png`` → ``x_mask.png``,
``x_mask_1.png``, ``x_mask_2.tif`` (several masks of one input are merged);
``clip.mp4`` → ``clip_mask.mkv``; a frame folder ``f/`` → the folder
``f_mask/`` (one mask image per frame, natural name order). Such files are
masks, never inputs: discovery leaves them out (those that match no input are
reported, not ingested).
"""

from __future__ import annotations

import re
from pathlib import Path

from uscl.video.formats import DICOM_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

MASK_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS | DICOM_EXTENSIONS


def _pattern(suffix: str) -> re.Pattern:
    return re.compile(r"^(?P<base>.+?)" + re.escape(suffix) + r"(?:_(?P<n>\d+))?$")


def mask_base(path: Path, suffix: str | None, *, is_dir: bool = False) -> str | None:
    """The name of the input a mask file (or mask folder) belongs to, or None if it is no mask by name.

    ``x_mask_2.png`` → ``x``; ``f_mask`` (a folder) → ``f``.
    """
    if not suffix:
        return None
    if is_dir:
        stem = path.name
    else:
        if path.suffix.lower() not in MASK_EXTENSIONS:
            return None
        stem = path.stem
    m = _pattern(suffix).match(stem)
    return m.group("base") if m else None


def input_key(rel: str, is_dir: bool) -> str:
    """What a mask's name is matched on: the input's relative path without its extension (a folder: as is)."""
    if is_dir:
        return rel
    parent, _, name = rel.rpartition("/")
    stem = Path(name).stem or name
    return f"{parent}/{stem}" if parent else stem
