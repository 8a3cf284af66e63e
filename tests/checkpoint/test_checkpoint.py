"""Safetensors + JSON weights, the training state, backbone export for plain torchvision."""

import json
import pickle

import pytest
import torch
from torchvision.models import resnet18

from uscl.checkpoint import (
    export_backbone, load_backbone, load_train_state, load_weights, save_train_state, save_weights,
)
from uscl.errors import UsclError
from uscl.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet18", out_dim=32, num_classes=3)


def test_weights_round_trip_exactly(tmp_path, model):
    path = save_weights(tmp_path / "w", model.state_dict(), {"arch": "resnet18", "epoch": 3})
    assert path.name == "w.safetensors" and (tmp_path / "w.json").is_file()
    state, meta = load_weights(tmp_path / "w.safetensors")
    assert meta == {"arch": "resnet18", "epoch": 3}
    ref = model.state_dict()
    assert set(state) == set(ref)
    assert all(torch.equal(state[k], ref[k]) for k in ref)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temp files left
    (tmp_path / "w.json").unlink()  # the header keeps a copy of the metadata
    assert load_weights(tmp_path / "w.safetensors")[1] == {"arch": "resnet18", "epoch": 3}


def test_wrapper_prefixes_are_stripped(tmp_path, model):
    wrapped = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    save_weights(tmp_path / "w.safetensors", wrapped, {})
    state, _ = load_weights(tmp_path / "w.safetensors")
    assert set(state) == set(model.state_dict())


def test_train_state_round_trip_without_unpickling(tmp_path, model):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32))[1].sum().backward()
    opt.step()
    state = {"epoch": 2, "optimizer": opt.state_dict(), "rng": {"torch": torch.get_rng_state()}, "metrics": [{"a": 1.0}]}
    save_train_state(tmp_path / "s.pt", state)
    back = load_train_state(tmp_path / "s.pt")
    assert back["epoch"] == 2 and back["metrics"] == [{"a": 1.0}]
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])
    opt2 = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_train_state_refuses_arbitrary_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(UsclError, match="weights_only"):
        load_train_state(path)


def test_non_safetensors_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UsclError, match="not a readable safetensors"):
        load_weights(path)
    with pytest.raises(UsclError, match="not found"):
        load_weights(tmp_path / "absent.safetensors")


def test_exported_backbone_loads_into_plain_torchvision(tmp_path, model):
    path = export_backbone(model, tmp_path / "backbone.safetensors", {"method": "uscl"})
    meta = json.loads((tmp_path / "backbone.json").read_text())
    assert meta["arch"] == "resnet18" and meta["feature_dim"] == 512 and meta["method"] == "uscl"
    state, _ = load_weights(path)
    assert not any(k.startswith(("fc.", "backbone.", "projection.", "classifier.")) for k in state)
    net = resnet18()
    result = net.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys
    net.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    model.eval(), net.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), model.backbone(x))
    # a run folder resolves to its backbone
    sd, meta2 = load_backbone(tmp_path)
    assert set(sd) == set(state) and meta2["arch"] == "resnet18"
    sd, _ = load_backbone(tmp_path / "backbone.json", arch="resnet18")
    assert set(sd) == set(state)


def test_load_backbone_errors_name_the_problem(tmp_path, model):
    export_backbone(model, tmp_path / "backbone.safetensors", {})
    with pytest.raises(UsclError, match="resnet18 backbone, but resnet50"):
        load_backbone(tmp_path, arch="resnet50")
    state, meta = load_weights(tmp_path / "backbone.safetensors")
    del state["layer4.1.conv2.weight"]
    state["extra.weight"] = torch.zeros(1)
    save_weights(tmp_path / "broken" / "backbone.safetensors", state, meta)
    with pytest.raises(UsclError) as err:
        load_backbone(tmp_path / "broken")
    assert "missing keys (1): layer4.1.conv2.weight" in str(err.value)
    assert "unexpected keys (1): extra.weight" in str(err.value)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(UsclError, match="no backbone.safetensors"):
        load_backbone(tmp_path / "empty_run")
