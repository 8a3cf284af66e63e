"""`uscl predict` and `uscl export` on a detection model: a tiny real `finetune --task detect` run on the mask store."""

import csv
import json
import shutil

import av
import numpy as np
import pytest
import torch
from PIL import Image

from uscl.cli import main
from uscl.errors import UsclError

SIZE = 64
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning",
                                        "ignore:RCNN always returns:UserWarning")


@pytest.fixture(scope="module")
def det(mask_store, tmp_path_factory):
    """A detection run (frozen mode on a "pretrained" trunk, so frozen BatchNorm; 1 epoch, fold 0 of 3), the same
    run with its fold copied to fold 1, a 3-frame synth clip (48 px: the stored frames are 64 px), a still PNG and
    a broken file."""
    from uscl.finetune.config import FinetuneConfig
    from uscl.finetune.train import finetune
    from uscl.models.backbone import build_backbone
    from uscl.synth.generate import generate

    root = tmp_path_factory.mktemp("detpredict")
    bb, _ = build_backbone("resnet18")
    torch.save({k: v for k, v in bb.state_dict().items() if not k.startswith("fc.")}, root / "tv.pth")
    cfg = FinetuneConfig(store=str(mask_store), out=str(root / "run"), task="detect", mode="frozen", epochs=1,
                         folds=3, image_size=SIZE, batch_size=8, device="cpu", max_frames_per_video=2,
                         only_folds=[0], init=f"imagenet:{root / 'tv.pth'}")
    finetune(cfg, log=lambda *a: None)
    shutil.copytree(root / "run", root / "two")
    shutil.copytree(root / "two" / "fold0", root / "two" / "fold1")
    generate(root / "synth", videos_per_class=1, frames=3, size=48, fps=4.0, seed=1, classes="covid", masks=False)
    Image.fromarray(np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (48, 1))).save(root / "still.png")
    (root / "broken.mp4").write_bytes(b"not a video at all")
    return root


def _clip(det):
    return sorted((det / "synth").rglob("*.mp4"))[0]


def _detector(det, fold=0):
    """The fold's Mask R-CNN rebuilt here from its metadata, as fine-tuning built it, and its metadata."""
    from uscl.checkpoint import load_weights
    from uscl.models.detector import build_detector

    state, meta = load_weights(det / "run" / f"fold{fold}" / "model.safetensors")
    net = build_detector(meta["arch"], len(meta["mask_classes"]), None, "random", frozen_bn=meta["frozen_bn"],
                         min_size=meta["min_size"], max_size=meta["max_size"], **meta["detector"])
    net.load_state_dict(state, strict=True)
    return net.eval(), meta


def _by_hand(det, path, threshold):
    """Frames read with the store options, /255 as (C, H, W), through the detector; detections >= threshold."""
    from uscl.store.preprocess import read_and_preprocess

    net, meta = _detector(det)
    frames = read_and_preprocess(path, meta["store_options"])
    with torch.no_grad():
        out = net([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    return frames, [{k: v[d["scores"] >= threshold] for k, v in d.items()} for d in out], meta


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_writes_overlays_clip_csv_json_equal_to_the_detector_by_hand(det, tmp_path, capsys):
    clip, still, broken = _clip(det), det / "still.png", det / "broken.mp4"
    out = tmp_path / "pred"
    # threshold 0: every detection the detector returns (a 1-epoch model rarely scores 0.5)
    rc = main(["predict", str(det / "run"), str(clip), str(still), str(broken), "--out", str(out),
               "--device", "cpu", "--score-threshold", "0", "--batch-size", "2"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "broken.mp4" in printed.err and "pleura n/present" in printed.out and "(detection)" in printed.err
    frames, want, meta = _by_hand(det, clip, 0.0)
    classes = meta["mask_classes"]
    assert frames.shape == (3, SIZE, SIZE, 1)
    assert sum(len(d["boxes"]) for d in want) > 0  # something to compare
    rows = _rows(out / "detections.csv")
    assert list(rows[0]) == ["input", "frame", "class", "score", "x1", "y1", "x2", "y2"]
    clip_rows = [r for r in rows if r["input"] == str(clip)]
    assert len(clip_rows) == sum(len(d["boxes"]) for d in want)
    for t, d in enumerate(want):
        got = [r for r in clip_rows if int(r["frame"]) == t]
        assert [r["class"] for r in got] == [classes[int(k) - 1] for k in d["labels"]]
        np.testing.assert_allclose([float(r["score"]) for r in got], d["scores"].numpy(), atol=1e-5)
        np.testing.assert_allclose([[float(r[c]) for c in ("x1", "y1", "x2", "y2")] for r in got],
                                   d["boxes"].numpy().reshape(-1, 4), atol=0.006)
    for r in rows:  # boxes inside the stored frame, x2/y2 exclusive
        x1, y1, x2, y2 = (float(r[c]) for c in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 <= x2 <= SIZE and 0 <= y1 <= y2 <= SIZE
    # overlays: one per frame, enlarged 64 -> 256 px; a clip also as an MP4, a still not
    overlays = sorted((out / clip.stem / "overlays").glob("*.png"))
    assert [p.name for p in overlays] == [f"frame_{t:05d}.png" for t in range(3)]
    assert np.asarray(Image.open(overlays[0])).shape == (256, 256, 3)
    with av.open(str(out / clip.stem / "overlay.mp4")) as c:
        assert len(list(c.decode(video=0))) == 3
    assert (out / "still" / "overlays" / "frame_00000.png").is_file() and not (out / "still" / "overlay.mp4").exists()
    # predictions.json: per input frames, per class the number of detections and the share of frames with one
    data = json.loads((out / "predictions.json").read_text())
    assert data["task"] == "detect" and data["folds"] == [0] and data["ensemble"] is False
    assert data["classes"] == classes and data["score_threshold"] == 0.0 and data["fold_note"] is None
    item = data["inputs"][0]
    assert item["input"] == str(clip) and item["num_frames"] == 3 and item["frame_size"] == [SIZE, SIZE]
    for k, c in enumerate(classes, start=1):
        per_frame = [int((d["labels"] == k).sum()) for d in want]
        assert item["classes"][c]["detections"] == sum(per_frame)
        assert item["classes"][c]["present_frames"] == pytest.approx(np.mean([n > 0 for n in per_frame]))
    _, still_want, _ = _by_hand(det, still, 0.0)
    assert data["inputs"][1]["num_frames"] == 1 and data["inputs"][1]["detections"] == len(still_want[0]["boxes"])
    assert item["files"]["mp4"] == f"{clip.stem}/overlay.mp4" and data["inputs"][1]["files"]["mp4"] is None
    assert [s["input"] for s in data["skipped"]] == [str(broken)]
    assert _rows(out / "skipped.csv")[0]["input"] == str(broken)
    # a non-empty --out is refused; with --overwrite and the default threshold 0.5 only confident detections stay
    assert main(["predict", str(det / "run"), str(still), "--out", str(out), "--device", "cpu"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["predict", str(det / "run"), str(clip), "--out", str(out), "--device", "cpu", "--overwrite",
                 "--quiet"]) == 0
    rows = _rows(out / "detections.csv")
    assert len(rows) == sum(int((d["scores"] >= 0.5).sum()) for d in want)
    assert all(float(r["score"]) >= 0.5 for r in rows)
    assert json.loads((out / "predictions.json").read_text())["score_threshold"] == 0.5


def test_default_fold_of_a_run_with_folds_is_the_first_and_said(det, tmp_path, capsys):
    from uscl.infer import load_model, predict_detections

    m = load_model(det / "two")
    assert m.task == "detect" and [f.fold for f in m.folds] == [0] and "first of folds 0, 1" in m.fold_note
    assert "not averaged" in m.describe()
    assert [f.fold for f in load_model(det / "two", 1).folds] == [1] and load_model(det / "two", 1).fold_note is None
    assert main(["predict", str(det / "two"), str(det / "still.png"), "--device", "cpu", "--quiet"]) == 0
    assert "first of folds 0, 1" in capsys.readouterr().err
    assert main(["predict", str(det / "two"), str(det / "still.png"), "--device", "cpu", "--ensemble"]) == 2
    assert "weighted box fusion" in capsys.readouterr().err
    run = predict_detections(det / "two", [det / "still.png"], fold=1, device="cpu", show_progress=False,
                             score_threshold=0.0, keep_frames=True)
    _, want, _ = _by_hand(det, det / "still.png", 0.0)
    r = run.results[0]
    assert r.frames.shape == (1, SIZE, SIZE, 1) and r.detections[0].masks.shape[1:] == (SIZE, SIZE)
    np.testing.assert_allclose(r.detections[0].scores, want[0]["scores"].numpy(), atol=1e-6)


def test_draw_detections_box_outline_and_label():
    from uscl.infer.mask_overlay import class_colour, draw_detections

    frame = np.full((16, 16, 1), 100, np.uint8)
    mask = np.zeros((1, 16, 16), np.uint8)
    mask[0, 6:10, 6:10] = 1
    out = draw_detections(frame, np.array([[4, 8, 12, 14]]), np.array([2]), np.array([0.9]), mask,
                          ["a", "b"], scale=4)
    assert out.shape == (64, 64, 3)
    colour = np.array(class_colour(2))
    assert (out[8 * 4 + 5, 4 * 4] == colour).all() and (out[8 * 4 + 5, 12 * 4 - 1] == colour).all()  # box edges
    assert (out[13 * 4 - 1, 8 * 4 + 1] == 100).all()  # inside the box, off the mask outline: the frame
    assert (out[10 * 4 - 1, 7 * 4] == colour).all() and (out[9 * 4, 8 * 4] == 100).all()  # mask outline, inside
    assert (out[8 * 4 - 3, 4 * 4 + 1:4 * 4 + 20] != 100).any()  # the label tab above the box


@pytest.mark.parametrize("fmt", ["torchscript", "safetensors", "onnx"])
def test_export_reproduces_the_detector(det, tmp_path, capsys, fmt):
    from uscl.models.detector import build_detector

    out = tmp_path / "det"
    assert main(["export", str(det / "run"), str(out), "--format", fmt]) == 0
    report = capsys.readouterr().out
    assert "detections compared" in report
    meta = json.loads((tmp_path / "det.json").read_text())
    assert meta["task"] == "detect" and meta["folds"] == [0] and meta["model_format"] == fmt
    assert meta["input"]["shape"] == [1, SIZE, SIZE] and meta["input"]["normalised"] is False
    v = meta["verification"]
    assert v["max_abs_diff_boxes_px"] <= 1e-3 and v["max_abs_diff_scores"] <= 1e-4 and v["detections_compared"] > 0
    ref, _ = _detector(det)
    frames, _, _ = _by_hand(det, _clip(det), 0.0)
    images = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]
    with torch.no_grad():
        want = ref(images)
        if fmt == "torchscript":
            got = torch.jit.load(str(out) + ".pt").eval()(images)[1]
        elif fmt == "safetensors":
            from safetensors.torch import load_file

            o = dict(meta["build_detector"])
            net = build_detector(o.pop("arch"), o.pop("num_classes"), **o.pop("detector_kwargs"), **o)
            net.load_state_dict(load_file(str(out) + ".safetensors"), strict=True)
            got = net.eval()(images)
        else:
            import onnxruntime as ort

            sess = ort.InferenceSession(str(out) + ".onnx", providers=["CPUExecutionProvider"])
            got = [dict(zip(["boxes", "labels", "scores", "masks"],
                            (torch.from_numpy(a) for a in sess.run(None, {"images": im.numpy()}))))
                   for im in images]
    assert sum(len(w["boxes"]) for w in want) > 0
    for w, g in zip(want, got):
        assert torch.equal(w["labels"], g["labels"].long())
        torch.testing.assert_close(g["boxes"], w["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(g["scores"], w["scores"], rtol=0, atol=1e-4)
    card = json.loads((tmp_path / "det.model_card.json").read_text())
    assert card["task"]["task"] == "detection" and set(card["metrics"]["detection"]) >= {"bbox_map50", "segm_map50"}
    assert "detector's own GeneralizedRCNNTransform" in card["preprocessing"]["transform"]
    assert "detect" in (tmp_path / "det.MODEL_CARD.md").read_text()


def test_clear_messages_instead_of_a_key_error(det, tmp_path, capsys):
    from uscl.checkpoint import load_weights, save_weights
    from uscl.infer import load_model, predict, predict_segments

    for call in (lambda: predict(det / "run", [det / "still.png"], device="cpu", show_progress=False),
                 lambda: predict_segments(det / "run", [det / "still.png"], device="cpu", show_progress=False),
                 lambda: load_model(det / "run", task="segment")):
        with pytest.raises(UsclError, match=r"detection model \(task 'detect'\)") as exc:
            call()
        assert "does not match" not in str(exc.value)
    # a task uscl does not know
    state, meta = load_weights(det / "run" / "fold0" / "model.safetensors")
    save_weights(tmp_path / "odd" / "model.safetensors", state, {**meta, "task": "track"})
    with pytest.raises(UsclError, match=r"records task 'track'.*known tasks: 'classify'.*'detect'"):
        load_model(tmp_path / "odd" / "model.safetensors")
    # a detection meta whose weights are not a detector's
    save_weights(tmp_path / "bad" / "model.safetensors", {"backbone.conv1.weight": torch.zeros(1)}, meta)
    with pytest.raises(UsclError, match="not a detector saved by"):
        load_model(tmp_path / "bad" / "model.safetensors")
    # Grad-CAM options need a classification model; nothing is written
    assert main(["predict", str(det / "run"), str(det / "still.png"), "--explain", "--out", str(tmp_path / "x"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "detection model" in err and "classification model" in err and not (tmp_path / "x").exists()
    # nothing readable: exit 1, each bad input named
    assert main(["predict", str(det / "run"), str(det / "broken.mp4"), str(det / "nope.mp4"), "--out",
                 str(tmp_path / "o"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "nope.mp4" in err and "nothing could be predicted" in err
