"""The one place that knows each backbone family: which torchvision model, and where its parts are.

Every architecture is torchvision's own network (``weights=None``: nothing is
downloaded) with its last classification ``Linear`` replaced by ``Identity``, so
``backbone(x)`` returns the (N, dim) features the new linear head reads, and the
backbone's state-dict keys are torchvision's (a torchvision model of the same
arch misses only the classifier keys). A :class:`Family` names, as module
paths inside that backbone (``"layer4"``, ``"features.-1"``: a negative part
indexes a Sequential from its end):

* ``classifier`` - torchvision's final Linear: replaced by Identity; an export
  writes the fine-tuned head under its keys (``fc.weight``, ``classifier.3.weight``...)
* ``first_conv`` - made grey-aware (1-channel input = RGB-repeated input; keys unchanged)
* ``cam_layer``  - the Grad-CAM target: the last convolutional features the pooling reads
* ``last_block`` - what ``mode=paper`` trains besides the head
* ``stages``     - input first, the groups of ``layer_decay`` (five per family: stem, then by resolution)
* ``dense``      - whether the segmentation U-Net / detection FPN can use it (ResNets only)

DenseNet is the one family whose torchvision ``forward`` ends in an in-place
``F.relu`` on the output of ``features`` (after ``norm5``); :class:`DenseNetTrunk`
holds the same modules under the same names but applies that ReLU as a child
module (``relu``, no parameters), so Grad-CAM reads the post-ReLU activations
that the pooling sees, as it does for ResNet's ``layer4``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from uscl.errors import ConfigError, UsclError


class DenseNetTrunk(nn.Module):
    """torchvision DenseNet's modules (``features.*``, ``classifier``) with the final ReLU as a module."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.features = net.features
        self.relu = nn.ReLU()
        self.classifier = net.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _densenet121(weights=None) -> nn.Module:
    return DenseNetTrunk(tvm.densenet121(weights=weights))


@dataclass(frozen=True)
class Family:
    """Where one architecture's parts are (module paths inside the backbone); see the module docstring."""

    arch: str
    family: str
    make: Callable[..., nn.Module]  # torchvision constructor (weights=None)
    dim: int  # feature dimension = the classifier Linear's in_features
    classifier: str
    first_conv: str
    cam_layer: str
    last_block: tuple[str, ...]
    stages: tuple[tuple[str, ...], ...]
    dense: bool = False


def _resnet(arch: str, make, dim: int) -> Family:
    return Family(arch, "resnet", make, dim, "fc", "conv1", "layer4", ("layer4.-1",),
                  (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)), dense=True)


def _features(*groups) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(f"features.{i}" for i in g) for g in groups)


FAMILIES: dict[str, Family] = {f.arch: f for f in (
    _resnet("resnet18", tvm.resnet18, 512),
    _resnet("resnet34", tvm.resnet34, 512),
    _resnet("resnet50", tvm.resnet50, 2048),
    Family("densenet121", "densenet", _densenet121, 1024, "classifier", "features.conv0", "relu",
           ("features.denseblock4", "features.norm5"),
           (("features.conv0", "features.norm0"), ("features.denseblock1", "features.transition1"),
            ("features.denseblock2", "features.transition2"), ("features.denseblock3", "features.transition3"),
            ("features.denseblock4", "features.norm5"))),
    # classifier = Linear(960, 1280), Hardswish, Dropout, Linear(1280, K): the first Linear stays in the trunk
    Family("mobilenet_v3_large", "mobilenet_v3", tvm.mobilenet_v3_large, 1280, "classifier.3", "features.0.0",
           "features.-1", ("features.-2", "features.-1", "classifier.0"),
           _features((0, 1), (2, 3), (4, 5, 6), range(7, 13)) + ((*_features(range(13, 17))[0], "classifier.0"),)),
    Family("shufflenet_v2_x1_0", "shufflenet_v2", tvm.shufflenet_v2_x1_0, 1024, "fc", "conv1.0", "conv5",
           ("stage4.-1", "conv5"), (("conv1",), ("stage2",), ("stage3",), ("stage4",), ("conv5",))),
    # classifier = Dropout, Linear(1280, K)
    Family("efficientnet_b0", "efficientnet", tvm.efficientnet_b0, 1280, "classifier.1", "features.0.0",
           "features.-1", ("features.-2", "features.-1"), _features((0, 1), (2,), (3,), (4, 5), (6, 7, 8))),
)}

ARCH_NAMES: tuple[str, ...] = tuple(FAMILIES)
DENSE_ARCHS: tuple[str, ...] = tuple(a for a, f in FAMILIES.items() if f.dense)


def family_of(arch: str) -> Family:
    try:
        return FAMILIES[arch]
    except KeyError:
        raise ConfigError(f"unknown architecture {arch!r} (known: {', '.join(FAMILIES)})", param="arch") from None


def require_dense(arch: str, task: str) -> None:
    """Segmentation and detection build on a ResNet's stem + layer1..4; other families are refused."""
    if not family_of(arch).dense:
        raise UsclError(f"task {task} needs a ResNet encoder (arch one of {', '.join(DENSE_ARCHS)}); "
                        f"{arch} is supported for classification only", param="arch")


def submodule(root: nn.Module, path: str) -> nn.Module:
    """``root``'s module at a dotted ``path``; a negative part indexes a Sequential from its end."""
    mod = root
    for part in path.split("."):
        mod = mod[int(part)] if part.lstrip("-").isdigit() else getattr(mod, part)
    return mod


def replace_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at ``path`` (same name, so the state-dict keys around it are unchanged)."""
    parent_path, _, name = path.rpartition(".")
    parent = submodule(root, parent_path) if parent_path else root
    if name.lstrip("-").isdigit():
        parent[int(name)] = new
    else:
        setattr(parent, name, new)


def module_path(root: nn.Module, path: str) -> str:
    """``path`` with negative indices resolved (``layer4.-1`` → ``layer4.1``): a state-dict prefix."""
    target = submodule(root, path)
    for name, mod in root.named_modules():
        if mod is target:
            return name
    raise UsclError(f"no module {path!r}")
