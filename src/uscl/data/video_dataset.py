"""One item = one video: the frames SPG draws from it (USCL pretraining)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from uscl.data.common import PlannedBatches, check_indices, common_geometry, label_index, split_keys
from uscl.data.pairs import PairSamplingConfig, batch_item_frames
from uscl.errors import UsclError


class VideoItemDataset(PlannedBatches, torch.utils.data.Dataset):
    """One item = one video.

    Returns ``dict(frames=uint8 (3, C, H, W) [f1, f2, f3], mixable=bool,
    label=int64, video=int64)``. ``mixable`` is False when the video has
    fewer than 3 frames or in simclr mode: the views are then f1 and f3
    unmixed (2 frames: its two frames; 1 frame: f1 = f3 = the frame, made
    different by the augmentation). ``label`` is -1 for unlabelled videos and
    for those whose label is not used (``use_label``, aligned with
    ``video_indices``; a mask over the whole store is accepted too).
    ``video`` is the store index.

    Frame draws depend only on (seed, epoch, video index). Keys may be an
    int (the epoch of the last ``set_epoch``) or ``(epoch, index)``, which is
    what :func:`uscl.data.make_loader` feeds so that persistent workers,
    whose dataset copies never see ``set_epoch``, still follow the epoch.
    """

    def __init__(self, store, video_indices: Sequence[int], cfg: PairSamplingConfig | None = None,
                 class_to_index: dict[str, int] | None = None, use_label: Sequence[bool] | None = None,
                 seed: int = 0):
        self.store = store
        self.video_indices = check_indices(store, video_indices)
        self.cfg = cfg if cfg is not None else PairSamplingConfig()
        self.class_to_index = dict(class_to_index) if class_to_index is not None else None
        self.seed = int(seed)
        self.epoch = 0
        self.channels = common_geometry(store, self.video_indices)
        if use_label is None:
            mask = [True] * len(self.video_indices)
        elif len(use_label) == len(self.video_indices):
            mask = [bool(u) for u in use_label]
        elif len(use_label) == len(store):
            mask = [bool(use_label[v]) for v in self.video_indices]
        else:
            raise UsclError(
                f"use_label has {len(use_label)} entries; expected one per video used ({len(self.video_indices)})"
            )
        self.labels: list[int] = [
            label_index(store.videos[v].label, self.class_to_index, store.videos[v].video_id) if m else -1
            for v, m in zip(self.video_indices, mask)
        ]

    def __len__(self) -> int:
        return len(self.video_indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def frame_indices(self, index: int, epoch: int | None = None) -> tuple[list[int], bool]:
        """The (f1, f2, f3) frames item ``index`` gets in ``epoch``, and whether it is mixable."""
        frames, mixable = self.batch_frame_indices([index], self.epoch if epoch is None else epoch)
        return [int(f) for f in frames[0]], bool(mixable[0])

    def batch_frame_indices(self, indices, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        videos = np.asarray([self.video_indices[int(i)] for i in indices], dtype=np.int64)
        lengths = np.asarray([self.store.videos[v].num_frames for v in videos], dtype=np.int64)
        return batch_item_frames(lengths, self.cfg, self.seed, epoch, videos)

    def plan_batch(self, keys) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
        """``(item indices, store videos, frames (N, 3), mixable (N,))`` of the items ``keys``
        (ints or ``(epoch, index)``)."""
        epochs, indices = split_keys(keys, self.epoch)
        frames = np.empty((len(indices), 3), dtype=np.int64)
        mixable = np.empty(len(indices), dtype=bool)
        for epoch in sorted(set(epochs)):  # one epoch per batch in practice
            sel = [j for j, e in enumerate(epochs) if e == epoch]
            frames[sel], mixable[sel] = self.batch_frame_indices([indices[j] for j in sel], epoch)
        return indices, [self.video_indices[i] for i in indices], frames, mixable
