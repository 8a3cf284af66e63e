"""`uscl study` at toy size: methods × seeds vs random on the same folds, CIs, plots, the
label-fraction curve, and a resume that keeps what is finished."""

from __future__ import annotations

import json

import pytest

from uscl.cli import main
from uscl.errors import ConfigError
from uscl.study import StudyConfig, run_study


@pytest.mark.slow
def test_study_pretrains_each_method_and_seed_and_compares_on_the_same_folds(make_store, tmp_path, capsys):
    store = make_store(n_videos=12, frames=4, size=32)
    out = tmp_path / "study"
    argv = ["study", "--store", str(store), "--out", str(out), "--methods", "uscl,simclr-frames", "--seeds", "0,1",
            "--epochs", "1", "--image-size", "32", "--batch-size", "4", "--modes", "knn", "--folds", "2",
            "--label-fractions", "0.5", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| random |" in printed and "| uscl-selfsup |" in printed and "full report:" in printed
    data = json.loads((out / "study.json").read_text())
    scores = data["scores"]["knn"]
    assert sorted(scores) == ["random", "simclr-frames", "uscl-selfsup"]
    assert len(scores["random"]) == 2 and len(scores["uscl-selfsup"]) == 4  # 2 folds; 2 seeds x 2 folds
    assert {s for s, _, _ in scores["uscl-selfsup"]} == {0, 1}
    assert "knn@0.5" in data["scores"]
    report = (out / "study.md").read_text()
    for text in ("## Summary", "95%", "won", "uscl-selfsup", "no labels reach a backbone", "no ImageNet row"):
        assert text in report, text
    assert (out / "study_knn.png").is_file() and (out / "study_knn_label_fraction.png").is_file()
    # the pretraining on the evaluated videos used no labels
    labelled = json.loads((out / "pretrain" / "uscl-selfsup-s0" / "labelled_videos.json").read_text())
    assert labelled["videos"] == []
    # resume: everything finished is kept, the report is the same
    lines = []
    again = run_study(StudyConfig(store=str(store), out=str(out), methods=["uscl", "simclr-frames"], seeds=[0, 1],
                                  epochs=1, image_size=32, batch_size=4, modes=["knn"], folds=2,
                                  label_fractions=[0.5], device="cpu", resume=True), log=lines.append)
    assert sum("finished earlier, kept" in ln for ln in lines) == 4
    assert json.loads((out / "study.json").read_text())["scores"] == data["scores"]
    with pytest.raises(Exception, match="other settings"):
        run_study(StudyConfig(store=str(store), out=str(out), methods=["simclr"], seeds=[0], epochs=1,
                              image_size=32, modes=["knn"], folds=2, device="cpu", resume=True))


def test_study_settings_are_checked():
    with pytest.raises(ConfigError, match="methods"):
        StudyConfig(store="s", methods=["byol"]).validate()
    with pytest.raises(ConfigError, match="label_fractions"):
        StudyConfig(store="s", label_fractions=[0.0]).validate()
