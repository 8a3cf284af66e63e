"""One item = one annotated frame with its boxes (detection from a boxes CSV)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from uscl.data.common import check_indices, common_geometry, gather_frames, split_keys
from uscl.data.frame_dataset import spread_frames
from uscl.errors import UsclError


class BoxFrameDataset(torch.utils.data.Dataset):
    """``dict(image=uint8 (C, H, W), video=int64, frame=int64, targets={"boxes", "labels"})`` per boxed frame.

    ``boxes``: a :class:`uscl.finetune.detect.boxes.BoxTable` (anything with ``frames_of(video)`` and
    ``target(video, frame)``). Only the frames with boxes are items (a frame without a row is unannotated);
    ``max_frames_per_video`` spreads that many of a video's annotated frames evenly. A video without any
    box is an error here; the fold planner leaves such videos out and says so. A batch (``get_batch``)
    holds ``targets`` as a list of dicts, one per item, as torchvision's detectors take them.
    """

    def __init__(self, store, video_indices: Sequence[int], boxes, max_frames_per_video: int | None = None):
        self.store = store
        self.boxes = boxes
        self.video_indices = check_indices(store, video_indices)
        frames = {v: boxes.frames_of(v) for v in self.video_indices}
        none = [store.videos[v].video_id for v, f in frames.items() if not f]
        if none:
            raise UsclError(f"{len(none)} video(s) have no boxes: {', '.join(none[:5])}")
        self.channels = common_geometry(store, self.video_indices)
        self.items: list[tuple[int, int]] = [
            (v, frames[v][i]) for v in self.video_indices for i in spread_frames(len(frames[v]), max_frames_per_video)]

    def __len__(self) -> int:
        return len(self.items)

    def get_batch(self, keys) -> dict:
        _, indices = split_keys(keys, 0)
        videos = [self.items[i][0] for i in indices]
        frames = np.asarray([self.items[i][1] for i in indices], dtype=np.int64)
        return {
            "image": gather_frames(self.store, videos, frames[:, None], self.channels)[:, 0],
            "video": torch.tensor(videos, dtype=torch.int64),
            "frame": torch.from_numpy(frames.copy()),
            "targets": [self.boxes.target(v, int(t)) for v, t in zip(videos, frames)],
        }

    def __getitem__(self, index: int) -> dict:
        b = self.get_batch([index])
        return {**{k: v[0] for k, v in b.items() if k != "targets"}, "targets": b["targets"][0]}
