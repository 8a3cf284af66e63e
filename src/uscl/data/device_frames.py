"""Frames resident on the training device: batches gathered there, no loader workers.

A pretraining store is often small next to a GPU's memory (all 19,422 POCUS
frames at 224 px grey: 0.9 GiB). Loaded once, a batch is then one
``index_select`` on the device instead of worker processes reading, copying
and pinning tens of MB per step, which on a fast GPU is what bounds the
step. Same batches as :func:`uscl.data.make_loader` (same sampler, same draws).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from uscl.data.loader import epoch_sampler


def frames_nbytes(store, video_indices: Sequence[int], channels: int) -> int:
    """Bytes the frames of these videos take as one uint8 tensor."""
    return sum(store.videos[v].num_frames * store.videos[v].height * store.videos[v].width * channels
               for v in video_indices)


class DeviceFrames:
    """Every frame of some videos in one uint8 (T_total, C, H, W) tensor on ``device``."""

    def __init__(self, store, video_indices: Sequence[int], channels: int, device):
        self.device = torch.device(device)
        videos = sorted({int(v) for v in video_indices})
        first = store.videos[videos[0]]
        h, w = first.height, first.width
        counts = [store.videos[v].num_frames for v in videos]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.offset = np.full(len(store), -1, dtype=np.int64)
        self.offset[videos] = starts
        self.frames = torch.empty((int(sum(counts)), channels, h, w), dtype=torch.uint8, device=self.device)
        for v, start, count in zip(videos, starts, counts):
            src = torch.from_numpy(np.array(store.frames(v))).permute(0, 3, 1, 2)  # a writable copy, once
            if src.shape[1] != channels:
                src = src.expand(-1, channels, -1, -1)
            self.frames[start:start + count].copy_(src)

    @property
    def nbytes(self) -> int:
        return self.frames.numel()

    def read(self, videos: Sequence[int], frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, K, C, H, W) on the device: frames ``frames[i]`` of store video ``videos[i]``."""
        start = self.offset[np.asarray(videos, dtype=np.int64)]
        if (start < 0).any():
            raise KeyError("a video whose frames were not loaded onto the device")
        idx = torch.from_numpy((start[:, None] + frames).reshape(-1))
        idx = idx.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else idx
        n, k = frames.shape
        return self.frames.index_select(0, idx).view(n, k, *self.frames.shape[1:])


class DeviceBatchLoader:
    """:func:`uscl.data.make_loader`'s batches of a :class:`VideoItemDataset`, read from
    :class:`DeviceFrames` in the main process (``frames`` already on the device)."""

    def __init__(self, dataset, frames: DeviceFrames, batch_size: int, *, shuffle: bool, seed: int,
                 drop_last: bool, world_size: int = 1, rank: int = 0):
        self.dataset = dataset
        self.device_frames = frames
        self.sampler = epoch_sampler(dataset, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                                     world_size=world_size, rank=rank, batched=True)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for keys in self.sampler:
            yield self.dataset.get_batch(keys, read=self.device_frames.read)
