"""From a loader batch of uint8 frames to the two mixed, augmented views, on the device."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch

from uscl.augment import BatchAugment
from uscl.data.mixup import sample_lambda, views_of


@functools.cache
def keep_step_buffers_mapped() -> bool:
    """Let glibc recycle the step-sized view buffers instead of mapping them afresh.

    Views of a CPU batch are tens of MB: above glibc's mmap threshold each
    step maps fresh pages and page-faults every one of them, which cost ~45%
    of the all-CPU data path (measured: 24.6 -> 14.0 ms per 12 items). A
    fixed 32 MiB threshold (glibc's maximum) and a 128 MiB trim threshold keep
    them in the heap for reuse. Process-wide, once; a no-op off glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 * 2**20)) and bool(mallopt(m_trim_threshold, 128 * 2**20))


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
        from uscl.data.graphed_views import graphed_views_for

        frames = frames.to(device, non_blocking=True)
        graphed = graphed_views_for(augment, frames, params, lam)
        if graphed is not None:
            view1, view2 = graphed(frames, params, lam)
            return view1, view2, labels
    view1, view2 = eager_views(frames, params, lam, augment, device, mix)
    return view1, view2, labels


def eager_views(frames: torch.Tensor, params, lam: torch.Tensor | None, augment: BatchAugment, device,
                mix: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The views of ``frames`` (N, 3, C, H, W) uint8 from drawn ``params`` (and ``lam`` when ``mix``)."""
    device = torch.device(device)
    n, _, c = frames.shape[:3]
    out_c = augment.cfg.out_channels
    k = 3 if mix else 2
    if device.type == "cpu":
        keep_step_buffers_mapped()
        if mix:
            return augment.mix_cpu(frames, params, lam)
        out = augment.apply(frames[:, 0::2].reshape(n * 2, *frames.shape[2:]), params)
        out = out.view(n, 2, *out.shape[1:])
        return out[:, 0].contiguous(), out[:, 1].contiguous()
    frames = frames.to(device, non_blocking=True)
    picked = frames if mix else frames[:, 0::2]
    # grey frames stay single-channel through mixing; repeated to out_channels at the end
    work_c = 1 if c == 1 else out_c
    out = augment.apply(picked.reshape(n * k, *frames.shape[2:]), params, out_channels=work_c)
    return views_of(out.view(n, k, *out.shape[1:]), lam.to(device, non_blocking=True) if mix else None, out_c)
