"""DataLoader construction: seeded, worker-count independent, DDP aware."""

from __future__ import annotations

import torch

from uscl.data.samplers import DistributedVideoSampler
from uscl.data.video_dataset import VideoItemDataset
from uscl.utils.seed import make_generator, worker_init_fn


class EpochSampler(torch.utils.data.Sampler):
    """Wraps the index sampler; for epoch-aware datasets yields ``(epoch, index)`` keys.

    The sampler runs in the main process, so the epoch reaches persistent
    workers through the keys. ``set_epoch`` updates sampler and dataset; a
    plain ``dataset.set_epoch`` is picked up too.
    """

    def __init__(self, inner: DistributedVideoSampler, dataset):
        self.inner = inner
        self.dataset = dataset
        self.tag = isinstance(dataset, VideoItemDataset)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return getattr(self.dataset, "epoch", self.inner.epoch) if self.tag else self.inner.epoch

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        epoch = self.epoch
        if self.inner.epoch != epoch:
            self.inner.set_epoch(epoch)
        if not self.tag:
            yield from self.inner
            return
        for i in self.inner:
            yield (epoch, i)


class EpochDataLoader(torch.utils.data.DataLoader):
    """A DataLoader with ``set_epoch`` (reshuffles and redraws frames)."""

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


def make_loader(dataset, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool, num_workers: int = 0,
                world_size: int = 1, rank: int = 0, pin_memory: bool = False) -> EpochDataLoader:
    """Loader yielding per-rank batches of ``batch_size`` items (global batch = batch_size * world_size).

    Any dataset gets a :class:`DistributedVideoSampler` (one video per slot of
    a global batch for :class:`VideoItemDataset`); call ``loader.set_epoch(e)``
    (or ``loader.sampler.set_epoch(e)``) before each epoch.
    """
    sampler = DistributedVideoSampler(len(dataset), batch_size * world_size, world_size=world_size, rank=rank,
                                      shuffle=shuffle, seed=seed, drop_last=drop_last)
    return EpochDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(sampler, dataset),
        drop_last=False,  # the sampler already cut whole global batches
        num_workers=num_workers,
        worker_init_fn=worker_init_fn if num_workers > 0 else None,
        generator=make_generator(seed),
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
