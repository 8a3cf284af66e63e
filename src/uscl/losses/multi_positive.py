"""Multi-positive NT-Xent: k views of each item, every other view of the item a positive.

For n items with k views each there are n·k rows. Row (i, a) scores every other row of the
(global) batch; its loss is the weighted cross-entropy towards the item's other k-1 views,

    L(i, a) = - sum_{b != a} w[i, a, b] · log softmax_j(s((i, a), j) / T)[(i, b)],

with ``w[i, a, ·]`` summing to 1 over b != a (uniform 1/(k-1) when no weights are given:
the "L_out" form of supervised contrastive learning with the video as the class). The loss
is the mean over all n·k rows. With k = 2 it is exactly NT-Xent. ``weights`` lets closer
frames count more (IVPP-style time-weighted positives: :func:`time_weights`).

Under DDP (``distributed=True``) the keys are gathered from every rank with gradients, as in
:func:`uscl.losses.nt_xent`, and each rank's loss is the mean over its own rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uscl.utils import dist


def multi_positive_nt_xent(z: torch.Tensor, temperature: float = 0.5, cosine: bool = True,
                           weights: torch.Tensor | None = None, *, distributed: bool = False) -> torch.Tensor:
    """The loss of ``z`` (n, k, d): k projections of each of n items. ``weights`` (n, k, k): how much
    view b of item i counts as a positive of view a (the diagonal is ignored; each row is normalised
    over b != a). Computed in float32. Returns a scalar."""
    if z.ndim != 3 or z.shape[1] < 2:
        raise ValueError(f"z must be (n, k >= 2, d), got {tuple(z.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n, k, _ = z.shape
    z = z.float()
    if cosine:
        z = F.normalize(z, dim=2)
    flat = z.reshape(n * k, -1)  # item-major: row i*k + a
    if distributed:
        rank, world = dist.get_rank(), dist.get_world_size()
        keys = torch.cat(dist.all_gather_with_grad(flat), 0)
    else:
        rank, world = 0, 1
        keys = flat
    if n * world < 2:
        raise ValueError("multi-positive NT-Xent needs at least 2 items in the (global) batch")
    logits = flat @ keys.t() / temperature  # (n k, N k)
    rows = torch.arange(n * k, device=z.device) + rank * n * k  # each local row's global column
    cols = torch.arange(keys.shape[0], device=z.device)
    log_prob = torch.log_softmax(logits.masked_fill(cols[None, :] == rows[:, None], float("-inf")), dim=1)
    # the k columns of each row's own item: log p((i, a) -> (i, b)), (n, k, k)
    own = (rank * n + torch.arange(n, device=z.device))[:, None] * k + torch.arange(k, device=z.device)
    own_log_prob = log_prob.view(n, k, -1).gather(2, own[:, None, :].expand(n, k, k))
    off = ~torch.eye(k, dtype=torch.bool, device=z.device)
    w = torch.ones(n, k, k, device=z.device) if weights is None else weights.to(z.device, torch.float32)
    if w.shape != (n, k, k):
        raise ValueError(f"weights must be (n, k, k) = {(n, k, k)}, got {tuple(w.shape)}")
    if (w < 0).any():
        raise ValueError("weights must be >= 0")
    w = w * off
    w = w / w.sum(2, keepdim=True).clamp_min(1e-12)
    # the diagonal's log p is -inf (self masked); its weight is 0: keep 0 * -inf out of the sum
    return -(w * own_log_prob.masked_fill(~off, 0.0)).sum(2).mean()


def time_weights(frame_index: torch.Tensor, num_frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """(n, k, k) positive weights exp(-|t_a - t_b| / (sigma · T)) from each item's frame indices
    ``frame_index`` (n, k) and its video's length ``num_frames`` (n,): frames close in time, which
    more surely show the same thing, count more. ``sigma`` is a fraction of the video's length."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    t = frame_index.to(torch.float32)
    gap = (t[:, :, None] - t[:, None, :]).abs()
    scale = sigma * num_frames.to(torch.float32).clamp_min(1.0)[:, None, None]
    return torch.exp(-gap / scale)
