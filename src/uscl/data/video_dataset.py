"""One item = one video: the frames SPG draws from it (USCL pretraining)."""

from __future__ import annotations

from typing import Sequence

import torch

from uscl.data.common import check_indices, common_geometry, label_index, read_frames
from uscl.data.pairs import PairSamplingConfig, item_frames, item_rng
from uscl.errors import UsclError


class VideoItemDataset(torch.utils.data.Dataset):
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
        video = self.video_indices[index]
        rng = item_rng(self.seed, self.epoch if epoch is None else epoch, video)
        return item_frames(self.store.videos[video].num_frames, self.cfg, rng)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch, int(key))
        frames, mixable = self.frame_indices(index, epoch)
        video = self.video_indices[index]
        return {
            "frames": read_frames(self.store, video, frames, self.channels),
            "mixable": torch.tensor(mixable),
            "label": torch.tensor(self.labels[index], dtype=torch.int64),
            "video": torch.tensor(video, dtype=torch.int64),
        }
