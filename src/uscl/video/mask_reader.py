"""Decoding segmentation masks exactly: stored values, native size, every frame counted.

Unlike the image readers, nothing here changes a value that can be a class
index: a palette PNG gives its palette indices, 16-bit grey its raw values,
DICOM its stored values (no windowing, no MONOCHROME1 inversion), a video its
'gray' plane as FFmpeg decodes it (a lossless grey mask video, FFV1 say,
round-trips exactly). Colour masks become grey by luma. Only the frames asked
for (``positions``, decode order) are kept in memory; the total is counted so
the caller can check the mask has as many frames as its video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageOps, ImageSequence

from uscl.video.av_reader import read_av
from uscl.video.decoded import DecodeError, luma
from uscl.video.dicom_reader import _decode_pixels
from uscl.video.formats import kind_of
from uscl.video.image_reader import open_image


@dataclass
class MaskFrames:
    """The asked-for frames of a mask, (N, H, W) uint8 or uint16, and the mask's own frame count and size."""

    frames: np.ndarray
    count: int  # frames in the whole mask source
    height: int
    width: int


def _grey(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3:
        c = arr.shape[-1]
        arr = arr[..., :1][..., 0] if c in (1, 2) else luma(arr[..., :3])
    return arr


def _pil_mask(im: Image.Image) -> np.ndarray:
    """One PIL image → (H, W) uint8/uint16 class values."""
    im = ImageOps.exif_transpose(im)  # the image reader applies it too: the same geometry
    if im.mode in ("P", "L", "I;16", "I;16L", "I;16B"):
        arr = np.asarray(im)
    elif im.mode == "1":
        arr = np.asarray(im.convert("L"))
    elif im.mode in ("I", "F"):
        data = np.asarray(im, dtype=np.float64)
        if data.min() < 0 or data.max() > 65535 or not np.all(data == np.round(data)):
            raise DecodeError(f"mask values are not integers 0..65535 (image mode {im.mode})")
        arr = data.astype(np.uint16)
    elif im.mode in ("LA", "La", "PA"):
        arr = np.asarray(im)[..., 0]
    else:
        arr = _grey(np.asarray(im.convert("RGB")))
    if arr.dtype not in (np.uint8, np.uint16):
        arr = arr.astype(np.uint16) if arr.max(initial=0) > 255 else arr.astype(np.uint8)
    return arr


def _stack(frames: list[np.ndarray], count: int, what: str) -> MaskFrames:
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise DecodeError(f"the frames of the {what} differ in size ({', '.join(sorted(map(str, shapes)))})")
    if not frames:
        raise DecodeError(f"the {what} has no frames")
    dtype = np.uint16 if any(f.dtype == np.uint16 for f in frames) else np.uint8
    arr = np.stack([f.astype(dtype, copy=False) for f in frames])
    return MaskFrames(arr, count, int(arr.shape[1]), int(arr.shape[2]))


def _image(path: Path, positions: list[int]) -> MaskFrames:
    with open_image(path) as im:
        pages = ([p.copy() for p in ImageSequence.Iterator(im)] if getattr(im, "n_frames", 1) > 1
                 and im.format == "TIFF" else [im])
        arrays = [_pil_mask(p) for p in pages]
    if len({a.shape for a in arrays}) != 1:  # the image reader keeps page 0 alone then
        arrays = arrays[:1]
    picked = [arrays[i] for i in positions if i < len(arrays)]
    first = arrays[0]
    if len(picked) != len(positions):
        return MaskFrames(np.zeros((0, *first.shape), first.dtype), len(arrays), *first.shape)
    return _stack(picked, len(arrays), "mask")


def _folder(path: Path, positions: list[int]) -> MaskFrames:
    from uscl.video.reader import frame_files  # reader imports the image readers; keep this module light

    files = frame_files(path)
    if not files:
        raise DecodeError("the mask folder holds no image files")
    picked = []
    for i in positions:
        if i >= len(files):
            break
        with open_image(files[i]) as im:
            picked.append(_pil_mask(im))
    if len(picked) != len(positions):  # fewer files than frames: the count check says so
        with open_image(files[0]) as im:
            first = _pil_mask(im)
        return MaskFrames(np.zeros((0, *first.shape), first.dtype), len(files), *first.shape)
    return _stack(picked, len(files), "mask folder")


def _dicom(path: Path, positions: list[int]) -> MaskFrames:
    try:
        ds = pydicom.dcmread(str(path), force=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the reason
        raise DecodeError(f"DICOM mask is truncated or unreadable ({exc})") from None
    if "PixelData" not in ds or "Rows" not in ds:
        raise DecodeError("DICOM mask has no pixel data")
    arr = _decode_pixels(ds)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if int(ds.get("NumberOfFrames", 1) or 1) == 1 or arr.ndim == (2 if samples == 1 else 3):
        arr = arr[None]
    if samples > 1:
        arr = luma(arr.astype(np.uint8))
    if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
        raise DecodeError(f"DICOM mask values {arr.min()}..{arr.max()} are not class indices")
    arr = arr.astype(np.uint16 if arr.max(initial=0) > 255 else np.uint8)
    n = int(arr.shape[0])
    picked = arr[[i for i in positions if i < n]]
    return MaskFrames(np.ascontiguousarray(picked), n, int(arr.shape[1]), int(arr.shape[2]))


def _video(path: Path, positions: list[int]) -> MaskFrames:
    video = read_av(path, channels="grey", indices=positions)
    return MaskFrames(video.frames[..., 0], video.orig_num_frames, video.orig_height, video.orig_width)


def read_mask_frames(path: str | Path, positions: list[int]) -> MaskFrames:
    """The frames at ``positions`` of a mask image, video, DICOM or folder of mask images.

    Raises :class:`DecodeError` with the reason when the mask cannot be read.
    When the mask has fewer frames than a position asks for, fewer frames come
    back and ``count`` tells how many it has.
    """
    path = Path(path)
    if path.is_dir():
        return _folder(path, positions)
    if not path.is_file():
        raise DecodeError("file not found")
    if path.stat().st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    kind = kind_of(path)
    if kind == "image":
        return _image(path, positions)
    if kind == "video":
        return _video(path, positions)
    if kind == "dicom":
        return _dicom(path, positions)
    raise DecodeError(f"unsupported mask file type {path.suffix or '(no extension)'}")
