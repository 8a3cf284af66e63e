"""Seeding: one call for the global RNGs, worker seeding, and explicit generators.

Anything that must be reproducible (frame draws, shuffling, augmentation)
takes an explicit seed or ``torch.Generator`` rather than relying on global
state, so results do not depend on the number of loader workers.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and all CUDA devices) global RNGs."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker init: derive NumPy/Python seeds from the worker's torch seed.

    torch already gives each worker ``base_seed + worker_id`` (base_seed drawn
    from the loader's generator); without this, NumPy's global RNG would be a
    copy of the parent's in every forked worker.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_generator(seed: int, device: str | torch.device | None = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default CPU) seeded with ``seed``."""
    gen = torch.Generator(device=torch.device(device) if device is not None else "cpu")
    gen.manual_seed(int(seed) % 2**64)
    return gen
