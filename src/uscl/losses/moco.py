"""MoCo's InfoNCE against a queue of negatives, and the queue update (pure functions).

For each query ``q_i`` the positive is its key ``k_i`` and the negatives are the
``K`` queued keys (earlier batches' keys, from the momentum encoder), so a
method sees many more negatives than one batch holds (He et al., CVPR 2020;
MoCo v2: Chen et al., 2020). Keys carry no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def moco_infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Mean over the ``n`` queries of ``-log softmax([q·k, q·queue] / T)[0]``.

    ``q`` (n, d) and ``k`` (n, d) are normalised here; ``queue`` (K, d) holds normalised keys.
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float().detach(), dim=1)
    positive = (q * k).sum(1, keepdim=True)
    negatives = q @ queue.float().t()
    logits = torch.cat([positive, negatives], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


@torch.no_grad()
def enqueue(queue: torch.Tensor, pointer: int, keys: torch.Tensor) -> int:
    """Write normalised ``keys`` (m, d) into the ring buffer ``queue`` (K, d) from ``pointer``,
    wrapping round; returns the next pointer. The oldest keys are the ones replaced."""
    keys = F.normalize(keys.detach().float(), dim=1)
    size, m = queue.shape[0], len(keys)
    start = pointer + max(0, m - size)  # more keys than room: as if written one by one, the newest kept
    keys = keys[-size:]
    idx = (start + torch.arange(len(keys), device=queue.device)) % size
    queue[idx] = keys.to(queue.dtype)
    return int((pointer + m) % size)
