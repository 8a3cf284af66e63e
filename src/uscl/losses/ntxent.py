"""NT-Xent (normalised temperature-scaled cross-entropy), the SimCLR/USCL loss.

For a batch of N positive pairs (z1[i], z2[i]) there are 2N rows; each row's
positive is its partner, its negatives are the other 2N-2 projections. The loss
is the cross-entropy of every row summed and divided by 2N, which is exactly
what the original implementation computes.

Under DDP (``distributed=True``) the keys are gathered from every rank with
gradients, so the negatives span the global batch; each rank's loss is the
mean over its own 2n rows. With DDP averaging gradients over ranks, the
gradient then equals that of a single process over the whole global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uscl.utils import dist


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, cosine: bool = True,
            *, distributed: bool = False) -> torch.Tensor:
    """NT-Xent over the pairs (z1[i], z2[i]); z1, z2: (n, d). Returns a scalar.

    ``cosine=False`` uses the raw dot product as similarity (the original's
    ``use_cosine_similarity: false``). Computed in float32 whatever the input.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (n, d), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z1 = z1.float()
    z2 = z2.float()
    if cosine:
        z1 = F.normalize(z1, dim=1)
        z2 = F.normalize(z2, dim=1)
    n = z1.shape[0]
    if distributed:
        rank, world = dist.get_rank(), dist.get_world_size()
        all1 = torch.cat(dist.all_gather_with_grad(z1), 0)
        all2 = torch.cat(dist.all_gather_with_grad(z2), 0)
    else:
        rank, world = 0, 1
        all1, all2 = z1, z2
    big_n = n * world
    if big_n < 2:
        raise ValueError("NT-Xent needs at least 2 pairs in the (global) batch")
    queries = torch.cat([z1, z2], 0)  # (2n, d)
    keys = torch.cat([all1, all2], 0)  # (2N, d)
    logits = queries @ keys.t() / temperature  # (2n, 2N)

    local = torch.arange(n, device=z1.device) + rank * n  # global index of each local pair
    self_cols = torch.cat([local, local + big_n])
    pos_cols = torch.cat([local + big_n, local])
    cols = torch.arange(2 * big_n, device=z1.device)
    logits = logits.masked_fill(cols[None, :] == self_cols[:, None], float("-inf"))
    return F.cross_entropy(logits, pos_cols, reduction="mean")
