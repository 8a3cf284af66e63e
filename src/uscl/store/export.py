"""`uscl export-frames`: a frame store back into the folder-of-frames layout.

    OUT/<label or unlabelled>/<video_id>/frame_00000.png ...
    OUT/labels.csv      path,label,patient (+ the records' extra fields)

for tools that read one folder of images per video (the original USCL code).
``uscl prepare OUT STORE2 --labels OUT/labels.csv --size 0`` reads it back
(a one-frame video is exported as a folder with one image; its CSV row names
that image, since a folder of one file is not taken for a video).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from uscl.store.frame_store import FrameStore
from uscl.utils.atomic import atomic_write_text, prepare_output_dir
from uscl.utils.progress import progress

UNLABELLED = "unlabelled"
_BAD = re.compile(r"[^A-Za-z0-9.\-]+")


@dataclass
class ExportSummary:
    out: str
    videos: int
    frames: int


def _folder_name(label: str | None) -> str:
    if label is None:
        return UNLABELLED
    return _BAD.sub("_", label).strip("_.") or UNLABELLED


def _save_frame(frame: np.ndarray, path: Path, image_format: str) -> None:
    img = Image.fromarray(np.ascontiguousarray(frame[..., 0] if frame.shape[-1] == 1 else frame))
    if image_format == "png":
        img.save(path, format="PNG", compress_level=1)
    else:
        img.save(path, format="JPEG", quality=95)


def export_frames(
    store: str | os.PathLike | FrameStore,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    image_format: str = "png",
    show_progress: bool = True,
) -> ExportSummary:
    """Write every video of ``store`` as a folder of numbered images under ``out``.

    Each video folder appears whole or not at all (written beside, then renamed).
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    store = store if isinstance(store, FrameStore) else FrameStore(store)
    out = prepare_output_dir(out, overwrite=overwrite, marker="labels.csv")
    rows = []
    extra_keys: list[str] = []
    frames_written = 0
    bar = progress(range(len(store)), desc="export", unit="video", **({} if show_progress else {"disable": True}))
    for i in bar:
        rec = store[i]
        label_dir = out / _folder_name(rec.label)
        label_dir.mkdir(parents=True, exist_ok=True)
        final = label_dir / rec.video_id
        tmp = Path(tempfile.mkdtemp(prefix=f".{rec.video_id}.", suffix=".tmp", dir=label_dir))
        try:
            arr = store.frames(i)
            for t in range(arr.shape[0]):
                _save_frame(np.asarray(arr[t]), tmp / f"frame_{t:05d}.{image_format}", image_format)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        frames_written += arr.shape[0]
        rel = final.relative_to(out).as_posix()
        if arr.shape[0] == 1:
            rel += f"/frame_00000.{image_format}"
        extra = {k: v for k, v in rec.extra.items() if isinstance(v, (str, int, float))}
        extra_keys += [k for k in extra if k not in extra_keys and k not in ("path", "label", "patient")]
        rows.append({"path": rel, "label": rec.label or "", "patient": rec.patient or "", **extra})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "label", "patient", *extra_keys], lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "labels.csv", buf.getvalue())
    return ExportSummary(out=str(out), videos=len(store), frames=frames_written)
