"""Per-frame test predictions of a fold as CSV, so every report can be recomputed from them.

Columns: ``video_id, video, frame, label, label_name, pred, prob_<class>...``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from uscl.errors import UsclError
from uscl.utils.atomic import atomic_write_text


@dataclass
class Predictions:
    video_ids: list[str]
    videos: np.ndarray  # store index of each frame's video
    frames: np.ndarray
    labels: np.ndarray  # class index
    probs: np.ndarray  # (n, K)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def write_predictions(path: str | Path, p: Predictions) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["video_id", "video", "frame", "label", "label_name", "pred"] + [f"prob_{c}" for c in p.classes])
    preds = p.probs.argmax(1)
    for i in range(len(p)):
        w.writerow([p.video_ids[i], int(p.videos[i]), int(p.frames[i]), int(p.labels[i]), p.classes[int(p.labels[i])],
                    int(preds[i])] + [f"{x:.6g}" for x in p.probs[i]])
    atomic_write_text(path, buf.getvalue())


def read_predictions(path: str | Path, classes: Sequence[str] | None = None) -> Predictions:
    path = Path(path)
    if not path.is_file():
        raise UsclError(f"predictions file missing: {path}")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise UsclError(f"{path} is empty")
    header = rows[0]
    prob_cols = [i for i, h in enumerate(header) if h.startswith("prob_")]
    file_classes = [header[i][5:] for i in prob_cols]
    if classes is not None and list(classes) != file_classes:
        raise UsclError(f"{path} has classes {file_classes}, expected {list(classes)}")
    col = {h: i for i, h in enumerate(header)}
    body = rows[1:]
    return Predictions(
        video_ids=[r[col["video_id"]] for r in body],
        videos=np.array([int(r[col["video"]]) for r in body], dtype=np.int64),
        frames=np.array([int(r[col["frame"]]) for r in body], dtype=np.int64),
        labels=np.array([int(r[col["label"]]) for r in body], dtype=np.int64),
        probs=np.array([[float(r[i]) for i in prob_cols] for r in body], dtype=np.float64).reshape(len(body), len(prob_cols)),
        classes=file_classes,
    )
