"""The plain functions a detection fold loop calls (as torchvision's references/detection/engine.py).

* :func:`collate` - a batch of ``(image, target)`` pairs -> ``(list of images, list of targets)``
  (detection images differ in size and instance count, so nothing is stacked)
* :func:`hflip` / :func:`random_hflip` - the one augmentation: a horizontal flip of image, boxes and
  masks together (torchvision's detection reference trains with it too; it keeps the probe at the
  top of the frame, where a vertical flip would not, so there is none)
* :func:`train_one_epoch` - one pass, returns the mean of each torchvision loss and their sum
* :func:`predict` - boxes, labels, scores and binary masks per image, on the CPU

Images are float tensors ``(C, H, W)`` in [0, 1], ``C = 1`` for grey frames (the detector's
transform normalises and resizes them); targets as :mod:`uscl.finetune.detect.targets` makes them.

Measured CPU times (this machine: 2 cores shared with other jobs, load 1-4, ``OMP_NUM_THREADS=1``,
resnet18 Mask R-CNN, ``min_size = max_size = 128``, a batch of 2 images with one 40x30 object each,
median of warm steps; the first step is 1-1.5 s slower):

* torchvision's default heads (2000 proposals, 512 sampled RoIs per image): 3.2-4.5 s per step;
  Faster R-CNN (no mask head) 2.5-3.4 s; with a frozen-BN init about the same as random/BN
* shrunk heads (``rpn_post_nms_top_n_train=100``, ``box_batch_size_per_image=64``; the tests use 32):
  1.0-1.2 s per step
* 224 px, default heads: 3.3-4.7 s per step - about the same as 128 px: at these sizes the RoI heads
  (the 1024-wide box MLP on every sampled RoI, four 256-channel convolutions on every positive one),
  not the trunk, take most of the time (trunk + FPN forward and backward: about 0.4 s of a 128 px
  step), so small frames gain little from shrinking further
* prediction: 0.4-0.8 s per image with ``detections_per_img = 10``; with torchvision's 100 an
  untrained model can take 2-3 s per image (each detection's mask is pasted in a Python loop)

So a CPU fold of a few hundred frames is minutes per epoch; real runs belong on the GPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from uscl.finetune.engine import train_mode


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """``DataLoader(collate_fn=collate)``: lists of images and targets, unstacked."""
    images, targets = [], []
    for image, target in batch:
        images.append(image)
        targets.append(target)
    return images, targets


def hflip(image: torch.Tensor, target: dict | None = None) -> tuple[torch.Tensor, dict | None]:
    """Mirror ``image`` (C, H, W) left-right, with its target's boxes and masks.

    With exclusive ``x2`` (``uscl.finetune.detect.targets``' convention) the column range ``[x1, x2)`` becomes
    ``[W - x2, W - x1)``: exact, no off-by-one. Other target entries are copied unchanged.
    """
    width = image.shape[-1]
    image = image.flip(-1)
    if target is None:
        return image, None
    out = dict(target)
    if "boxes" in target:
        b = target["boxes"]
        out["boxes"] = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1) if len(b) else b.clone()
    if "masks" in target:
        out["masks"] = target["masks"].flip(-1)
    return image, out


def random_hflip(image: torch.Tensor, target: dict | None = None, *, p: float = 0.5,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict | None]:
    """:func:`hflip` with probability ``p`` (drawn from ``generator``, for reproducible folds)."""
    if float(torch.rand((), generator=generator)) < p:
        return hflip(image, target)
    return image, target


def _to(target: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer,
                    batches: Iterable[tuple[list[torch.Tensor], list[dict]]], device: torch.device | str, *,
                    scaler: torch.amp.GradScaler | None = None, amp_dtype: torch.dtype | None = None,
                    lr_scheduler=None, max_grad_norm: float | None = None,
                    freeze_bn_stats: bool = True) -> dict[str, float]:
    """One pass over ``batches`` (``(images, targets)`` as :func:`collate` makes them); mean losses.

    Returns ``{"loss": mean total, "loss_classifier": ..., "loss_box_reg": ..., "loss_mask": ...,
    "loss_objectness": ..., "loss_rpn_box_reg": ..., "steps": n}``, each the mean over steps.
    ``scaler``: a ``torch.amp.GradScaler`` -> fp16 autocast on the device (CUDA); ``amp_dtype``:
    the autocast dtype (``torch.bfloat16`` needs no scaler; default fp16 with a scaler, else fp32;
    torchvision's RoI ops run in fp32 under autocast either way). ``lr_scheduler``
    is stepped after every batch (torchvision's reference warms up per iteration this way).
    ``freeze_bn_stats``: BatchNorm layers whose parameters are frozen also keep their running
    statistics (so the "frozen" mode really leaves the trunk as it was). A non-finite loss stops
    training with an error naming the losses, as in torchvision's reference.
    """
    device = torch.device(device)
    train_mode(model, freeze_bn_stats)
    sums: dict[str, float] = {}
    steps = 0
    params = [p for p in model.parameters() if p.requires_grad]
    if amp_dtype is None and scaler is not None:
        amp_dtype = torch.float16
    for images, targets in batches:
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [_to(t, device) for t in targets]
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            losses = model(images, targets)
        loss = sum(losses.values())
        if not math.isfinite(float(loss.detach())):
            parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            raise FloatingPointError(f"detection loss is {float(loss.detach())} at step {steps + 1} ({parts}); "
                                     "lower the learning rate or add warm-up / max_grad_norm")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if max_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        steps += 1
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
    out = {k: v / max(1, steps) for k, v in sums.items()}
    out["steps"] = steps
    return out


@torch.no_grad()
def predict(model: nn.Module, images: list[torch.Tensor], device: torch.device | str, batch_size: int = 4, *,
            mask_threshold: float = 0.5) -> list[dict[str, torch.Tensor]]:
    """Detections per image, on the CPU: boxes float (N, 4) xyxy, labels int64 (1..K), scores float,
    and (Mask R-CNN) masks uint8 (N, H, W) = mask probability >= ``mask_threshold``, at the image's size.

    Scores go down to the model's ``roi_heads.score_thresh`` (torchvision: 0.05), as COCO's AP wants
    the low-confidence tail; threshold them for display or Dice.
    """
    device = torch.device(device)
    model.eval()
    out: list[dict[str, torch.Tensor]] = []
    batch_size = max(1, int(batch_size))
    for start in range(0, len(images), batch_size):
        chunk = [im.to(device, non_blocking=True) for im in images[start:start + batch_size]]
        for det in model(chunk):
            d = {"boxes": det["boxes"].float().cpu(), "labels": det["labels"].to(torch.int64).cpu(),
                 "scores": det["scores"].float().cpu()}
            if "masks" in det:
                d["masks"] = (det["masks"][:, 0] >= mask_threshold).to(torch.uint8).cpu()
            out.append(d)
    return out
