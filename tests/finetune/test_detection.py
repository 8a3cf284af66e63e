"""Detection components: targets from masks, boxes CSV, COCO metrics, the detector, its training loop.

Small and CPU-only: 64-96 px images, resnet18, a few steps (the whole file takes about 25 s on
2 idle cores, up to about 60 s when other jobs share them). The heads are shrunk (fewer proposals
and sampled RoIs) only to keep the tests fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.ops.misc import FrozenBatchNorm2d

from uscl.errors import UsclError
from uscl.finetune.detect.evaluate import coco_metrics, mask_dice
from uscl.finetune.detect.engine import collate, hflip, predict, random_hflip, train_one_epoch
from uscl.finetune.detect.targets import empty_target, read_boxes_csv, targets_from_mask
from uscl.models.backbone import build_backbone
from uscl.models.detector import build_detector, set_detector_trainable, trunk_state_dict

SMALL = dict(rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=300,
             rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=64, box_batch_size_per_image=32,
             box_detections_per_img=20)


def square_target(size, boxes, labels=None):
    """Target with rectangular masks for xyxy (exclusive) boxes."""
    masks = torch.zeros((len(boxes), size, size), dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        masks[i, y1:y2, x1:x2] = 1
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels or [1] * len(boxes), dtype=torch.int64), "masks": masks}


def as_prediction(target, scores=None):
    n = len(target["boxes"])
    return {**target, "scores": torch.tensor(scores or [0.9] * n, dtype=torch.float32)}


# -- targets from masks -------------------------------------------------------------------
def test_two_blobs_of_one_class_are_two_instances_with_tight_boxes():
    m = np.zeros((20, 30), np.uint8)
    m[2:5, 3:8] = 1  # rows 2..4, cols 3..7
    m[10:15, 20:22] = 1
    t = targets_from_mask(m, num_classes=1)
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64 and t["masks"].dtype == torch.uint8
    assert t["boxes"].tolist() == [[3, 2, 8, 5], [20, 10, 22, 15]]  # x2 = max column + 1 (COCO)
    assert t["labels"].tolist() == [1, 1]
    assert t["masks"].shape == (2, 20, 30)
    assert t["masks"][0].sum() == 15 and t["masks"][1].sum() == 10
    assert (t["masks"].sum(0).numpy() == m).all()


def test_one_blob_of_each_of_two_classes():
    m = np.zeros((16, 16), np.uint8)
    m[1:4, 1:4] = 2
    m[8:12, 8:14] = 1
    t = targets_from_mask(torch.from_numpy(m), num_classes=2)
    assert t["labels"].tolist() == [1, 2]  # by class
    assert t["boxes"].tolist() == [[8, 8, 14, 12], [1, 1, 4, 4]]


def test_empty_mask_gives_zero_boxes_and_specks_are_dropped():
    t = targets_from_mask(np.zeros((12, 10), np.uint8), num_classes=3)
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["masks"].shape == (0, 12, 10)
    m = np.zeros((12, 10), np.uint8)
    m[0, 0] = m[5, 5] = m[5, 6] = 1  # 1 and 2 pixels
    assert len(targets_from_mask(m, 1, min_area=4)["boxes"]) == 0
    assert len(targets_from_mask(m, 1, min_area=1)["boxes"]) == 2


def test_diagonal_pixels_are_one_instance_8_connectivity():
    m = np.eye(6, dtype=np.uint8)
    t = targets_from_mask(m, 1)
    assert t["boxes"].tolist() == [[0, 0, 6, 6]]


def test_labels_outside_the_classes_are_an_error():
    m = np.zeros((4, 4), np.uint8)
    m[0, 0] = 3
    with pytest.raises(UsclError, match=r"label\(s\) \[3\] outside 0..2"):
        targets_from_mask(m, 2)


# -- boxes CSV ----------------------------------------------------------------------------
def test_boxes_csv_reads_boxes_per_frame(tmp_path):
    p = tmp_path / "boxes.csv"
    p.write_text("video_id,frame,x1,y1,x2,y2,label\nv1,0,1,2,10,12,nodule\nv1,0,3,3,5,5,2\nv2,4,0,0,8,8,nodule\n")
    out = read_boxes_csv(p, ["nodule", "cyst"])
    assert set(out) == {("v1", 0), ("v2", 4)}
    assert out[("v1", 0)]["boxes"].tolist() == [[1, 2, 10, 12], [3, 3, 5, 5]]
    assert out[("v1", 0)]["labels"].tolist() == [1, 2]
    p.write_text("path,frame,x1,y1,x2,y2,label\na/b.png,0,1,2,10,12,1\n")
    assert read_boxes_csv(p)[("a/b.png", 0)]["labels"].tolist() == [1]


@pytest.mark.parametrize("body, match", [
    ("video_id,frame,x1,y1,x2,label\nv,0,1,1,2,1\n", r"needs y2"),
    ("frame,x1,y1,x2,y2,label\n0,1,1,2,2,1\n", r"one of video_id / path"),
    ("video_id,frame,x1,y1,x2,y2,label\nv,0,1,1,5,5,1\nv,0,1,abc,5,5,1\n", r"line 3: y1 must be a number"),
    ("video_id,frame,x1,y1,x2,y2,label\nv,0,5,1,5,5,1\n", r"line 2: an empty box"),
    ("video_id,frame,x1,y1,x2,y2,label\nv,x,1,1,5,5,1\n", r"line 2: frame must be an integer"),
    ("video_id,frame,x1,y1,x2,y2,label\nv,0,1,1,5,5,tumour\n", r"line 2: unknown label 'tumour' \(known: nodule\)"),
    ("video_id,frame,x1,y1,x2,y2,label\nv,0,1,1,5,5,0\n", r"line 2: label 0 is outside 1..1"),
])
def test_boxes_csv_errors_name_the_row(tmp_path, body, match):
    p = tmp_path / "boxes.csv"
    p.write_text(body)
    with pytest.raises(UsclError, match=match):
        read_boxes_csv(p, ["nodule"])


# -- COCO metrics -------------------------------------------------------------------------
def test_perfect_predictions_score_one_and_empty_images_count_for_nothing():
    targets = [square_target(64, [[5, 5, 25, 30]]), square_target(64, [[30, 10, 60, 40], [2, 40, 20, 60]]),
               empty_target(64, 64)]
    preds = [as_prediction(t) for t in targets[:2]] + [{**empty_target(64, 64), "scores": torch.zeros(0)}]
    m = coco_metrics(targets, preds, ["nodule"])
    for k in ("bbox_map", "bbox_map50", "segm_map", "segm_map50", "bbox_ap50_nodule", "segm_ap50_nodule"):
        assert m[k] == pytest.approx(1.0), k


def test_shifted_box_below_iou_half_has_ap50_zero():
    # [0, 20) vs [10, 30) in x, same rows: IoU = 10*20 / (30*20) = 1/3
    target = square_target(64, [[0, 10, 20, 30]])
    pred = as_prediction(square_target(64, [[10, 10, 30, 30]]))
    m = coco_metrics([target], [pred], ["a"])
    assert m["bbox_map50"] == 0.0 and m["bbox_map"] == 0.0 and m["segm_map50"] == 0.0
    # IoU 2/3 ([0, 20) vs [4, 24) -> 16/24): a hit at 0.5 .. 0.65, a miss from 0.7 on
    m = coco_metrics([target], [as_prediction(square_target(64, [[4, 10, 24, 30]]))], ["a"])
    assert m["bbox_map50"] == pytest.approx(1.0)
    assert m["bbox_map"] == pytest.approx(0.4)  # 4 of the 10 thresholds


def test_no_predictions_is_zero_and_no_ground_truth_is_nan():
    targets = [square_target(64, [[5, 5, 25, 30]]), empty_target(64, 64)]
    none = [{**empty_target(64, 64), "scores": torch.zeros(0)} for _ in targets]
    m = coco_metrics(targets, none, ["a"])
    assert m["bbox_map"] == 0.0 and m["bbox_map50"] == 0.0 and m["segm_map50"] == 0.0
    m = coco_metrics([empty_target(64, 64)], [as_prediction(square_target(64, [[1, 1, 9, 9]]))], ["a"])
    assert math.isnan(m["bbox_map50"])
    with pytest.raises(ValueError, match=r"labels \[2\] outside 1..1"):
        coco_metrics([square_target(64, [[1, 1, 9, 9]], [2])], none[:1], ["a"])


def test_per_class_ap_and_false_positives_on_empty_images():
    targets = [square_target(64, [[5, 5, 25, 30]], [1]), square_target(64, [[30, 30, 50, 50]], [2])]
    preds = [as_prediction(targets[0]), {**empty_target(64, 64), "scores": torch.zeros(0)}]
    m = coco_metrics(targets, preds, ["a", "b"])
    assert m["bbox_ap50_a"] == pytest.approx(1.0) and m["bbox_ap50_b"] == 0.0
    assert m["bbox_map50"] == pytest.approx(0.5)
    # a confident false positive on an image without ground truth ranks above the true positive
    targets = [square_target(64, [[5, 5, 25, 30]]), empty_target(64, 64)]
    preds = [as_prediction(targets[0], [0.5]), as_prediction(square_target(64, [[1, 1, 20, 20]]), [0.9])]
    assert coco_metrics(targets, preds, ["a"])["bbox_map50"] == pytest.approx(0.5, abs=0.01)


def test_mask_dice_of_the_union_of_confident_instances():
    truth = np.zeros((10, 10), np.uint8)
    truth[0:4, 0:5] = 1  # 20 px
    masks = torch.zeros((2, 10, 10), dtype=torch.uint8)
    masks[0, 0:4, 0:5] = 1
    masks[1, 6:10, 6:10] = 1  # 16 px, low score: ignored
    assert mask_dice({"masks": masks, "scores": torch.tensor([0.9, 0.3])}, truth) == pytest.approx(1.0)
    assert mask_dice({"masks": masks, "scores": torch.tensor([0.9, 0.6])}, truth) == pytest.approx(40 / 56)
    probs = masks[:1].float()[:, None] * 0.7  # (N, 1, H, W) probabilities
    assert mask_dice({"masks": probs, "scores": torch.tensor([0.9])}, truth) == pytest.approx(1.0)
    assert mask_dice({"masks": masks[:0], "scores": torch.zeros(0)}, np.zeros((10, 10))) == 1.0


# -- the detector -------------------------------------------------------------------------
def test_build_detector_random_and_from_our_backbone_state_dict(tmp_path):
    model = build_detector("resnet18", 2, min_size=64, max_size=64)
    assert isinstance(model, MaskRCNN)
    assert model.roi_heads.box_predictor.cls_score.out_features == 3  # K + background
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3
    assert not model.uscl_frozen_bn  # a random trunk keeps BatchNorm

    net, _ = build_backbone("resnet18")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        net.bn1.running_mean.fill_(0.25)
    init = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    model = build_detector("resnet18", 1, init, "checkpoint:test", with_masks=False, min_size=64, max_size=64)
    assert isinstance(model, FasterRCNN) and not isinstance(model, MaskRCNN)
    assert model.uscl_frozen_bn and isinstance(model.backbone.body.bn1, FrozenBatchNorm2d)
    trunk = trunk_state_dict(model)
    for k, v in init.items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(trunk[k], v), k
    assert set(trunk) == {k for k in init if not k.endswith("num_batches_tracked")}

    # plain tensors: safetensors round trip into a freshly built detector of the same recipe
    save_file(model.state_dict(), str(tmp_path / "det.safetensors"))
    again = build_detector("resnet18", 1, None, with_masks=False, frozen_bn=True, min_size=64, max_size=64)
    again.load_state_dict(load_file(str(tmp_path / "det.safetensors")))
    assert torch.equal(again.backbone.body.layer4[1].conv2.weight, model.backbone.body.layer4[1].conv2.weight)


def test_wrong_arch_state_dict_is_an_error_naming_both():
    net50, _ = build_backbone("resnet50")
    sd = {k: v for k, v in net50.state_dict().items() if not k.startswith("fc.")}
    with pytest.raises(UsclError, match=r"holds a resnet50 backbone, but the model is resnet18"):
        build_detector("resnet18", 1, sd, "checkpoint:r50")


def test_train_forward_gives_losses_and_grey_input_equals_repeated_rgb():
    torch.manual_seed(0)
    model = build_detector("resnet18", 2, min_size=64, max_size=64, **SMALL)
    model.train()
    images = [torch.rand(1, 64, 64), torch.rand(1, 64, 64)]
    targets = [square_target(64, [[5, 5, 30, 30]], [1]), square_target(64, [[20, 30, 60, 60], [1, 1, 12, 12]], [2, 1])]
    losses = model(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    # an empty image trains too (negatives only)
    losses = model([images[0]], [empty_target(64, 64)])
    assert torch.isfinite(sum(losses.values()))

    model.eval()  # BatchNorm on running stats: deterministic
    with torch.no_grad():
        grey, _ = model.transform([images[0]])
        rgb, _ = model.transform([images[0].expand(3, -1, -1)])
        assert grey.tensors.shape[1] == 1 and rgb.tensors.shape[1] == 3
        f1, f3 = model.backbone(grey.tensors), model.backbone(rgb.tensors)
    for k in f1:
        torch.testing.assert_close(f1[k], f3[k], rtol=1e-4, atol=1e-4)


def test_modes_set_trainable_layers():
    model = build_detector("resnet18", 1, trainable_layers="paper", min_size=64, max_size=64)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    body = {n.split(".")[2] for n in names if n.startswith("backbone.body.")}
    assert body == {"layer4"}
    assert any(n.startswith("backbone.fpn.") for n in names) and any(n.startswith("roi_heads.") for n in names)
    frozen = set_detector_trainable(model, "frozen")
    assert not any(n.startswith("backbone.body.") for n in frozen) and any(n.startswith("rpn.") for n in frozen)
    full = set_detector_trainable(model, "full")
    assert len(full) == len(list(model.parameters()))
    assert {n.split(".")[2] for n in set_detector_trainable(model, 3) if n.startswith("backbone.body.")} == \
        {"layer2", "layer3", "layer4"}
    with pytest.raises(UsclError, match="unknown detection mode 'linear'"):
        set_detector_trainable(model, "linear")
    with pytest.raises(UsclError, match="0..5"):
        set_detector_trainable(model, 6)


def test_frozen_mode_leaves_the_trunk_unchanged_after_a_step():
    torch.manual_seed(0)
    model = build_detector("resnet18", 1, trainable_layers="frozen", min_size=64, max_size=64, **SMALL)
    body = {k: v.clone() for k, v in model.backbone.body.state_dict().items()}  # params and BN statistics
    fpn = {k: v.clone() for k, v in model.backbone.fpn.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    batch = collate([(torch.rand(1, 64, 64), square_target(64, [[5, 5, 30, 30]])),
                     (torch.rand(1, 64, 64), square_target(64, [[30, 20, 60, 50]]))])
    out = train_one_epoch(model, opt, [batch], "cpu")
    assert out["steps"] == 1 and math.isfinite(out["loss"])
    for k, v in model.backbone.body.state_dict().items():
        assert torch.equal(v, body[k]), k
    assert any(not torch.equal(v, fpn[k]) for k, v in model.backbone.fpn.state_dict().items())


# -- flip ---------------------------------------------------------------------------------
def test_hflip_moves_image_box_and_mask_together():
    image = torch.zeros(1, 20, 30)
    m = np.zeros((20, 30), np.uint8)
    m[4:9, 2:7] = 1  # cols 2..6
    image[0, 4:9, 2:7] = 1.0
    target = targets_from_mask(m, 1)
    fi, ft = hflip(image, target)
    assert ft["boxes"].tolist() == [[23, 4, 28, 9]]  # [30 - 7, 30 - 2)
    # the flipped mask's own tight box is the flipped box, and the image moved with it
    assert torch.equal(targets_from_mask(ft["masks"][0], 1)["boxes"], ft["boxes"])
    assert torch.equal(fi[0] > 0.5, ft["masks"][0].bool())
    assert torch.equal(target["boxes"], torch.tensor([[2.0, 4, 7, 9]]))  # the input is not modified
    back_i, back_t = hflip(fi, ft)
    assert torch.equal(back_i, image) and torch.equal(back_t["boxes"], target["boxes"])
    assert torch.equal(back_t["masks"], target["masks"])
    e_img, e_t = hflip(image, empty_target(20, 30))
    assert e_t["boxes"].shape == (0, 4)
    g = torch.Generator().manual_seed(0)
    flips = [random_hflip(image, target, generator=g)[1]["boxes"][0, 0].item() for _ in range(40)]
    assert set(flips) == {2.0, 23.0}


# -- a tiny training run ------------------------------------------------------------------
def test_tiny_training_run_learns_bright_squares():
    """Bright squares on dark noise, 8 images of 96 px, 4 epochs of SGD: the loss must fall."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    size = 96

    def sample():
        image = torch.rand(1, size, size, generator=g) * 0.2
        m = np.zeros((size, size), np.uint8)
        s = int(torch.randint(20, 36, (1,), generator=g))
        y, x = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
        image[:, y:y + s, x:x + s] += 0.7
        m[y:y + s, x:x + s] = 1
        return image.clamp(0, 1), targets_from_mask(m, 1)

    data = [sample() for _ in range(8)]
    model = build_detector("resnet18", 1, min_size=size, max_size=size, **SMALL)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                          weight_decay=1e-4)
    history = []
    for _ in range(4):
        batches = [collate([random_hflip(*d, generator=g) for d in data[i:i + 4]]) for i in range(0, 8, 4)]
        history.append(train_one_epoch(model, opt, batches, "cpu", max_grad_norm=10.0))
    assert history[-1]["loss"] < 0.5 * history[0]["loss"], [h["loss"] for h in history]
    assert history[-1]["loss_mask"] < history[0]["loss_mask"]

    preds = predict(model, [d[0] for d in data[:4]], "cpu", batch_size=2)
    assert len(preds) == 4
    for p in preds:
        n = len(p["boxes"])
        assert p["boxes"].shape == (n, 4) and p["labels"].shape == (n,) and p["scores"].shape == (n,)
        assert p["masks"].shape == (n, size, size) and p["masks"].dtype == torch.uint8
        assert set(p["labels"].tolist()) <= {1}
    metrics = coco_metrics([d[1] for d in data[:4]], preds, ["square"])
    assert {"bbox_map", "bbox_map50", "segm_map", "segm_map50", "bbox_ap50_square"} <= set(metrics)


def test_bf16_autocast_step():
    torch.manual_seed(0)
    model = build_detector("resnet18", 1, min_size=64, max_size=64, **SMALL)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001)
    batch = collate([(torch.rand(1, 64, 64), square_target(64, [[5, 5, 30, 30]]))] * 2)
    out = train_one_epoch(model, opt, [batch], "cpu", amp_dtype=torch.bfloat16)
    assert math.isfinite(out["loss"]) and "loss_mask" in out
