"""DistributedVideoSampler and make_loader: ranks split one seeded global batch,
no video twice in a global batch, epochs reshuffle; seeding helpers."""

import random

import numpy as np
import pytest
import torch

from uscl.data import DistributedVideoSampler, FrameDataset, VideoItemDataset, make_loader
from uscl.errors import ConfigError
from uscl.store import FrameStore
from uscl.utils.seed import make_generator, seed_everything


def _steps(sampler):
    """Per-rank list of steps (lists of indices), cut like a DataLoader would."""
    idx = list(sampler)
    b = sampler.per_rank_batch
    return [idx[i:i + b] for i in range(0, len(idx), b)]


@pytest.mark.parametrize("n,world", [(23, 2), (40, 4), (17, 1)])
@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_split_the_single_process_batches(n, world, drop_last):
    b = 4
    single = _steps(DistributedVideoSampler(n, b * world, 1, 0, seed=7, drop_last=drop_last))
    single = [s for step in single for s in step]
    ranks = [_steps(DistributedVideoSampler(n, b * world, world, r, seed=7, drop_last=drop_last))
             for r in range(world)]
    assert len({len(r) for r in ranks}) == 1  # every rank runs the same number of steps
    merged = []
    for step in zip(*ranks):
        for r1 in range(world):
            for r2 in range(r1 + 1, world):
                assert not set(step[r1]) & set(step[r2])  # ranks disjoint
        glob = [i for part in step for i in part]
        assert len(set(glob)) == len(glob)  # one video per global batch slot
        merged += glob
    full = n // (b * world)
    assert merged[: full * b * world] == single[: full * b * world]  # concatenation = single-process batch
    if drop_last:
        assert len(merged) == full * b * world
    else:
        assert set(merged) == set(range(n))  # every item seen, the short batch split over the ranks


def test_set_epoch_and_seed_change_order():
    s = DistributedVideoSampler(50, 10, seed=1)
    e0 = list(s)
    assert list(s) == e0  # same epoch, same order
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0 and sorted(e1) == sorted(e0)
    assert list(DistributedVideoSampler(50, 10, seed=2)) != e0
    assert list(DistributedVideoSampler(50, 10, shuffle=False)) == list(range(50))
    assert len(s) == 50


def test_short_data_and_bad_arguments():
    with pytest.warns(UserWarning, match="short batch"):
        s = DistributedVideoSampler(3, 8, drop_last=True)
    assert sorted(s) == [0, 1, 2] and len(s) == 3
    s2 = DistributedVideoSampler(3, 4, world_size=4, rank=3, drop_last=False)
    assert len(s2) == 1  # padded so all four ranks get one item
    with pytest.raises(ConfigError, match="multiple of the world size"):
        DistributedVideoSampler(10, 6, world_size=4)
    with pytest.raises(ConfigError, match="rank"):
        DistributedVideoSampler(10, 8, world_size=2, rank=2)
    with pytest.raises(ConfigError, match="empty"):
        DistributedVideoSampler(0, 8)


def test_loaders_of_two_ranks_concatenate_to_the_single_loader(make_store):
    store = FrameStore(make_store(n_videos=13, frames=4, size=8))
    ds = VideoItemDataset(store, range(13), seed=2)
    single = make_loader(ds, 6, shuffle=True, seed=3, drop_last=True)
    ranks = [make_loader(ds, 3, shuffle=True, seed=3, drop_last=True, world_size=2, rank=r) for r in range(2)]
    for epoch in (0, 1):
        single.set_epoch(epoch)
        for r in ranks:
            r.sampler.set_epoch(epoch)
        got = [torch.cat([a["video"], b["video"]]) for a, b in zip(*ranks, strict=True)]
        want = [s["video"] for s in single]
        assert len(want) == 2 and all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
        for g_batch, s_batch in zip(zip(*ranks), single):  # same frames drawn too
            torch.testing.assert_close(torch.cat([g_batch[0]["frames"], g_batch[1]["frames"]]), s_batch["frames"])


def test_frame_loader_covers_every_frame_in_order(make_store):
    store = FrameStore(make_store(n_videos=3, frames=5, size=8))
    ds = FrameDataset(store, range(3), {"covid": 0, "pneumonia": 1, "regular": 2})
    loader = make_loader(ds, 4, shuffle=False, seed=0, drop_last=False)
    batches = list(loader)
    assert [len(b["frame"]) for b in batches] == [4, 4, 4, 3]
    assert [(v, f) for b in batches for v, f in zip(b["video"].tolist(), b["frame"].tolist())] == ds.items


def test_seeding_helpers():
    seed_everything(5)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(5)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())
    assert torch.equal(torch.rand(3, generator=make_generator(9)), torch.rand(3, generator=make_generator(9)))
    assert make_generator(0).device.type == "cpu"
