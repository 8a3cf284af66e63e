"""Generate the synthetic data set: OUT/<class>/<Prefix>_synth_NNN.mp4 plus OUT/labels.csv.

With ``masks=True`` each video also gets a lossless label video
OUT/<class>/<Prefix>_synth_NNN_mask.avi and labels.csv a ``mask`` column
(see :mod:`uscl.synth.masks`); the videos themselves are unchanged.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from uscl.errors import UsclError
from uscl.synth.masks import MASK_SUFFIX, mask_name, write_mask_video
from uscl.synth.params import CLASSES, PREFIXES
from uscl.synth.render import render_video
from uscl.video.mp4 import write_mp4
from uscl.utils.atomic import atomic_write_text, prepare_output_dir
from uscl.utils.progress import progress

LABELS_CSV = "labels.csv"


@dataclass
class SynthSummary:
    """What :func:`generate` wrote."""

    out: Path
    videos: list[tuple[str, str]] = field(default_factory=list)  # (path relative to out, label)
    masks: list[str] = field(default_factory=list)  # mask paths relative to out, one per video (masks=True)
    labels_csv: Path | None = None
    seconds: float = 0.0
    removed_stale: list[str] = field(default_factory=list)  # old synth videos (and masks) deleted under overwrite


def video_name(label: str, index: int) -> str:
    """File name of video ``index`` of ``label``, prefixed like the POCUS files (Cov_, Pneu_, Reg_)."""
    return f"{PREFIXES[label]}_synth_{index:03d}.mp4"


def video_rng(seed: int, label: str, index: int) -> np.random.Generator:
    """Generator of one video: depends only on (seed, class, index), so the first
    videos are the same whatever videos_per_class or classes say."""
    return np.random.default_rng([seed, CLASSES.index(label), index])


def parse_classes(classes: str | Iterable[str]) -> tuple[str, ...]:
    names = [c.strip() for c in (classes.split(",") if isinstance(classes, str) else classes)]
    names = [c for c in names if c]
    if not names:
        raise UsclError("no classes given; choose from " + ", ".join(CLASSES), param="classes")
    unknown = [c for c in names if c not in CLASSES]
    if unknown:
        raise UsclError(f"unknown class(es) {', '.join(unknown)}; choose from {', '.join(CLASSES)}", param="classes")
    if len(set(names)) != len(names):
        raise UsclError(f"a class is listed twice: {', '.join(names)}", param="classes")
    return tuple(names)


def generate(out: str | os.PathLike, videos_per_class: int = 10, frames: int = 50, size: int = 256,
             fps: float = 10.0, seed: int = 0, classes: str | Iterable[str] = CLASSES,
             overwrite: bool = False, masks: bool = False) -> SynthSummary:
    """Render and encode the data set; same arguments give byte-identical files.

    ``masks=True`` also writes each video's label video ``<Name>_mask.avi``
    beside it (FFV1, gray, same frames, size and fps; values 0..4, see
    :mod:`uscl.synth.masks`) and adds a ``mask`` column to labels.csv. The
    videos are byte-identical with or without masks, and so is labels.csv
    without them.
    """
    classes = parse_classes(classes)
    if videos_per_class < 1:
        raise UsclError(f"videos_per_class must be at least 1, not {videos_per_class}", param="videos_per_class")
    if frames < 1:
        raise UsclError(f"frames must be at least 1, not {frames}", param="frames")
    if size < 32 or size % 2:
        raise UsclError(f"size must be an even number of pixels, at least 32, not {size}", param="size")
    if not fps > 0:
        raise UsclError(f"fps must be positive, not {fps}", param="fps")
    if seed < 0:
        raise UsclError(f"seed must be a non-negative integer, not {seed}", param="seed")
    start = time.perf_counter()
    root = prepare_output_dir(out, overwrite=overwrite, marker=LABELS_CSV)
    summary = SynthSummary(out=root)
    jobs = [(label, i) for label in classes for i in range(videos_per_class)]
    for label, i in progress(jobs, desc="synth", unit="video"):
        rendered = render_video(label, frames, size, video_rng(seed, label, i), fps=fps, masks=masks)
        video, labels = rendered if masks else (rendered, None)
        rel = f"{label}/{video_name(label, i)}"
        write_mp4(root / rel, video, fps=fps)
        summary.videos.append((rel, label))
        if labels is not None:
            mask_rel = f"{label}/{mask_name(video_name(label, i))}"
            write_mask_video(root / mask_rel, labels, fps=fps)
            summary.masks.append(mask_rel)
    summary.removed_stale = _remove_stale(root, {rel for rel, _ in summary.videos} | set(summary.masks))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "patient"] + (["mask"] if masks else []))
    for k, (rel, label) in enumerate(summary.videos):
        row = [rel, label, Path(rel).stem]  # one synthetic patient per video
        writer.writerow(row + ([summary.masks[k]] if masks else []))
    summary.labels_csv = root / LABELS_CSV
    atomic_write_text(summary.labels_csv, buf.getvalue())
    summary.seconds = time.perf_counter() - start
    return summary


def _remove_stale(root: Path, keep: set[str]) -> list[str]:
    """Delete synth videos and masks of an earlier run in this folder that this run did
    not write (only under overwrite), so the folder and labels.csv agree."""
    removed = []
    for label in CLASSES:
        pattern = f"{PREFIXES[label]}_synth_*"
        paths = sorted((root / label).glob(pattern + ".mp4")) + sorted((root / label).glob(pattern + MASK_SUFFIX))
        for path in paths:
            rel = f"{label}/{path.name}"
            if rel not in keep:
                path.unlink()
                removed.append(rel)
    return removed
