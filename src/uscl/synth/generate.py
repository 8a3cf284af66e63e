"""Generate the synthetic data set: OUT/<class>/<Prefix>_synth_NNN.mp4 plus OUT/labels.csv."""

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
    labels_csv: Path | None = None
    seconds: float = 0.0
    removed_stale: list[str] = field(default_factory=list)  # old synth files deleted under overwrite


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
             overwrite: bool = False) -> SynthSummary:
    """Render and encode the data set; same arguments give byte-identical files."""
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
        video = render_video(label, frames, size, video_rng(seed, label, i), fps=fps)
        rel = f"{label}/{video_name(label, i)}"
        write_mp4(root / rel, video, fps=fps)
        summary.videos.append((rel, label))
    summary.removed_stale = _remove_stale(root, {rel for rel, _ in summary.videos})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "patient"])
    for rel, label in summary.videos:
        writer.writerow([rel, label, Path(rel).stem])  # one synthetic patient per video
    summary.labels_csv = root / LABELS_CSV
    atomic_write_text(summary.labels_csv, buf.getvalue())
    summary.seconds = time.perf_counter() - start
    return summary


def _remove_stale(root: Path, keep: set[str]) -> list[str]:
    """Delete synth videos of an earlier run in this folder that this run did not write
    (only under overwrite), so the folder and labels.csv agree."""
    removed = []
    for label in CLASSES:
        for path in sorted((root / label).glob(f"{PREFIXES[label]}_synth_*.mp4")):
            rel = f"{label}/{path.name}"
            if rel not in keep:
                path.unlink()
                removed.append(rel)
    return removed
