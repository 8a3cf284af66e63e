"""Finding inputs under SRC: video files, DICOM, still images and folders of frames.

The frame-folder rule (the layout the original USCL code reads: one folder of
jpg/png frames per video). A folder is ONE video when all of these hold:

1. it is not SRC itself and has no sub-folders (hidden ones aside);
2. it holds at least 2 files, every one an image by name (png, jpg, bmp, tif;
   hidden files such as .DS_Store ignored);
3. their names are one numbered sequence: equal once the digits are removed
   (``frame_001.jpg``, ``frame_002.jpg``; ``1.png``, ``2.png``);
4. at least one image is readable, and all readable images have the same
   width and height;
5. the labels CSV, if given, does not name any of its images on its own row.

Its frames are the readable images in natural name order (2 before 10). An
image that cannot be read (a corrupt or cut frame) does not break the rule: it
is left out of the video and listed in ``VideoInput.unreadable`` with the
reason, so `uscl prepare` reports it (skipped.csv) and the folder stays one
video; it never falls apart into one-frame videos that could land in different
folds. A folder that fails the rule is a folder of stills: each image is a
one-frame video. Rules 3–5 keep a folder of unrelated stills (say
``pocus_images/convex``) from being mistaken for one video.

Masks are never inputs: files and folders named as masks (``mask_suffix``,
see uscl.video.mask_files) or listed in ``not_inputs`` (the labels CSV's
``mask`` column) are left out before the rules above are applied; the ones
named by suffix are matched to their inputs in ``Discovery.masks``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from uscl.video.formats import digit_free_name, is_image_name, kind_of, natural_key
from uscl.video.mask_files import input_key, mask_base


@dataclass(frozen=True)
class VideoInput:
    """One thing to ingest: a file, or a folder of frames (``files`` set).

    For a folder of frames, ``files`` are its readable images (the frames) and
    ``unreadable`` the (image, reason) pairs of members that could not be read.
    """

    path: Path
    rel: str  # POSIX path relative to SRC: the source recorded in the manifest
    kind: str  # video | dicom | image | frames
    files: tuple[Path, ...] = ()
    unreadable: tuple[tuple[Path, str], ...] = ()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def members(self) -> tuple[Path, ...]:
        """Every image file of a frame folder, readable or not, in natural name order."""
        if not self.unreadable:
            return self.files
        return tuple(sorted((*self.files, *(p for p, _ in self.unreadable)), key=lambda p: natural_key(p.name)))

    def fingerprint(self) -> dict:
        """Size and modification time: what decides whether a re-run must decode again."""
        if self.kind == "frames":
            h = hashlib.sha1()
            size = 0
            mtime = 0
            for f in self.members:  # unreadable members too: repairing one must decode again
                st = f.stat()
                size += st.st_size
                mtime = max(mtime, st.st_mtime_ns)
                h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            return {"size": size, "mtime_ns": mtime, "files": len(self.members), "listing": h.hexdigest()[:16]}
        st = self.path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def content_hash(self) -> str:
        """sha256 of the source bytes (for a frame folder: of its files' names and bytes)."""
        h = hashlib.sha256()
        paths = self.members if self.kind == "frames" else (self.path,)
        for p in paths:
            if self.kind == "frames":
                h.update(p.name.encode() + b"\0")
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()


@dataclass
class Discovery:
    inputs: list[VideoInput]
    ignored: list[str] = field(default_factory=list)  # files of other types (csv, txt...)
    masks: dict[str, tuple[Path, ...]] = field(default_factory=dict)  # input rel → its masks by suffix
    orphan_masks: list[str] = field(default_factory=list)  # named as masks, but no input of that name


def _image_size(path: Path) -> tuple[int, int] | str:
    """(width, height) of a readable image, else the reason it cannot be read."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:  # noqa: BLE001 - any failure makes the image unreadable
        return f"not a readable image ({exc})"


def frame_folder_members(
    files: list[Path], stills: set[str] | frozenset[str] = frozenset(), rels: list[str] | None = None,
) -> tuple[list[Path], list[tuple[Path, str]]] | None:
    """Rules 2–5 of the module docstring for the (non-hidden) files of a leaf folder.

    Returns (readable frames, [(unreadable image, reason)]) when the folder is
    one video, else None.
    """
    if len(files) < 2 or not all(is_image_name(f) for f in files):
        return None
    if len({digit_free_name(f.name) for f in files}) != 1:
        return None
    if rels is not None and any(r in stills for r in rels):
        return None
    readable: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    sizes = set()
    for f in files:
        size = _image_size(f)
        if isinstance(size, str):
            unreadable.append((f, size))
        else:
            readable.append(f)
            sizes.add(size)
    if not readable or len(sizes) != 1:
        return None
    return readable, unreadable


def is_frame_folder(files: list[Path], stills: set[str] | frozenset[str] = frozenset(), rels: list[str] | None = None) -> bool:
    """Rules 2–5 of the module docstring, for the (non-hidden) files of a leaf folder."""
    return frame_folder_members(files, stills, rels) is not None


def discover_inputs(
    src: str | Path,
    *,
    exclude: list[Path] | tuple[Path, ...] = (),
    stills: set[str] | frozenset[str] = frozenset(),
    frame_folders: bool = True,
    mask_suffix: str | None = None,
    not_inputs: set[str] | frozenset[str] = frozenset(),
) -> Discovery:
    """Every input under ``src`` (recursive, sorted, hidden files and folders skipped).

    ``exclude``: folders not to enter (the output store when it lies inside SRC).
    ``stills``: relative paths of images listed on their own (rule 5).
    ``mask_suffix``: files and folders named ``<input><suffix>[_<n>]`` are masks (module docstring).
    ``not_inputs``: relative paths of files or folders that are no inputs (masks named in a CSV).
    """
    src = Path(src)
    excluded = {Path(os.path.abspath(p)) for p in exclude}
    inputs: list[VideoInput] = []
    ignored: list[str] = []
    dir_masks: dict[str, list[Path]] = {}
    file_masks: dict[str, list[Path]] = {}

    def rel_of(p: Path) -> str:
        return p.relative_to(src).as_posix()

    def is_mask(p: Path, is_dir: bool) -> bool:
        if rel_of(p) in not_inputs:
            return True
        base = mask_base(p, mask_suffix, is_dir=is_dir)
        if base is None:
            return False
        parent = rel_of(p.parent)
        key = base if parent == "." else f"{parent}/{base}"
        (dir_masks if is_dir else file_masks).setdefault(key, []).append(p)
        return True

    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        dirnames[:] = sorted(
            (d for d in dirnames if not d.startswith(".") and Path(os.path.abspath(here / d)) not in excluded
             and not is_mask(here / d, True)),
            key=natural_key,
        )
        files = sorted((here / f for f in filenames if not f.startswith(".")), key=lambda p: natural_key(p.name))
        files = [f for f in files if f.is_file() and not is_mask(f, False)]
        rel_dir = here.relative_to(src).as_posix()
        rels = [rel_of(f) for f in files]
        members = frame_folder_members(files, stills, rels) if frame_folders and here != src and not dirnames else None
        if members is not None:
            readable, unreadable = members
            inputs.append(VideoInput(path=here, rel=rel_dir, kind="frames", files=tuple(readable),
                                     unreadable=tuple(unreadable)))
            continue
        for f, rel in zip(files, rels):
            kind = kind_of(f)
            if kind is None:
                ignored.append(rel)
            else:
                inputs.append(VideoInput(path=f, rel=rel, kind=kind))
    inputs.sort(key=lambda i: natural_key(i.rel))
    masks: dict[str, tuple[Path, ...]] = {}
    matched: set[Path] = set()
    for inp in inputs:
        found = (dir_masks if inp.kind == "frames" else file_masks).get(input_key(inp.rel, inp.kind == "frames"))
        if found:
            masks[inp.rel] = tuple(sorted(found, key=lambda p: natural_key(p.name)))
            matched.update(found)
    orphans = sorted((rel_of(p) for group in (*dir_masks.values(), *file_masks.values()) for p in group
                      if p not in matched), key=natural_key)
    return Discovery(inputs=inputs, ignored=ignored, masks=masks, orphan_masks=orphans)
