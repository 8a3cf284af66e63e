"""Segmentation loss: pixel cross-entropy plus soft multi-class Dice.

``logits`` are ``(N, K+1, H, W)`` (channel 0 = background, 1..K = the
structures), ``target`` is ``(N, H, W)`` of class indices. The loss is

    ce_weight * CE + dice_weight * mean_{c=1..K} (1 - Dice_c)

* **CE** is the mean pixel cross-entropy over the pixels that are not
  ``ignore_index`` (all classes, background included).
* **Dice_c** is the soft Dice of class ``c`` over the whole batch (every
  pixel of every image pooled, not averaged per image):
  ``(2 * sum(p_c * t_c) + smooth) / (sum(p_c) + sum(t_c) + smooth)``, with
  ``p_c`` the softmax probability of class ``c`` and ``t_c`` its one-hot
  target, both zeroed on ignored pixels. Pooling over the batch keeps the
  term defined (and stable) for images in which the class is absent.
* **Background is not in the Dice term.** It covers most of an ultrasound
  frame, so its Dice is close to 1 whatever the model does and would only
  dilute the foreground terms; the cross-entropy already scores background
  pixels. With K = 0 (background only) the Dice term is 0.
* **A class absent from the truth of the whole batch** has ``sum(t_c) = 0``
  and ``Dice_c = smooth / (sum(p_c) + smooth)``: close to 1 (no loss) while
  the predicted mass ``sum(p_c)`` is small against ``smooth``, and falling
  towards 0 as the model spreads probability onto the class, so false
  positives are still penalised. A class absent from both truth and
  prediction therefore contributes about 0 to the loss. ``smooth`` must be
  > 0: it is what makes that case defined (0/0 otherwise, when every pixel
  is ignored).

Pixels labelled ``ignore_index`` take no part in either term and get no
gradient; a batch with every pixel ignored gives exactly 0 (still connected to
the graph). Computed in float32 whatever the input. Labels must lie in
``[0, K]`` (or equal ``ignore_index``); they are checked on CPU tensors only,
so a CUDA step never waits on the host (there cross-entropy's device-side
check catches them when ``ce_weight > 0``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None) -> None:
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, K+1, H, W), got {tuple(logits.shape)}")
    n, c, h, w = logits.shape
    if c < 1:
        raise ValueError("logits need at least the background channel")
    if tuple(target.shape) != (n, h, w):
        raise ValueError(f"target must be (N, H, W) = {(n, h, w)}, got {tuple(target.shape)}")
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"target must hold integer class indices, got {target.dtype}")
    if target.device.type == "cpu" and target.numel():
        valid = target if ignore_index is None else target[target != ignore_index]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= c):
            raise ValueError(f"target labels must lie in [0, {c - 1}]"
                             + ("" if ignore_index is None else f" or equal ignore_index={ignore_index}")
                             + f", got [{int(valid.min())}, {int(valid.max())}]")


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0,
                   ignore_index: int | None = None) -> torch.Tensor:
    """``mean_{c=1..K} (1 - Dice_c)``, soft Dice per foreground class over the batch (see the module doc)."""
    _check(logits, target, ignore_index)
    if not smooth > 0:
        raise ValueError(f"smooth must be > 0, got {smooth}")
    return _dice(logits.float(), target, smooth, ignore_index)


def _dice(logits: torch.Tensor, target: torch.Tensor, smooth: float, ignore_index: int | None) -> torch.Tensor:
    k1 = logits.shape[1]
    if k1 < 2:
        return logits.sum() * 0.0
    target = target.long()
    if ignore_index is None:
        mask = torch.ones_like(target, dtype=torch.float32)
    else:
        mask = (target != ignore_index).float()
        target = torch.where(target == ignore_index, torch.zeros_like(target), target)
    probs = logits.softmax(1)[:, 1:]  # (N, K, H, W), foreground only
    classes = torch.arange(1, k1, device=target.device).view(1, -1, 1, 1)
    onehot = (target.unsqueeze(1) == classes).float() * mask.unsqueeze(1)
    probs = probs * mask.unsqueeze(1)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    return (1 - dice).mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, *, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 smooth: float = 1.0, ignore_index: int | None = None) -> torch.Tensor:
    """``ce_weight * CE + dice_weight * soft Dice loss`` of ``logits`` (N, K+1, H, W) against ``target`` (N, H, W).

    Returns a 0-d float32 tensor. Background (class 0) is in the CE but not in
    the Dice term; a class absent from the batch's truth scores
    ``smooth / (sum(p_c) + smooth)`` (module doc).
    """
    _check(logits, target, ignore_index)
    if dice_weight < 0 or ce_weight < 0:
        raise ValueError(f"loss weights must be >= 0, got dice_weight={dice_weight}, ce_weight={ce_weight}")
    if not smooth > 0:
        raise ValueError(f"smooth must be > 0, got {smooth}")
    logits = logits.float()
    target = target.long()
    total = logits.sum() * 0.0  # keeps the result on the graph when a term is weighted 0 or every pixel is ignored
    if ce_weight > 0:
        ign = -100 if ignore_index is None else ignore_index
        per_pixel = F.cross_entropy(logits, target, ignore_index=ign, reduction="none")
        kept = (target != ign).sum()
        total = total + ce_weight * per_pixel.sum() / kept.clamp(min=1)
    if dice_weight > 0:
        total = total + dice_weight * _dice(logits, target, smooth, ignore_index)
    return total
