"""What `uscl compare` prints: the shared folds once, each init's results."""

from uscl.cli import main
from uscl.finetune import FinetuneConfig
from uscl.report import compare


def test_compare_prints_the_shared_split_once(make_store, tmp_path, capsys):
    store = make_store(n_videos=6, frames=2, size=32)
    lines: list[str] = []
    base = FinetuneConfig(store=str(store), mode="knn", knn_k=1, folds=2, image_size=32, device="cpu")
    compare(base, ["random", "other=random"], tmp_path / "cmp", log=lambda msg: lines.extend(str(msg).splitlines()))
    for fold in (0, 1):
        split_lines = [ln for ln in lines if ln.strip().startswith(f"fold {fold}: train")]
        assert len(split_lines) == 1, split_lines  # printed for the comparison, not again per init
    assert sum("folds (" in ln and "classes:" in ln for ln in lines) == 1
    # each init still says it runs, on the folds shown above
    runs = [ln for ln in lines if ln.startswith("finetune ")]
    assert len(runs) == 2 and all(ln.endswith("; the folds above") for ln in runs)
    # the CLI prints it once too
    assert main(["compare", "--store", str(store), "--out", str(tmp_path / "cli"), "--init", "random",
                 "--init", "other=random", "--folds", "2", "--mode", "knn", "--image-size", "32"]) == 0
    out = capsys.readouterr().out
    assert out.count("fold 0: train") == 1 and out.count("fold 1: train") == 1


def test_finetune_alone_still_prints_its_split(make_store, tmp_path):
    from uscl.finetune.train import finetune

    store = make_store(n_videos=6, frames=2, size=32)
    lines: list[str] = []
    finetune(FinetuneConfig(store=str(store), out=str(tmp_path / "ft"), mode="knn", knn_k=1, folds=2, image_size=32,
                            device="cpu"), log=lambda msg: lines.extend(str(msg).splitlines()))
    assert sum(ln.strip().startswith("fold 0: train") for ln in lines) == 1
