"""Every backbone through a tiny pretrain → finetune (paper mode, fold 0 of 2) → predict --explain → export
(torchscript, onnx, torchvision safetensors, each against the eager model), on synth videos.

Sizes are the smallest that run every family (32 px: DenseNet and EfficientNet
end at 1x1, which is enough); the figures are meaningless, the plumbing is what is checked.
"""

import json

import numpy as np
import pytest
import torch

from uscl.cli import main
from uscl.models import ARCHITECTURES

SIZE = 32
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """`uscl synth` (2 videos per class, 4 frames, 40 px) → `uscl prepare` at 32 px."""
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth import generate

    root = tmp_path_factory.mktemp("backbones")
    generate(root / "synth", videos_per_class=2, frames=4, size=40, fps=4.0, seed=0)
    prepare(root / "synth", root / "store", PrepareOptions(size=SIZE), labels_csv=root / "synth" / "labels.csv",
            show_progress=False)
    return root


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_pretrain_finetune_predict_export(arch, synth, tmp_path, capsys):
    from uscl.infer import load_model
    from uscl.infer.gradcam import cam_layer_name

    store, pre, ft = synth / "store", tmp_path / "pre", tmp_path / "ft"
    assert main(["pretrain", "--store", str(store), "--out", str(pre), "--arch", arch, "--method", "uscl-selfsup",
                 "--epochs", "1", "--batch-size", "4", "--image-size", str(SIZE), "--device", "cpu"]) == 0
    assert json.loads((pre / "backbone.json").read_text())["arch"] == arch
    assert main(["finetune", "--store", str(store), "--out", str(ft), "--init", f"checkpoint:{pre}", "--mode", "paper",
                 "--folds", "2", "--only-folds", "0", "--epochs", "1", "--image-size", str(SIZE), "--batch-size", "8",
                 "--max-frames-per-video", "2", "--device", "cpu"]) == 0
    meta = json.loads((ft / "fold0" / "model.json").read_text())
    assert meta["arch"] == arch and meta["trainable"][-1] == "head" and len(meta["trainable"]) > 1
    video = next((synth / "synth" / "covid").glob("*.mp4"))
    assert main(["predict", str(ft), str(video), "--fold", "0", "--explain", "--out", str(tmp_path / "pred"),
                 "--device", "cpu", "--quiet"]) == 0
    explain = json.loads((tmp_path / "pred" / "predictions.json").read_text())["explain"]
    assert explain["layer"] == cam_layer_name(arch)
    cam = np.load(tmp_path / "pred" / "explain" / video.stem / "cam.npy")
    assert cam.shape[1:] == (SIZE, SIZE) and 0 <= cam.min() and cam.max() <= 1
    capsys.readouterr()
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    eager = load_model(ft, 0)
    with torch.no_grad():
        probs, logits = eager.module().eval()(x), eager.folds[0].net.logits(x)
    for fmt in ("torchscript", "onnx", "safetensors"):
        out = tmp_path / f"m_{fmt}"
        assert main(["export", str(ft), str(out), "--format", fmt, "--fold", "0"]) == 0, capsys.readouterr().err
        assert json.loads(out.with_suffix(".json").read_text())["arch"] == arch
    with torch.no_grad():
        got = torch.jit.load(str(tmp_path / "m_torchscript.pt"))(x)
    torch.testing.assert_close(got, probs, rtol=0, atol=1e-5)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "m_onnx.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], probs.numpy(), atol=1e-5)
    _check_torchvision(tmp_path / "m_safetensors.safetensors", arch, x, logits)


def _check_torchvision(path, arch, x, logits):
    """The safetensors file loads strictly into the plain torchvision model and gives the same logits."""
    import torchvision
    from safetensors.torch import load_file

    net = getattr(torchvision.models, arch)(weights=None, num_classes=logits.shape[1])
    net.load_state_dict(load_file(str(path)), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), logits, rtol=0, atol=1e-4)
