"""The data loaders of one fold: its train, test and (with ``select="val"``) validation videos' frames."""

from __future__ import annotations

import torch

from uscl.data.frame_dataset import FrameDataset
from uscl.data.loader import BatchReader
from uscl.finetune.config import GRADIENT_MODES, FinetuneConfig
from uscl.finetune.splits import Fold
from uscl.utils.seed import derive_seed, make_generator, worker_init_fn


def make_loader(store, indices, class_to_index, cfg: FinetuneConfig, *, train: bool, seed: int, max_frames=None):
    """Batches of frames of the videos ``indices``: shuffled (``train``) or in store order."""
    ds = FrameDataset(store, indices, class_to_index, max_frames_per_video=max_frames)
    n = len(ds)
    generator = make_generator(seed)
    order = torch.utils.data.RandomSampler(ds, generator=generator) if train else torch.utils.data.SequentialSampler(ds)
    batches = torch.utils.data.BatchSampler(order, cfg.batch_size,
                                            drop_last=train and n > 1 and n % cfg.batch_size == 1)  # 1-image batch: BatchNorm fails
    return torch.utils.data.DataLoader(
        BatchReader(ds),  # one read per batch, straight into the batch tensor
        batch_size=None,
        sampler=batches,
        num_workers=cfg.workers,
        worker_init_fn=worker_init_fn if cfg.workers else None,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


def fold_loaders(store, fold: Fold, class_to_index: dict[str, int], cfg: FinetuneConfig, seed: int) -> dict:
    """``{"train", "test"[, "val"]}`` loaders of a fold; only gradient modes shuffle the training frames.

    ``seed``: the fold's seed; each loader's generator (order, worker seeds) derives its own from it.
    """
    idx = {side: [store.index_of(v) for v in getattr(fold, side)] for side in ("train", "val", "test")}
    loaders = {
        "train": make_loader(store, idx["train"], class_to_index, cfg, train=cfg.mode in GRADIENT_MODES,
                             seed=derive_seed(seed, "loader", "train"), max_frames=cfg.max_frames_per_video),
        "test": make_loader(store, idx["test"], class_to_index, cfg, train=False,
                            seed=derive_seed(seed, "loader", "test")),
    }
    if idx["val"]:
        loaders["val"] = make_loader(store, idx["val"], class_to_index, cfg, train=False,
                                     seed=derive_seed(seed, "loader", "val"))
    return loaders
