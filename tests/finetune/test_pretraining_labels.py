"""Fine-tuning refuses an init pretrained with the labels of its test videos (USCL's supervised term)."""

import json

import pytest

from uscl.errors import UsclError
from uscl.finetune import FinetuneConfig
from uscl.finetune.train import finetune
from uscl.pretrain import PretrainConfig, pretrain
from uscl.pretrain.config import DatasetConfig
from uscl.report import compare, report


def _pretrain(store, out, method):
    return pretrain(PretrainConfig(store=str(store), out=str(out), method=method, epochs=1, batch_size=4,
                                   device="cpu", dataset=DatasetConfig(image_size=32, valid_size=0.25)))


def test_labels_seen_in_pretraining_are_refused_or_reported(make_store, tmp_path):
    store = make_store(n_videos=9, frames=3, size=32, labelled=1.0)
    sup = _pretrain(store, tmp_path / "sup", "uscl")
    listing = json.loads((sup.run_dir / "labelled_videos.json").read_text())
    assert listing["method"] == "uscl" and listing["videos"]
    assert all(set(v) == {"video_id", "source", "content_hash"} for v in listing["videos"])
    base = dict(store=str(store), mode="knn", knn_k=1, folds=3, image_size=32, device="cpu")

    with pytest.raises(UsclError, match="allow_pretraining_labels"):
        finetune(FinetuneConfig(out=str(tmp_path / "ft"), init=f"checkpoint:{sup.run_dir}", **base), log=lambda *a: None)
    assert not (tmp_path / "ft").exists() or not any((tmp_path / "ft").iterdir())
    with pytest.raises(UsclError, match="pretrained with the labels of"):
        compare(FinetuneConfig(**base), ["random", f"sup=checkpoint:{sup.run_dir}"], tmp_path / "cmp",
                log=lambda *a: None)
    assert not (tmp_path / "cmp").exists() or not any((tmp_path / "cmp").iterdir())  # nothing ran or was written

    res = finetune(FinetuneConfig(out=str(tmp_path / "ft2"), init=f"checkpoint:{sup.run_dir}",
                                  allow_pretraining_labels=True, **base), log=lambda *a: None)
    leak = res.metrics["pretraining_label_leakage"]
    assert leak["videos"] >= 1 and "optimistic" in res.metrics["warning"]
    assert "PRETRAINED WITH TEST LABELS" in report(tmp_path / "ft2").read_text()

    # self-supervised pretraining used no labels: nothing to refuse
    selfsup = _pretrain(store, tmp_path / "selfsup", "uscl-selfsup")
    assert json.loads((selfsup.run_dir / "labelled_videos.json").read_text())["videos"] == []
    ok = finetune(FinetuneConfig(out=str(tmp_path / "ft3"), init=f"checkpoint:{selfsup.run_dir}", **base),
                  log=lambda *a: None)
    assert ok.metrics["pretraining_label_leakage"] is None


def test_same_names_are_not_the_same_videos(tmp_path):
    """Two synthetic sets (different seeds) share file names; only the same files count."""
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth import generate

    for name, seed in (("a", 0), ("b", 1)):
        generate(tmp_path / name, videos_per_class=2, frames=4, size=32, seed=seed)
        prepare(tmp_path / name, tmp_path / f"store_{name}", PrepareOptions(size=32),
                labels_csv=tmp_path / name / "labels.csv", show_progress=False)
    prepare(tmp_path / "a", tmp_path / "store_a24", PrepareOptions(size=24), labels_csv=tmp_path / "a" / "labels.csv",
            show_progress=False)  # the same files at another size
    sup = _pretrain(tmp_path / "store_a", tmp_path / "sup", "uscl")
    base = dict(mode="knn", knn_k=1, folds=2, device="cpu", init=f"checkpoint:{sup.run_dir}")
    ok = finetune(FinetuneConfig(store=str(tmp_path / "store_b"), out=str(tmp_path / "ft_b"), image_size=32, **base),
                  log=lambda *a: None)
    assert ok.metrics["pretraining_label_leakage"] is None
    with pytest.raises(UsclError, match="pretrained with the labels of"):
        finetune(FinetuneConfig(store=str(tmp_path / "store_a24"), out=str(tmp_path / "ft_a"), image_size=24, **base),
                 log=lambda *a: None)
