"""`uscl pipeline` at toy sizes: your videos in, report out, and no test label in a backbone."""

import json

from uscl.cli import main


def _videos(root, seed):
    from uscl.synth import generate

    generate(root, videos_per_class=3, frames=5, size=40, seed=seed)
    return root


def test_pipeline_on_one_folder_pretrains_without_labels(tmp_path, capsys):
    videos = _videos(tmp_path / "videos", 0)
    args = ["pipeline", str(videos), "--labels", str(videos / "labels.csv"), "--out", str(tmp_path / "run"),
            "--image-size", "32", "--pretrain-epochs", "1", "--pretrain-batch", "4", "--finetune-mode", "knn",
            "--folds", "3", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "USCL runs without its supervised term" in out and "| uscl |" in out
    run = tmp_path / "run"
    assert json.loads((run / "pretrain" / "uscl" / "labelled_videos.json").read_text())["method"] == "uscl-selfsup"
    assert (run / "compare" / "report.md").is_file() and not (run / "pretrain_store").exists()
    assert main(args) == 2  # a second run refuses the non-empty folder


def test_pipeline_with_separate_pretraining_videos_uses_their_labels(tmp_path):
    from uscl.pipeline import PipelineConfig, run_pipeline

    videos, other = _videos(tmp_path / "videos", 0), _videos(tmp_path / "other", 7)
    res = run_pipeline(PipelineConfig(
        videos=str(videos), labels=str(videos / "labels.csv"), pretrain_videos=str(other),
        out=str(tmp_path / "run"), methods=["uscl"], image_size=32,
        pretrain_epochs=1, pretrain_batch=4, finetune_mode="knn", folds=3, device="cpu"), log=lambda *a: None)
    listing = json.loads((res.pretrain_runs["uscl"] / "labelled_videos.json").read_text())
    assert listing["method"] == "uscl" and listing["videos"]  # labels of the other set, never of a test video
    assert "| uscl |" in res.table and res.report.is_file()


class Killed(Exception):
    pass


def test_pipeline_resume_keeps_finished_steps(tmp_path, monkeypatch):
    import pytest

    import uscl.pipeline as pipeline
    from uscl.errors import UsclError

    videos = _videos(tmp_path / "videos", 0)
    cfg = dict(videos=str(videos), labels=str(videos / "labels.csv"), out=str(tmp_path / "run"),
               methods=["uscl", "simclr"], image_size=32, pretrain_epochs=1, pretrain_batch=4, finetune_mode="knn",
               folds=3, device="cpu")
    real_step = pipeline._pretrain_step

    def killed_at_simclr(run_dir, settings, resume, log):
        if settings["method"] == "simclr":
            raise Killed()
        return real_step(run_dir, settings, resume, log)

    monkeypatch.setattr(pipeline, "_pretrain_step", killed_at_simclr)
    with pytest.raises(Killed):
        pipeline.run_pipeline(pipeline.PipelineConfig(**cfg), log=lambda *a: None)
    monkeypatch.setattr(pipeline, "_pretrain_step", real_step)
    first = (tmp_path / "run" / "pretrain" / "uscl" / "metrics.csv").read_bytes()
    lines = []
    with pytest.raises(UsclError, match="not empty"):
        pipeline.run_pipeline(pipeline.PipelineConfig(**cfg), log=lines.append)  # without --resume: refused
    with pytest.raises(UsclError, match="pretrain_epochs"):
        pipeline.run_pipeline(pipeline.PipelineConfig(**{**cfg, "pretrain_epochs": 2}, resume=True), log=lines.append)
    res = pipeline.run_pipeline(pipeline.PipelineConfig(**cfg, resume=True), log=lines.append)
    assert (tmp_path / "run" / "pretrain" / "uscl" / "metrics.csv").read_bytes() == first  # not retrained
    assert "| simclr |" in res.table and any("resuming" in line for line in lines)


def test_pipeline_labels_follow_the_prepare_rule(tmp_path, capsys):
    """No --labels: VIDEOS/labels.csv if there is one (as `uscl prepare`), else the parent folder names."""
    import pytest

    from uscl.pipeline import labels_options
    from uscl.store import FrameStore
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth import generate

    videos = tmp_path / "videos"
    generate(videos, videos_per_class=1, frames=2, size=32, seed=0)
    assert labels_options(videos, "other.csv") == ("other.csv", None)  # an explicit CSV wins
    assert labels_options(videos, None) == (None, None)  # prepare finds videos/labels.csv and says so
    csv_path, label_from = labels_options(videos, None)
    summary = prepare(videos, tmp_path / "s1", PrepareOptions(size=32), labels_csv=csv_path, label_from=label_from,
                      show_progress=False)
    assert summary.labels_found and "covid" in {v.label for v in FrameStore(tmp_path / "s1").videos}
    (videos / "labels.csv").unlink()
    (videos / "covid").rename(videos / "folder_a")  # folder names now differ from the CSV labels
    assert labels_options(videos, None) == (None, "parent")
    csv_path, label_from = labels_options(videos, None)
    prepare(videos, tmp_path / "s2", PrepareOptions(size=32), labels_csv=csv_path, label_from=label_from,
            show_progress=False)
    assert "folder_a" in {v.label for v in FrameStore(tmp_path / "s2").videos}
    with pytest.raises(SystemExit):
        main(["pipeline", "--help"])
    assert "VIDEOS/labels.csv" in " ".join(capsys.readouterr().out.split())
