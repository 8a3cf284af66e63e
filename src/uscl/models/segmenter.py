"""The segmentation network: an initialised ResNet encoder and a small U-Net decoder over its stages.

The encoder is the same trunk the classifier uses (:func:`uscl.models.backbone.build_backbone`,
loaded by :func:`uscl.models.classifier.apply_init`), so every init the tool knows (random,
ImageNet file, our pretraining, the official checkpoint) starts a segmenter the same way it starts a
classifier. The decoder upsamples layer4's features by 2 five times, each time concatenating the
encoder's features at that scale (layer3, layer2, layer1, the stem), the U-Net pattern of
Ronneberger et al. and of the ``segmentation_models_pytorch`` ResNet U-Nets; the last step has no
skip and returns to the input resolution. It is small on purpose (1.3 M parameters beside resnet18's
11.2 M, 4.3 M beside resnet50's 23.5 M): the comparison is between encoders, and a large decoder
trained from scratch on tens of images would hide their difference.

State dict keys: ``backbone.*`` (torchvision names, as in a classifier), ``decoder.*``, ``head.*``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uscl.models.backbone import build_backbone
from uscl.models.families import require_dense
from uscl.models.classifier import apply_init

# output channels of the decoder blocks, deepest first: at /16, /8, /4, /2 and /1 of the input
DECODER_CHANNELS = (128, 64, 48, 32, 16)


def encoder_channels(backbone: nn.Module) -> tuple[int, int, int, int, int]:
    """Channels of the stem and of layer1..layer4 (64, 64, 128, 256, 512 for resnet18)."""
    def out_channels(layer: nn.Sequential) -> int:
        block = layer[-1]
        last = getattr(block, "bn3", None) or block.bn2
        return int(last.num_features)

    return (int(backbone.bn1.num_features), *(out_channels(getattr(backbone, f"layer{i}")) for i in range(1, 5)))


class DecoderBlock(nn.Module):
    """Upsample by 2 (bilinear), concatenate the skip features, two 3x3 conv + BatchNorm + ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class UNetDecoder(nn.Module):
    """Five decoder blocks from layer4 back to the input size, skips from layer3, layer2, layer1 and the stem."""

    def __init__(self, enc: tuple[int, ...], channels: tuple[int, ...] = DECODER_CHANNELS):
        super().__init__()
        stem, l1, l2, l3, l4 = enc
        skips = (l3, l2, l1, stem, 0)
        ins = (l4, *channels[:-1])
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, channels))
        self.out_channels = channels[-1]

    def forward(self, feats: list[torch.Tensor], input_size: tuple[int, int]) -> torch.Tensor:
        stem, l1, l2, l3, l4 = feats
        x = l4
        for block, skip in zip(self.blocks, (l3, l2, l1, stem, None)):
            x = block(x, skip, skip.shape[-2:] if skip is not None else input_size)
        return x


class Segmenter(nn.Module):
    """ResNet encoder (``backbone``) + U-Net decoder + 1x1 head: (N, C, H, W) -> logits (N, K+1, H, W).

    Channel 0 of the logits is the background; channel k is the store's mask class k.
    Grey (1-channel) input is taken by the grey-aware first convolution, as in the classifier.
    """

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.decoder = UNetDecoder(encoder_channels(backbone))
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes + 1, 1)
        self.num_classes = num_classes

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of the stem (/2) and of layer1..layer4 (/4 ... /32)."""
        b = self.backbone
        stem = b.relu(b.bn1(b.conv1(x)))
        l1 = b.layer1(b.maxpool(stem))
        l2 = b.layer2(l1)
        l3 = b.layer3(l2)
        return [stem, l1, l2, l3, b.layer4(l3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encode(x), x.shape[-2:]))


def build_segmenter(arch: str, num_classes: int, init_sd: dict[str, torch.Tensor] | None = None,
                    source: str = "random") -> Segmenter:
    """``arch`` encoder initialised from ``init_sd`` (None: torchvision's random init) + a new decoder and head.

    ``num_classes``: foreground classes (the logits have one more channel, the background).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1 (foreground classes), got {num_classes}")
    require_dense(arch, "segment")  # U-Net / FPN over a ResNet's stem + layer1..4
    backbone, _ = build_backbone(arch)
    apply_init(backbone, init_sd, arch, source)
    return Segmenter(backbone, num_classes)


def set_segmenter_trainable(model: Segmenter, mode: str) -> list[str]:
    """frozen: decoder + head; paper: also the last residual block of layer4; full: everything."""
    if mode not in ("frozen", "paper", "full"):
        raise ValueError(f"segmentation mode must be frozen, paper or full, got {mode!r}")
    for p in model.backbone.parameters():
        p.requires_grad_(mode == "full")
    if mode == "paper":
        for p in model.backbone.layer4[-1].parameters():
            p.requires_grad_(True)
    for p in [*model.decoder.parameters(), *model.head.parameters()]:
        p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]
