"""The original USCL data path, re-implemented as the speed reference.

What the release does per batch item (see ../shared/docs/uscl-reference.md,
"Sample pair generation, as released"): pick 3 distinct frames of one video
at random from its folder of JPEGs, open each with PIL and convert to RGB,
run the PIL/torchvision chain Resize(224) → RandomResizedCrop(224, scale
0.8–1, ratio 0.8–1.25) → RandomHorizontalFlip → ColorJitter(0.8, 0.8, 0.8,
0.2) → ToTensor → Normalize(0.5, 0.25) on each frame independently, then
mix with one λ ~ Beta(0.5, 0.5): view1 = λ·f1 + (1−λ)·f2, view2 = λ·f3 +
(1−λ)·f2. Items are collated into batches by the DataLoader.

This is the baseline our data path is compared with; it is not used by uscl.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T


def original_transform(size: int = 224, s: float = 1.0) -> T.Compose:
    """The release's per-frame pretraining transform."""
    return T.Compose([
        T.Resize(size),
        T.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.8, 1.25)),
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s),
        T.ToTensor(),
        T.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]),
    ])


class ReferenceVideoDataset(torch.utils.data.Dataset):
    """One item = one video folder of JPEG frames → (view1, view2) float tensors (3, S, S).

    ``videos`` holds each video's frame paths. A video with 2 frames gives
    those two unmixed, one with 1 frame two augmentations of it (as released).
    """

    def __init__(self, videos: Sequence[Sequence[str | Path]], size: int = 224, alpha: float = 0.5, seed: int = 0):
        self.videos = [list(v) for v in videos]
        if any(len(v) == 0 for v in self.videos):
            raise ValueError("every video needs at least one frame")
        self.transform = original_transform(size)
        self.alpha = alpha
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.videos)

    def _load(self, path) -> torch.Tensor:
        with Image.open(path) as img:
            return self.transform(img.convert("RGB"))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        paths = self.videos[index]
        if len(paths) >= 3:
            f1, f2, f3 = (self._load(paths[i]) for i in self.rng.sample(range(len(paths)), 3))
            lam = float(self.np_rng.beta(self.alpha, self.alpha))
            return lam * f1 + (1 - lam) * f2, lam * f3 + (1 - lam) * f2
        if len(paths) == 2:
            return self._load(paths[0]), self._load(paths[1])
        return self._load(paths[0]), self._load(paths[0])


def reference_loader(videos, batch_size: int, size: int = 224, num_workers: int = 0, seed: int = 0):
    """The release's loader: shuffled batches of collated (view1, view2)."""
    ds = ReferenceVideoDataset(videos, size=size, seed=seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                       drop_last=True, generator=torch.Generator().manual_seed(seed))
