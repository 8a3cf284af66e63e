"""USCL's frame mixup: two views of one video that share an anchor frame."""

from __future__ import annotations

import numpy as np
import torch

from uscl.errors import ConfigError


def sample_lambda(n: int, alpha: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """(n,) float32 draws from Beta(alpha, alpha).

    torch's Beta sampler takes no generator, so a NumPy generator is seeded
    from ``generator`` (or from torch's global RNG): the draws stay exactly
    Beta-distributed and reproducible from the torch generator alone. With a
    CUDA generator that seed is read back from the device (a sync); a CPU
    generator or none costs nothing on the device.
    """
    if not alpha > 0:
        raise ConfigError(f"mixup alpha must be > 0, got {alpha}")
    gdev = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gdev).item())
    lam = np.random.default_rng(seed).beta(alpha, alpha, size=int(n)).astype(np.float32)
    return torch.from_numpy(lam).to(device if device is not None else "cpu", non_blocking=True)


def mix_views(f1: torch.Tensor, f2: torch.Tensor, f3: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """view1 = lam*f1 + (1-lam)*f2, view2 = lam*f3 + (1-lam)*f2, with lam (N,) per item."""
    lam = torch.as_tensor(lam, dtype=f1.dtype, device=f1.device)
    lam = lam.view(-1, *([1] * (f1.dim() - 1))) if lam.dim() == 1 else lam
    # lerp(f2, f, lam) = f2 + lam * (f - f2): one pass per view
    return torch.lerp(f2, f1, lam.expand_as(f1)), torch.lerp(f2, f3, lam.expand_as(f3))


def views_of(out: torch.Tensor, lam: torch.Tensor | None, out_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two contiguous views from augmented frames ``out`` (N, k, C, S, S): mixed with
    ``lam`` when k = 3 (f1, f2, f3), else f1 and f3 as they are; grey repeated to ``out_channels``."""
    if lam is not None:
        view1, view2 = mix_views(out[:, 0], out[:, 1], out[:, 2], lam)
    else:
        view1, view2 = out[:, 0], out[:, 1]
    if view1.shape[1] != out_channels:
        view1, view2 = view1.expand(-1, out_channels, -1, -1), view2.expand(-1, out_channels, -1, -1)
    return view1.contiguous(), view2.contiguous()
