"""`uscl predict` over archives: decoding workers, streamed outputs and --resume give today's results."""

import csv
import json

import numpy as np
import pytest

from uscl.cli import main

CLASSES = ["covid", "pneumonia", "regular"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A linear-probe model on synth clips, and a folder of clips with a few bad files among them."""
    from uscl.finetune.config import FinetuneConfig
    from uscl.finetune.train import finetune
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth import generate

    root = tmp_path_factory.mktemp("archive")
    generate(root / "synth", videos_per_class=3, frames=6, size=48, fps=10)
    prepare(root / "synth", root / "store", PrepareOptions(size=48, fps=5, max_frames=3),
            labels_csv=root / "synth" / "labels.csv", show_progress=False)
    finetune(FinetuneConfig(out=str(root / "ft"), store=str(root / "store"), mode="linear", folds=2, image_size=48,
                            device="cpu", seed=0), log=lambda *a: None)
    clips = root / "clips"
    clips.mkdir()
    for i, src in enumerate(sorted((root / "synth").rglob("*.mp4"))):
        (clips / f"c{i:02d}.mp4").write_bytes(src.read_bytes())
        if i == 2:
            (clips / "c02b_truncated.mp4").write_bytes(src.read_bytes()[:300])
    (clips / "c04b_notes.mp4").write_text("not a video")
    (clips / "c05b_empty.mp4").write_bytes(b"")
    return root


def _predict(archive, out, *extra):
    return main(["predict", str(archive / "ft"), str(archive / "clips"), "--out", str(out), "--device", "cpu",
                 "--quiet", *extra])


def _table(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _same_csv(a, b):
    ra, rb = _table(a), _table(b)
    assert len(ra) == len(rb) and ra[0] == rb[0]
    for x, y in zip(ra[1:], rb[1:]):
        nums = [i for i, v in enumerate(x) if v.replace(".", "", 1).isdigit() and "." in v]
        assert [v for i, v in enumerate(x) if i not in nums] == [v for i, v in enumerate(y) if i not in nums]
        np.testing.assert_allclose([float(x[i]) for i in nums], [float(y[i]) for i in nums], atol=1.01e-6)


def _same_json(a, b):
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    pa = [[v["probabilities"][c] for v in i["frames"] for c in CLASSES] for i in ja["inputs"]]
    pb = [[v["probabilities"][c] for v in i["frames"] for c in CLASSES] for i in jb["inputs"]]
    assert [len(p) for p in pa] == [len(p) for p in pb]
    np.testing.assert_allclose(np.concatenate(pa), np.concatenate(pb), atol=1.01e-6)
    for doc in (ja, jb):
        for item in doc["inputs"]:
            for f in item["frames"]:
                f.pop("probabilities")
            item.pop("probabilities")
    assert ja == jb


def test_workers_give_the_results_and_skips_of_one_process(archive, tmp_path):
    assert _predict(archive, tmp_path / "w0", "--workers", "1") == 0
    assert _predict(archive, tmp_path / "w2", "--workers", "2", "--batch-size", "4") == 0
    for name in ("videos.csv", "frames.csv", "skipped.csv"):
        _same_csv(tmp_path / "w0" / name, tmp_path / "w2" / name)
    _same_json(tmp_path / "w0" / "predictions.json", tmp_path / "w2" / "predictions.json")
    skipped = [r[0].rsplit("/", 1)[-1] for r in _table(tmp_path / "w2" / "skipped.csv")[1:]]
    assert skipped == ["c02b_truncated.mp4", "c04b_notes.mp4", "c05b_empty.mp4"]
    assert len(json.loads((tmp_path / "w2" / "predictions.json").read_text())["inputs"]) == 9


def test_resume_after_an_interruption_and_a_torn_write(archive, tmp_path, monkeypatch):
    full, part = tmp_path / "full", tmp_path / "part"
    assert _predict(archive, full, "--workers", "1") == 0

    import uscl.infer.prediction_files as pf

    real_add, calls = pf.PredictionWriter.add, []

    def add_then_die(self, pred, explain=None):
        if len(calls) == 4:
            raise KeyboardInterrupt  # as a kill after four inputs
        calls.append(pred.name)
        real_add(self, pred, explain)

    monkeypatch.setattr(pf.PredictionWriter, "add", add_then_die)
    assert _predict(archive, part, "--workers", "1") == 130
    monkeypatch.undo()
    assert not (part / "predictions.json").exists() and len(_table(part / "videos.csv")) == 5
    # a kill in the middle of the next input's rows: half a CSV row and half a journal line
    with open(part / "frames.csv", "a") as fh:
        fh.write(f"{archive / 'clips' / 'c04.mp4'},0,cov")
    with open(part / pf.JOURNAL, "a") as fh:
        fh.write('{"input": {"input": "x')
    assert _predict(archive, part, "--workers", "2") == 2  # not empty: --resume or --overwrite
    assert _predict(archive, part, "--resume", "--workers", "2") == 0
    for name in ("videos.csv", "frames.csv", "skipped.csv"):
        _same_csv(full / name, part / name)
    _same_json(full / "predictions.json", part / "predictions.json")
    # resuming a finished run changes nothing; another model is refused
    assert _predict(archive, part, "--resume") == 0
    _same_json(full / "predictions.json", part / "predictions.json")
    assert main(["predict", str(archive / "ft"), str(archive / "clips"), "--out", str(part), "--device", "cpu",
                 "--quiet", "--resume", "--fold", "0"]) == 2


def test_explanations_are_streamed_into_the_summary(archive, tmp_path):
    out = tmp_path / "ex"
    assert main(["predict", str(archive / "ft"), str(archive / "clips" / "c00.mp4"),
                 str(archive / "clips" / "c01.mp4"), "--out", str(out), "--device", "cpu", "--quiet",
                 "--explain", "--workers", "2"]) == 0
    data = json.loads((out / "predictions.json").read_text())
    assert [e["input"] for e in data["explain"]["inputs"]] == [i["input"] for i in data["inputs"]]
    assert all((out / e["folder"] / "sheet.png").is_file() for e in data["explain"]["inputs"])
