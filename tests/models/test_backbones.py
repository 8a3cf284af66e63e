"""Each backbone family: grey input, torchvision keys both ways, ImageNet init, arch checks, paper mode."""

import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

from uscl.errors import UsclError
from uscl.models import ARCHITECTURES, build_backbone, build_classifier, build_model
from uscl.models.families import FAMILIES, submodule

ARCHS = list(ARCHITECTURES)


def _randomise_bn(model):
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("arch", ARCHS)
def test_grey_input_equals_rgb_repeated_input(arch):
    """The grey-aware first convolution: a 1-channel batch = that batch repeated to RGB, forward and gradient."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=3).eval()  # eval: dropout (MobileNet, EfficientNet) off
    fam = FAMILIES[arch]
    conv = submodule(model.backbone, fam.first_conv)
    assert type(conv).__name__ == "GreyAwareConv2d" and conv.weight.shape[1] == 3  # RGB layout kept
    x = torch.randn(2, 1, 32, 32)
    out = {}
    for name, inp in (("grey", x), ("rgb", x.expand(-1, 3, -1, -1).contiguous())):
        model.zero_grad()
        h, z, _ = model(inp)
        z.square().mean().backward()
        out[name] = (h.detach().clone(), conv.weight.grad.clone())
    for a, b in zip(out["grey"], out["rgb"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("arch", ARCHS)
def test_imagenet_init_from_a_local_torchvision_state_dict_and_back(arch, tmp_path):
    """A torchvision state dict initialises the backbone (classifier dropped); the fine-tuned head exported
    under the family's classifier keys loads strictly into the same torchvision model and gives the logits."""
    from uscl.checkpoint.inits import load_init, parse_init
    from uscl.infer.export import torchvision_state
    from uscl.infer.model import ProbabilityModel

    torch.manual_seed(2)
    tv = getattr(torchvision.models, arch)(weights=None, num_classes=3)  # stands in for the ImageNet file
    _randomise_bn(tv)
    path = tmp_path / f"{arch}.pth"
    torch.save(tv.state_dict(), path)
    sd, meta = load_init(parse_init(f"imagenet:{path}"))
    head = FAMILIES[arch].classifier
    assert meta["arch"] == arch and not any(k.startswith(head + ".") for k in sd)
    net = ProbabilityModel(build_classifier(arch, 3, sd, "imagenet")).eval()
    for k, v in net.backbone.state_dict().items():
        assert torch.equal(v, tv.state_dict()[k]), k
    res = getattr(torchvision.models, arch)(weights=None).load_state_dict(net.backbone.state_dict(), strict=False)
    assert sorted(res.missing_keys) == [f"{head}.bias", f"{head}.weight"] and not res.unexpected_keys
    tv.load_state_dict(torchvision_state(net), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tv.eval()(x), net.logits(x), rtol=0, atol=1e-5)


def test_old_torchvision_densenet_files_are_renamed(tmp_path):
    """torchvision's released DenseNet weights name denselayer parts norm.1, conv.2 ...: read as norm1, conv2."""
    from uscl.checkpoint.inits import load_init, parse_init

    sd = torchvision.models.densenet121(weights=None).state_dict()
    old = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in sd.items()}
    assert old.keys() != sd.keys()
    save_file(old, str(tmp_path / "d.safetensors"))
    got, meta = load_init(parse_init(f"imagenet:{tmp_path / 'd.safetensors'}"))
    assert meta["arch"] == "densenet121" and set(got) == {k for k in sd if not k.startswith("classifier.")}


def test_a_file_of_another_arch_names_both(tmp_path, make_store, capsys):
    from uscl.checkpoint.inits import load_init, parse_init
    from uscl.cli import main

    path = tmp_path / "densenet121.pth"
    torch.save(torchvision.models.densenet121(weights=None).state_dict(), path)
    sd, _ = load_init(parse_init(f"imagenet:{path}"))
    with pytest.raises(UsclError, match="densenet121 backbone, but the model is resnet18") as info:
        build_classifier("resnet18", 3, sd, "imagenet")
    assert info.value.param == "arch" and "keys are densenet121's but arch is resnet18" in str(info.value)
    store = make_store(n_videos=6, frames=2)
    assert main(["finetune", "--store", str(store), "--out", str(tmp_path / "ft"), "--init", f"imagenet:{path}",
                 "--arch", "resnet18", "--folds", "2", "--epochs", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "densenet121" in err and "resnet18" in err and "(set with --arch)" in err
    assert not (tmp_path / "ft").exists()


def test_a_checkpoint_of_another_arch_names_both(tmp_path):
    from uscl.checkpoint import load_backbone, save_weights
    from uscl.infer.model import build_fold_net

    net, _ = build_backbone("shufflenet_v2_x1_0")
    save_weights(tmp_path / "bb.safetensors", net.state_dict(), {"arch": "shufflenet_v2_x1_0"})
    with pytest.raises(UsclError, match="shufflenet_v2_x1_0 backbone, but efficientnet_b0 was asked for"):
        load_backbone(tmp_path / "bb.safetensors", "efficientnet_b0")
    model = build_classifier("shufflenet_v2_x1_0", 3)
    meta = {"arch": "resnet18", "classes": ["a", "b", "c"]}
    with pytest.raises(UsclError, match="records arch resnet18, but its weights are a shufflenet_v2_x1_0"):
        build_fold_net(model.state_dict(), meta, "model.safetensors")
    # no recorded arch (an older file): read from the keys
    assert build_fold_net(model.state_dict(), {"classes": ["a", "b", "c"]}, "m").arch == "shufflenet_v2_x1_0"


@pytest.mark.parametrize("arch", ARCHS)
def test_paper_mode_and_layer_decay_follow_the_family(arch):
    from uscl.finetune.modes import param_groups, set_trainable

    model = build_classifier(arch, 3)
    set_trainable(model, "full")
    groups = param_groups(model, 1e-3, 0.5)
    assert len(groups) == 6  # head + five stages, input stage at lr * 0.5**5
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    trainable = set_trainable(model, "paper")
    assert trainable[-1] == "head.bias" and 2 < len(trainable) < len(list(model.parameters())) / 2
    assert all(p.requires_grad for path in FAMILIES[arch].last_block
               for p in submodule(model.backbone, path).parameters())


def test_dense_tasks_take_resnets_only():
    from uscl.models.segmenter import build_segmenter

    seg = build_segmenter("resnet34", 2).eval()
    with torch.no_grad():
        assert seg(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(UsclError, match="task segment needs a ResNet encoder .*resnet34.*mobilenet_v3_large") as info:
        build_segmenter("mobilenet_v3_large", 2)
    assert info.value.param == "arch"


def test_grad_cam_targets_each_familys_last_features():
    from uscl.infer.gradcam import GradCAM
    from uscl.infer.model import ProbabilityModel

    for arch in ("densenet121", "efficientnet_b0"):
        net = ProbabilityModel(build_classifier(arch, 2)).eval()
        cam = GradCAM(net)
        assert cam.layer is submodule(net.backbone, FAMILIES[arch].cam_layer)
        maps = cam(torch.randn(2, 3, 64, 64), 1)
        assert maps.shape == (2, 64, 64) and float(maps.min()) >= 0 and float(maps.max()) <= 1


def test_exported_safetensors_need_no_uscl(tmp_path):
    """A kept example of what a user runs: torchvision + safetensors, nothing of uscl."""
    from uscl.infer.export import torchvision_state
    from uscl.infer.model import ProbabilityModel

    net = ProbabilityModel(build_classifier("mobilenet_v3_large", 4)).eval()
    save_file(torchvision_state(net), str(tmp_path / "m.safetensors"))
    tv = torchvision.models.mobilenet_v3_large(num_classes=4)
    tv.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    assert tv.classifier[3].out_features == 4
