"""Shared checks and pixel reading for the datasets over a frame store."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from uscl.errors import UsclError


def check_indices(store, video_indices: Sequence[int]) -> list[int]:
    idx = [int(i) for i in video_indices]
    bad = [i for i in idx if not 0 <= i < len(store)]
    if bad:
        raise UsclError(f"video indices out of range for a store of {len(store)} videos: {bad[:5]}")
    return idx


def common_geometry(store, video_indices: Sequence[int]) -> int:
    """Channels the items are returned with; refuses videos of different frame sizes."""
    recs = [store.videos[i] for i in video_indices]
    sizes = sorted({(r.height, r.width) for r in recs})
    if len(sizes) > 1:
        raise UsclError(
            f"the videos have different frame sizes ({', '.join(f'{h}x{w}' for h, w in sizes[:4])}"
            f"{', ...' if len(sizes) > 4 else ''}); batches need one size: prepare the store with `--size`"
        )
    empty = [r.video_id for r in recs if r.num_frames < 1]
    if empty:
        raise UsclError(f"videos without frames in the store: {', '.join(empty[:5])}")
    return max((r.channels for r in recs), default=1)


def label_index(label: str | None, class_to_index: dict[str, int] | None, video_id: str) -> int:
    if class_to_index is None or label is None:
        return -1
    try:
        return int(class_to_index[label])
    except KeyError:
        raise UsclError(
            f"video {video_id} has label {label!r}, which is not among the classes {sorted(class_to_index)}"
        ) from None


def read_frames(store, video: int, frames: Sequence[int], channels: int) -> torch.Tensor:
    """uint8 (K, C, H, W) of the given frames of one video (only those pages are read)."""
    arr = store.frames(video)
    uniq = sorted(set(frames))
    data = np.asarray(arr[uniq])  # (U, H, W, C): one read per distinct frame
    if uniq != list(frames):
        data = data[[uniq.index(f) for f in frames]]
    out = torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2)
    if out.shape[1] != channels:
        out = out.expand(-1, channels, -1, -1)
    return out.contiguous()
