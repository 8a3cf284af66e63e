"""`uscl finetune --task detect` end to end on synthetic masks: Mask R-CNN per mode, COCO metrics, compare, report."""

import json

import numpy as np
import pytest
import torch

from uscl.cli import main
from uscl.errors import ConfigError
from uscl.finetune.config import FinetuneConfig
from uscl.finetune.detect.fold import label_map
from uscl.finetune.train import finetune
from uscl.models.backbone import build_backbone
from uscl.report import compare

COCO_KEYS = ("bbox_map50", "bbox_map", "segm_map50", "segm_map")


def _cfg(store, out, **kw):
    base = dict(store=str(store), out=str(out), task="detect", mode="full", epochs=1, folds=3, image_size=64,
                batch_size=8, device="cpu", max_frames_per_video=2, only_folds=[0])
    return FinetuneConfig(**{**base, **kw})


@pytest.mark.parametrize("mode", ["frozen", "paper", "full"])
def test_modes_train_mask_rcnn_and_score_with_coco(mask_store, tmp_path, mode):
    res = finetune(_cfg(mask_store, tmp_path / "run", mode=mode), log=lambda *a: None)
    m = res.metrics
    assert m["task"] == "detect" and m["mode"] == mode and m["coverage"] == "fold 0 of 3 only"
    coco = m["folds"][0]["coco"]
    for k in COCO_KEYS:
        assert 0.0 <= coco[k] <= 1.0 or np.isnan(coco[k])
        assert m["summary"]["detection"][k]["n"] <= 1
    assert {"bbox_ap50_pleura", "segm_ap50_pleura"} <= set(coco)
    meta = json.loads((tmp_path / "run" / "fold0" / "model.json").read_text())
    assert meta["task"] == "detect" and meta["head"] == "mask-rcnn" and meta["mask_classes"][0] == "pleura"
    assert ("conv1" in meta["trainable"]) == (mode == "full")
    assert ("layer4" in meta["trainable"]) == (mode != "frozen")
    with np.load(tmp_path / "run" / "fold0" / "test_masks.npz", allow_pickle=False) as z:
        assert z["pred"].shape[1:] == (64, 64) and z["pred"].max() <= 4


def test_label_map_paints_confident_instances_most_confident_last():
    masks = torch.zeros(3, 4, 4, dtype=torch.uint8)
    masks[0, :2] = 1
    masks[1, 1:3] = 1
    masks[2, 3] = 1
    det = {"masks": masks, "labels": torch.tensor([1, 2, 3]), "scores": torch.tensor([0.9, 0.6, 0.3])}
    out = label_map(det, (4, 4))
    assert out[0].tolist() == [1] * 4 and out[1].tolist() == [1] * 4  # row 1: the 0.9 instance wins
    assert out[2].tolist() == [2] * 4 and out[3].tolist() == [0] * 4  # 0.3 is below the threshold


def test_compare_pairs_the_detection_metrics(mask_store, tmp_path):
    bb, _ = build_backbone("resnet18")
    torch.save({k: v for k, v in bb.state_dict().items() if not k.startswith("fc.")}, tmp_path / "tv.pth")
    res = compare(_cfg(mask_store, tmp_path / "cmp", mode="frozen"), ["random", f"imagenet:{tmp_path / 'tv.pth'}"],
                  tmp_path / "cmp", log=lambda *a: None)
    data = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    other = next(n for n in data["runs"] if n != "random")
    assert data["task"] == "detect" and set(data["paired_vs_baseline"][other]["detection"]) == set(COCO_KEYS)
    text = res.report.read_text()
    assert "box mAP@0.5" in text and "mask mAP@0.5" in text and "# Detection comparison" in text


def test_detect_refuses_validation_selection(mask_store, tmp_path):
    with pytest.raises(ConfigError) as exc:
        _cfg(mask_store, tmp_path / "x", select="val").validate()
    assert exc.value.param == "select"


def test_cli(mask_store, tmp_path):
    assert main(["finetune", "--task", "detect", "--store", str(mask_store), "--out", str(tmp_path / "cli"),
                 "--mode", "frozen", "--epochs", "1", "--folds", "3", "--only-folds", "2", "--image-size", "64",
                 "--max-frames-per-video", "2", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "cli" / "fold2" / "metrics.json").read_text())["coco"]["bbox_map50"] >= 0
