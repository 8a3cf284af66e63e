"""`uscl finetune --task detect --boxes CSV`: Faster R-CNN on the boxes of a CSV (here derived from the synthetic
masks' components), its folds, outputs, report and comparison, and the CSV's errors."""

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from uscl.cli import main
from uscl.errors import ConfigError, UsclError
from uscl.finetune.config import FinetuneConfig
from uscl.finetune.dense_run import BOX_METRICS
from uscl.finetune.detect.boxes import load_boxes
from uscl.finetune.detect.evaluate import image_box_match
from uscl.finetune.detect.targets import boxes_csv_classes, targets_from_mask
from uscl.finetune.train import finetune
from uscl.models.backbone import build_backbone
from uscl.report import compare
from uscl.report.dense import dense_report
from uscl.store import FrameStore

HEADER = ["video_id", "frame", "x1", "y1", "x2", "y2", "label"]


def _write(path, rows, header=HEADER):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _rows_from_masks(store_dir, frames=(0, 3), leave_out=1):
    """One row per mask component of ``frames`` of every video but the last ``leave_out``; labels are names."""
    store = FrameStore(store_dir)
    rows = []
    for i, rec in enumerate(store.videos[: len(store) - leave_out]):
        for t in frames:
            tg = targets_from_mask(np.asarray(store.masks(i)[t]), len(store.mask_classes))
            for b, lab in zip(tg["boxes"].tolist(), tg["labels"].tolist()):
                rows.append([rec.video_id, t, *[int(x) for x in b], store.mask_classes[lab - 1]])
    return rows


@pytest.fixture(scope="module")
def boxes_csv(mask_store, tmp_path_factory):
    return _write(tmp_path_factory.mktemp("boxes") / "boxes.csv", _rows_from_masks(mask_store))


def _cfg(store, out, boxes, **kw):
    base = dict(store=str(store), out=str(out), task="detect", mode="frozen", epochs=1, folds=3, image_size=64,
                batch_size=8, device="cpu", max_frames_per_video=2, only_folds=[0], boxes=str(boxes))
    return FinetuneConfig(**{**base, **kw})


def test_boxes_run_trains_faster_rcnn_scores_box_map_and_reports(mask_store, boxes_csv, tmp_path):
    run = tmp_path / "run"
    res = finetune(_cfg(mask_store, run, boxes_csv), log=lambda *a: None)
    m = res.metrics
    assert m["task"] == "detect" and m["annotations"] == "boxes" and m["pooled"] is None
    assert m["classes"] == sorted(m["classes"]) and set(m["classes"]) <= {"pleura", "bline", "consolidation",
                                                                            "effusion"}
    coco = m["folds"][0]["coco"]
    assert 0.0 <= coco["bbox_map50"] <= 1.0 and not any(k.startswith("segm") for k in coco)
    assert set(m["summary"]["detection"]) == set(BOX_METRICS) and "image" not in m["summary"]
    fold = run / "fold0"
    assert not (fold / "per_image.csv").exists() and not (fold / "test_masks.npz").exists()
    keys = load_file(fold / "model.safetensors")
    assert keys and not any("mask" in k for k in keys)  # Faster R-CNN: no mask head
    meta = json.loads((fold / "model.json").read_text())
    assert meta["head"] == "faster-rcnn" and meta["box_classes"] == m["classes"] and "mask_classes" not in meta
    dets = json.loads((fold / "detections.json").read_text())
    assert len(dets["images"]) == m["folds"][0]["n_test_images"] > 0
    assert all(im["frame"] in (0, 3) and 0 <= im["box_match"] <= 1 for im in dets["images"])
    splits = json.loads((run / "splits.json").read_text())
    assert list(splits["excluded"].values()) == ["no box"] and splits["method"].endswith("(videos with boxes)")
    text = dense_report(run).read_text()
    assert "box mAP@0.5" in text and "image Dice" not in text and "Dice per fold" not in text and (run / "fold_map50.png").is_file()
    assert (run / "overlay_best.png").is_file() and "box match" in text
    # resume knows a boxes fold's files: the complete fold is kept, not retrained
    logs = []
    finetune(_cfg(mask_store, run, boxes_csv, resume=True), log=logs.append)
    assert any("complete outputs found, kept" in line for line in logs)


def test_compare_two_inits_pairs_the_box_maps(mask_store, boxes_csv, tmp_path):
    bb, _ = build_backbone("resnet18")
    torch.save({k: v for k, v in bb.state_dict().items() if not k.startswith("fc.")}, tmp_path / "tv.pth")
    res = compare(_cfg(mask_store, tmp_path / "cmp", boxes_csv), ["random", f"imagenet:{tmp_path / 'tv.pth'}"],
                  tmp_path / "cmp", log=lambda *a: None)
    data = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    other = next(n for n in data["runs"] if n != "random")
    assert data["annotations"] == "boxes" and set(data["paired_vs_baseline"][other]) == {"detection"}
    assert set(data["paired_vs_baseline"][other]["detection"]) == set(BOX_METRICS)
    text = res.report.read_text()
    assert "box mAP@0.5" in text and "mask mAP" not in text and "Paired per-fold difference" in text


def test_csv_errors_name_the_row(mask_store, tmp_path):
    store = FrameStore(mask_store)
    v = store.videos[0]
    ok = [v.video_id, 0, 1, 1, 9, 9, "a"]
    with pytest.raises(UsclError, match=r"line 3: video_id 'nope' is not a video"):
        load_boxes(_write(tmp_path / "a.csv", [ok, ["nope", 0, 1, 1, 9, 9, "a"]]), store)
    with pytest.raises(UsclError, match=rf"line 3: frame {v.num_frames} is out of range .*STORED frames"):
        load_boxes(_write(tmp_path / "b.csv", [ok, [v.video_id, v.num_frames, 1, 1, 9, 9, "a"]]), store)
    with pytest.raises(UsclError, match=r"line 4: box .* reaches beyond"):
        load_boxes(_write(tmp_path / "c.csv", [ok, ok, [v.video_id, 0, 1, 1, v.width + 1, 9, "a"]]), store)
    with pytest.raises(UsclError, match=r"line 2: no video of the store has the source path"):
        load_boxes(_write(tmp_path / "d.csv", [["x/y.mp4", 0, 1, 1, 9, 9, "a"]],
                          header=["path", *HEADER[1:]]), store)
    # path keys: the source as ingested; integer labels: classes "1".."K"
    table = load_boxes(_write(tmp_path / "e.csv", [[v.source, 2, 1, 1, 9, 9, 3]], header=["path", *HEADER[1:]]),
                       store)
    assert table.classes == ["1", "2", "3"] and table.frames_of(0) == [2]
    assert table.target(0, 2)["labels"].tolist() == [3]
    assert boxes_csv_classes(_write(tmp_path / "f.csv", [ok, [v.video_id, 1, 1, 1, 9, 9, "2"]])) == ["2", "a"]


def test_boxes_only_with_detect(mask_store, boxes_csv, tmp_path, capsys):
    with pytest.raises(ConfigError) as exc:
        _cfg(mask_store, tmp_path / "x", boxes_csv, task="segment").validate()
    assert exc.value.param == "boxes"
    with pytest.raises(ConfigError, match="boxes file not found") as exc:
        _cfg(mask_store, tmp_path / "x", tmp_path / "missing.csv").validate()
    assert exc.value.param == "boxes"
    assert main(["finetune", "--task", "segment", "--store", str(mask_store), "--out", str(tmp_path / "cli"),
                 "--boxes", str(boxes_csv)]) != 0
    assert "--boxes" in capsys.readouterr().err


def test_image_box_match():
    t = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}
    same = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}
    assert image_box_match(t, same) == pytest.approx(1.0)
    other = {**same, "labels": torch.tensor([2])}
    assert image_box_match(t, other) == 0.0  # a miss and a false positive
    extra = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1]),
             "scores": torch.tensor([0.9, 0.8])}
    assert image_box_match(t, extra) == pytest.approx(0.5)
    low = {**same, "scores": torch.tensor([0.1])}
    assert image_box_match(t, low) == 0.0


def test_a_store_without_masks_splits_over_its_boxed_videos(make_store, tmp_path):
    from uscl.finetune.dense_run import build_mask_splits

    root = make_store(n_videos=8, frames=4, size=32)
    store = FrameStore(root)
    rows = [[f"v{i:03d}", t, 4, 4, 20, 20, "lesion"] for i in range(7) for t in (1, 2)]
    cfg = _cfg(root, tmp_path / "o", _write(tmp_path / "b.csv", rows), folds=3)
    splits = build_mask_splits(cfg, store)
    assert splits.classes == ["lesion"] and splits.excluded == {"v007": "no box"}
    assert sorted(v for f in splits.folds for v in f.test) == [f"v{i:03d}" for i in range(7)]
