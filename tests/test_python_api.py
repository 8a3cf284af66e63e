"""The README's notebook walkthrough, at toy sizes: synth -> prepare -> pretrain -> compare -> predict."""

from pathlib import Path


def test_notebook_walkthrough(tmp_path):
    from uscl.finetune import FinetuneConfig
    from uscl.report import compare
    from uscl.infer import predict, write_outputs
    from uscl.pretrain import PretrainConfig, pretrain
    from uscl.pretrain.config import DatasetConfig
    from uscl.store import FrameStore
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth import generate

    root = Path(tmp_path)
    generate(root / "videos", videos_per_class=3, frames=6, size=48, seed=0)
    prepare(root / "videos", root / "store", PrepareOptions(size=32), labels_csv=root / "videos" / "labels.csv",
            show_progress=False)
    store = FrameStore(root / "store")
    assert len(store) == 9 and store.classes == ["covid", "pneumonia", "regular"]

    run = pretrain(PretrainConfig(store=str(root / "store"), out=str(root / "pre"), method="uscl-selfsup",
                                  epochs=2, batch_size=4, device="cpu", select="last",
                                  dataset=DatasetConfig(image_size=32)))
    assert run.backbone_path.is_file() and len(run.metrics) == 2

    base = FinetuneConfig(store=str(root / "store"), mode="linear", folds=3, image_size=32, device="cpu")
    result = compare(base, ["random", f"uscl=checkpoint:{run.run_dir}"], root / "compare", log=lambda *a: None)
    assert "| uscl |" in result.table and result.report.is_file()

    preds = predict(root / "compare" / "uscl", sorted((root / "videos").rglob("*.mp4"))[:2], device="cpu",
                    show_progress=False)
    assert [len(r.probs) for r in preds.results] == [3, 3] and preds.results[0].label in store.classes
    files = write_outputs(preds, root / "predictions")
    assert (root / "predictions" / "videos.csv").is_file() and files
