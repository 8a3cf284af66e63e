"""Lossless label-mask videos: FFV1 ``gray`` frames that decode back to exactly the values written.

The format `uscl synth --masks` writes and `uscl prepare` reads back exactly
(:mod:`uscl.video.mask_reader` decodes the grey plane); the container follows
the file's extension (``.avi``, ``.mkv``...).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from uscl.errors import UsclError
from uscl.utils.atomic import atomic_path

MASK_CODEC = "ffv1"
MASK_PIX_FMT = "gray"
CONTAINERS = {".avi": "avi", ".mkv": "matroska"}


def write_mask_video(path: str | os.PathLike, labels: np.ndarray, fps: float = 10.0) -> Path:
    """Encode uint8 label frames (T, H, W) losslessly (FFV1, gray) to ``path`` atomically (AVI or Matroska).

    Single-threaded with fixed options, so the same labels give byte-identical files.
    """
    labels = np.asarray(labels)
    if labels.dtype != np.uint8 or labels.ndim != 3 or len(labels) < 1:
        raise UsclError(f"expected uint8 label frames (T, H, W), got {labels.dtype} {labels.shape}")
    if fps <= 0:
        raise UsclError(f"fps must be positive, not {fps}")
    path = Path(path)
    with atomic_path(path, suffix=path.suffix or ".avi") as tmp:
        with av.open(str(tmp), mode="w", format=CONTAINERS.get(path.suffix.lower(), "avi")) as container:
            stream = container.add_stream(MASK_CODEC, rate=Fraction(str(round(fps, 4))).limit_denominator(100000))
            stream.height, stream.width = labels.shape[1:]
            stream.pix_fmt = MASK_PIX_FMT
            stream.codec_context.thread_count = 1
            container.metadata.clear()
            for frame in labels:
                image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="gray")
                for packet in stream.encode(image):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path
