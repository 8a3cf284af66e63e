"""The fine-tuned classifier: a backbone (any :data:`~uscl.models.ARCHITECTURES`) plus one linear head,
built from an arch and an init.

:func:`build_classifier` makes the network ``uscl finetune`` trains and saves
(state dict keys ``backbone.*``, ``head.*``) and ``uscl predict`` rebuilds.
Its starting backbone weights (torchvision names, no classifier) are loaded by
:func:`apply_init`, which names every missing, unexpected or mis-shaped key
instead of loading part of a checkpoint silently.
"""

from __future__ import annotations

import torch
from torch import nn

from uscl.errors import UsclError
from uscl.models.backbone import build_backbone, classifier_keys, identify_arch


class FinetunedClassifier(nn.Module):
    """Backbone (classifier = Identity) + a linear head; state dict keys ``backbone.*``, ``head.*``."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, arch: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)
        self._arch = arch

    @property
    def arch(self) -> str:
        """The backbone's architecture: as built, else read from its keys."""
        if self._arch is None:
            self._arch = identify_arch(self.backbone.state_dict())
            if self._arch is None:
                raise UsclError("the classifier's backbone is none of the known architectures")
        return self._arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.backbone(x), 1))


def build_classifier(arch: str, num_classes: int, init_sd: dict[str, torch.Tensor] | None = None,
                     source: str = "random") -> FinetunedClassifier:
    """``arch`` trunk initialised from ``init_sd`` (None: torchvision's random init) + a new linear head."""
    backbone, dim = build_backbone(arch)
    apply_init(backbone, init_sd, arch, source)
    return FinetunedClassifier(backbone, dim, num_classes, arch)


def infer_arch(sd: dict[str, torch.Tensor]) -> str | None:
    """The architecture whose backbone keys and shapes ``sd`` has (None: none of ours)."""
    return identify_arch(sd)


def apply_init(backbone: nn.Module, sd: dict[str, torch.Tensor] | None, arch: str, source: str) -> None:
    """Load ``sd`` into ``backbone`` (``arch``'s torchvision classifier keys in ``sd`` are ignored); another
    architecture's weights, or missing, unexpected or mis-shaped keys, are an error naming them."""
    if sd is None:
        return
    sd = {k: v for k, v in sd.items() if k not in classifier_keys(arch, sd)}
    own = backbone.state_dict()
    # old checkpoints predate BatchNorm's num_batches_tracked counter; it carries no weights
    missing = sorted(k for k in set(own) - set(sd) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(sd) - set(own))
    shape = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or shape:
        found = infer_arch(sd)
        if found is not None and found != arch:
            raise UsclError(f"cannot initialise {arch} from {source}: {source} holds a {found} backbone, but the "
                            f"model is {arch} (its keys are {found}'s but arch is {arch}; set arch={found})",
                            param="arch")
        parts = []
        if shape:
            parts.append("shape mismatch: " + ", ".join(
                f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in shape[:5]) + _more(shape))
        if missing:
            parts.append(f"missing key(s): {', '.join(missing[:8])}{_more(missing, 8)}")
        if unexpected:
            parts.append(f"unexpected key(s): {', '.join(unexpected[:8])}{_more(unexpected, 8)}")
        raise UsclError(f"cannot initialise {arch} from {source} (its keys match none of the known architectures): "
                        + "; ".join(parts))
    backbone.load_state_dict(sd, strict=False)


def _more(items, n=5) -> str:
    return f" (+{len(items) - n} more)" if len(items) > n else ""
