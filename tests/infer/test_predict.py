"""`uscl predict` on a tiny model fine-tuned by `uscl finetune` from synthetic videos."""

import csv
import json

import av
import numpy as np
import pytest

from uscl.cli import main

CLASSES = ["covid", "pneumonia", "regular"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Synth mp4s → `prepare` (fps sampling, crop, 64 px) → `finetune` full, 1 epoch, 2 folds; plus a kNN run."""
    from uscl.finetune.config import FinetuneConfig
    from uscl.finetune.train import finetune
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth import generate

    root = tmp_path_factory.mktemp("predict")
    generate(root / "synth", videos_per_class=2, frames=8, size=64, fps=10)
    prepare(root / "synth", root / "store", PrepareOptions(size=64, fps=5, max_frames=4, crop=True),
            labels_csv=root / "synth" / "labels.csv", show_progress=False)
    base = dict(store=str(root / "store"), folds=2, epochs=1, image_size=64, batch_size=8, device="cpu", seed=0)
    finetune(FinetuneConfig(out=str(root / "ft"), mode="full", **base), log=lambda *a: None)
    finetune(FinetuneConfig(out=str(root / "knn"), mode="knn", knn_k=3, **base), log=lambda *a: None)
    (root / "broken.mp4").write_bytes(b"")
    return root


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_writes_frames_videos_json_and_skips_a_broken_file(tiny, tmp_path, capsys):
    out = tmp_path / "pred"
    rc = main(["predict", str(tiny / "ft"), str(tiny / "synth"), str(tiny / "broken.mp4"), "--out", str(out),
               "--device", "cpu", "--batch-size", "5"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "broken.mp4" in printed.err and "prediction" in printed.out
    videos = _rows(out / "videos.csv")
    frames = _rows(out / "frames.csv")
    data = json.loads((out / "predictions.json").read_text())
    assert len(videos) == 6 and len(data["inputs"]) == 6  # every synth video, the broken file left out
    assert list(videos[0]) == ["input", "kind", "num_frames", "prediction", "prob_covid", "prob_pneumonia",
                               "prob_regular", "agreement"]
    assert all(v["num_frames"] == "4" for v in videos) and len(frames) == 24  # fps 5 of 10, at most 4 frames
    assert data["skipped"] == [{"input": str(tiny / "broken.mp4"), "reason": data["skipped"][0]["reason"]}]
    assert _rows(out / "skipped.csv")[0]["input"] == str(tiny / "broken.mp4")
    assert data["ensemble"] and data["folds"] == [0, 1] and data["classes"] == CLASSES
    assert data["preprocessing"]["store_options"]["crop"] is True and data["preprocessing"]["image_size"] == 64
    for item in data["inputs"]:
        fp = np.array([[f["probabilities"][c] for c in CLASSES] for f in item["frames"]])
        vp = np.array([item["probabilities"][c] for c in CLASSES])
        np.testing.assert_allclose(fp.sum(1), 1, atol=1e-5)
        np.testing.assert_allclose(fp.mean(0), vp, atol=1e-5)  # video = mean of its frames
        assert item["prediction"] == CLASSES[int(vp.argmax())]
        assert item["agreement"] == pytest.approx(np.mean(fp.argmax(1) == vp.argmax()))
    # a non-empty --out is never overwritten silently
    assert main(["predict", str(tiny / "ft"), str(tiny / "synth"), "--out", str(out), "--device", "cpu"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["predict", str(tiny / "ft"), str(tiny / "synth"), "--out", str(out), "--device", "cpu",
                 "--overwrite", "--quiet"]) == 0


def _reference(tiny, fold_dir):
    """finetune's per-frame probabilities of a fold's test videos, and each video's source file."""
    from uscl.store import FrameStore

    ref = {}
    for row in _rows(fold_dir / "predictions.csv"):
        ref.setdefault(row["video_id"], []).append([float(row[f"prob_{c}"]) for c in CLASSES])
    sources = {v.video_id: tiny / "synth" / v.source for v in FrameStore(tiny / "store").videos}
    return ref, sources


def test_fold_predictions_reproduce_finetune_and_ensemble_averages_them(tiny):
    """Preprocessing comes from the model: predicting a test video from its source file gives the
    probabilities `finetune` computed from the store; the ensemble is the mean of the folds."""
    from uscl.infer import predict

    splits = json.loads((tiny / "ft" / "splits.json").read_text())
    assert splits  # the held-out videos of fold 0 are the ones finetune wrote predictions for
    ref, sources = _reference(tiny, tiny / "ft" / "fold0")
    ids = sorted(ref)
    runs = {k: predict(tiny / "ft", [sources[i] for i in ids], fold=k, device="cpu", show_progress=False)
            for k in (0, 1)}
    ens = predict(tiny / "ft", [sources[i] for i in ids], device="cpu", show_progress=False)
    for j, vid in enumerate(ids):
        np.testing.assert_allclose(runs[0].results[j].frame_probs, np.array(ref[vid]), atol=2e-5)
        mean = (runs[0].results[j].frame_probs + runs[1].results[j].frame_probs) / 2
        np.testing.assert_allclose(ens.results[j].frame_probs, mean, atol=1e-6)
    assert not np.allclose(runs[0].results[0].frame_probs, runs[1].results[0].frame_probs)
    assert ens.model.is_ensemble and not runs[0].model.is_ensemble


def test_knn_models_predict_like_finetune(tiny):
    from uscl.infer import predict

    ref, src = _reference(tiny, tiny / "knn" / "fold1")
    ids = sorted(ref)
    run = predict(tiny / "knn" / "fold1" / "model.safetensors", [src[i] for i in ids], device="cpu",
                  show_progress=False)
    assert run.model.is_knn
    for j, vid in enumerate(ids):
        np.testing.assert_allclose(run.results[j].frame_probs, np.array(ref[vid]), atol=1e-6)
    assert main(["predict", str(tiny / "knn"), str(src[ids[0]]), "--explain", "--out", str(tiny / "kx")]) == 2


def test_explain_writes_overlays_clip_and_sheet(tiny, tmp_path, capsys):
    video = tiny / "synth" / "covid" / "Cov_synth_000.mp4"
    still = tmp_path / "still.png"
    from PIL import Image

    Image.fromarray(np.full((48, 40), 90, np.uint8)).save(still)
    out = tmp_path / "explained"
    rc = main(["predict", str(tiny / "ft"), str(video), str(still), "--fold", "0", "--explain",
               "--out", str(out), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    folder = out / "explain" / "Cov_synth_000"
    pngs = sorted(p.name for p in folder.glob("frame_*.png"))
    assert pngs == [f"frame_{t:04d}.png" for t in range(4)]
    assert Image.open(folder / pngs[0]).size == (224, 224) and Image.open(folder / "sheet.png").mode in ("RGB", "RGBA")
    with av.open(str(folder / "overlay.mp4")) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 4 and decoded[0].shape == (224, 224, 3)
    cam = np.load(folder / "cam.npy")
    assert cam.shape == (4, 64, 64) and cam.min() >= 0 and cam.max() <= 1 and cam.max() > 0
    assert (out / "explain" / "still" / "sheet.png").is_file() and not (out / "explain" / "still" / "overlay.mp4").exists()
    data = json.loads((out / "predictions.json").read_text())
    assert [i["class"] for i in data["explain"]["inputs"]] == [i["prediction"] for i in data["inputs"]]
    out2 = tmp_path / "explained_regular"
    assert main(["predict", str(tiny / "ft"), str(video), "--fold", "1", "--explain", "--class", "regular",
                 "--out", str(out2), "--device", "cpu", "--quiet"]) == 0
    info = json.loads((out2 / "predictions.json").read_text())["explain"]
    assert info["target"] == "regular" and {i["class"] for i in info["inputs"]} == {"regular"}
    assert np.load(out2 / "explain" / "Cov_synth_000" / "cam.npy").shape == (4, 64, 64)
    assert main(["predict", str(tiny / "ft"), str(video), "--explain", "--class", "nope", "--out",
                 str(tmp_path / "x")]) == 2
    assert "not a class" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_nothing_predictable_exits_non_zero(tiny, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a video")
    rc = main(["predict", str(tiny / "ft"), str(tiny / "broken.mp4"), str(tmp_path / "notes.txt"),
               str(tmp_path / "missing.mp4"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "nothing could be predicted" in err and "not found" in err and "not a video" in err
    assert main(["predict", str(tmp_path), str(tiny / "broken.mp4")]) == 2  # not a model folder
    assert "fold" in capsys.readouterr().err
    assert main(["predict", str(tiny / "ft"), str(tiny / "synth"), "--fold", "7"]) == 2


def test_unfinished_folds_are_left_out(tiny, tmp_path):
    """A fold whose metrics.json is missing (an interrupted run) is not part of the ensemble."""
    import shutil

    from uscl.errors import UsclError
    from uscl.infer.model import fold_paths

    run = tmp_path / "ft"
    shutil.copytree(tiny / "ft", run)
    (run / "fold1" / "metrics.json").unlink()
    with pytest.warns(UserWarning, match="folds 1 did not finish"):
        assert [k for _, k in fold_paths(run)] == [0]
    with pytest.raises(UsclError, match="fold 1 .* did not finish"):
        fold_paths(run, fold=1)
    (run / "fold0" / "metrics.json").unlink()
    with pytest.raises(UsclError, match="no finished"):
        fold_paths(run)


def test_cli_errors_name_the_flag_of_the_parameter(tiny, tmp_path, capsys):
    """load_model/predict say fold / batch_size / class_name; `uscl predict` and `uscl export` add the flag."""
    from uscl.errors import UsclError
    from uscl.infer.predict import predict

    one = tiny / "ft" / "fold0" / "model.safetensors"
    with pytest.raises(UsclError, match="fold picks a fold of a run folder") as err:
        predict(one, [tiny / "synth"], fold=0)
    assert err.value.param == "fold" and "--" not in str(err.value)
    assert main(["predict", str(one), str(tiny / "synth"), "--fold", "0"]) == 2
    assert "(set with --fold)" in capsys.readouterr().err
    assert main(["predict", str(tiny / "ft"), str(tiny / "synth"), "--explain", "--class", "nope", "--out",
                 str(tmp_path / "x")]) == 2
    assert "class_name 'nope' is not a class" in (err := capsys.readouterr().err) and "(set with --class)" in err
    assert main(["export", str(one), str(tmp_path / "e"), "--format", "onnx", "--fold", "1"]) == 2
    assert "(set with --fold)" in capsys.readouterr().err
