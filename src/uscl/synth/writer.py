"""Write frames as a deterministic H.264 .mp4 (PyAV/libx264, yuv420p).

Determinism matters: the same seed must give byte-identical files, so the
encoder runs single-threaded (x264's frame and lookahead threads change its
decisions with timing) with fixed options, and nothing time-dependent is
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


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0) -> Path:
    """Encode uint8 grey frames (T, H, W) to ``path`` atomically; H and W must be even."""
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype != np.uint8:
        raise UsclError(f"expected uint8 frames (T, H, W), got {frames.dtype} {frames.shape}")
    t, h, w = frames.shape
    if t < 1 or h % 2 or w % 2:
        raise UsclError(f"H.264 yuv420p needs at least one frame and even sizes, got {frames.shape}")
    if fps <= 0:
        raise UsclError(f"fps must be positive, not {fps}")
    path = Path(path)
    with atomic_path(path, suffix=".mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(str(fps)).limit_denominator(100000))
            stream.width, stream.height = w, h
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1
            stream.options = dict(ENCODER_OPTIONS)
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="gray")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path
