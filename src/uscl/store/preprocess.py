"""The per-video preprocessing of `uscl prepare`, reusable at prediction time.

``PrepareOptions`` is stored (as a dict) in the manifest's ``options``, so
``uscl predict`` can rebuild it with ``PrepareOptions.from_store(store)`` and
call :func:`read_and_preprocess` to treat a new video exactly like the
training videos.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from uscl.errors import UsclError
from uscl.store.crop import CropPlan, plan_crop
from uscl.utils.config import from_dict
from uscl.video.decoded import DecodeError, to_channels
from uscl.video.discover import VideoInput
from uscl.video.reader import read_frames

PREPROCESS_VERSION = 1  # bumped when the same options would give other pixels
# store-level entries of the manifest's options that are no frame preprocessing (uscl.store.masks)
STORE_KEYS = ("mask_classes",)


@dataclass
class PrepareOptions:
    """What turns a decoded video into stored frames.

    size: output S×S (the content is resized to a square, aspect not kept, as
        USCL and POCOVID-Net did); 0 keeps the native size.
    channels: 'grey' (luma, ITU-R 601 weights) or 'rgb'.
    fps: keep the frames nearest to multiples of 1/fps (None: all frames).
    max_frames: then keep at most this many, evenly spaced (None: no cap).
    crop: crop to the live image and mask static overlays (see uscl.store.crop).
    black_level, static_tolerance: thresholds of the crop (grey levels).
    version: preprocessing version, so a store made by other code is never reused.
    """

    size: int = 256
    channels: Literal["grey", "rgb"] = "grey"
    fps: float | None = None
    max_frames: int | None = None
    crop: bool = False
    black_level: int = 10
    static_tolerance: int = 2
    version: int = PREPROCESS_VERSION

    def __post_init__(self) -> None:
        if self.size < 0:
            raise UsclError(f"size must be >= 0 (0 keeps the native size), got {self.size}")
        if 0 < self.size < 8:
            raise UsclError(f"size {self.size} is too small (use 0 for native size, or at least 8)")
        if self.channels not in ("grey", "rgb"):
            raise UsclError(f"channels must be 'grey' or 'rgb', got {self.channels!r}")
        if self.fps is not None and not self.fps > 0:
            raise UsclError(f"fps must be > 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsclError(f"max_frames must be >= 1, got {self.max_frames}")

    @property
    def num_channels(self) -> int:
        return 1 if self.channels == "grey" else 3

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PrepareOptions":
        """From a manifest's (or a model's) options; the store-level keys (``mask_classes``) are not ours."""
        return from_dict(cls, {k: v for k, v in data.items() if k not in STORE_KEYS})

    @classmethod
    def from_store(cls, store) -> "PrepareOptions":
        """The options a FrameStore was prepared with."""
        options = store.options if hasattr(store, "options") else dict(store)
        options = {k: v for k, v in options.items() if k not in STORE_KEYS}
        if not options:
            raise UsclError("the store records no preprocessing options (was it made by `uscl prepare`?)")
        return from_dict(cls, options, where="options")


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (T, H, W, C) → (T, size, size, C), PIL bilinear (antialiased when shrinking)."""
    t, h, w, c = frames.shape
    if (h, w) == (size, size):
        return frames
    out = np.empty((t, size, size, c), np.uint8)
    for i in range(t):
        if c == 1:
            img = Image.fromarray(np.ascontiguousarray(frames[i, :, :, 0]))
            out[i, :, :, 0] = np.asarray(img.resize((size, size), Image.BILINEAR))
        else:
            img = Image.fromarray(np.ascontiguousarray(frames[i]))
            out[i] = np.asarray(img.resize((size, size), Image.BILINEAR))
    return out


def preprocess_frames(frames: np.ndarray, options: PrepareOptions) -> np.ndarray:
    """Channels, crop, resize: native uint8 frames (T, H, W[, C]) → stored frames (T, S, S, C).

    The crop is planned on these frames together (it uses their variation over
    time), so pass a whole video, not one frame at a time.
    """
    return preprocess_with_plan(frames, options)[0]


def preprocess_with_plan(frames: np.ndarray, options: PrepareOptions) -> tuple[np.ndarray, CropPlan | None]:
    """:func:`preprocess_frames`, also returning the crop plan it applied (None without ``crop``),
    so the video's masks can take the same geometry (:func:`preprocess_masks`)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"frames must be (T, H, W[, C]), got shape {frames.shape}")
    if frames.shape[-1] != options.num_channels:
        frames = np.stack([to_channels(f, options.channels) for f in frames])
    plan = None
    if options.crop:
        plan = plan_crop(frames, black_level=options.black_level, static_tolerance=options.static_tolerance)
        frames = plan.apply(frames)
    if options.size:
        frames = resize_frames(frames, options.size)
    return np.ascontiguousarray(frames), plan


def preprocess_masks(masks: np.ndarray, plan: CropPlan | None, options: PrepareOptions) -> np.ndarray:
    """Native (T, H, W) uint8 class indices → stored (T, S, S): the crop box of the video's
    ``plan`` (never its overlay blackout), then a nearest-neighbour resize, so values stay classes.

    Starts from the native size also where the decoder scaled the frames (no crop): the
    same geometry, the source resized to S×S.
    """
    if plan is not None:
        y0, y1, x0, x1 = plan.box
        masks = masks[:, y0:y1, x0:x1]
    t, h, w = masks.shape
    size = options.size
    if not size or (h, w) == (size, size):
        return np.ascontiguousarray(masks, dtype=np.uint8)
    out = np.empty((t, size, size), np.uint8)
    for i in range(t):
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(masks[i], dtype=np.uint8)).resize(
            (size, size), Image.NEAREST))
    return out


def decode_for(path: str | Path, options: PrepareOptions, *, kind: str | None = None,
               files: list[Path] | None = None, threads: int | None = None):
    """Decode with the sampling and channels of ``options`` (a DecodedVideo).

    Without ``crop``, videos are scaled to size×size by the decoder's own
    scaler (FFmpeg swscale, bilinear) instead of PIL afterwards: much faster,
    within a grey level or two of ``preprocess_frames`` on native frames.
    This is the one path both `uscl prepare` and :func:`read_and_preprocess`
    take, so stored and predicted frames are made identically. ``threads``: the video
    decoder's (prepare: 1, one process per core; the same frames).
    """
    scale = options.size if options.size and not options.crop else None
    return read_frames(path, channels=options.channels, fps=options.fps, max_frames=options.max_frames,
                       kind=kind, files=files, size=scale, threads=threads)


def read_and_preprocess(path: str | Path, options: PrepareOptions | dict) -> np.ndarray:
    """Decode a file (or frame folder) and preprocess it exactly as `uscl prepare` did.

    Returns uint8 (T, S, S, C). Raises uscl.video.DecodeError when the file
    cannot be read.
    """
    if isinstance(options, dict):
        options = PrepareOptions.from_dict(options)
    return preprocess_frames(decode_for(path, options).frames, options)


def load_input_frames(inp: VideoInput, options: PrepareOptions, threads: int | None = None) -> np.ndarray:
    """Decode and preprocess one discovered input exactly as `uscl prepare` did: uint8 (T, S, S, C).

    Torch-free, so decoding worker processes (``predict --workers``) start without importing torch.
    Raises uscl.video.DecodeError (or UsclError) for a file that cannot be read.
    """
    video = decode_for(inp.path, options, kind=inp.kind, files=list(inp.files) or None, threads=threads)
    frames = preprocess_frames(video.frames, options)
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise UsclError("no pixels left after preprocessing")
    return frames


# what reading a bad input raises: it is skipped (and reported), the others go on
INPUT_ERRORS = (DecodeError, UsclError, OSError, ValueError, RuntimeError)


def try_load_input_frames(inp: VideoInput, options: PrepareOptions,
                          threads: int | None = None) -> tuple[np.ndarray | None, str | None]:
    """``(frames, None)``, or ``(None, reason)`` for an input that cannot be read (one of INPUT_ERRORS):
    what a decoding worker sends back, a bad file being a result, not a crash."""
    try:
        return load_input_frames(inp, options, threads), None
    except INPUT_ERRORS as exc:
        return None, str(exc) or type(exc).__name__


def store_steps(opts: dict) -> list[str]:
    """The `uscl prepare` steps of store options ``opts``, in words: a file → the stored (preprocessed) frames."""
    return [
        "decode the video/DICOM/image; keep frames nearest to multiples of 1/fps "
        f"(fps={opts.get('fps')}), then at most max_frames={opts.get('max_frames')} evenly spaced",
        f"convert to {opts.get('channels', 'grey')} (grey = ITU-R 601 luma)",
        ("crop to the live ultrasound image and mask static overlays (uscl.store.crop; "
         "needs uscl, or pass frames already cropped)") if opts.get("crop") else "no crop",
        f"resize to {opts.get('size')}x{opts.get('size')} (PIL bilinear; aspect not kept)" if opts.get("size")
        else "keep the native size",
    ]
