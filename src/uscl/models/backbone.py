"""Backbones (ResNet-18/34/50, DenseNet-121, MobileNetV3-Large, ShuffleNetV2, EfficientNet-B0),
randomly initialised, with the classification layer removed.

The backbone keeps torchvision's own module names (conv1, bn1, layer1...layer4 of a
ResNet; features.* of a DenseNet...), so its state dict loads into the plain torchvision
model with ``strict=False`` (only the classifier's keys are missing). Where each
family's parts are is :mod:`uscl.models.families`. Nothing is downloaded: weights are
always ``None``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from uscl.models.families import FAMILIES, family_of, replace_submodule, submodule

# arch name -> (torchvision constructor, feature dimension)
ARCHITECTURES = {arch: (f.make, f.dim) for arch, f in FAMILIES.items()}


class GreyAwareConv2d(nn.Conv2d):
    """An RGB input convolution that also takes 1-channel (grey) images.

    For a grey image x repeated to three channels, conv(W, [x, x, x]) equals
    conv(W_r + W_g + W_b, x): the same output, a third of the input work and
    no 3-channel copy of every batch. The weight keeps its RGB shape (so
    checkpoints, ImageNet weights and exports are unchanged), and its
    gradient is the one the repeated input would give.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.in_channels == 3 and self.groups == 1:
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
    """Return (torchvision ``arch`` with its classifier Linear = Identity, feature dimension);
    its first convolution is grey-aware, so it takes RGB or grey input."""
    fam = family_of(arch)
    net = fam.make(weights=None)
    replace_submodule(net, fam.classifier, nn.Identity())
    replace_submodule(net, fam.first_conv, grey_aware(submodule(net, fam.first_conv)))
    return net, fam.dim


@functools.lru_cache(maxsize=None)
def backbone_signature(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``arch``'s backbone state dict (built on the meta device: no weights)."""
    with torch.device("meta"):
        net, _ = build_backbone(arch)
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def identify_arch(sd: dict[str, torch.Tensor]) -> str | None:
    """The architecture whose backbone has exactly ``sd``'s keys and shapes (its torchvision classifier's
    keys and BatchNorm counters aside), or None."""
    keys = {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    for arch in ARCHITECTURES:
        ref = backbone_signature(arch)
        if all(keys.get(k) == s for k, s in ref.items()) and set(keys) <= set(ref) | classifier_keys(arch, keys):
            return arch
    return None


def classifier_keys(arch: str, keys) -> set[str]:
    """Those of ``keys`` that belong to ``arch``'s torchvision classifier Linear (``fc.*``, ``classifier.3.*``)."""
    prefix = family_of(arch).classifier + "."
    return {k for k in keys if k.startswith(prefix)}
