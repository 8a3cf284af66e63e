"""Write frames as a deterministic H.264 .mp4 (PyAV/libx264, yuv420p), atomically.

One writer for everything uscl encodes (synthetic videos, Grad-CAM overlay
clips). Determinism matters: the same seed must give byte-identical files, so
the encoder runs single-threaded (x264's frame and lookahead threads change
its decisions with timing) with fixed options, and nothing time-dependent is
written into the container.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from uscl.errors import UsclError
from uscl.utils.atomic import atomic_path

ENCODER_OPTIONS = {
    "crf": "20",
    "preset": "superfast",
    "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0",
}


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0, *, pad_odd: bool = False) -> Path:
    """Encode uint8 frames, grey (T, H, W) or RGB (T, H, W, 3), to ``path`` atomically.

    yuv420p needs even sizes: odd ones are an error, or padded by one edge
    pixel with ``pad_odd``.
    """
    frames = np.asarray(frames)
    rgb = frames.ndim == 4 and frames.shape[-1] == 3
    if frames.dtype != np.uint8 or not (frames.ndim == 3 or rgb) or len(frames) < 1:
        raise UsclError(f"expected uint8 frames (T, H, W) or (T, H, W, 3), got {frames.dtype} {frames.shape}")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        if not pad_odd:
            raise UsclError(f"H.264 yuv420p needs even sizes, got {frames.shape}")
        pad = ((0, 0), (0, h % 2), (0, w % 2)) + (((0, 0),) if rgb else ())
        frames = np.pad(frames, pad, mode="edge")
        h, w = frames.shape[1:3]
    if fps <= 0:
        raise UsclError(f"fps must be positive, not {fps}")
    path = Path(path)
    with atomic_path(path, suffix=".mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(str(round(fps, 4))).limit_denominator(100000))
            stream.width, stream.height = w, h
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1
            stream.options = dict(ENCODER_OPTIONS)
            for frame in frames:
                image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24" if rgb else "gray")
                for packet in stream.encode(image):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path
