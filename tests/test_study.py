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
    # each backbone embedded on the evaluated store: kNN class accuracy, video purity, one record per seed
    emb = data["embedding"]
    assert sorted(emb) == ["random", "simclr-frames", "uscl-selfsup"] and all(len(r) == 2 for r in emb.values())
    assert all(0 <= r[k] <= 1 for recs in emb.values() for r in recs for k in ("knn_accuracy", "video_purity"))
    assert "# Embedding of each backbone" in report and "video purity" in report
    # the pretraining on the evaluated videos used no labels
    labelled = json.loads((out / "pretrain" / "uscl-selfsup-s0" / "labelled_videos.json").read_text())
    assert labelled["videos"] == []
    # resume: everything finished is kept, the report is the same
    lines = []
    run_study(StudyConfig(store=str(store), out=str(out), methods=["uscl", "simclr-frames"], seeds=[0, 1],
                          epochs=1, image_size=32, batch_size=4, modes=["knn"], folds=2,
                          label_fractions=[0.5], device="cpu", resume=True), log=lines.append)
    assert sum("finished earlier, kept" in ln for ln in lines) == 4
    assert json.loads((out / "study.json").read_text())["scores"] == data["scores"]
    with pytest.raises(Exception, match="other settings"):
        run_study(StudyConfig(store=str(store), out=str(out), methods=["simclr"], seeds=[0], epochs=2,
                              image_size=32, modes=["knn"], folds=2, device="cpu", resume=True))
    # an ablation row added on resume: only it is pretrained; it is one of ours (a variant of uscl)
    lines = []
    rows = ["uscl", "simclr-frames", "unmixed=uscl+mixup=false"]
    run_study(StudyConfig(store=str(store), out=str(out), methods=rows, seeds=[0, 1], epochs=1, image_size=32,
                          batch_size=4, modes=["knn"], folds=2, device="cpu", resume=True, embed=False),
              log=lines.append)
    assert sum("finished earlier, kept" in ln for ln in lines) == 4
    assert sum(ln.startswith("pretraining unmixed-s") for ln in lines) == 2
    assert "mixup: false" in (out / "pretrain" / "unmixed-s0" / "config.yaml").read_text()
    report = (out / "study.md").read_text()
    assert "unmixed" in json.loads((out / "study.json").read_text())["scores"]["knn"]
    assert "unmixed − best baseline" in report or "unmixed" in report
    assert "# Embedding" not in report  # embed=False
    # the same row name with other settings is refused, naming the difference
    with pytest.raises(Exception, match="mixup"):
        run_study(StudyConfig(store=str(store), out=str(out), methods=["unmixed=uscl+mixup=true"], seeds=[0],
                              epochs=1, image_size=32, batch_size=4, modes=["knn"], folds=2, device="cpu",
                              resume=True))


def test_study_settings_are_checked():
    from uscl.study import Variant, parse_variant

    with pytest.raises(ConfigError, match="methods"):
        StudyConfig(store="s", methods=["byol"]).validate()
    assert parse_variant("simclr") == Variant("simclr", "simclr")
    assert parse_variant("near=uscl+dataset.max_gap=4+mixup=false") == Variant(
        "near", "uscl", (("dataset.max_gap", "4"), ("mixup", "false")))
    for bad, why in [("near=uscl+dataset.max_gapp=4", "max_gapp"), ("uscl+mixup=false", "name of its own"),
                     ("x=uscl+mixup", "KEY=VALUE"), ("x=uscl+seed=3", "set by the study"),
                     ("x=byol", "byol")]:
        with pytest.raises(ConfigError, match=why):
            parse_variant(bad)
    with pytest.raises(ConfigError, match="its own name"):
        StudyConfig(store="s", methods=["a=uscl+mixup=false", "a=simclr"]).validate()
    with pytest.raises(ConfigError, match="label_fractions"):
        StudyConfig(store="s", label_fractions=[0.0]).validate()


def test_segmentation_study_scores_mean_dice_on_the_masked_videos(mask_store, tmp_path):
    out = tmp_path / "seg_study"
    res = run_study(StudyConfig(store=str(mask_store), out=str(out), task="segment", methods=["uscl"], seeds=[0, 1],
                                epochs=1, image_size=32, batch_size=4, modes=["frozen"], folds=3, finetune_epochs=1,
                                max_frames_per_video=2, device="cpu"), log=lambda *a: None)
    table = res.tables["frozen"]
    assert sorted(table) == ["random", "uscl-selfsup"] and len(table["uscl-selfsup"]) == 6  # 2 seeds x 3 folds
    dice = json.loads((out / "eval" / "frozen" / "uscl-selfsup-s0" / "metrics.json").read_text())["folds"]
    assert table["uscl-selfsup"][(0, 0)] == pytest.approx(dice[0]["summary"]["macro"]["dice"])
    report = (out / "study.md").read_text()
    assert "Task segment" in report and "mean Dice" in report
    with pytest.raises(ConfigError) as exc:
        StudyConfig(store="s", task="segment", modes=["linear"]).validate()
    assert exc.value.param == "modes"
