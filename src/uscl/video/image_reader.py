"""Still images (png, jpg, bmp, tif) as one-frame videos, and folders of frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from uscl.video.decoded import DecodedVideo, DecodeError, to_channels

Image.MAX_IMAGE_PIXELS = 400_000_000  # large scans are fine; decompression bombs are not


def _pil_to_array(im: Image.Image, channels: str) -> np.ndarray:
    """One PIL image → (H, W, C) uint8 in the wanted channels."""
    if im.mode in ("I;16", "I;16B", "I;16L"):  # 16-bit grey: full scale to 8 bits
        data = np.asarray(im, dtype=np.float64) / 257.0
        return to_channels(np.clip(np.rint(data), 0, 255).astype(np.uint8), channels)
    if im.mode in ("I", "F"):  # 32-bit int or float: stretch the range present
        data = np.asarray(im, dtype=np.float64)
        lo, hi = float(data.min()), float(data.max())
        data = (data - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(data)
        return to_channels(np.clip(np.rint(data), 0, 255).astype(np.uint8), channels)
    if channels == "grey":
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        im = im.convert("L") if im.mode != "L" else im
    else:
        im = im.convert("RGB") if im.mode != "RGB" else im
    return to_channels(np.asarray(im), channels)


def open_image(path: Path) -> Image.Image:
    """PIL image of ``path``, fully loaded; an unreadable file is a DecodeError with the reason."""
    try:
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"not a readable image ({exc})") from None
    return im


def read_image(path: str | Path, *, channels: str = "grey") -> DecodedVideo:
    """A still image; a multi-page TIFF becomes a video of its pages.

    EXIF orientation is applied, so the image is upright as a viewer shows it.
    """
    im = open_image(Path(path))
    with im:
        n_pages = getattr(im, "n_frames", 1)
        if n_pages > 1 and im.format == "TIFF":
            pages = [_pil_to_array(ImageOps.exif_transpose(p.copy()), channels) for p in ImageSequence.Iterator(im)]
            if len({p.shape for p in pages}) != 1:
                pages = [pages[0]]
        else:
            pages = [_pil_to_array(ImageOps.exif_transpose(im), channels)]
    frames = np.stack(pages)
    return DecodedVideo(frames=frames, kind="image", orig_num_frames=len(pages),
                        orig_height=int(frames.shape[1]), orig_width=int(frames.shape[2]),
                        kept_indices=list(range(len(pages))))


def read_frame_folder(files: list[Path], *, channels: str = "grey") -> DecodedVideo:
    """Frames stored one image per file, in the order given (natural name order).

    A frame that cannot be read is left out and listed, with the reason, in
    ``dropped``; a frame of another size than the first is resized to it
    (noted). The rate is unknown (None).
    """
    frames: list[np.ndarray] = []
    notes: list[str] = []
    dropped: list[tuple[Path, str]] = []
    kept: list[int] = []
    shape = None
    for i, f in enumerate(files):
        try:
            with open_image(f) as im:
                arr = _pil_to_array(ImageOps.exif_transpose(im), channels)
        except DecodeError as exc:
            dropped.append((f, str(exc)))
            continue
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            mode = "L" if arr.shape[-1] == 1 else "RGB"
            img = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)
            arr = to_channels(np.asarray(img.resize((shape[1], shape[0]), Image.BILINEAR)), channels)
            notes.append(f"frame {f.name} resized to the first frame's size")
        frames.append(arr)
        kept.append(i)
    if not frames:
        raise DecodeError("no frame of the folder could be read")
    stack = np.stack(frames)
    return DecodedVideo(frames=stack, kind="frames", orig_num_frames=len(frames),
                        orig_height=int(stack.shape[1]), orig_width=int(stack.shape[2]), notes=notes,
                        dropped=dropped, kept_indices=kept)
