"""The fine-tuned classifier: a ResNet trunk plus one linear head, built from an arch and an init.

:func:`build_classifier` makes the network ``uscl finetune`` trains and saves
(state dict keys ``backbone.*``, ``head.*``) and ``uscl predict`` rebuilds.
Its starting backbone weights (torchvision names, no ``fc``) are loaded by
:func:`apply_init`, which names every missing, unexpected or mis-shaped key
instead of loading part of a checkpoint silently.
"""

from __future__ import annotations

import torch
from torch import nn

from uscl.errors import UsclError
from uscl.models.backbone import build_backbone


class FinetunedClassifier(nn.Module):
    """ResNet trunk (fc = Identity) + a linear head; state dict keys ``backbone.*``, ``head.*``."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.backbone(x), 1))


def build_classifier(arch: str, num_classes: int, init_sd: dict[str, torch.Tensor] | None = None,
                     source: str = "random") -> FinetunedClassifier:
    """``arch`` trunk initialised from ``init_sd`` (None: torchvision's random init) + a new linear head."""
    backbone, dim = build_backbone(arch)
    apply_init(backbone, init_sd, arch, source)
    return FinetunedClassifier(backbone, dim, num_classes)


def infer_arch(sd: dict[str, torch.Tensor]) -> str:
    """resnet50 has Bottleneck blocks (conv3); resnet18 BasicBlocks with 2 blocks per stage."""
    if any(k.startswith("layer1.0.conv3") for k in sd):
        return "resnet50"
    return "resnet18"


def apply_init(backbone: nn.Module, sd: dict[str, torch.Tensor] | None, arch: str, source: str) -> None:
    """Load ``sd`` into ``backbone``; missing, unexpected or mis-shaped keys are an error naming them."""
    if sd is None:
        return
    own = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    # old checkpoints predate BatchNorm's num_batches_tracked counter; it carries no weights
    missing = sorted(k for k in set(own) - set(sd) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(sd) - set(own))
    shape = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or shape:
        found = infer_arch(sd)
        parts = []
        if found != arch:
            parts.append(f"{source} holds a {found} backbone, but the model is {arch} (set arch={found})")
        if shape:
            parts.append("shape mismatch: " + ", ".join(
                f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in shape[:5]) + _more(shape))
        if missing:
            parts.append(f"missing key(s): {', '.join(missing[:8])}{_more(missing, 8)}")
        if unexpected:
            parts.append(f"unexpected key(s): {', '.join(unexpected[:8])}{_more(unexpected, 8)}")
        raise UsclError(f"cannot initialise {arch} from {source}: " + "; ".join(parts),
                        param="arch" if found != arch else None)
    backbone.load_state_dict(sd, strict=False)


def _more(items, n=5) -> str:
    return f" (+{len(items) - n} more)" if len(items) > n else ""
