"""Samplers: seeded global batches of distinct videos, split across DDP ranks."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from uscl.errors import ConfigError
from uscl.utils.seed import derive_rng


class DistributedVideoSampler(torch.utils.data.Sampler):
    """Seeded global batches of distinct items; rank r takes its slice of each.

    Each epoch a permutation (seeded by ``(seed, epoch)``) is cut into global
    batches of ``global_batch_size`` items; rank ``r`` yields positions
    ``[r*b, (r+1)*b)`` of each, ``b = global_batch_size // world_size``. The
    ranks' batches of one step therefore concatenate to the single-process
    batch of the same seed, and no global batch holds an item (video) twice.

    The final incomplete global batch is dropped when ``drop_last`` is set and
    at least one full batch exists (with fewer items than one global batch,
    that short batch is kept rather than yielding nothing). Without
    ``drop_last`` it is split evenly over the ranks, ``ceil(m / world_size)``
    each; when ``m`` does not divide, it is padded with other items from the
    start of the permutation (so every rank runs the same number of steps,
    as DDP requires; the padded items then appear twice in that epoch).
    """

    def __init__(self, num_items: int, global_batch_size: int, world_size: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = True):
        if num_items < 1:
            raise ConfigError("the sampler got an empty data set (no videos to draw from)")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"bad rank {rank} for world size {world_size}")
        if global_batch_size < world_size or global_batch_size % world_size:
            raise ConfigError(
                f"global batch size {global_batch_size} must be a positive multiple of the world size {world_size}"
            )
        self.num_items = int(num_items)
        self.global_batch_size = int(global_batch_size)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        if self.drop_last and self.num_items < self.global_batch_size:
            warnings.warn(
                f"only {self.num_items} items for a global batch of {self.global_batch_size}: "
                "keeping the one short batch instead of dropping it",
                stacklevel=2,
            )

    @property
    def per_rank_batch(self) -> int:
        return self.global_batch_size // self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _layout(self) -> tuple[int, int]:
        """(number of full global batches, size of the kept final short batch or 0)."""
        full, rest = divmod(self.num_items, self.global_batch_size)
        if rest and self.drop_last and full > 0:
            rest = 0
        return full, rest

    def __len__(self) -> int:
        full, rest = self._layout()
        return full * self.per_rank_batch + -(-rest // self.world_size)

    def permutation(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_items)
        return derive_rng(self.seed, "shuffle", self.epoch).permutation(self.num_items)

    def global_batches(self) -> list[np.ndarray]:
        """This epoch's global batches (the short final one already padded)."""
        perm = self.permutation()
        full, rest = self._layout()
        g = self.global_batch_size
        batches = [perm[i * g:(i + 1) * g] for i in range(full)]
        if rest:
            last = perm[full * g:]
            per_rank = -(-rest // self.world_size)
            pad = per_rank * self.world_size - rest
            if pad:
                filler = np.resize(perm[: full * g] if full else perm, pad)
                last = np.concatenate([last, filler])
            batches.append(last)
        return batches

    def rank_batches(self):
        """This rank's slice of each global batch, one list per step."""
        for batch in self.global_batches():
            b = len(batch) // self.world_size
            yield [int(i) for i in batch[self.rank * b:(self.rank + 1) * b]]

    def num_rank_batches(self) -> int:
        full, rest = self._layout()
        return full + (1 if rest else 0)

    def __iter__(self):
        for batch in self.rank_batches():
            yield from batch
