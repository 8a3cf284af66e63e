"""From a loader batch of uint8 frames to the two mixed, augmented views, on the device."""

from __future__ import annotations

import torch

from uscl.augment.batch import BatchAugment
from uscl.augment.eager_views import eager_views
from uscl.augment.graphed_views import graphed_views_for
from uscl.augment.mixup import sample_lambda


def gpu_batch_to_views(batch: dict, augment: BatchAugment, alpha: float, mixup: bool, device,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(view1, view2, labels)``: float views (N, out_channels, S, S) and int64 labels (N,) on ``device``.

    Every frame is augmented independently; one lam ~ Beta(alpha, alpha) per
    item (lam = 1 where the item is not mixable or mixup is off, so the views
    are f1 and f3). When nothing in the batch is mixed, the unused anchors f2
    are not augmented at all. The random draws (crop, flip, jitter of every
    frame, then lam) are made on the generator's device in the same order
    on any device, so CPU and GPU give the same views up to rounding. On a
    GPU the whole batch goes through a handful of batched ops (for grey
    batches replayed as one CUDA graph per batch shape, checked once
    against the eager ops; ``BatchAugment(cuda_graphs=False)`` turns it
    off); on the CPU item by item while its frames are in cache. Pass a CPU
    generator (or none) for CUDA work: see :class:`BatchAugment`.
    """
    device = torch.device(device)
    frames = batch["frames"]  # (N, 3, C, H, W) uint8
    mix = bool(mixup) and bool(batch["mixable"].any())  # on the host copy: no device sync
    labels = batch["label"].to(device, non_blocking=True)
    n, _, c = frames.shape[:3]
    params = augment.draw(n * (3 if mix else 2), generator)  # f1, f2, f3 or only f1, f3
    lam = None
    if mix:
        lam = sample_lambda(n, alpha, generator=generator)
        lam = torch.where(batch["mixable"].bool(), lam, torch.ones_like(lam))
    if device.type == "cuda" and c == 1 and augment.cuda_graphs and params.boxes.device.type == "cpu":
        frames = frames.to(device, non_blocking=True)
        graphed = graphed_views_for(augment, frames, params, lam)
        if graphed is not None:
            view1, view2 = graphed(frames, params, lam)
            return view1, view2, labels
    view1, view2 = eager_views(frames, params, lam, augment, device, mix)
    return view1, view2, labels


def gpu_batch_to_frame_views(batch: dict, augment: BatchAugment, device,
                             generator: torch.Generator | None = None) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """``((view_1, ..., view_k), labels)``: each of the k frames of every item augmented on its own,
    nothing mixed (multi-view methods). The parameters are drawn for the N·k frames in item order
    on the generator's device, as :func:`gpu_batch_to_views` draws them."""
    device = torch.device(device)
    frames = batch["frames"]  # (N, k, C, H, W) uint8
    labels = batch["label"].to(device, non_blocking=True)
    n, k = frames.shape[:2]
    params = augment.draw(n * k, generator)
    out = augment.apply(frames.reshape(n * k, *frames.shape[2:]).to(device, non_blocking=True), params)
    out = out.view(n, k, *out.shape[1:])
    return tuple(out[:, j].contiguous() for j in range(k)), labels
