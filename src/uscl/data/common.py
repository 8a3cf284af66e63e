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
            f"{', ...' if len(sizes) > 4 else ''}); batches need one size: prepare the store with a size (PrepareOptions.size)"
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


def split_keys(keys, default_epoch: int) -> tuple[list[int], list[int]]:
    """Loader keys (an int index, or ``(epoch, index)``) -> (epochs, indices)."""
    epochs, indices = [], []
    for key in keys:
        if isinstance(key, (tuple, list)):
            epochs.append(int(key[0]))
            indices.append(int(key[1]))
        else:
            epochs.append(int(default_epoch))
            indices.append(int(key))
    return epochs, indices


def empty_batch(shape: tuple[int, ...], dtype=torch.uint8) -> torch.Tensor:
    """An uninitialised tensor, in shared memory when made inside a loader worker.

    A worker's batch crosses to the main process through shared memory;
    allocating it there from the start (as torch's own collate does) saves
    one copy of every batch.
    """
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape)) if shape else 1
    try:
        storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
        return torch.empty(0, dtype=dtype).new(storage).view(shape) if numel else torch.empty(shape, dtype=dtype)
    except (AttributeError, RuntimeError):  # private API moved: fall back to a copy into shared memory
        return torch.empty(shape, dtype=dtype).share_memory_()


def gather_frames(store, videos: Sequence[int], frames: np.ndarray, channels: int) -> torch.Tensor:
    """uint8 (N, K, C, H, W): frames ``frames[i]`` (K indices) of video ``videos[i]``, one batch tensor.

    Only the pages of those frames are read from the memory-mapped arrays.
    Every video must have the frame size of the first.
    """
    frames = np.asarray(frames, dtype=np.int64)
    n, k = frames.shape
    if n == 0:
        raise ValueError("an empty batch")
    first = store.videos[videos[0]]
    h, w = first.height, first.width
    out = empty_batch((n, k, channels, h, w))
    for i, v in enumerate(videos):
        arr = store.frames(v)  # (T, H, W, C)
        if arr.shape[-1] == channels == 1:
            # (T, H, W, 1) and (K, 1, H, W) have the same memory layout: a flat copy
            np.take(arr, frames[i], axis=0, out=out[i].numpy().reshape(k, h, w, 1), mode="clip")
        else:  # channels last -> first; a grey video among RGB ones is repeated
            src = torch.from_numpy(np.ascontiguousarray(arr[frames[i]])).permute(0, 3, 1, 2)
            out[i].copy_(src.expand(-1, channels, -1, -1) if src.shape[1] != channels else src)
    return out


class PlannedBatches:
    """``get_batch`` / ``__getitem__`` of a dataset of pretraining items whose ``plan_batch(keys)``
    gives ``(label positions, store videos, frames (N, 3), mixable (N,))`` and which has ``store``,
    ``channels`` and ``labels``: one read per batch, straight into the batch tensor."""

    def get_batch(self, keys, read=None) -> dict:
        """A collated batch of the items ``keys`` (ints or ``(epoch, index)``), read in one go.

        Frames go straight from the memory-mapped arrays into one batch
        tensor (in shared memory inside a loader worker, so nothing is copied
        again on the way to the main process); ``read(videos, frames)`` reads
        them from elsewhere (e.g. :class:`uscl.data.DeviceFrames`).
        """
        positions, videos, frames, mixable = self.plan_batch(keys)
        pixels = read(videos, frames) if read is not None else gather_frames(self.store, videos, frames, self.channels)
        return {
            "frames": pixels,
            "mixable": torch.from_numpy(mixable),
            "label": torch.tensor([self.labels[p] for p in positions], dtype=torch.int64),
            "video": torch.tensor(videos, dtype=torch.int64),
            "frame_index": torch.from_numpy(np.asarray(frames, dtype=np.int64)),  # (N, 3) frame of each slot
            "num_frames": torch.tensor([self.store.videos[v].num_frames for v in videos], dtype=torch.int64),
        }

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        return {k: v[0] for k, v in self.get_batch([key]).items()}
