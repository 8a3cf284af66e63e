"""What each pretraining method means, and the loss of one training step.

* ``uscl``: SPG with mixup + NT-Xent + λ·(CE(view1) + CE(view2)) on labelled items.
* ``uscl-selfsup``: the same without the supervised term.
* ``simclr``: two augmentations of one random frame per video, NT-Xent only.

``mixup: false`` (ablation) keeps SPG's frame drawing but uses f1 and f3 unmixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from uscl.losses import masked_cross_entropy, nt_xent


@dataclass(frozen=True)
class MethodSpec:
    name: str
    sampling_mode: str  # "spg" | "simclr" (uscl.data.PairSamplingConfig.mode)
    mixup: bool
    supervised: bool  # the CE term is active (method asks for it and labels exist)


def method_spec(method: str, *, mixup: bool, wants_labels: bool, has_labels: bool) -> MethodSpec:
    if method == "simclr":
        return MethodSpec("simclr", "simclr", False, False)
    supervised = method == "uscl" and wants_labels and has_labels
    return MethodSpec(method, "spg", bool(mixup), supervised)


@dataclass
class StepLosses:
    total: torch.Tensor
    contrastive: torch.Tensor
    supervised: torch.Tensor
    labelled: torch.Tensor  # labelled items in the global batch (0-d tensor)


def compute_losses(model: nn.Module, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor, *,
                   temperature: float = 0.5, cosine: bool = True, lambda_sup: float = 0.2,
                   supervised: bool = False, distributed: bool = False) -> StepLosses:
    """Forward both views in one batch (BN sees all 2n images) and combine the losses.

    Under DDP each rank's loss is scaled so that DDP's gradient averaging gives
    the gradient of the loss over the global batch (see uscl.losses).
    """
    n = view1.shape[0]
    _, z, logits = model(torch.cat([view1, view2], 0))
    z1, z2 = z[:n], z[n:]
    contrastive = nt_xent(z1, z2, temperature, cosine, distributed=distributed)
    labelled = torch.zeros((), dtype=torch.int64, device=view1.device)
    if supervised and logits is not None:
        ce1, labelled = masked_cross_entropy(logits[:n], labels, distributed=distributed)
        ce2, _ = masked_cross_entropy(logits[n:], labels, distributed=distributed)
        sup = lambda_sup * (ce1 + ce2)
    else:
        sup = torch.zeros((), device=contrastive.device)
    return StepLosses(contrastive + sup, contrastive, sup, labelled)
