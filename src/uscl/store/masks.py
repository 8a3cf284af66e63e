"""Segmentation masks of `uscl prepare`: where they come from, what values they may hold, how they line up.

Sources, for each input (the first that applies):

* the labels CSV's ``mask`` column: a path relative to SRC, like ``path``: a
  mask image for a still, a mask video or mask DICOM for a video, a folder of
  mask images (one per frame, natural name order) for a frame folder;
* with ``mask_suffix`` (``_mask``), files named after the input
  (uscl.video.mask_files): ``x.png`` → ``x_mask.png`` (any image
  extension), ``clip.mp4`` → ``clip_mask.mkv``, ``f/`` → ``f_mask/``. Several
  (``x_mask.png``, ``x_mask_1.png``...) are merged: the union of binary masks,
  the pixel-wise maximum of label maps (a higher class wins where they overlap).

Values (after colour masks are turned grey by luma): with one class, a binary
mask, 0 = background; {0, 1}, or any 8-bit mask whose maximum is above 1
thresholded at 128 (a {0, 255} mask, or a lossy binary video; 16-bit: at
32768). With K classes, a label map of values 0..K, value k meaning
``mask_classes[k-1]``; any other value leaves the mask out. An
all-background mask is a valid mask.

Alignment: a mask has one frame per decoded frame of its video (the same
count, checked), and the frames kept from the video (``DecodedVideo.kept_indices``,
after fps sampling and max_frames) are the mask frames kept. Geometry: the
mask must have the image's native size; it takes the image's crop box (never
the overlay blackout: an overlay hides pixels, not anatomy) and is resized
to the stored size by nearest neighbour, so values stay class indices.

A mask that cannot be used (another size, unreadable, values outside the
classes, another frame count) is left out with its reason (:class:`MaskError`);
its image is ingested all the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uscl.errors import UsclError
from uscl.video.decoded import DecodedVideo, DecodeError
from uscl.video.discover import VideoInput
from uscl.video.formats import natural_key
from uscl.video.labels import LabelInfo, normalise_rel
from uscl.video.mask_reader import read_mask_frames

DEFAULT_MASK_CLASSES = ["foreground"]
MASK_COLUMN = "mask"


class MaskError(Exception):
    """A mask that is left out; the message is the reason shown to the user (its image is kept)."""

    def __init__(self, reason: str, rel: str):
        super().__init__(reason)
        self.rel = rel


@dataclass(frozen=True)
class MaskSource:
    """The mask file(s) of one input: several are merged (union / maximum)."""

    paths: tuple[Path, ...]
    rels: tuple[str, ...]  # relative to SRC, what the record and skipped.csv name
    origin: str  # csv | suffix

    def fingerprint(self) -> list:
        """Sizes and modification times of the mask files (a folder: of its files): a changed mask is ingested again."""
        out = []
        for path, rel in zip(self.paths, self.rels):
            try:
                if path.is_dir():
                    h = hashlib.sha1()
                    for f in sorted((p for p in path.iterdir() if p.is_file()), key=lambda p: natural_key(p.name)):
                        st = f.stat()
                        h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
                    out.append([rel, "folder", h.hexdigest()[:16]])
                else:
                    st = path.stat()
                    out.append([rel, st.st_size, st.st_mtime_ns])
            except OSError:
                out.append([rel, "missing"])
        return out


def check_mask_classes(mask_classes: list[str] | str | None) -> list[str] | None:
    """The class names, validated (a comma-separated string is split)."""
    if mask_classes is None:
        return None
    if isinstance(mask_classes, str):
        mask_classes = [c for c in (c.strip() for c in mask_classes.split(",")) if c]
    names = [str(c).strip() for c in mask_classes]
    if not names or any(not n for n in names):
        raise UsclError(f"mask_classes must be one or more non-empty names, got {mask_classes!r}",
                        param="mask_classes")
    if len(set(names)) != len(names):
        raise UsclError(f"mask_classes names a class twice: {', '.join(names)}", param="mask_classes")
    if len(names) > 255:
        raise UsclError(f"mask_classes has {len(names)} classes; masks are uint8, at most 255",
                        param="mask_classes")
    return names


def csv_masks(rows: dict[str, LabelInfo], src: Path) -> dict[str, str]:
    """{input rel: mask rel} from the labels CSV's ``mask`` column, taken out of the rows' extra fields."""
    out = {}
    for rel, info in rows.items():
        key = next((k for k in info.extra if k.lower() == MASK_COLUMN), None)
        if key is None:
            continue
        value = info.extra.pop(key)
        mask_rel = normalise_rel(value, src)
        if mask_rel:
            out[rel] = mask_rel
    return out


def mask_sources(inputs: list[VideoInput], src: Path, from_csv: dict[str, str],
                 by_suffix: dict[str, tuple[Path, ...]]) -> dict[str, MaskSource]:
    """{input rel: its masks}: the CSV's mask column first, else the masks found by suffix."""
    out = {}
    for inp in inputs:
        if inp.rel in from_csv:
            rel = from_csv[inp.rel]
            out[inp.rel] = MaskSource(paths=(src / rel,), rels=(rel,), origin="csv")
        elif inp.rel in by_suffix:
            paths = by_suffix[inp.rel]
            out[inp.rel] = MaskSource(paths=paths, rels=tuple(p.relative_to(src).as_posix() for p in paths),
                                      origin="suffix")
    return out


def _kept_word(inp: VideoInput) -> str:
    return "image" if inp.kind == "image" else "video"


def class_values(arr: np.ndarray, n_classes: int, classes: list[str]) -> np.ndarray:
    """Decoded mask values → uint8 class indices 0..K (module docstring); raises ValueError with the reason."""
    top = int(arr.max(initial=0))
    if n_classes == 1:
        if top > 1:
            return (arr >= (128 if arr.dtype == np.uint8 else 32768)).astype(np.uint8)
        return arr.astype(np.uint8)
    if top > n_classes:
        values = np.unique(arr)
        bad = [int(v) for v in values if v > n_classes]
        shown = ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else "")
        raise ValueError(f"values {shown} outside the classes 0..{n_classes} "
                         f"(0 = background, 1..{n_classes} = {', '.join(classes)})")
    return arr.astype(np.uint8)


def load_masks(inp: VideoInput, video: DecodedVideo, source: MaskSource, classes: list[str],
               notes: list[str] | None = None) -> np.ndarray:
    """The mask of ``video``'s kept frames, (T, H, W) uint8 class indices at the native size.

    Raises :class:`MaskError` naming the mask file and why it is left out.
    ``notes`` gets a warning where one class thresholds a mask whose values
    all lie below the threshold (a label map given without its classes?).
    """
    kept = _kept_word(inp)
    if inp.kind == "frames":  # kept_indices are positions in inp.files; masks go one per image file
        position = {p: i for i, p in enumerate(inp.members)}
        positions = [position[inp.files[i]] for i in video.kept_indices or []]
        expected = len(inp.members)
    else:
        positions = list(video.kept_indices if video.kept_indices is not None else range(video.orig_num_frames))
        expected = video.orig_num_frames
    merged: np.ndarray | None = None
    for path, rel in zip(source.paths, source.rels):
        def fail(reason: str) -> MaskError:
            return MaskError(f"mask left out ({kept} kept): {reason}", rel)

        try:
            found = read_mask_frames(path, positions)
        except DecodeError as exc:
            if str(exc) == "file not found":
                raise fail("mask file not found" + (" (named in the labels CSV)" if source.origin == "csv" else ""))
            raise fail(f"unreadable mask ({exc})") from None
        if (found.height, found.width) != (video.orig_height, video.orig_width):
            raise fail(f"size {found.width}x{found.height} differs from {kept} "
                       f"{video.orig_width}x{video.orig_height}")
        if found.count != expected or found.frames.shape[0] != len(positions):
            raise fail(f"the mask has {found.count} frames, the {kept} {expected}")
        top = int(found.frames.max(initial=0))
        if notes is not None and len(classes) == 1 and 1 < top < (128 if found.frames.dtype == np.uint8 else 32768):
            notes.append(f"mask {rel}: values up to {top}, all below the binary threshold, read as background "
                         "(a label map? name its classes with mask_classes)")
        try:
            values = class_values(found.frames, len(classes), classes)
        except ValueError as exc:
            raise fail(str(exc)) from None
        del found
        merged = values if merged is None else np.maximum(merged, values)
    assert merged is not None
    return merged


def mask_counts(masks: np.ndarray, classes: list[str]) -> dict[str, dict[str, int]]:
    """{class: {frames containing it, pixels}} of a stored mask."""
    k = len(classes)
    per_frame = np.stack([np.bincount(f.ravel(), minlength=k + 1)[: k + 1] for f in masks])
    return {name: {"frames": int((per_frame[:, i + 1] > 0).sum()), "pixels": int(per_frame[:, i + 1].sum())}
            for i, name in enumerate(classes)}
