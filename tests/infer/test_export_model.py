"""`uscl export`: TorchScript, ONNX and torchvision safetensors give the original model's outputs."""

import json

import numpy as np
import pytest
import torch

from uscl.cli import main
from uscl.infer import load_model

CLASSES = ["covid", "pneumonia", "regular"]
SIZE = 32
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _save_folds(run):
    """A fine-tuned model as `uscl finetune` saves it (keys backbone.*/head.*, JSON metadata), random weights
    and non-trivial BatchNorm statistics, so eval-mode BatchNorm is part of what must be reproduced."""
    from uscl.checkpoint import save_weights
    from uscl.models import FinetunedClassifier, build_backbone

    torch.manual_seed(0)
    backbone, dim = build_backbone("resnet18")
    model = FinetunedClassifier(backbone, dim, len(CLASSES))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    meta = {"kind": "uscl-finetuned", "arch": "resnet18", "classes": CLASSES, "num_classes": 3, "image_size": SIZE,
            "channels": 1, "out_channels": 3, "mean": 0.5, "std": 0.25, "mode": "full", "head": "linear",
            "store_options": {"size": 48, "channels": "grey", "fps": 3.0, "max_frames": 30, "crop": True},
            "init": "random", "init_name": "random"}
    for k in (0, 1):
        if k:  # another fold: other weights
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1 + 0.2 * torch.randn_like(p))
        save_weights(run / f"fold{k}" / "model.safetensors", model.state_dict(), {**meta, "fold": k})
        (run / f"fold{k}" / "metrics.json").write_text('{"fold": %d}' % k)  # a finished fold, as finetune leaves it


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export") / "ft"
    _save_folds(root)
    return root


def _x(n=3, seed=5):
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_torchscript_export_matches_for_a_fold_and_the_ensemble(run, tmp_path, capsys):
    x = _x()
    for fold, name in ((0, "fold0"), (None, "ens")):
        args = ["export", str(run), str(tmp_path / name), "--format", "torchscript"]
        assert main(args + (["--fold", "0"] if fold is not None else [])) == 0
        assert "max abs difference" in capsys.readouterr().out
        model = load_model(run, fold).module().eval()
        loaded = torch.jit.load(str(tmp_path / f"{name}.pt"))
        with torch.no_grad():
            ref, got = model(x), loaded(x)  # another batch size than the one traced
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.sum(1).numpy(), 1, atol=1e-5)
    meta = json.loads((tmp_path / "ens.json").read_text())
    assert meta["folds"] == [0, 1] and meta["output"]["kind"] == "probabilities"
    assert meta["input"]["shape"] == ["N", 3, SIZE, SIZE] and meta["classes"] == CLASSES
    assert meta["store_options"]["crop"] is True and meta["mean"] == 0.5 and meta["std"] == 0.25
    assert meta["verification"]["max_abs_diff"] <= 1e-4
    # existing files are not replaced silently
    assert main(["export", str(run), str(tmp_path / "ens"), "--format", "torchscript"]) == 2


def test_onnx_export_matches_under_onnxruntime(run, tmp_path):
    import onnxruntime as ort

    assert main(["export", str(run), str(tmp_path / "m.onnx"), "--format", "onnx", "--fold", "1"]) == 0
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = _x(5)
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = load_model(run, 1).module().eval()(x).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert json.loads((tmp_path / "m.json").read_text())["verification"]["runtime"].startswith("onnxruntime")


def test_safetensors_export_loads_into_plain_torchvision(run, tmp_path, capsys):
    from safetensors.torch import load_file
    from torchvision.models import resnet18

    assert main(["export", str(run), str(tmp_path / "w"), "--format", "safetensors", "--fold", "0"]) == 0
    sd = load_file(str(tmp_path / "w.safetensors"))
    assert "fc.weight" in sd and "conv1.weight" in sd and not any(k.startswith(("backbone.", "head.")) for k in sd)
    net = resnet18(num_classes=3)
    net.load_state_dict(sd, strict=True)
    net.eval()
    x = _x()
    with torch.no_grad():
        ref = load_model(run, 0).module().eval()(x)
        torch.testing.assert_close(torch.softmax(net(x), 1), ref, rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "w.json").read_text())["output"]["kind"] == "logits"
    # an ensemble is not one torchvision network
    assert main(["export", str(run), str(tmp_path / "e"), "--format", "safetensors"]) == 2
    assert "--fold" in capsys.readouterr().err and not (tmp_path / "e.safetensors").exists()
