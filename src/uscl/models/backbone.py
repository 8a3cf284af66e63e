"""ResNet backbones, randomly initialised, with the classification layer removed.

The backbone keeps torchvision's own module names (conv1, bn1, layer1...layer4),
so its state dict loads into a plain torchvision ResNet with ``strict=False``.
Nothing is downloaded: weights are always ``None``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from uscl.errors import ConfigError

# arch name -> (torchvision constructor, feature dimension)
ARCHITECTURES = {
    "resnet18": (tvm.resnet18, 512),
    "resnet50": (tvm.resnet50, 2048),
}


class GreyAwareConv2d(nn.Conv2d):
    """An RGB input convolution that also takes 1-channel (grey) images.

    For a grey image x repeated to three channels, conv(W, [x, x, x]) equals
    conv(W_r + W_g + W_b, x): the same output, a third of the input work and
    no 3-channel copy of every batch. The weight keeps its RGB shape (so
    checkpoints, ImageNet weights and exports are unchanged), and its
    gradient is the one the repeated input would give.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.in_channels == 3:
            if x.is_cuda:
                # cuDNN is far slower with one input channel than with three (H200, bf16,
                # 224 px, batch 512: 53 vs 38 ms per training step); the copy costs ~0.1 ms
                fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
                    else torch.contiguous_format
                return self._conv_forward(x.expand(-1, 3, -1, -1).contiguous(memory_format=fmt), self.weight,
                                          self.bias)
            return F.conv2d(x, self.weight.sum(dim=1, keepdim=True), self.bias, self.stride, self.padding,
                            self.dilation, self.groups)
        # nn.Conv2d.forward's own body: super() calls cannot be scripted (torch.jit.script of a detector)
        return self._conv_forward(x, self.weight, self.bias)


def grey_aware(conv: nn.Conv2d) -> GreyAwareConv2d:
    """The same convolution (same parameters, same state-dict keys) as a :class:`GreyAwareConv2d`."""
    new = GreyAwareConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                          padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                          bias=conv.bias is not None, padding_mode=conv.padding_mode)
    new.weight = conv.weight
    new.bias = conv.bias
    return new


def build_backbone(arch: str) -> tuple[nn.Module, int]:
    """Return (ResNet with ``fc = Identity``, feature dimension); it takes RGB or grey input."""
    try:
        ctor, dim = ARCHITECTURES[arch]
    except KeyError:
        raise ConfigError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})") from None
    net = ctor(weights=None)
    net.fc = nn.Identity()
    net.conv1 = grey_aware(net.conv1)
    return net, dim
