"""Segmentation and detection runs (and a segmentation export) write a model card that says what is true."""

import json

import numpy as np
import pytest
import torch

from uscl.finetune.config import FinetuneConfig
from uscl.finetune.model_card import (
    DETECT_SCORE_THRESHOLD, NO_FOLD_VALUE, UNKNOWN, build_card, dense_data_summary, render_card,
)
from uscl.finetune.train import finetune
from uscl.store import FrameStore

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
QUIET = dict(log=lambda *a: None)
MASK_CLASSES = ["pleura", "bline", "consolidation", "effusion"]


def _card(folder, stem=""):
    return json.loads((folder / f"{stem}model_card.json").read_text()), (folder / f"{stem}MODEL_CARD.md").read_text()


def _exec(snippet, folder, monkeypatch):
    monkeypatch.chdir(folder)
    scope: dict = {}
    exec(snippet, scope)
    return scope


def _same_stats(got, want):
    assert got["mean"] == want["mean"] and got["ci_low"] == want["lo"] and got["ci_high"] == want["hi"]
    assert got["n_folds"] == want["n"] and got["values"] == want["values"]


@pytest.fixture(scope="module")
def seg_run(mask_store, tmp_path_factory):
    """2 of 3 folds of a 1-epoch frozen segmentation run at 32 px (so the interval over folds exists)."""
    cfg = FinetuneConfig(store=str(mask_store), out=str(tmp_path_factory.mktemp("seg") / "run"), task="segment",
                         mode="frozen", epochs=1, folds=3, image_size=32, batch_size=16, device="cpu",
                         max_frames_per_video=3, only_folds=[0, 1])
    return finetune(cfg, **QUIET)


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    """Fold 0 of a 1-epoch frozen Mask R-CNN run at 64 px on a 3-video synth store (4 frames each): the
    detect tests' cheap settings on fewer test frames, since a detector's prediction dominates the time."""
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth.generate import generate

    root = tmp_path_factory.mktemp("det")
    generate(root / "src", videos_per_class=1, frames=4, size=64, fps=4.0, seed=0, masks=True)
    prepare(root / "src", root / "store", PrepareOptions(size=64), mask_classes=MASK_CLASSES, show_progress=False)
    cfg = FinetuneConfig(store=str(root / "store"), out=str(root / "run"), task="detect", mode="frozen", epochs=1,
                         folds=3, image_size=64, batch_size=8, device="cpu", max_frames_per_video=2, only_folds=[0])
    return finetune(cfg, **QUIET)


@pytest.mark.slow
def test_a_segmentation_run_writes_its_card(seg_run, mask_store):
    card, md = _card(seg_run.run_dir)
    m = json.loads((seg_run.run_dir / "metrics.json").read_text())
    t = card["task"]
    assert t["task"] == "segmentation" and t["classes"] == m["classes"] == MASK_CLASSES and t["head"] == "unet"
    assert t["labels"] == ["background", *MASK_CLASSES] and t["label_values"].startswith("0 = background, 1 = pleura")
    for level in ("image", "video"):
        for metric in ("dice", "iou"):
            _same_stats(card["metrics"][level][metric], m["summary"][level][metric])
    dice = card["metrics"]["image"]["dice"]
    assert dice["n_folds"] == 2 and dice["ci_low"] is not None
    assert f"{dice['mean']:.3f} [{dice['ci_low']:.3f}, {dice['ci_high']:.3f}] over 2 folds" in md
    assert "detection" not in card["metrics"]
    # pooled per class: the run's numbers, under the class names
    for k, c in enumerate(MASK_CLASSES, 1):
        pooled = m["pooled"]["per_class"][str(k)]
        got = card["metrics"]["per_class"][c]
        assert got["images"] == pooled["n_images"] and got["missed"] == pooled["n_missing"]
        if pooled["dice"] is not None:
            assert got["dice"] == pooled["dice"] and got["iou"] == pooled["iou"]
        assert got["empty_truth_images"] == pooled["empty_truth"]["n"]
    # data: from the store's records
    store = FrameStore(mask_store)
    d = card["data"]
    assert d["videos"] == len(store.videos) == d["store_videos_with_masks"] and d["left_out"] == 0
    assert d["frames"] == sum(v.num_frames for v in store.videos)
    assert sum(x["videos"] for x in d["per_label"].values()) == d["videos"]
    for c in MASK_CLASSES:
        assert d["per_class"][c]["images"] == sum(v.extra["mask_counts"][c]["frames"] for v in store.videos)
    ev = card["evaluation"]
    assert ev["folds"] == 3 and ev["folds_run"] == [0, 1] and ev["complete"] is False
    assert "grouped by patient" in ev["protocol"] and ev["selection_rule"].startswith("the last epoch")
    assert ev["learning_rate"] == 1e-3 and ev["train_frames_per_video"] == 3
    assert "research only" in card["intended_use"]["intended_use"] and "research only" in md
    assert "not a medical device" in md and "pleura, bline, consolidation, effusion" in md
    assert "Dice" in md and "HD95 (px)" in md and "| video label |" in md and "| mask class |" in md


@pytest.mark.slow
def test_the_segmentation_export_gets_the_full_card_and_the_snippets_run(seg_run, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from uscl.infer.export import export_model

    export_model(seg_run.run_dir, tmp_path / "model.onnx", "onnx", fold=0)
    card, md = _card(tmp_path)
    run_card = json.loads((seg_run.run_dir / "model_card.json").read_text())
    assert card["task"]["task"] == "segmentation" and card["export"]["folds"] == [0]
    assert card["metrics"]["image"]["dice"] == run_card["metrics"]["image"]["dice"]
    assert "fold 0's own test videos: mean Dice" in card["export"]["metrics_scope"]
    assert card["loading"]["how"] == "onnxruntime" and "research only" in md
    # the run card's onnxruntime lines, and the export card's, run on the exported file as written
    for snippet in (run_card["loading"]["snippet"], card["loading"]["snippet"]):
        scope = _exec(snippet, tmp_path, monkeypatch)
        assert scope["probs"].shape == (1, 5, 32, 32) and np.allclose(scope["probs"].sum(1), 1, atol=1e-5)
        assert scope["label_map"].shape == (1, 64, 64) and scope["label_map"].max() <= 4


@pytest.mark.slow
def test_a_detection_run_writes_its_card_and_the_torchvision_rebuild_matches(det_run, monkeypatch):
    from safetensors.torch import load_file

    from uscl.finetune.detect.fold import SCORE_THRESHOLD, make_detector

    assert DETECT_SCORE_THRESHOLD == SCORE_THRESHOLD
    card, md = _card(det_run.run_dir)
    m = det_run.metrics
    assert card["task"]["task"] == "detection" and card["task"]["head"] == "mask-rcnn"
    assert card["task"]["classes"] == MASK_CLASSES
    _same_stats(card["metrics"]["image"]["dice"], m["summary"]["image"]["dice"])
    for key in ("bbox_map50", "bbox_map", "segm_map50", "segm_map"):
        want = m["summary"]["detection"][key]
        got = card["metrics"]["detection"][key]
        if want["mean"] is None:
            assert got == NO_FOLD_VALUE
        else:
            _same_stats(got, want)
    assert "box mAP@0.5" in md and "mask mAP@[.5:.95]" in md and "research only" in md
    assert "a partial evaluation (fold 0 of 3 only)" in md and "pycocotools" in card["evaluation"]["scoring"]
    # the card's plain-torchvision construction reproduces uscl's detector on the fold's weights
    scope = _exec(card["loading"]["snippet"], det_run.run_dir, monkeypatch)
    meta = json.loads((det_run.run_dir / "fold0" / "model.json").read_text())
    cfg = FinetuneConfig(store="x", out="y", task="detect", mode="frozen", image_size=meta["min_size"])
    ref = make_detector(meta["arch"], len(MASK_CLASSES), None, "random", cfg)
    ref.load_state_dict(load_file(str(det_run.run_dir / "fold0" / "model.safetensors")))
    ref.eval()
    net = scope["net"]
    for model in (ref, net):
        model.roi_heads.score_thresh, model.roi_heads.detections_per_img = 0.0, 5  # untrained: low scores
    image = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref([image])[0], net([image.expand(3, -1, -1)])[0]
    assert torch.equal(a["labels"], b["labels"])
    torch.testing.assert_close(b["boxes"], a["boxes"], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(b["scores"], a["scores"], atol=1e-5, rtol=1e-4)


def test_what_nothing_records_is_unknown():
    data = dense_data_summary({}, None, None, None)
    assert all(data[k] == UNKNOWN for k in ("store", "videos", "frames", "per_label", "left_out", "store_videos"))
    card = build_card({"task": "segment"}, {}, {}, data, None)
    assert card["task"]["task"] == "segmentation" and card["task"]["classes"] == UNKNOWN
    assert card["metrics"]["image"]["dice"] == UNKNOWN and card["metrics"]["per_class"] == UNKNOWN
    ev = card["evaluation"]
    assert ev["folds"] == ev["mode"] == ev["learning_rate"] == ev["epochs"] == ev["selection_rule"] == UNKNOWN
    assert card["loading"] == {"how": UNKNOWN, "snippet": None}
    md = render_card(card)
    assert "| Dice | unknown | unknown |" in md and "research only" in md
    # a detection fold whose model.json lacks what the rebuild needs: no snippet, the gaps named
    meta = {"task": "detect", "head": "mask-rcnn", "arch": "resnet18", "mask_classes": ["a"], "fold": 0,
            "mean": 0.5, "std": 0.25, "min_size": 64, "max_size": 64}
    card = build_card({"task": "detect", "folds_run": [0]}, {}, meta, data, None)
    assert card["loading"]["snippet"] is None and "frozen_bn" in card["loading"]["how"]
    assert card["metrics"]["detection"]["bbox_map50"] == UNKNOWN
    # recorded but undefined (every structure missed): said so, not "unknown"
    none = {"mean": None, "std": None, "lo": None, "hi": None, "n": 0, "values": [None]}
    metrics = {"task": "segment", "classes": ["a"], "summary": {"image": {"hd95": none}},
               "pooled": {"per_class": {"1": {"n_images": 3, "dice": 0.0, "iou": 0.0, "hd95": None, "n_hd95": 0,
                                              "n_missing": 3, "empty_truth": {"n": 0, "fp_share": None}}}}}
    card = build_card(metrics, {}, {}, data, None)
    assert card["metrics"]["image"]["hd95"] == NO_FOLD_VALUE and card["metrics"]["image"]["iou"] == UNKNOWN
    pc = card["metrics"]["per_class"]["a"]
    assert pc["missed"] == 3 and pc["hd95"].startswith("undefined") and pc["false_positive_share"].startswith("n/a")


def test_left_out_videos_and_labels_come_from_the_splits(mask_store):
    store = FrameStore(mask_store)
    ids = [v.video_id for v in store.videos]
    splits = {"classes": MASK_CLASSES, "labels": {v: None for v in ids[:4]},
              "groups": {v: f"video:{v}" for v in ids[:4]},
              "excluded": {ids[4]: "no mask", ids[5]: "filtered out by where site=a"}}
    d = dense_data_summary(splits, store, str(mask_store), store.store_id)
    assert d["videos"] == 4 and d["left_out"] == 2 and d["left_out_no_mask"] == 1
    assert d["left_out_reasons"] == {"no mask": 1, "filtered out by where site=a": 1}
    assert d["per_label"] == {"unlabelled": {"videos": 4, "frames": sum(store[v].num_frames for v in ids[:4]),
                                             "patients": UNKNOWN, "videos_without_patient": 4}}
    assert d["per_class"]["pleura"]["images"] == sum(store[v].extra["mask_counts"]["pleura"]["frames"]
                                                     for v in ids[:4])
    card = build_card({"task": "segment", "classes": MASK_CLASSES}, {}, {}, d, None)
    assert card["evaluation"]["grouping"] == "video (no patient recorded)"
    assert "| unlabelled | 4 |" in render_card(card)
