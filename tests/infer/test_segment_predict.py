"""`uscl predict` and `uscl export` on a segmentation model (a hand-made two-fold run of random segmenters)."""

import csv
import json

import av
import numpy as np
import pytest
import torch
from PIL import Image

from uscl.cli import main

MASK_CLASSES = ["lesion", "pleura"]
SIZE = 64
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _segment_run(root, store):
    """RUN/fold{0,1}/model.safetensors (+ model.json, metrics.json) and RUN/metrics.json, as
    `uscl finetune --task segment` writes them (same meta: model_meta + task + mask classes + fold meta)."""
    from uscl.finetune.config import FinetuneConfig
    from uscl.finetune.outputs import model_meta, save_model
    from uscl.finetune.run_folder import METRICS_FORMAT
    from uscl.models.segmenter import build_segmenter

    cfg = FinetuneConfig(store=str(store.root), out=str(root), task="segment", mode="full", image_size=SIZE,
                         folds=2, epochs=1, device="cpu")
    base = {**model_meta(cfg, store, "resnet18", MASK_CLASSES, "random", "random"), "task": "segment",
            "mask_classes": MASK_CLASSES}
    for k in (0, 1):
        torch.manual_seed(10 + k)
        net = build_segmenter("resnet18", len(MASK_CLASSES))
        for m in net.modules():  # non-trivial eval-mode BatchNorm, so it is part of what must be reproduced
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        net.eval()
        with torch.no_grad():  # a centred head, so that the masks hold all three labels (not one everywhere)
            x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(k))
            feats = net.decoder(net.encode(x), x.shape[-2:]).mean((0, 2, 3))
            net.head.weight.mul_(4)
            net.head.bias.copy_(-(net.head.weight[:, :, 0, 0] @ feats))
        save_model(root / f"fold{k}" / "model.safetensors", net.state_dict(),
                   {**base, "head": "unet", "epochs": 1, "fold": k, "train_videos": 1, "test_videos": ["x"]})
        (root / f"fold{k}" / "metrics.json").write_text(json.dumps({"fold": k, "summary": {}}))
    (root / "metrics.json").write_text(json.dumps({
        "format": METRICS_FORMAT, "version": 1, "task": "segment", "init": "random", "init_spec": "random",
        "mode": "full", "arch": "resnet18", "classes": MASK_CLASSES, "n_folds": 2, "folds_run": [0, 1],
        "complete": True, "store_id": store.store_id, "folds": [{"fold": 0}, {"fold": 1}], "summary": {}}))
    return root


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    """2 synth clips (8 frames, 64 px) → `prepare` (fps 5 of 10, at most 4 frames, crop) → a 2-fold segment run,
    a classification run beside it, a still PNG and a broken file."""
    from uscl.store import FrameStore
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth import generate

    root = tmp_path_factory.mktemp("segpredict")
    generate(root / "synth", videos_per_class=1, frames=8, size=SIZE, fps=10, classes="covid,regular")
    prepare(root / "synth", root / "store", PrepareOptions(size=SIZE, fps=5, max_frames=4, crop=True),
            labels_csv=root / "synth" / "labels.csv", show_progress=False)
    store = FrameStore(root / "store")
    _segment_run(root / "seg", store)
    _classify_run(root / "cls", store)
    Image.fromarray(np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (48, 1))).save(root / "still.png")
    (root / "broken.mp4").write_bytes(b"not a video at all")
    return root


def _classify_run(root, store):
    from uscl.checkpoint import save_weights
    from uscl.models import FinetunedClassifier, build_backbone

    backbone, dim = build_backbone("resnet18")
    meta = {"kind": "uscl-finetuned", "arch": "resnet18", "classes": ["covid", "regular"], "num_classes": 2,
            "image_size": SIZE, "channels": 1, "out_channels": 3, "mean": 0.5, "std": 0.25, "mode": "full",
            "store_options": store.options, "init": "random", "fold": 0}
    save_weights(root / "fold0" / "model.safetensors", FinetunedClassifier(backbone, dim, 2).state_dict(), meta)
    (root / "fold0" / "metrics.json").write_text('{"fold": 0}')


def _clip(seg):
    return sorted((seg / "synth").rglob("*.mp4"))[0]


def _by_hand(seg, path, folds=(0, 1)):
    """The masks computed here from first principles: read_and_preprocess with the store options, resize and
    normalise, each fold's softmax, their mean, arg-max."""
    from uscl.augment import eval_transform
    from uscl.checkpoint import load_weights
    from uscl.models.segmenter import build_segmenter
    from uscl.store.preprocess import read_and_preprocess

    probs = 0
    for k in folds:
        state, meta = load_weights(seg / "seg" / f"fold{k}" / "model.safetensors")
        net = build_segmenter(meta["arch"], len(meta["mask_classes"]))
        net.load_state_dict(state)
        frames = read_and_preprocess(path, meta["store_options"])
        x = eval_transform(torch.from_numpy(frames).permute(0, 3, 1, 2), meta["image_size"], meta["mean"],
                           meta["std"], 3)
        with torch.no_grad():
            logits = net.eval()(x)
        logits = torch.nn.functional.interpolate(logits, size=frames.shape[1:3], mode="bilinear",
                                                 align_corners=False)
        probs = probs + logits.softmax(1) / len(folds)
    return frames, probs.argmax(1).numpy().astype(np.uint8), probs


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_writes_masks_overlays_clip_csv_json_and_skips_a_broken_file(seg, tmp_path, capsys):
    clip, still, broken = _clip(seg), seg / "still.png", seg / "broken.mp4"
    out = tmp_path / "pred"
    rc = main(["predict", str(seg / "seg"), str(clip), str(still), str(broken), "--out", str(out),
               "--device", "cpu", "--batch-size", "3"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "broken.mp4" in printed.err and "lesion area/present" in printed.out
    frames, want, _ = _by_hand(seg, clip)
    masks_dir = out / clip.stem / "masks"
    pngs = sorted(p.name for p in masks_dir.glob("*.png"))
    assert pngs == [f"frame_{t:05d}.png" for t in range(4)]  # fps 5 of 10, at most 4 frames
    got = np.stack([np.asarray(Image.open(masks_dir / p)) for p in pngs])
    assert got.shape == (4, SIZE, SIZE) and set(np.unique(got)) <= {0, 1, 2}
    np.testing.assert_array_equal(got, want)  # the ensemble's masks, computed by hand
    assert len(np.unique(got)) > 1  # not a blank result
    overlays = sorted((out / clip.stem / "overlays").glob("*.png"))
    assert [p.name for p in overlays] == pngs
    first = np.asarray(Image.open(overlays[0]))
    assert first.shape == (256, 256, 3)  # 64 px enlarged by 4 for viewing
    with av.open(str(out / clip.stem / "overlay.mp4")) as c:
        assert len([f for f in c.decode(video=0)]) == 4
    # the still: one mask at the stored size, no clip
    still_mask = np.asarray(Image.open(out / "still" / "masks" / "frame_00000.png"))
    np.testing.assert_array_equal(still_mask, _by_hand(seg, still)[1][0])
    assert not (out / "still" / "overlay.mp4").exists() and (out / "still" / "overlays" / "frame_00000.png").is_file()

    rows = _rows(out / "segments.csv")
    assert list(rows[0]) == ["input", "frame", "pixels", "area_background", "area_lesion", "area_pleura"]
    assert len(rows) == 5 and [r["input"] for r in rows] == [str(clip)] * 4 + [str(still)]
    for t, r in enumerate(rows[:4]):
        assert [int(r[f"area_{c}"]) for c in ("background", *MASK_CLASSES)] == \
            [int((want[t] == k).sum()) for k in range(3)]
        assert int(r["pixels"]) == SIZE * SIZE
    data = json.loads((out / "predictions.json").read_text())
    assert data["task"] == "segment" and data["ensemble"] and data["folds"] == [0, 1]
    assert data["classes"] == MASK_CLASSES and data["mask_values"] == {"0": "background", "1": "lesion", "2": "pleura"}
    assert list(data["legend"]) == MASK_CLASSES
    assert data["legend"]["lesion"]["colour"] != data["legend"]["pleura"]["colour"]
    item = data["inputs"][0]
    assert item["input"] == str(clip) and item["num_frames"] == 4 and item["mask_size"] == [SIZE, SIZE]
    for k, c in enumerate(MASK_CLASSES, start=1):
        assert item["classes"][c]["mean_area"] == pytest.approx((want == k).sum((1, 2)).mean())
        assert item["classes"][c]["present_frames"] == pytest.approx(((want == k).sum((1, 2)) > 0).mean())
    assert item["files"]["mp4"] == f"{clip.stem}/overlay.mp4" and data["inputs"][1]["files"]["mp4"] is None
    assert [s["input"] for s in data["skipped"]] == [str(broken)]
    assert _rows(out / "skipped.csv")[0]["input"] == str(broken)
    # a non-empty --out is never overwritten silently
    assert main(["predict", str(seg / "seg"), str(still), "--out", str(out), "--device", "cpu"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # with --overwrite; an input of that name now with one frame leaves none of the earlier frames' files
    (tmp_path / "again").mkdir()
    one = tmp_path / "again" / f"{clip.stem}.png"
    Image.open(still).save(one)
    assert main(["predict", str(seg / "seg"), str(one), "--out", str(out), "--device", "cpu", "--overwrite",
                 "--quiet"]) == 0
    assert [p.name for p in masks_dir.glob("*.png")] == ["frame_00000.png"]
    assert len(list((out / clip.stem / "overlays").glob("*.png"))) == 1
    assert not (out / clip.stem / "overlay.mp4").exists()


def test_one_fold_and_overlay_colours(seg, tmp_path):
    from uscl.infer import predict_segments
    from uscl.infer.mask_overlay import class_colour

    clip = _clip(seg)
    run = predict_segments(seg / "seg", [clip], fold=1, out=tmp_path / "f1", device="cpu", show_progress=False,
                           keep_frames=True)
    _, want, _ = _by_hand(seg, clip, folds=(1,))
    r = run.results[0]
    np.testing.assert_array_equal(r.masks, want)
    assert not run.model.is_ensemble and run.model.labels == ["background", *MASK_CLASSES]
    # each class's contour is drawn in its pure colour; background pixels are the (enlarged) frame itself
    ov = np.asarray(Image.open(tmp_path / "f1" / clip.stem / "overlays" / "frame_00000.png")).astype(int)
    big = want[0].repeat(4, 0).repeat(4, 1)
    for k in (1, 2):
        assert (big == k).any()
        assert (np.abs(ov[big == k] - np.array(class_colour(k))).sum(1) == 0).any()
    frame = np.asarray(Image.fromarray(r.frames[0, :, :, 0]).resize((256, 256), Image.BILINEAR)).astype(int)
    assert (ov[big == 0] == frame[big == 0][:, None]).all()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_the_pytorch_ensemble(seg, tmp_path, capsys, fmt):
    from uscl.infer import load_model

    out = tmp_path / "seg_ens"
    assert main(["export", str(seg / "seg"), str(out), "--format", fmt]) == 0
    assert "max abs difference" in capsys.readouterr().out
    ext = ".pt" if fmt == "torchscript" else ".onnx"
    x = torch.randn(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    ref = load_model(seg / "seg").module().eval()
    with torch.no_grad():
        want = ref(x)
    if fmt == "torchscript":
        with torch.no_grad():
            got = torch.jit.load(str(out) + ext).eval()(x)
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out) + ext, providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(["probabilities"], {"input": x.numpy()})[0])
    assert got.shape == (5, 3, SIZE, SIZE)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got.sum(1).numpy(), 1, atol=1e-5)
    # the ensemble is the mean of the two folds' per-pixel softmax
    with torch.no_grad():
        folds = [load_model(seg / "seg", k).module().eval()(x) for k in (0, 1)]
    torch.testing.assert_close(want, (folds[0] + folds[1]) / 2, rtol=0, atol=1e-6)
    meta = json.loads((tmp_path / "seg_ens.json").read_text())
    assert meta["task"] == "segment" and meta["mask_classes"] == MASK_CLASSES and meta["folds"] == [0, 1]
    assert meta["labels"] == ["background", *MASK_CLASSES]
    assert meta["output"]["shape"] == ["N", 3, SIZE, SIZE] and meta["verification"]["max_abs_diff"] <= 1e-4
    assert meta["store_options"]["crop"] is True and meta["image_size"] == SIZE
    card = json.loads((tmp_path / "seg_ens.model_card.json").read_text())
    assert "segmentation" in card["task"]["kind"] and "LABELS" in card["loading"]["snippet"]
    assert "segmentation" in (tmp_path / "seg_ens.MODEL_CARD.md").read_text()


def test_safetensors_export_of_one_fold_rebuilds_the_segmenter(seg, tmp_path, capsys):
    from safetensors.torch import load_file

    from uscl.infer import load_model
    from uscl.models.segmenter import build_segmenter

    assert main(["export", str(seg / "seg"), str(tmp_path / "s"), "--format", "safetensors"]) == 2
    assert "fold" in capsys.readouterr().err
    assert main(["export", str(seg / "seg"), str(tmp_path / "s"), "--format", "safetensors", "--fold", "0"]) == 0
    net = build_segmenter("resnet18", 2)
    net.load_state_dict(load_file(str(tmp_path / "s.safetensors")))
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x).softmax(1), load_model(seg / "seg", 0).module()(x),
                                   rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "s.json").read_text())["output"]["kind"] == "logits"


def test_classification_and_segmentation_mix_ups_name_both_tasks(seg, tmp_path, capsys):
    from uscl.errors import UsclError
    from uscl.infer import load_model, predict, predict_segments

    with pytest.raises(UsclError, match=r"segmentation model \(task 'segment'\).*classification model "
                                        r"\(task 'classify'\)"):
        predict(seg / "seg", [seg / "still.png"], device="cpu", show_progress=False)
    with pytest.raises(UsclError, match=r"classification model \(task 'classify'\).*segmentation model "
                                        r"\(task 'segment'\)"):
        predict_segments(seg / "cls", [seg / "still.png"], device="cpu", show_progress=False)
    with pytest.raises(UsclError, match="segmentation model"):
        load_model(seg / "seg", task="classify")
    assert load_model(seg / "cls", task="classify").task == "classify"
    # --explain (Grad-CAM of a class) on a segmentation model
    assert main(["predict", str(seg / "seg"), str(seg / "still.png"), "--explain", "--out", str(tmp_path / "x"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "segmentation model" in err and "classification model" in err and not (tmp_path / "x").exists()
    # the classification run still predicts classes through the same command
    assert main(["predict", str(seg / "cls"), str(seg / "still.png"), "--out", str(tmp_path / "c"),
                 "--device", "cpu", "--quiet"]) == 0
    assert (tmp_path / "c" / "videos.csv").is_file() and not (tmp_path / "c" / "segments.csv").exists()


def test_nothing_readable_exits_non_zero(seg, tmp_path, capsys):
    assert main(["predict", str(seg / "seg"), str(seg / "broken.mp4"), str(seg / "nope.mp4"), "--out",
                 str(tmp_path / "o"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "nope.mp4" in err and "nothing could be predicted" in err
