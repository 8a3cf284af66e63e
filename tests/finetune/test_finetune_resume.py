"""`--only-folds` (a partial k-fold run that says so) and `--resume` (keep complete folds, redo the rest)."""

import json

import numpy as np
import pytest

import uscl.finetune.train as train_mod
from uscl.cli import main
from uscl.errors import ConfigError, UsclError
from uscl.finetune.config import FinetuneConfig
from uscl.finetune.predictions import read_predictions
from uscl.finetune.splits import make_splits
from uscl.finetune.train import finetune
from uscl.store import FrameStore
from uscl.utils.seed import derive_seed

QUIET = {"log": lambda *a: None}
SMALL = ["--image-size", "32", "--batch-size", "8", "--epochs", "2"]


def _cfg(store, out, **kw):
    base = {"store": str(store), "out": str(out), "folds": 3, "epochs": 2, "image_size": 32, "batch_size": 8}
    base.update(kw)
    return FinetuneConfig(**base)


def _json(path):
    return json.loads(path.read_text())


def _count_training(monkeypatch) -> list[int]:
    """Record the fold seed of every gradient training that actually happens."""
    calls, real = [], train_mod.train_fold

    def counted(cfg, runner, model, loaders, fold_seed, **kw):
        calls.append(fold_seed)
        return real(cfg, runner, model, loaders, fold_seed, **kw)

    monkeypatch.setattr(train_mod, "train_fold", counted)
    return calls


def test_only_folds_trains_those_folds_of_the_full_split_and_says_so(make_store, tmp_path, capsys, monkeypatch):
    store = make_store(n_videos=9, frames=2)
    run = tmp_path / "run"
    assert main(["finetune", "--store", str(store), "--out", str(run), "--folds", "3", "--only-folds", "0,2"] + SMALL) == 0
    assert "folds 0, 2 of 3 only" in capsys.readouterr().out
    m = _json(run / "metrics.json")
    assert m["folds_run"] == [0, 2] and m["complete"] is False and m["coverage"] == "folds 0, 2 of 3 only"
    assert [f["fold"] for f in m["folds"]] == [0, 2] and len(m["summary"]["frame"]["accuracy"]["values"]) == 2
    assert sorted(d.name for d in run.iterdir() if d.is_dir()) == ["fold0", "fold2"]
    # the split is the full 3-fold split: fold 2 holds the same videos as in a run of every fold
    full = make_splits(FrameStore(store), 3, 0)
    saved = _json(run / "splits.json")["folds"]
    assert [sorted(f["test"]) for f in saved] == [sorted(f.test) for f in full.folds]
    preds = (run / "fold2" / "predictions.csv").read_text().splitlines()[1:]
    assert {line.split(",")[0] for line in preds} == set(full.folds[2].test)
    assert m["summary"]["pooled"]["video"]["n"] == len(full.folds[0].test) + len(full.folds[2].test)

    assert main(["report", str(run)]) == 0
    assert "partial cross-validation" in capsys.readouterr().out
    md = (run / "report.md").read_text()
    assert "folds 0, 2 of 3 only" in md and "not a full 3-fold estimate" in md

    # bad selections are refused by name before anything is written
    for only, msg in (([3], "out of range.*3 folds"), ([0, 0], "more than once"), ([-1], "start at 0"),
                      ([], "empty")):
        with pytest.raises(UsclError, match=msg):
            finetune(_cfg(store, tmp_path / "bad", only_folds=only), **QUIET)
        assert not (tmp_path / "bad").exists()

    # --resume --only-folds 1 fills in the missing fold; the run is then complete
    calls = _count_training(monkeypatch)
    res = finetune(_cfg(store, run, only_folds=[1], resume=True), **QUIET)
    assert calls == [derive_seed(0, "fold", 1)]  # only fold 1 trained
    m2 = res.metrics
    assert m2["folds_run"] == [0, 1, 2] and m2["complete"] is True and m2["coverage"] is None
    assert m2["folds_kept"] == [0, 2] and m2["folds_trained_now"] == [1]
    assert [m2["folds"][0], m2["folds"][2]] == m["folds"]
    main(["report", str(run)])
    assert "only" not in (run / "report.md").read_text().split("## Results")[0]


class _Killed(Exception):
    pass


def test_resume_after_a_kill_redoes_only_the_unfinished_fold(make_store, tmp_path, monkeypatch):
    store = make_store(n_videos=9, frames=2)
    run = tmp_path / "run"
    real_save = train_mod.save_model

    def dies_in_fold_2(path, tensors, meta):
        if meta["fold"] == 2:  # predictions.csv and history.csv of fold 2 are written, the rest not
            raise _Killed
        real_save(path, tensors, meta)

    monkeypatch.setattr(train_mod, "save_model", dies_in_fold_2)
    with pytest.raises(_Killed):
        finetune(_cfg(store, run), **QUIET)
    monkeypatch.setattr(train_mod, "save_model", real_save)
    assert not (run / "metrics.json").exists() and not (run / "fold2" / "metrics.json").exists()
    killed_preds = read_predictions(run / "fold2" / "predictions.csv")  # what fold 2 had computed when killed
    (run / "fold2" / ".model.safetensors.x.tmp.safetensors").write_bytes(b"half a file")
    before = {k: _json(run / f"fold{k}" / "metrics.json") for k in (0, 1)}
    model_time = (run / "fold0" / "model.safetensors").stat().st_mtime_ns

    # without --resume the folder is refused, with a hint
    with pytest.raises(UsclError, match="not empty.*continue it with resume"):
        finetune(_cfg(store, run), **QUIET)

    calls = _count_training(monkeypatch)
    m = finetune(_cfg(store, run, resume=True, workers=0, device="cpu"), **QUIET).metrics
    assert calls == [derive_seed(0, "fold", 2)]  # folds 0 and 1 were not retrained
    assert m["folds_kept"] == [0, 1] and m["folds_trained_now"] == [2] and m["complete"] is True
    assert [m["folds"][0], m["folds"][1]] == [before[0], before[1]]  # kept folds: exactly what was there
    assert (run / "fold0" / "model.safetensors").stat().st_mtime_ns == model_time
    assert not (run / "fold2" / ".model.safetensors.x.tmp.safetensors").exists()  # partial files deleted
    assert sorted(p.name for p in (run / "fold2").iterdir()) == [
        "history.csv", "metrics.json", "model.json", "model.safetensors", "predictions.csv"]
    # fold 2 redone from scratch computes what the killed attempt had (same seed, same videos)
    redone = read_predictions(run / "fold2" / "predictions.csv")
    assert redone.video_ids == killed_preds.video_ids
    np.testing.assert_allclose(redone.probs, killed_preds.probs, atol=1e-4)

    # resuming a finished run trains nothing and keeps every fold
    calls.clear()
    again = finetune(_cfg(store, run, resume=True), **QUIET).metrics
    assert calls == [] and again["folds_kept"] == [0, 1, 2] and again["folds"] == m["folds"]


def test_resume_refuses_other_settings_stores_and_folders(make_store, tmp_path):
    store = make_store(n_videos=9, frames=2)
    run = tmp_path / "run"
    finetune(_cfg(store, run, mode="knn", knn_k=3, only_folds=[0]), **QUIET)
    snapshot = {p: p.stat().st_mtime_ns for p in run.rglob("*")}

    with pytest.raises(UsclError, match=r"settings differ.*seed \(run: 0, now: 1\); knn_k \(run: 3, now: 5\)"):
        finetune(_cfg(store, run, mode="knn", knn_k=5, seed=1, resume=True), **QUIET)
    with pytest.raises(UsclError, match=r"mode \(run: 'knn', now: 'paper'\)"):
        finetune(_cfg(store, run, resume=True), **QUIET)
    with pytest.raises(UsclError, match="fold 0 has other (train|test) videos"):  # same settings, other folds
        finetune(_cfg(store, run, mode="knn", knn_k=3, resume=True,
                      splits=str(_reversed_splits(run, tmp_path))), **QUIET)
    other = make_store(n_videos=9, frames=3)  # same videos and labels, other content
    with pytest.raises(UsclError, match="frame store with id .* changed"):
        finetune(_cfg(other, run, mode="knn", knn_k=3, resume=True), **QUIET)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == snapshot  # nothing touched

    with pytest.raises(ConfigError, match="one of resume"):
        finetune(_cfg(store, run, mode="knn", resume=True, overwrite=True), **QUIET)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(UsclError, match="no config.yaml"):
        finetune(_cfg(store, stranger, mode="knn", resume=True), **QUIET)
    # --resume on an empty folder just starts the run
    res = finetune(_cfg(store, tmp_path / "fresh", mode="knn", knn_k=3, resume=True), **QUIET)
    assert res.metrics["complete"] and res.metrics["folds_trained_now"] == [0, 1, 2]


def _reversed_splits(run, tmp_path):
    """The run's splits.json with the folds' test sets rotated (a valid split, but other folds)."""
    data = _json(run / "splits.json")
    tests = [f["test"] for f in data["folds"]]
    everyone = sorted(v for t in tests for v in t)
    for f, test in zip(data["folds"], tests[1:] + tests[:1]):
        f["test"], f["train"], f["val"] = test, [v for v in everyone if v not in test], []
    path = tmp_path / "rotated.json"
    path.write_text(json.dumps(data))
    return path


def test_compare_only_folds_runs_the_same_folds_for_every_init_then_resume_completes(make_store, tmp_path, capsys):
    store = make_store(n_videos=6, frames=2)
    out = tmp_path / "cmp"
    args = ["compare", "--store", str(store), "--out", str(out), "--init", "random", "--init", "other=random",
            "--folds", "2", "--mode", "linear", "--image-size", "32", "--batch-size", "8"]
    assert main(args + ["--only-folds", "1"]) == 0
    comp = _json(out / "comparison.json")
    for name in ("random", "other"):
        assert comp["runs"][name]["folds_run"] == [1] and comp["runs"][name]["coverage"] == "fold 1 of 2 only"
        assert not (out / name / "fold0").exists()
    assert comp["same_folds"] and comp["paired_vs_baseline"]["other"]["frame"]["accuracy"]["n"] == 1
    md = (out / "report.md").read_text()
    assert "Partial cross-validation: fold 1 of 2 only" in md and "| random (fold 1 of 2 only) |" in md
    first = _json(out / "random" / "metrics.json")["folds"]
    capsys.readouterr()

    assert main(args + ["--resume"]) == 0
    assert "fold 1: complete outputs found, kept" in capsys.readouterr().out
    comp = _json(out / "comparison.json")
    assert all(r["folds_run"] == [0, 1] and r["coverage"] is None for r in comp["runs"].values())
    assert comp["paired_vs_baseline"]["other"]["frame"]["accuracy"]["n"] == 2
    assert _json(out / "random" / "metrics.json")["folds"][1] == first[0]
    assert "Partial" not in (out / "report.md").read_text()
