"""Projection head and the pretraining model (backbone + projection + classifier)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from uscl.errors import ConfigError
from uscl.models.backbone import build_backbone


def projection_head(feature_dim: int, out_dim: int = 256) -> nn.Sequential:
    """Linear(f→f), ReLU, Linear(f→out_dim), as in SimCLR/USCL."""
    return nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True), nn.Linear(feature_dim, out_dim))


class USCLModel(nn.Module):
    """Backbone → feature h → projection z (→ classifier logits on z or on h).

    ``forward`` returns ``(h, z, logits)``; ``logits`` is None without classifier.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, *, out_dim: int = 256, num_classes: int = 0,
                 classifier_input: Literal["projection", "feature"] = "projection", arch: str = ""):
        super().__init__()
        if classifier_input not in ("projection", "feature"):
            raise ConfigError(f"classifier_input must be 'projection' or 'feature', got {classifier_input!r}")
        self.arch = arch
        self.feature_dim = feature_dim
        self.out_dim = out_dim
        self.classifier_input = classifier_input
        self.backbone = backbone
        self.projection = projection_head(feature_dim, out_dim)
        in_dim = out_dim if classifier_input == "projection" else feature_dim
        self.classifier = nn.Linear(in_dim, num_classes) if num_classes > 0 else None

    @property
    def num_classes(self) -> int:
        return 0 if self.classifier is None else self.classifier.out_features

    def forward(self, x: torch.Tensor):
        h = self.backbone(x)
        h = torch.flatten(h, 1)
        z = self.projection(h)
        logits = None
        if self.classifier is not None:
            logits = self.classifier(z if self.classifier_input == "projection" else h)
        return h, z, logits


def build_model(arch: str = "resnet18", *, out_dim: int = 256, num_classes: int = 0,
                classifier_input: Literal["projection", "feature"] = "projection") -> USCLModel:
    backbone, dim = build_backbone(arch)
    return USCLModel(backbone, dim, out_dim=out_dim, num_classes=num_classes,
                     classifier_input=classifier_input, arch=arch)
