"""Detection targets: instances from a label mask, or boxes from a CSV.

The detector (:func:`uscl.models.detector.build_detector`) trains on one
target dict per image, as torchvision's Mask R-CNN expects:
``boxes`` float32 (N, 4) ``x1, y1, x2, y2`` in pixels, ``labels`` int64 (N,)
in 1..K (0 is background), ``masks`` uint8 (N, H, W).

Box convention: a box is the half-open pixel range ``[x1, x2) x [y1, y2)``,
so an instance covering columns 3..7 has ``x1 = 3, x2 = 8`` (``x2 = max column + 1``).
That is COCO's (``pycocotools.mask.toBbox`` gives ``w = max - min + 1``) and the one
under which a horizontal flip is exact (``x -> W - x``); torchvision's
``masks_to_boxes`` uses ``x2 = max column`` instead, one pixel smaller, which
would cost small objects IoU against COCO-style predictions.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from uscl.errors import UsclError

# 8-connectivity: pixels touching at a corner are one instance. A thin oblique structure
# (a vessel wall, a rib shadow edge) drawn with a 1-pixel brush is then one object, not a string of them.
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def empty_target(height: int, width: int, with_masks: bool = True) -> dict[str, torch.Tensor]:
    """A target with no instances (the shapes torchvision accepts for a negative image)."""
    t = {"boxes": torch.zeros((0, 4), dtype=torch.float32), "labels": torch.zeros((0,), dtype=torch.int64)}
    if with_masks:
        t["masks"] = torch.zeros((0, int(height), int(width)), dtype=torch.uint8)
    return t


def targets_from_mask(mask, num_classes: int, *, min_area: int = 4) -> dict[str, torch.Tensor]:
    """One instance per 8-connected component of each class of a label map.

    ``mask``: (H, W) integer label map (numpy or torch), 0 = background, 1..``num_classes`` the classes.
    Components of fewer than ``min_area`` pixels are dropped (annotation specks, which
    would be unlearnable and, in COCO evaluation, unmatchable ground truth). Instances are
    ordered by class, then by scipy's component order (raster order of their first pixel).
    """
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.ndim != 2:
        raise UsclError(f"a detection mask must be a (H, W) label map, got shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "iub":
        raise UsclError(f"a detection mask must hold integer labels, got dtype {arr.dtype}")
    h, w = arr.shape
    if arr.size and (arr.min() < 0 or arr.max() > num_classes):
        bad = sorted(int(v) for v in np.unique(arr) if v < 0 or v > num_classes)
        raise UsclError(f"mask holds label(s) {bad[:8]} outside 0..{num_classes} (0 = background)")
    boxes, labels, masks = [], [], []
    for cls in range(1, int(num_classes) + 1):
        comp, n = ndimage.label(arr == cls, structure=EIGHT_CONNECTED)
        if n == 0:
            continue
        slices = ndimage.find_objects(comp)
        for i, sl in enumerate(slices, start=1):
            inst = np.zeros((h, w), dtype=bool)
            inst[sl] = comp[sl] == i  # within the component's bounding box: no full-image pass per instance
            if int(inst[sl].sum()) < min_area:
                continue
            ys, xs = sl
            boxes.append([xs.start, ys.start, xs.stop, ys.stop])  # slice stops are max + 1
            labels.append(cls)
            masks.append(inst)
    if not boxes:
        return empty_target(h, w)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks).astype(np.uint8))}


BOX_COLUMNS = ("frame", "x1", "y1", "x2", "y2", "label")


def read_boxes_csv(path: str | Path, class_names: list[str] | None = None, *,
                   lines: dict[tuple[str, int], list[int]] | None = None
                   ) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
    """Boxes per frame from a CSV: columns ``video_id`` (or ``path``), ``frame``, ``x1, y1, x2, y2``, ``label``.

    Returns ``{(video_id or path, frame): {"boxes": float32 (N, 4), "labels": int64 (N,)}}``.
    Coordinates are pixels of the stored frame, ``x2``/``y2`` exclusive (see the module docs).
    ``label`` is a class name of ``class_names`` (-> its index + 1) or an integer 1..K.
    Every problem is an error naming the file's line. ``lines``, when given, is filled with the file line
    of each box (``{key: [line of box 0, line of box 1, ...]}``), for errors found later.
    """
    path = Path(path)
    if not path.is_file():
        raise UsclError(f"boxes file not found: {path}")
    out: dict[tuple[str, int], dict[str, list]] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = header
        keys = [c for c in ("video_id", "path") if c in header]
        missing = [c for c in BOX_COLUMNS if c not in header]
        if len(keys) != 1 or missing:
            need = "one of video_id / path" if len(keys) != 1 else ""
            what = ", ".join([*([need] if need else []), *missing])
            raise UsclError(f"{path}: the header needs {what} (columns: video_id or path, frame, x1, y1, x2, y2, "
                            f"label; found: {', '.join(header) or 'nothing'})")
        key = keys[0]
        for row in reader:
            line = reader.line_num
            where = f"{path} line {line}"
            ident = (row.get(key) or "").strip()
            if not ident:
                raise UsclError(f"{where}: empty {key}")
            try:
                frame = int(str(row["frame"]).strip())
            except (TypeError, ValueError):
                raise UsclError(f"{where}: frame must be an integer, got {row['frame']!r}") from None
            if frame < 0:
                raise UsclError(f"{where}: frame must be >= 0, got {frame}")
            coords = []
            for c in ("x1", "y1", "x2", "y2"):
                try:
                    v = float(str(row[c]).strip())
                except (TypeError, ValueError):
                    raise UsclError(f"{where}: {c} must be a number, got {row[c]!r}") from None
                if not np.isfinite(v) or v < 0:
                    raise UsclError(f"{where}: {c} must be a finite number >= 0, got {row[c]!r}")
                coords.append(v)
            x1, y1, x2, y2 = coords
            if x2 <= x1 or y2 <= y1:
                raise UsclError(f"{where}: an empty box ({x1:g}, {y1:g}, {x2:g}, {y2:g}): need x2 > x1 and y2 > y1")
            label = _label(row["label"], class_names, where)
            entry = out.setdefault((ident, frame), {"boxes": [], "labels": []})
            entry["boxes"].append(coords)
            entry["labels"].append(label)
            if lines is not None:
                lines.setdefault((ident, frame), []).append(line)
    return {k: {"boxes": torch.tensor(v["boxes"], dtype=torch.float32),
                "labels": torch.tensor(v["labels"], dtype=torch.int64)} for k, v in out.items()}


def boxes_csv_classes(path: str | Path) -> list[str]:
    """The classes of a boxes CSV, from its ``label`` column: when every label is an integer, they are class
    numbers 1..K and the classes are ``"1" .. "K"`` (K the largest); otherwise every distinct label is a class
    name and the classes are the names, sorted. ``read_boxes_csv(path, boxes_csv_classes(path))`` then maps
    each label to its class (1-based)."""
    path = Path(path)
    if not path.is_file():
        raise UsclError(f"boxes file not found: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        reader.fieldnames = [c.strip() for c in (reader.fieldnames or [])]
        if "label" not in reader.fieldnames:
            return []  # read_boxes_csv names what the header lacks
        names = {str(row.get("label") or "").strip() for row in reader}
    names.discard("")  # read_boxes_csv refuses an empty label, naming its line
    try:
        numbers = [int(n) for n in names]
    except ValueError:
        return sorted(names)
    return [str(k) for k in range(1, max(numbers, default=0) + 1)]


def _label(text, class_names, where) -> int:
    text = str(text if text is not None else "").strip()
    if class_names is not None and text in class_names:
        return class_names.index(text) + 1
    try:
        value = int(text)
    except ValueError:
        known = f" (known: {', '.join(class_names)})" if class_names is not None else \
            " (without class names, labels must be integers 1..K)"
        raise UsclError(f"{where}: unknown label {text!r}{known}") from None
    if value < 1 or (class_names is not None and value > len(class_names)):
        top = len(class_names) if class_names is not None else "K"
        raise UsclError(f"{where}: label {value} is outside 1..{top} (0 is background)")
    return value
