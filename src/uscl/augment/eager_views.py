"""The views of a batch computed op by op (CPU item by item in cache; CUDA batched ops).

:func:`eager_views` is the reference the CUDA-graph replay (:mod:`uscl.augment.graphed_views`)
is checked against on first use, and the path every other batch takes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch

from uscl.augment.batch import BatchAugment
from uscl.augment.mixup import views_of


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
