"""One item = one frame with its label mask (segmentation and detection fine-tuning and evaluation)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from uscl.data.common import check_indices, common_geometry, gather_frames, split_keys
from uscl.data.frame_dataset import spread_frames
from uscl.errors import UsclError


class MaskFrameDataset(torch.utils.data.Dataset):
    """``dict(image=uint8 (C, H, W), mask=uint8 (H, W), video=int64, frame=int64)`` per masked frame.

    Only videos with a mask take part (``store.has_mask``); a video without one
    is an error here, the fold planner leaves such videos out and says so.
    ``items`` lists the (video, frame) pairs in order.
    """

    def __init__(self, store, video_indices: Sequence[int], max_frames_per_video: int | None = None):
        self.store = store
        self.video_indices = check_indices(store, video_indices)
        no_mask = [store.videos[v].video_id for v in self.video_indices if not store.has_mask(v)]
        if no_mask:
            raise UsclError(f"{len(no_mask)} video(s) have no mask: {', '.join(no_mask[:5])}")
        self.channels = common_geometry(store, self.video_indices)
        self.items: list[tuple[int, int]] = [
            (v, t) for v in self.video_indices for t in spread_frames(store.videos[v].num_frames, max_frames_per_video)]

    def __len__(self) -> int:
        return len(self.items)

    def get_batch(self, keys) -> dict:
        """The collated batch of items ``keys``: frames and masks read straight into two tensors."""
        _, indices = split_keys(keys, 0)
        videos = [self.items[i][0] for i in indices]
        frames = np.asarray([self.items[i][1] for i in indices], dtype=np.int64)
        masks = np.stack([np.asarray(self.store.masks(v)[t]) for v, t in zip(videos, frames)])
        return {
            "image": gather_frames(self.store, videos, frames[:, None], self.channels)[:, 0],
            "mask": torch.from_numpy(masks),
            "video": torch.tensor(videos, dtype=torch.int64),
            "frame": torch.from_numpy(frames.copy()),
        }

    def __getitem__(self, index: int) -> dict:
        return {k: v[0] for k, v in self.get_batch([index]).items()}
