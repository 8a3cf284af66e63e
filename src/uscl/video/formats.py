"""Which files are inputs, and of what kind (decided by extension, or DICOM magic)."""

from __future__ import annotations

import re
from pathlib import Path

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mpeg", ".mpg", ".gif", ".mkv", ".webm", ".wmv"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic"})

KINDS = ("video", "dicom", "image", "frames")


def has_dicom_magic(path: Path) -> bool:
    """True for a DICOM Part 10 file (the 'DICM' marker after the 128-byte preamble)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def kind_of(path: Path) -> str | None:
    """'video', 'dicom' or 'image' for an input file; None for anything else.

    DICOM is recognised by extension, or by its magic bytes for files without
    an extension (scanners often write ``IM0001``-style names).
    """
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in DICOM_EXTENSIONS:
        return "dicom"
    if ext == "" and has_dicom_magic(path):
        return "dicom"
    return None


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """Sort key that orders frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name)]


def digit_free_name(name: str) -> str:
    """The name with its numbers removed: equal for all files of a numbered sequence."""
    return _DIGITS.sub("", name).lower()
