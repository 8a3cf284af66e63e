"""The demo end to end at toy sizes: a small study whose table names every init, with CIs."""

import json

from uscl.cli import main
from uscl.demo import DemoConfig, run_demo


def test_demo_is_a_small_study_and_keeps_pretraining_videos_out_of_the_folds(tmp_path):
    cfg = DemoConfig(out=str(tmp_path / "demo"), videos_per_class=3, pretrain_videos_per_class=3, frames=6,
                     synth_size=48, store_size=40, image_size=32, pretrain_epochs=1, pretrain_batch=4,
                     seeds=[0, 1], modes=["linear"], folds=3, device="cpu")
    lines = []
    result = run_demo(cfg, log=lines.append)
    for name in ("| random |", "| uscl |", "| simclr |", "95%"):
        assert name in result.table or name in result.report.read_text(), name
    scores = json.loads((result.out / "study" / "study.json").read_text())["scores"]["linear"]
    assert len(scores["uscl"]) == 2 * 3 and {s for s, _, _ in scores["uscl"]} == {0, 1}  # seeds x folds
    # the supervised term used the pretraining set's labels, never the downstream ones
    labelled = json.loads((result.out / "study" / "pretrain" / "uscl-s0" / "labelled_videos.json").read_text())
    assert labelled["videos"]
    from uscl.store import FrameStore

    pre = {v.content_hash for v in FrameStore(result.out / "pretrain_store")}
    down = {v.content_hash for v in FrameStore(result.out / "downstream_store")}
    assert pre and down and not (pre & down)
    assert any("results" in line for line in lines)


def test_demo_refuses_an_existing_folder(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "d")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "d" / "keep.txt").read_text() == "mine"
