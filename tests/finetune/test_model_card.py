"""Every fine-tuned run and every export writes MODEL_CARD.md + model_card.json that say what is true."""

import json

import numpy as np
import pytest
import torch

from uscl.finetune.config import SELECTED_ON_TEST, FinetuneConfig
from uscl.finetune.model_card import UNKNOWN
from uscl.finetune.pretraining_labels import LEAKAGE_NOTE
from uscl.finetune.train import finetune
from uscl.utils.intervals import t_interval

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
QUIET = dict(log=lambda *a: None)


def _cfg(store, out, **kw):
    return FinetuneConfig(**{**dict(store=str(store), out=str(out), folds=2, epochs=1, image_size=32,
                                    batch_size=8, device="cpu", mode="paper"), **kw})


def _card(folder, stem=""):
    js = json.loads((folder / f"{stem}model_card.json").read_text())
    md = (folder / f"{stem}MODEL_CARD.md").read_text()
    return js, md


def _run_snippet(card, folder, monkeypatch):
    """Run the card's loading code where the card lies: it must work as written, without uscl."""
    monkeypatch.chdir(folder)
    scope: dict = {}
    exec(card["loading"]["snippet"], scope)
    return scope


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny fine-tuned run (random init, paper mode, 2 folds, 1 epoch) on a 6-video store without patients."""
    from uscl.store import StoreWriter

    root = tmp_path_factory.mktemp("store")
    writer = StoreWriter(root, options={"size": 32, "channels": "grey", "fps": 10.0, "crop": False})
    rng = np.random.default_rng(0)
    for i in range(6):
        arr = np.clip(rng.normal(100 + 40 * (i % 2), 20, (3, 32, 32, 1)), 0, 255).astype(np.uint8)
        writer.add_video(f"v{i:03d}", arr, label=("covid", "regular")[i % 2], fps=10.0)
    writer.write_manifest()
    res = finetune(_cfg(root, tmp_path_factory.mktemp("ft") / "run"), **QUIET)
    return root, res


def test_finetune_writes_a_card_that_matches_the_run(run, monkeypatch):
    store, res = run
    card, md = _card(res.run_dir)
    m = res.metrics
    assert card["task"]["classes"] == m["classes"] == ["covid", "regular"]
    assert card["evaluation"]["folds"] == 2 and card["evaluation"]["folds_run"] == [0, 1]
    assert card["evaluation"]["mode"] == "paper" and card["evaluation"]["epochs"] == 1
    assert card["evaluation"]["learning_rate"] == 0.01 and card["evaluation"]["marks"] == []
    assert card["init"] == {"spec": "random", "name": "random", "kind": "random"}
    for level in ("video", "frame"):
        values = [f[level]["accuracy"] for f in m["folds"]]
        iv = t_interval(values)
        got = card["metrics"][f"{level}_accuracy"]
        assert got["values"] == values and got["n_folds"] == 2
        assert got["mean"] == pytest.approx(iv.mean) and got["ci_low"] == pytest.approx(iv.lo)
        assert got["ci_high"] == pytest.approx(iv.hi)
    assert card["metrics"]["pooled"]["video_accuracy"] == m["summary"]["pooled"]["video"]["accuracy"]
    data = card["data"]
    assert data["store_id"] == m["store_id"] and data["videos"] == 6 and data["frames"] == 18
    assert data["per_class"]["covid"] == {"videos": 3, "frames": 9, "patients": UNKNOWN, "videos_without_patient": 3}
    assert data["prepare_options"]["fps"] == 10.0
    pp = card["preprocessing"]
    assert (pp["image_size"], pp["mean"], pp["std"]) == (32, 0.5, 0.25) and "no crop" in pp["prepare"]
    assert "not a medical device" in card["intended_use"]["not_a_medical_device"]
    assert "research only" in md and "covid, regular" in md and "video accuracy" in md
    assert f"{card['metrics']['video_accuracy']['mean']:.3f}" in md and "| covid | 3 | 9 | unknown |" in md
    # the torchvision + safetensors lines give the probabilities uscl's own loader gives
    scope = _run_snippet(card, res.run_dir, monkeypatch)
    from uscl.infer import load_model

    ref = load_model(res.run_dir, 0).module().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scope["net"](x).softmax(1), ref(x), atol=1e-5, rtol=1e-4)
    assert scope["probs"].shape == (1, 2)


def test_selected_on_test_and_pretraining_marks_are_on_the_card(make_store, tmp_path):
    from uscl.pretrain import PretrainConfig, pretrain
    from uscl.pretrain.config import DatasetConfig

    store = make_store(n_videos=6, frames=3, size=32, classes=("a", "b"))
    pre = pretrain(PretrainConfig(store=str(store), out=str(tmp_path / "pre"), method="uscl", epochs=1,
                                  batch_size=4, device="cpu", seed=3,
                                  dataset=DatasetConfig(image_size=32, valid_size=0.25)))
    res = finetune(_cfg(store, tmp_path / "ft", init=f"checkpoint:{pre.run_dir}", select_on_test=True,
                        allow_pretraining_labels=True), **QUIET)
    card, md = _card(res.run_dir)
    assert card["evaluation"]["selected_on_test"] is True
    assert card["evaluation"]["marks"][0] == SELECTED_ON_TEST and LEAKAGE_NOTE in card["evaluation"]["marks"][1]
    assert SELECTED_ON_TEST in md and LEAKAGE_NOTE in md
    p = card["init"]["pretraining"]
    assert card["init"]["spec"] == f"checkpoint:{pre.run_dir}" and card["init"]["kind"] == "checkpoint"
    assert (p["method"], p["epochs"], p["seed"], p["store"]) == ("uscl", 1, 3, str(store))
    assert p["store_id"] == res.metrics["store_id"] and p["labelled_videos"] >= 1


def test_exports_write_a_card_with_the_loading_code_of_their_format(run, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from uscl.infer.export import export_model

    _, res = run
    export_model(res.run_dir, tmp_path / "fold0.onnx", "onnx", fold=0)
    card, md = _card(tmp_path, "fold0.")
    assert card["export"]["format"] == "onnx" and card["export"]["folds"] == [0]
    assert "fold 0's own test videos" in card["export"]["metrics_scope"]
    assert card["loading"]["how"] == "onnxruntime" and "ort.InferenceSession(\"fold0.onnx\"" in md
    assert card["metrics"]["video_accuracy"]["values"] == [f["video"]["accuracy"] for f in res.metrics["folds"]]
    scope = _run_snippet(card, tmp_path, monkeypatch)
    assert scope["probs"].shape == (1, 2) and np.allclose(scope["probs"].sum(1), 1, atol=1e-5)

    out = tmp_path / "ens"
    out.mkdir()
    export_model(res.run_dir, out, "torchscript")  # a folder: model.pt, MODEL_CARD.md
    card, md = _card(out)
    assert card["export"]["folds"] == [0, 1] and "no held-out estimate" in card["export"]["metrics_scope"]
    assert "torch.jit.load(\"model.pt\"" in md
    assert _run_snippet(card, out, monkeypatch)["probs"].shape == (1, 2)
