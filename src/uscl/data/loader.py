"""DataLoader construction: seeded, worker-count independent, DDP aware."""

from __future__ import annotations

import torch

from uscl.data.samplers import DistributedVideoSampler
from uscl.utils.seed import make_generator, worker_init_fn


class EpochSampler(torch.utils.data.Sampler):
    """Wraps the index sampler; for epoch-aware datasets yields ``(epoch, index)`` keys.

    The sampler runs in the main process, so the epoch reaches persistent
    workers through the keys. ``set_epoch`` updates sampler and dataset; a
    plain ``dataset.set_epoch`` is picked up too. With ``batched`` it yields
    one list of keys per step (this rank's slice of a global batch), for
    datasets that read a whole batch in one call (``get_batch``).
    """

    def __init__(self, inner: DistributedVideoSampler, dataset, batched: bool = False):
        self.inner = inner
        self.dataset = dataset
        self.tag = hasattr(dataset, "set_epoch")
        self.batched = batched

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return getattr(self.dataset, "epoch", self.inner.epoch) if self.tag else self.inner.epoch

    def __len__(self) -> int:
        return self.inner.num_rank_batches() if self.batched else len(self.inner)

    def _key(self, epoch: int, i: int):
        return (epoch, i) if self.tag else i

    def __iter__(self):
        epoch = self.epoch
        if self.inner.epoch != epoch:
            self.inner.set_epoch(epoch)
        if self.batched:
            for batch in self.inner.rank_batches():
                yield [self._key(epoch, i) for i in batch]
        else:
            for i in self.inner:
                yield self._key(epoch, i)


class BatchReader(torch.utils.data.Dataset):
    """Indexed by a list of keys, returns the dataset's collated batch (``get_batch``)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, keys) -> dict:
        return self.dataset.get_batch(keys)


class EpochDataLoader(torch.utils.data.DataLoader):
    """A DataLoader with ``set_epoch`` (reshuffles and redraws frames)."""

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


def epoch_sampler(dataset, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool, world_size: int = 1,
                  rank: int = 0, batched: bool = False) -> EpochSampler:
    """This rank's seeded slice of every global batch of ``batch_size * world_size`` items."""
    inner = DistributedVideoSampler(len(dataset), batch_size * world_size, world_size=world_size, rank=rank,
                                    shuffle=shuffle, seed=seed, drop_last=drop_last)
    return EpochSampler(inner, dataset, batched)


def make_loader(dataset, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool, num_workers: int = 0,
                world_size: int = 1, rank: int = 0, pin_memory: bool = False) -> EpochDataLoader:
    """Loader yielding per-rank batches of ``batch_size`` items (global batch = batch_size * world_size).

    Any dataset gets a :class:`DistributedVideoSampler` (one video per slot of
    a global batch for :class:`~uscl.data.VideoItemDataset`); call
    ``loader.set_epoch(e)`` before each epoch. Datasets with ``get_batch``
    (the frame-store datasets) are read a whole batch per call: one worker
    call per batch, frames copied once, straight into the batch tensor.
    """
    batched = hasattr(dataset, "get_batch")
    sampler = epoch_sampler(dataset, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                            world_size=world_size, rank=rank, batched=batched)
    common = dict(num_workers=num_workers, worker_init_fn=worker_init_fn if num_workers > 0 else None,
                  generator=make_generator(seed), persistent_workers=num_workers > 0, pin_memory=pin_memory)
    if batched:
        return EpochDataLoader(BatchReader(dataset), batch_size=None, sampler=sampler, **common)
    return EpochDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=False,  # the sampler already cut whole global batches
        **common,
    )
