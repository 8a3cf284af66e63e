"""Detection from a boxes CSV (``finetune --task detect --boxes CSV``): the boxes keyed to a store's frames.

The CSV (read by :func:`uscl.finetune.detect.targets.read_boxes_csv`) has one row per box:
``video_id`` (a store video id) **or** ``path`` (the video's ``source``: its path relative to the
folder ``uscl prepare`` ingested, as ``manifest.json`` records it), ``frame``, ``x1, y1, x2, y2``, ``label``.

* ``frame`` is a 0-based index into the **stored** frames of the video, i.e. after ``prepare``'s frame
  rate sampling, not the source video's frame number (an annotation tool counts source frames:
  convert them first). A frame at or beyond the video's stored frame count is an error naming the row.
* Coordinates are pixels of the **stored** frames (after ``prepare``'s crop and resize), ``x2``/``y2``
  exclusive; a box reaching beyond the frame is an error naming the row.
* Classes (:func:`~uscl.finetune.detect.targets.boxes_csv_classes`): integer labels are class numbers
  1..K (classes ``"1" .. "K"``); otherwise each distinct label is a class name, sorted.
* Only the (video, frame) pairs with at least one row are used, for training and for testing: a
  frame of a boxed video without a row is *unannotated*, not "no object" (assuming it empty would
  train the detector that the objects it shows are background). So a frame cannot be marked as
  annotated-empty; every used frame has at least one box.
* A video id or path the store does not know is an error naming the row.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from uscl.errors import UsclError
from uscl.finetune.detect.targets import boxes_csv_classes, read_boxes_csv


@dataclass
class BoxTable:
    """The boxes of one CSV, keyed by (store video index, stored frame)."""

    path: Path
    classes: list[str]
    targets: dict[tuple[int, int], dict[str, torch.Tensor]]  # boxes float32 (N, 4), labels int64 (N,) in 1..K
    sha256: str  # of the CSV's bytes: a resumed run refuses folds trained on other boxes

    def frames_of(self, video: int) -> list[int]:
        """The annotated stored frames of store video ``video``, in order."""
        return sorted(t for v, t in self.targets if v == video)

    def video_indices(self) -> set[int]:
        return {v for v, _ in self.targets}

    def target(self, video: int, frame: int) -> dict[str, torch.Tensor]:
        t = self.targets[(video, frame)]
        return {"boxes": t["boxes"].clone(), "labels": t["labels"].clone()}

    @property
    def n_boxes(self) -> int:
        return sum(len(t["labels"]) for t in self.targets.values())


def _norm(path: str) -> str:
    return str(PurePosixPath(path.replace("\\", "/").strip()))


def _key_column(path: Path) -> str:
    with path.open(newline="") as fh:
        header = [c.strip() for c in (next(csv.reader(fh), None) or [])]
    return "video_id" if "video_id" in header else "path"


def load_boxes(path: str | Path, store) -> BoxTable:
    """Read the boxes CSV ``path`` and key it to ``store``'s videos and stored frames; see the module docs."""
    path = Path(path)
    classes = boxes_csv_classes(path)
    lines: dict[tuple[str, int], list[int]] = {}
    raw = read_boxes_csv(path, classes, lines=lines)
    if not raw:
        raise UsclError(f"{path} holds no boxes (a header and no rows)", param="boxes")
    key = _key_column(path)
    by_source: dict[str, list[int]] = {}
    for i, rec in enumerate(store.videos):
        by_source.setdefault(_norm(str(rec.source)), []).append(i)
    targets: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    for (ident, frame), t in raw.items():
        where = f"{path} line {lines[(ident, frame)][0]}"
        if key == "video_id":
            try:
                v = store.index_of(ident)
            except KeyError:
                some = ", ".join(r.video_id for r in store.videos[:5])
                raise UsclError(f"{where}: video_id {ident!r} is not a video of the store {store.root} "
                                f"(its ids: {some}{', ...' if len(store) > 5 else ''})", param="boxes") from None
        else:
            hits = by_source.get(_norm(ident), [])
            if len(hits) != 1:
                what = "no video of the store has" if not hits else f"{len(hits)} videos of the store have"
                raise UsclError(f"{where}: {what} the source path {ident!r} (path matches a video's source in the "
                                "store's manifest: the file's path relative to the folder prepare ingested; "
                                "or use a video_id column)", param="boxes")
            v = hits[0]
        rec = store.videos[v]
        if frame >= rec.num_frames:
            raise UsclError(f"{where}: frame {frame} is out of range for video {rec.video_id}, which has "
                            f"{rec.num_frames} stored frames (0..{rec.num_frames - 1}); frames count the STORED "
                            "frames (after prepare's frame-rate sampling), not the source video's", param="boxes")
        b = t["boxes"]
        over = ((b[:, 2] > rec.width) | (b[:, 3] > rec.height)).nonzero().flatten().tolist()
        if over:
            j = over[0]
            x1, y1, x2, y2 = (float(x) for x in b[j])
            raise UsclError(f"{path} line {lines[(ident, frame)][j]}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) reaches "
                            f"beyond video {rec.video_id}'s {rec.width}x{rec.height} stored frames; coordinates are "
                            "pixels of the STORED frames (after prepare's crop and resize)", param="boxes")
        targets[(v, frame)] = t
    return BoxTable(path, classes, dict(sorted(targets.items())), hashlib.sha256(path.read_bytes()).hexdigest())
