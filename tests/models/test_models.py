"""Backbone, projection head and the pretraining model."""

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from uscl.errors import ConfigError
from uscl.models import build_backbone, build_model, projection_head


def test_backbone_is_a_torchvision_resnet_without_fc():
    net, dim = build_backbone("resnet18")
    assert dim == 512 and isinstance(net.fc, nn.Identity)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    # its keys are torchvision's: a plain resnet18 misses only fc.*
    result = resnet18().load_state_dict(net.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys


def test_unknown_architecture_is_a_config_error():
    with pytest.raises(ConfigError, match="vgg16.*known: resnet18, resnet34, resnet50, densenet121"):
        build_backbone("vgg16")


def test_projection_head_layout():
    head = projection_head(512, 256)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert head[0].in_features == head[0].out_features == 512 and head[2].out_features == 256


@pytest.mark.parametrize("classifier_input,in_dim", [("projection", 256), ("feature", 512)])
def test_model_outputs_and_classifier_input(classifier_input, in_dim):
    torch.manual_seed(0)
    model = build_model("resnet18", out_dim=256, num_classes=3, classifier_input=classifier_input).eval()
    assert model.classifier.in_features == in_dim and model.num_classes == 3
    with torch.no_grad():
        h, z, logits = model(torch.randn(4, 3, 32, 32))
        assert h.shape == (4, 512) and z.shape == (4, 256) and logits.shape == (4, 3)
        source = z if classifier_input == "projection" else h
        assert torch.allclose(logits, model.classifier(source))


def test_model_without_classes_has_no_classifier():
    model = build_model("resnet18", out_dim=64).eval()
    with torch.no_grad():
        _, z, logits = model(torch.randn(2, 3, 32, 32))
    assert model.classifier is None and logits is None and z.shape == (2, 64)


def test_bad_classifier_input():
    with pytest.raises(ConfigError, match="classifier_input"):
        build_model("resnet18", num_classes=2, classifier_input="logits")


def test_grey_input_equals_repeated_rgb_forward_and_gradients():
    """A 1-channel batch gives the outputs and the weight gradients of the same batch repeated to RGB."""
    import torch

    from uscl.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=3).train()
    x = torch.randn(4, 1, 32, 32)
    out = {}
    for name, inp in (("grey", x), ("rgb", x.expand(-1, 3, -1, -1).contiguous())):
        model.zero_grad()
        _, z, logits = model(inp)
        loss = z.square().mean() + logits.square().mean()
        loss.backward()
        out[name] = (z.detach().clone(), model.backbone.conv1.weight.grad.clone(),
                     model.backbone.layer4[1].conv2.weight.grad.clone())
    for a, b in zip(out["grey"], out["rgb"]):
        torch.testing.assert_close(a, b, atol=1e-4 * b.abs().max().item(), rtol=1e-3)
    assert tuple(model.backbone.conv1.weight.shape) == (64, 3, 7, 7)  # checkpoints keep the RGB layout
