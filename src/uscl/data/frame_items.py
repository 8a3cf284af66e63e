"""One item = one frame of a video, the sampling of the paper's SimCLR baseline.

Frames are independent images: any two frames of one video may share a batch and
then act as each other's negatives (the problem USCL's sample pair generation
avoids). Items are returned in :class:`~uscl.data.VideoItemDataset`'s layout
(``f1 = f2 = f3 =`` the frame, never mixable), so the views, loaders and the
step are the same as for the other methods.

An epoch covers every frame of the training videos once, or ``slots`` frames
(drawn without replacement while there are enough, seeded per epoch), which
lets a comparison give frame sampling the same images per epoch as a method
that draws one item per video.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from uscl.data.common import PlannedBatches, check_indices, common_geometry, label_index, split_keys
from uscl.errors import ConfigError
from uscl.utils.seed import derive_rng


class FrameItemDataset(PlannedBatches, torch.utils.data.Dataset):
    """Items are the (video, frame) pairs of ``video_indices``; see the module docstring."""

    def __init__(self, store, video_indices: Sequence[int], class_to_index: dict[str, int] | None = None,
                 use_label: Sequence[bool] | None = None, seed: int = 0, slots: int | None = None):
        self.store = store
        self.video_indices = check_indices(store, video_indices)
        self.channels = common_geometry(store, self.video_indices)
        if slots is not None and slots < 1:
            raise ConfigError(f"slots must be a positive number of frames per epoch, got {slots}", param="slots")
        counts = np.array([store.videos[v].num_frames for v in self.video_indices], dtype=np.int64)
        self.item_video = np.repeat(np.arange(len(self.video_indices)), counts)  # position in video_indices
        self.item_frame = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, np.int64)
        self.num_frames = int(counts.sum())
        self.slots = slots
        self.seed = int(seed)
        self.epoch = 0
        mask = [True] * len(self.video_indices) if use_label is None else [bool(u) for u in use_label]
        self.labels = [label_index(store.videos[v].label, class_to_index, store.videos[v].video_id)
                       if (m and class_to_index is not None) else -1 for v, m in zip(self.video_indices, mask)]

    def __len__(self) -> int:
        return self.slots if self.slots is not None else self.num_frames

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def frame_items(self, indices, epoch: int) -> np.ndarray:
        """The frame items (into ``item_video``/``item_frame``) behind item ``indices`` in ``epoch``."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.slots is None:
            return idx
        # a seeded order over all frames per epoch, cycled when slots exceed the frames
        order = derive_rng(self.seed, "frame-slots", epoch).permutation(self.num_frames)
        return order[idx % self.num_frames]

    def plan_batch(self, keys) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
        epochs, indices = split_keys(keys, self.epoch)
        items = np.empty(len(indices), dtype=np.int64)
        for epoch in sorted(set(epochs)):
            sel = [j for j, e in enumerate(epochs) if e == epoch]
            items[sel] = self.frame_items([indices[j] for j in sel], epoch)
        positions = self.item_video[items]
        frames = np.repeat(self.item_frame[items][:, None], 3, axis=1)
        return [int(p) for p in positions], [self.video_indices[p] for p in positions], frames, np.zeros(len(items), bool)
