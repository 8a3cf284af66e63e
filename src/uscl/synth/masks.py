"""Per-frame segmentation masks of what the synthetic generator draws.

``generate(..., masks=True)`` (``uscl synth OUT --masks``) writes, next to each
``OUT/<class>/<Name>.mp4``, a label video ``OUT/<class>/<Name>_mask.avi``:
lossless FFV1, ``gray`` pixels, the same frame count, size and frame rate as
the video, each pixel an integer label

    0 background, 1 pleura, 2 bline, 3 consolidation, 4 effusion

(``MASK_CLASSES[k - 1]`` names label ``k``). Read it back with
:func:`read_mask_video`, or with PyAV: ``frame.to_ndarray(format="gray")``
returns the labels exactly. ``labels.csv`` then gains a ``mask`` column (the
mask's path relative to OUT).

Where the labels come from
--------------------------
Each label is the thresholded *weight* with which the renderer draws that
structure, taken from the same canvases, the same per-frame windows (probe
drift, breathing, lung sliding) and the same scan conversion as the pixels,
so a label sits exactly where its structure is drawn:

* **pleura**: the pleural line's Gaussian depth band (``exp(-((row - d)/t)^2)``
  around its per-column depth ``d``, divided by its largest sampled value in
  that column, so a sub-pixel line keeps its brightest row), where the line
  is drawn at all: columns
  where fragmentation or a rib shadow dims it below ``PLEURA_VISIBLE`` (a
  quarter) of its nominal brightness are gaps. Wall frame.
* **bline**: the lateral profile of each B-line, ``exp(-((col - c)/w)^2)`` at its
  current (sliding) position, times the lung gate (below). Lung frame.
* **consolidation**: the fraction of tissue-like echo in the lung canvas (the
  pneumonia consolidation and the small subpleural consolidations, "notches",
  that covid videos may have under a broken pleura), times the lung gate.
* **effusion**: the anechoic band between the pleura and the consolidation,
  times the lung gate.

The *lung gate* is the renderer's lung mask times the rib shadows (wall frame):
the renderer multiplies everything below the pleura by it, so nothing is
labelled above the pleura or inside a rib's acoustic shadow.

Each weight (1 = fully drawn) is scan-converted with the video's own
:meth:`ProbeGeometry.scan_convert` (the same bilinear resampling as the grey
levels) and thresholded at ``THRESHOLD`` (0.5: the half-maximum edge of a band
or line, the half-way point of a soft region border). Outside the imaged
sector everything is 0. Computing the labels draws no random numbers, so the
videos are byte-identical with or without masks.

Where two labels overlap, the **earlier** class in ``MASK_CLASSES`` wins:
pleura over bline over consolidation over effusion. The order runs from the
thin bright structures drawn on top to the regions beneath them, so a pixel
gets the label of what dominates its grey level (the bright pleural line at
the top of an effusion, a B-line crossing a subpleural notch).
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from uscl.errors import UsclError
from uscl.synth.anatomy import PLEURA_VISIBLE, Anatomy
from uscl.synth.fields import crop
from uscl.synth.geometry import ProbeGeometry
from uscl.video.mask_video import write_mask_video

MASK_CLASSES = ("pleura", "bline", "consolidation", "effusion")  # label k = MASK_CLASSES[k - 1]; 0 = background
BACKGROUND = 0
PLEURA, BLINE, CONSOLIDATION, EFFUSION = 1, 2, 3, 4
THRESHOLD = 0.5
MASK_SUFFIX = "_mask.avi"

__all__ = [
    "BACKGROUND", "BLINE", "CONSOLIDATION", "EFFUSION", "MASK_CLASSES", "MASK_SUFFIX", "PLEURA",
    "PLEURA_VISIBLE", "THRESHOLD", "label_weights", "labels_from_weights", "mask_name",
    "read_mask_video", "write_mask_video",
]


def mask_name(video_name: str) -> str:
    """File name of the mask of ``video_name``: ``Cov_synth_000.mp4`` -> ``Cov_synth_000_mask.avi``."""
    return Path(video_name).stem + MASK_SUFFIX


def b_line_weight(anat: Anatomy, lx: float) -> np.ndarray:
    """(cols,) B-line weight in view columns: the largest normalised lateral profile.

    Same positions and widths as the renderer's ``_b_line_profile`` (which also
    scales by strength and flicker). Each line's profile is divided by its
    largest sampled value, so its brightest column has weight 1 even when a
    narrow line falls between two columns, and 0.5 marks its half-maximum edge.
    """
    j = np.arange(anat.cols, dtype=np.float32)
    w = np.zeros(anat.cols, np.float32)
    for col, width, _strength in anat.b_lines:
        prof = np.exp(-(((j - (col - lx)) / width) ** 2))
        w = np.maximum(w, prof / max(float(prof.max()), 1e-6))
    return w


def label_weights(anat: Anatomy, oy: float, ox: float, lx: float, gate: np.ndarray) -> list[np.ndarray | None]:
    """Beam-space weights in [0, 1] of each class in ``MASK_CLASSES`` for one frame.

    ``oy, ox`` is the wall frame's window, ``lx`` the lung frame's (as the
    renderer's motion gives them) and ``gate`` the cropped lung mask (wall
    layer 3, rib shadows included). ``None`` for a class the video lacks.
    """
    rows, cols = anat.rows, anat.cols
    pleura = crop(anat.pleura_weight, oy, ox, rows, cols) if anat.pleura_weight is not None else None
    bline = gate * b_line_weight(anat, lx)[None, :] if anat.b_lines else None
    cons = gate * crop(anat.consolidation_weight, oy, lx, rows, cols) if anat.consolidation_weight is not None else None
    eff = gate * crop(anat.effusion_weight, oy, lx, rows, cols) if anat.effusion_weight is not None else None
    return [pleura, bline, cons, eff]


def labels_from_weights(weights: list[np.ndarray | None], geom: ProbeGeometry) -> np.ndarray:
    """Scan-convert each beam-space weight like the pixels, threshold, and combine.

    Returns a uint8 (size, size) label map; earlier classes overwrite later
    ones (pleura wins over bline over consolidation over effusion).
    """
    out = np.zeros((geom.size, geom.size), np.uint8)
    for k in range(len(MASK_CLASSES), 0, -1):
        w = weights[k - 1]
        if w is not None:
            out[geom.scan_convert(w) > THRESHOLD] = k
    return out


def read_mask_video(path: str | os.PathLike) -> np.ndarray:
    """Decode a mask video to uint8 labels (T, H, W)."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    if not frames:
        raise UsclError(f"{path}: no frames")
    return np.stack(frames)
