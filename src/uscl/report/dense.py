"""Reports of segmentation and detection runs and comparisons: tables, paired per-fold differences, plots, overlays.

A run folder (``metrics.json`` with ``task: segment`` or ``detect``) or a comparison folder
(``comparison.json`` of such runs over the same folds) gets
``report.md`` with: per init, the mean and 95% CI over folds of Dice, IoU and
HD95 at image and video level (a detector's kept instances painted into label
maps), for detection also box and mask mAP (pycocotools); the paired per-fold
differences against the baseline (random init when present); a per-fold Dice plot; and, per init, the
overlays of its best, median and worst test images (by the image's mean Dice
over the classes present in its truth): the frame with the truth contour in
green and the prediction contour in red, one row per class present.

A detection run on a boxes CSV (``metrics.json`` ``annotations: boxes``) has no masks: its report shows
box mAP@0.5 and mAP@[.5:.95] (mean and CI over folds, paired per-fold differences), per-class AP@0.5
(mean over folds), a per-fold mAP@0.5 plot, and as overlays the best, median and worst test frames by
their box-match score (``detections.json``): truth boxes green, detections scoring >= 0.5 red.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from uscl.errors import UsclError
from uscl.finetune import metrics as M
from uscl.finetune.run_folder import fold_dir
from uscl.finetune.dense_run import (DETECTION_METRICS, DETECTIONS, PER_IMAGE, TEST_MASKS, detection_keys,
                                     read_detections, read_per_image)
from uscl.report.plots import fold_accuracy
from uscl.store import FrameStore
from uscl.utils.atomic import atomic_write_json, atomic_write_text, atomic_write_with

DENSE_COMPARISON_FORMAT = "uscl-dense-comparison"
# (key in the fold summary, label, higher is better)
TABLE_METRICS = (("dice", "Dice", True), ("iou", "IoU", True), ("hd95", "HD95 px", False))
LEVELS = ("image", "video")
DETECTION_LABELS = {"bbox_map50": "box mAP@0.5", "bbox_map": "box mAP@[.5:.95]", "segm_map50": "mask mAP@0.5",
                    "segm_map": "mask mAP@[.5:.95]"}
TASK_NAMES = {"segment": "segmentation", "detect": "detection"}
TRUTH_RGB, PRED_RGB = (40, 220, 60), (235, 50, 40)


def is_boxes_run(metrics: dict) -> bool:
    """A detection run trained on a boxes CSV (no masks: no Dice, no label maps)."""
    return metrics.get("annotations") == "boxes"


def is_dense_run(metrics: dict) -> bool:
    return metrics.get("task") in TASK_NAMES


def load_dense_run(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if not is_dense_run(metrics):
        raise UsclError(f"{run_dir} is not a segmentation or detection run (task {metrics.get('task', 'classify')})")
    return {"dir": run_dir, "metrics": metrics}


def dense_comparison_data(runs: dict[str, dict], baseline: str | None = None) -> dict:
    """Per init the summary over folds; per other init the paired per-fold differences against ``baseline``."""
    if not runs:
        raise UsclError("nothing to compare: no finished runs")
    names = list(runs)
    baseline = baseline if baseline in runs else ("random" if "random" in runs else names[0])
    tests = {n: [sorted(f.get("test_videos", [])) for f in r["metrics"]["folds"]] for n, r in runs.items()}
    same = all(t == tests[baseline] for t in tests.values())
    tasks = {r["metrics"]["task"] for r in runs.values()}
    if len(tasks) > 1:
        raise UsclError(f"cannot compare runs of different tasks ({', '.join(sorted(tasks))})")
    task = tasks.pop()
    kinds = {is_boxes_run(r["metrics"]) for r in runs.values()}
    if len(kinds) > 1:
        raise UsclError("cannot compare detection runs on masks with detection runs on a boxes CSV")
    boxes = kinds.pop()
    keys = list(detection_keys(runs[baseline]["metrics"]))
    out = {"format": DENSE_COMPARISON_FORMAT, "version": 1, "task": task, "baseline": baseline,
           "annotations": "boxes" if boxes else "masks", "detection_keys": keys,
           "same_folds": same, "classes": runs[baseline]["metrics"]["classes"], "runs": {}, "paired_vs_baseline": {}}
    levels = () if boxes else LEVELS
    for n, r in runs.items():
        m = r["metrics"]
        out["runs"][n] = {"dir": r["dir"].name, "init_spec": m.get("init_spec"), "mode": m.get("mode"),
                          "arch": m.get("arch"), "selection": m.get("selection"), "coverage": m.get("coverage"),
                          "folds_run": m.get("folds_run"), "summary": {lvl: m["summary"][lvl] for lvl in levels},
                          "per_class": box_per_class(m) if boxes else m["pooled"]["per_class"]}
        if task == "detect":
            out["runs"][n]["summary"]["detection"] = m["summary"]["detection"]
        if n != baseline and same:
            base = runs[baseline]["metrics"]["summary"]
            out["paired_vs_baseline"][n] = {
                lvl: {k: M.paired_difference(m["summary"][lvl][k]["values"], base[lvl][k]["values"])
                      for k, _, _ in TABLE_METRICS} for lvl in levels}
            if task == "detect":
                out["paired_vs_baseline"][n]["detection"] = {
                    k: M.paired_difference(m["summary"]["detection"][k]["values"], base["detection"][k]["values"])
                    for k in keys}
    return out


def box_per_class(metrics: dict) -> dict[str, dict]:
    """Per class of a boxes run: AP@0.5 per fold (None where the fold's test frames hold none of it) and the mean."""
    out = {}
    for c in metrics["classes"]:
        values = [f.get("coco", {}).get(f"bbox_ap50_{c}") for f in metrics["folds"]]
        values = [None if v is None or v != v else float(v) for v in values]
        vals = [v for v in values if v is not None]
        out[c] = {"ap50": float(np.mean(vals)) if vals else None, "n_folds": len(vals), "values": values}
    return out


def detection_table(data: dict) -> str:
    """Per init: box and mask mAP, mean [95% t-interval] over folds (pycocotools, every detection's score)."""
    keys = data.get("detection_keys") or DETECTION_METRICS
    lines = ["| init | mode | " + " | ".join(DETECTION_LABELS[k] for k in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for n, r in data["runs"].items():
        det = r["summary"]["detection"]
        cover = f" ({r['coverage']})" if r.get("coverage") else ""
        lines.append(f"| {n}{cover} | {r['mode']} | " + " | ".join(_ci(det[k]) for k in keys) + " |")
    return "\n".join(lines)


def _ci(d: dict) -> str:
    if d.get("mean") is None:
        return "n/a"
    lo, hi = d.get("lo"), d.get("hi")
    return f"{d['mean']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{d['mean']:.3f}"


def markdown_table(data: dict) -> str:
    head = " | ".join(f"{lvl} {label}" for lvl in LEVELS for _, label, _ in TABLE_METRICS)
    lines = [f"| init | mode | {head} |", "|---|---|" + "---|" * (len(LEVELS) * len(TABLE_METRICS))]
    for n, r in data["runs"].items():
        cells = " | ".join(_ci(r["summary"][lvl][k]) for lvl in LEVELS for k, _, _ in TABLE_METRICS)
        lines.append(f"| {n}{' (' + r['coverage'] + ')' if r.get('coverage') else ''} | {r['mode']} | {cells} |")
    lines.append("")
    lines.append("Mean [95% t-interval] over folds of each fold's mean over classes; HD95 in pixels (lower is better); "
                 "video level: each video's mean first.")
    return "\n".join(lines)


def paired_table(data: dict) -> str:
    if not data["paired_vs_baseline"]:
        return ("_The runs do not share the same folds: no paired comparison._" if not data["same_folds"]
                else "_Only one init: nothing to compare against._")
    lines = [f"Paired per-fold difference vs **{data['baseline']}** (same folds; for Dice and IoU positive is "
             "better, for HD95 negative is better):", "",
             "| init | level | metric | Δ mean ± std | per-fold Δ | better in folds | paired t-test p |",
             "|---|---|---|---|---|---|---|"]
    for n, levels in data["paired_vs_baseline"].items():
        for lvl, per in levels.items():
            metrics = TABLE_METRICS if lvl in LEVELS else [(k, DETECTION_LABELS[k], True) for k in per]
            for k, label, higher in metrics:
                d = per[k]
                if d["mean"] is None:
                    continue
                better = d["wins"] if higher else d["losses"]
                folds = ", ".join("n/a" if x is None else f"{x:+.3f}" for x in d["diff"])
                p = "n/a" if d["p_value"] is None else f"{d['p_value']:.3f}"
                lines.append(f"| {n} | {lvl} | {label} | {d['mean']:+.3f} ± {d['std']:.3f} | {folds} | "
                             f"{better}/{d['n']} | {p} |")
    return "\n".join(lines)


def per_class_table(data: dict) -> str:
    """Per init and class, pooled over the test images of every fold: Dice / IoU / HD95 where the truth holds
    the class, the images where it was missed, and the false positives on images without it."""
    if data.get("annotations") == "boxes":
        lines = ["| init | class | box AP@0.5 (mean over folds) | per fold |", "|---|---|---|---|"]
        for n, r in data["runs"].items():
            for c, pc in r["per_class"].items():
                folds = ", ".join("n/a" if v is None else f"{v:.3f}" for v in pc["values"])
                lines.append(f"| {n} | {c} | {_num(pc['ap50'])} | {folds} |")
        lines += ["", "n/a: the fold's test frames hold no box of the class."]
        return "\n".join(lines)
    lines = ["| init | class | images with it | Dice | IoU | HD95 px | missed | images without it | with a false "
             "positive |", "|---|---|---|---|---|---|---|---|---|"]
    names = data["classes"]
    for n, r in data["runs"].items():
        for c, pc in sorted(r["per_class"].items(), key=lambda kv: int(kv[0])):
            e = pc["empty_truth"]
            fp = "n/a" if e["fp_share"] is None else f"{e['fp_share']:.0%}"
            lines.append(f"| {n} | {names[int(c) - 1]} | {pc['n_images']} | {_num(pc['dice'])} | {_num(pc['iou'])} | "
                         f"{_num(pc['hd95'], 1)} | {pc['n_missing']} | {e['n']} | {fp} |")
    return "\n".join(lines)


def _num(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def tables(data: dict) -> str:
    """The summary tables of a run or comparison: detection's mAP first (for detection), then the masks'."""
    parts = [detection_table(data), ""] if data["task"] == "detect" else []
    if data.get("annotations") == "boxes":
        return "\n".join(parts + ["Mean [95% t-interval] over folds (pycocotools, every detection's score). Boxes "
                                  "from a CSV: no masks, so no Dice, IoU or HD95."])
    return "\n".join(parts + [markdown_table(data)])


def write_dense_comparison(out: Path, specs: dict[str, str], store: str) -> dict:
    """``out/comparison.json`` and ``comparison.md`` of the finished segmentation or detection runs ``out/<name>/``."""
    runs = {name: load_dense_run(out / name) for name in specs}
    data = dense_comparison_data(runs)
    data["store"] = store
    data["init_specs"] = dict(specs)
    atomic_write_json(out / "comparison.json", data)
    atomic_write_text(out / "comparison.md", f"# {TASK_NAMES[data['task']].capitalize()} comparison\n\n"
                                             f"{tables(data)}\n\n{paired_table(data)}\n")
    return data


# -- overlays -----------------------------------------------------------------------------------
def contour(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` (bool) with a 4-neighbour outside it: a one-pixel outline."""
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~inner


def overlay(frame: np.ndarray, truth: np.ndarray, pred: np.ndarray, cls: int, scale: int = 2) -> np.ndarray:
    """RGB uint8: the frame (grey or RGB) enlarged ``scale`` times, truth outline green, prediction outline red."""
    rgb = np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame.copy()
    rgb = np.ascontiguousarray(rgb).repeat(scale, 0).repeat(scale, 1)
    for mask, colour in ((truth == cls, TRUTH_RGB), (pred == cls, PRED_RGB)):
        rgb[contour(mask.repeat(scale, 0).repeat(scale, 1))] = colour
    return rgb


def image_scores(rows: list[dict]) -> dict[str, float]:
    """Each image's mean Dice over the classes present in its truth (images with empty truth left out)."""
    per: dict[str, list[float]] = {}
    for r in rows:
        if not r["empty_truth"]:
            per.setdefault(r["image_id"], []).append(r["dice"])
    return {k: float(np.mean(v)) for k, v in per.items()}


def pick_examples(scores: dict[str, float]) -> list[tuple[str, str, float]]:
    """(which, image id, score): the best, the median and the worst image."""
    if not scores:
        return []
    order = sorted(scores, key=lambda k: (scores[k], k))
    picks = [("best", order[-1]), ("median", order[len(order) // 2]), ("worst", order[0])]
    return [(w, k, scores[k]) for w, k in picks]


def write_overlays(run_dir: Path, store: FrameStore | None, out_dir: Path, prefix: str) -> list[tuple[str, Path]]:
    """The best / median / worst test images of a run as overlay PNGs; [] when the store is not available."""
    m = json.loads((run_dir / "metrics.json").read_text())
    if store is None:
        return []
    rows, preds = [], {}
    for k in m["folds_run"]:
        rows += read_per_image(fold_dir(run_dir, k) / PER_IMAGE)
        with np.load(fold_dir(run_dir, k) / TEST_MASKS, allow_pickle=False) as z:
            for v, t, p in zip(z["videos"], z["frames"], z["pred"]):
                preds[f"{store.videos[int(v)].video_id}:{int(t)}"] = p
    written = []
    for which, image_id, score in pick_examples(image_scores(rows)):
        vid, t = image_id.rsplit(":", 1)
        frame, truth, pred = store.frame(vid, int(t)), store.mask(vid, int(t)), preds[image_id]
        classes = [c for c in range(1, len(m["classes"]) + 1) if (truth == c).any()]
        panel = np.concatenate([overlay(frame, truth, pred, c) for c in classes], axis=1)
        path = out_dir / f"{prefix}{which}.png"
        atomic_write_with(path, lambda tmp, a=panel: Image.fromarray(a).save(tmp, format="PNG"), suffix=".png")
        written.append((f"{which}: {image_id}, Dice {score:.3f} ({', '.join(m['classes'][c - 1] for c in classes)})",
                        path))
    return written


def draw_boxes(rgb: np.ndarray, boxes, colour, scale: int) -> None:
    """One-pixel rectangle outlines (xyxy, exclusive x2/y2, in stored-frame pixels) drawn into ``rgb`` in place."""
    h, w = rgb.shape[:2]
    for x1, y1, x2, y2 in boxes:
        a, b = int(round(x1 * scale)), int(round(y1 * scale))
        c, d = min(w, int(round(x2 * scale))) - 1, min(h, int(round(y2 * scale))) - 1
        if c < a or d < b:
            continue
        rgb[b, a:c + 1] = rgb[d, a:c + 1] = colour
        rgb[b:d + 1, a] = rgb[b:d + 1, c] = colour


def write_box_overlays(run_dir: Path, store: FrameStore | None, out_dir: Path, prefix: str,
                       threshold: float = 0.5, scale: int = 2) -> list[tuple[str, Path]]:
    """The best / median / worst test frames of a boxes run by box-match score, truth boxes green, detections
    scoring >= ``threshold`` red; [] when the store is not available."""
    m = json.loads((run_dir / "metrics.json").read_text())
    if store is None:
        return []
    images = {}
    for k in m["folds_run"]:
        for im in read_detections(fold_dir(run_dir, k) / DETECTIONS)["images"]:
            images[f"{im['video_id']}:{im['frame']}"] = im
    written = []
    for which, image_id, score in pick_examples({k: im["box_match"] for k, im in images.items()}):
        im = images[image_id]
        frame = store.frame(im["video_id"], int(im["frame"]))
        rgb = np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame.copy()
        rgb = np.ascontiguousarray(rgb).repeat(scale, 0).repeat(scale, 1)
        det = im["detections"]
        draw_boxes(rgb, im["truth"]["boxes"], TRUTH_RGB, scale)
        draw_boxes(rgb, [b for b, s in zip(det["boxes"], det["scores"]) if s >= threshold], PRED_RGB, scale)
        path = out_dir / f"{prefix}{which}.png"
        atomic_write_with(path, lambda tmp, a=rgb: Image.fromarray(a).save(tmp, format="PNG"), suffix=".png")
        written.append((f"{which}: {image_id}, box match {score:.3f}", path))
    return written


def _open_store(metrics: dict) -> FrameStore | None:
    try:
        store = FrameStore(metrics["store"], check=False)
    except (UsclError, OSError, KeyError, ValueError):
        return None
    return store if store.store_id == metrics.get("store_id") else None


def dense_report(path: Path) -> Path:
    """report.md (+ plots and overlays) of a segmentation or detection run or comparison folder; returns report.md."""
    if (path / "comparison.json").is_file():
        comp = json.loads((path / "comparison.json").read_text())
        runs = {n: load_dense_run(path / r["dir"]) for n, r in comp["runs"].items()}
        kind, baseline = "comparison", comp.get("baseline")
    else:
        run = load_dense_run(path)
        runs, kind, baseline = {run["metrics"]["init"]: run}, "run", None
    data = dense_comparison_data(runs, baseline)
    task = TASK_NAMES[data["task"]]
    boxes = data.get("annotations") == "boxes"
    how = ("a detector's instances scoring at least 0.5 are painted into label maps for Dice, IoU and HD95; "
           "mAP uses every detection" if data["task"] == "detect" and not boxes else "")
    if boxes:
        src = next(iter(runs.values()))["metrics"].get("boxes")
        lines = [f"# {task.capitalize()} {kind}: {path.name}", "",
                 f"Task: detection (Faster R-CNN) on the boxes of {src}; classes: {', '.join(data['classes'])}; "
                 "folds split by video (and patient) over the videos with boxes; only the frames with boxes "
                 "are used; each fold's model is its last epoch; mAP uses every detection.", "",
                 tables(data), "", paired_table(data), "", "## Per class", "", per_class_table(data), ""]
        per_fold = {n: {"box mAP@0.5": r["metrics"]["summary"]["detection"]["bbox_map50"]["values"]}
                    for n, r in runs.items()}
        fig = fold_accuracy(path / "fold_map50.png", per_fold, "box mAP@0.5 per fold", metric="box mAP@0.5")
        lines += ["## Box mAP@0.5 per fold", "", f"![box mAP@0.5 per fold]({fig.name})", ""]
        intro = ("Ranked by box match (confident detections matched to same-class truth boxes: the matched IoUs "
                 "over truth boxes + unmatched detections); truth boxes green, detections scoring >= 0.5 red.")
        draw = write_box_overlays
    else:
        lines = [f"# {task.capitalize()} {kind}: {path.name}", "",
                 f"Task: {task}; classes: {', '.join(data['classes'])}; folds split by video "
                 "(and patient) over the videos with masks; each fold's model is its last epoch unless the run "
                 "selected on a validation split carved from the training videos" + (f"; {how}." if how else "."),
                 "", tables(data), "",
                 paired_table(data), "", "## Per class (all folds' test images pooled)", "", per_class_table(data),
                 ""]
        per_fold = {n: {lvl: r["metrics"]["summary"][lvl]["dice"]["values"] for lvl in LEVELS}
                    for n, r in runs.items()}
        fig = fold_accuracy(path / "fold_dice.png", per_fold, "Dice per fold", metric="Dice")
        lines += ["## Dice per fold", "", f"![Dice per fold]({fig.name})", ""]
        intro = "Truth outline green, prediction outline red; one panel per class present in the truth."
        draw = write_overlays
    store = _open_store(next(iter(runs.values()))["metrics"])
    lines += ["## Test images: best, median, worst", "", intro, ""]
    if store is None:
        lines.append("_The frame store is not available (moved or changed): no overlays._")
    for n, r in runs.items():
        shots = draw(r["dir"], store, path, f"overlay_{r['dir'].name}_" if len(runs) > 1 else "overlay_")
        if shots:
            lines.append(f"### {n}")
            lines += [f"- {caption}\n\n  ![{caption}]({p.name})" for caption, p in shots]
            lines.append("")
    atomic_write_json(path / "report.json", data)
    atomic_write_text(path / "report.md", "\n".join(lines) + "\n")
    return path / "report.md"
