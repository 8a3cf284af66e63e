import json

import pytest

from uscl.cli import main
from uscl.errors import UsclError
from uscl.report import report


def test_compare_runs_inits_on_the_same_folds_and_reports(make_store, tmp_path, capsys):
    store = make_store(n_videos=6, frames=2)
    out = tmp_path / "cmp"
    rc = main(["compare", "--store", str(store), "--out", str(out), "--init", "random", "--init", "knn10=random",
               "--folds", "2", "--epochs", "1", "--image-size", "32", "--batch-size", "8", "--mode", "linear"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| init | frame acc" in printed and "| knn10 |" in printed
    comp = json.loads((out / "comparison.json").read_text())
    assert comp["baseline"] == "random" and comp["same_folds"]
    assert set(comp["runs"]) == {"random", "knn10"}
    # both inits used exactly the shared folds
    shared = json.loads((out / "splits.json").read_text())["folds"]
    for name in ("random", "knn10"):
        assert json.loads((out / name / "splits.json").read_text())["folds"] == shared
    pair = comp["paired_vs_baseline"]["knn10"]["frame"]["accuracy"]
    assert pair["n"] == 2 and pair["diff"] == [0.0, 0.0]  # same seed, same random init: identical folds
    for f in ("comparison.md", "report.md", "metrics.json", "fold_accuracy.png", "confusion_random.png",
              "roc_knn10.png"):
        assert (out / f).stat().st_size > 0, f
    md = (out / "report.md").read_text()
    assert "Paired per-fold difference vs **random**" in md and "![fold_accuracy](fold_accuracy.png)" in md
    # a single run is reportable on its own, recomputed from its predictions
    rc = main(["report", str(out / "random")])
    assert rc == 0
    m = json.loads((out / "random" / "metrics.json").read_text())
    assert m["summary"]["frame"]["accuracy"]["mean"] == comp["runs"]["random"]["summary"]["frame"]["accuracy"]["mean"]
    assert (out / "random" / "confusion.png").is_file() and (out / "random" / "report.md").is_file()
    # existing results are not overwritten
    assert main(["compare", "--store", str(store), "--out", str(out), "--init", "random", "--folds", "2"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_report_marks_selection_on_test_and_refuses_other_folders(make_store, tmp_path):
    from uscl.finetune.config import SELECTED_ON_TEST

    store = make_store(n_videos=6, frames=2)
    rc = main(["finetune", "--store", str(store), "--out", str(tmp_path / "run"), "--folds", "2", "--epochs", "2",
               "--image-size", "32", "--batch-size", "8", "--select-on-test"])
    assert rc == 0
    md = report(tmp_path / "run").read_text()
    assert md.count(SELECTED_ON_TEST) >= 3  # warning banner, table row, per-init section
    assert (tmp_path / "run" / "training_curves.png").is_file()
    with pytest.raises(UsclError, match="neither a fine-tuning run"):
        report(tmp_path)
