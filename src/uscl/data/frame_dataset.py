"""One item = one frame (fine-tuning and evaluation), with its video for per-video scores."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from uscl.data.common import check_indices, common_geometry, gather_frames, label_index, split_keys


def spread_frames(num_frames: int, limit: int | None) -> list[int]:
    """All frames, or ``limit`` of them evenly spread over the video (deterministic)."""
    if limit is None or num_frames <= limit:
        return list(range(num_frames))
    if limit < 1:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, limit)})


class FrameDataset(torch.utils.data.Dataset):
    """``dict(image=uint8 (C, H, W), label=int64, video=int64, frame=int64)`` per frame.

    ``label`` is -1 for an unlabelled video; a label missing from
    ``class_to_index`` is an error. ``items`` lists (video, frame) pairs and
    ``labels`` the label of each item, for metrics and per-video votes.
    """

    def __init__(self, store, video_indices: Sequence[int], class_to_index: dict[str, int] | None,
                 max_frames_per_video: int | None = None):
        self.store = store
        self.video_indices = check_indices(store, video_indices)
        self.class_to_index = dict(class_to_index) if class_to_index is not None else None
        self.channels = common_geometry(store, self.video_indices)
        self.items: list[tuple[int, int]] = []
        self.labels: list[int] = []
        for v in self.video_indices:
            rec = store.videos[v]
            lab = label_index(rec.label, self.class_to_index, rec.video_id)
            for t in spread_frames(rec.num_frames, max_frames_per_video):
                self.items.append((v, t))
                self.labels.append(lab)

    def __len__(self) -> int:
        return len(self.items)

    def get_batch(self, keys) -> dict:
        """The collated batch of items ``keys``, frames read straight into one tensor."""
        _, indices = split_keys(keys, 0)
        videos = [self.items[i][0] for i in indices]
        frames = np.asarray([[self.items[i][1]] for i in indices], dtype=np.int64).reshape(-1, 1)
        return {
            "image": gather_frames(self.store, videos, frames, self.channels)[:, 0],
            "label": torch.tensor([self.labels[i] for i in indices], dtype=torch.int64),
            "video": torch.tensor(videos, dtype=torch.int64),
            "frame": torch.from_numpy(frames[:, 0].copy()),
        }

    def __getitem__(self, index: int) -> dict:
        return {k: v[0] for k, v in self.get_batch([index]).items()}
