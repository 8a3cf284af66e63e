"""ResNet backbones, randomly initialised, with the classification layer removed.

The backbone keeps torchvision's own module names (conv1, bn1, layer1...layer4),
so its state dict loads into a plain torchvision ResNet with ``strict=False``.
Nothing is downloaded: weights are always ``None``.
"""

from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from uscl.errors import ConfigError

# arch name -> (torchvision constructor, feature dimension)
ARCHITECTURES = {
    "resnet18": (tvm.resnet18, 512),
    "resnet50": (tvm.resnet50, 2048),
}


def build_backbone(arch: str) -> tuple[nn.Module, int]:
    """Return (ResNet with ``fc = Identity``, feature dimension)."""
    try:
        ctor, dim = ARCHITECTURES[arch]
    except KeyError:
        raise ConfigError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})") from None
    net = ctor(weights=None)
    net.fc = nn.Identity()
    return net, dim
