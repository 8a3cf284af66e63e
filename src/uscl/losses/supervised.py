"""Cross-entropy on the labelled items of a batch only (label -1 = unlabelled).

The mean is taken over the labelled items of the whole (global) batch. Under
DDP the labelled count is summed over ranks and each rank's loss is scaled by
the world size, so that after DDP's gradient averaging the gradient equals a
single process's over the global batch. A batch with no labelled item gives
exactly 0 (still connected to the graph, so DDP sees every parameter used).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uscl.utils import dist


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, distributed: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (loss, global labelled count as a 0-d tensor); ``labels`` int64 (n,), -1 = unlabelled.

    Written without boolean indexing or ``.item()``, so a CUDA step never waits on the host.
    """
    mask = labels >= 0
    per_item = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
    total = torch.where(mask, per_item, torch.zeros_like(per_item)).sum()
    count = mask.sum()
    world = 1
    if distributed:
        world = dist.get_world_size()
        count = dist.all_reduce_sum(count.detach().clone())
    return total * world / count.clamp(min=1), count
