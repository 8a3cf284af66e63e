"""Sample pair generation: frame draws and their gap rules, mixup, the video and
frame datasets, reproducibility across loader workers."""

import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from uscl.data import FrameDataset, PairSamplingConfig, VideoItemDataset, make_loader
from uscl.data.pairs import draw_frames
from uscl.errors import ConfigError, UsclError
from uscl.store import FrameStore, StoreWriter

CLASSES = {"covid": 0, "pneumonia": 1, "regular": 2}


def _valid_sets(t, k, min_gap, max_gap):
    d = max(1, min_gap)
    out = []
    for c in itertools.combinations(range(t), k):
        if all(b - a >= d for a, b in zip(c, c[1:])) and (max_gap is None or c[-1] - c[0] <= max_gap):
            out.append(c)
    return out


@pytest.mark.parametrize("t,min_gap,max_gap", [(6, 0, None), (10, 2, None), (10, 2, 6), (12, 0, 3)])
def test_draws_are_uniform_over_sets_obeying_the_gaps(t, min_gap, max_gap):
    rng = np.random.default_rng(0)
    valid = _valid_sets(t, 3, min_gap, max_gap)
    draws = 150 * len(valid)
    counts = Counter(tuple(sorted(draw_frames(t, 3, min_gap, max_gap, rng))) for _ in range(draws))
    assert set(counts) == set(valid)  # every valid set, nothing else
    freq = np.array([counts[v] for v in valid]) / draws
    assert np.abs(freq - 1 / len(valid)).max() < 4 * np.sqrt((1 / len(valid)) / draws) + 1e-9
    # random order: the anchor (2nd drawn) is not always the middle frame
    middles = [draw_frames(t, 3, min_gap, max_gap, rng) for _ in range(300)]
    assert 0.2 < np.mean([m[1] == sorted(m)[1] for m in middles]) < 0.5


def test_short_video_relaxes_the_gap_and_few_frames_give_all():
    rng = np.random.default_rng(0)
    assert sorted(draw_frames(5, 3, 3, None, rng)) == [0, 2, 4]  # min_gap 3 does not fit: widest that does
    assert sorted(draw_frames(3, 3, 5, None, rng)) == [0, 1, 2]
    assert sorted(draw_frames(2, 3, 0, None, rng)) == [0, 1]
    with pytest.raises(ConfigError, match="max_gap"):
        PairSamplingConfig(min_gap=4, max_gap=5)
    with pytest.raises(ConfigError, match="mode"):
        PairSamplingConfig(mode="moco")


def _store(make_store, **kw):
    return FrameStore(make_store(**kw))


def test_video_items_one_two_and_many_frames(make_store):
    store = _store(make_store, n_videos=4, frame_counts=[1, 2, 3, 9], size=16)
    ds = VideoItemDataset(store, range(4), PairSamplingConfig(), class_to_index=CLASSES)
    for epoch in range(5):
        ds.set_epoch(epoch)
        one, two, three, nine = (ds[i] for i in range(4))
        assert not one["mixable"] and torch.equal(one["frames"][0], one["frames"][2])
        assert not two["mixable"]
        f, _ = ds.frame_indices(1)
        assert {f[0], f[2]} == {0, 1}  # its two frames as f1 and f3
        assert three["mixable"] and sorted(ds.frame_indices(2)[0]) == [0, 1, 2]
        f9, mixable = ds.frame_indices(3)
        assert mixable and len(set(f9)) == 3
        for i, t in enumerate(f9):  # the pixels are those frames of that video
            assert torch.equal(nine["frames"][i], torch.from_numpy(np.array(store.frame(3, t))).permute(2, 0, 1))
    item = ds[3]
    assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (3, 1, 16, 16)
    assert item["label"].dtype == torch.int64 and item["label"].item() == CLASSES[store[3].label]
    assert item["video"].item() == 3 and item["mixable"].dtype == torch.bool


def test_simclr_mode_uses_one_frame_unmixed(make_store):
    store = _store(make_store, n_videos=3, frames=8, size=16)
    ds = VideoItemDataset(store, range(3), PairSamplingConfig(mode="simclr"), seed=1)
    for i in range(3):
        f, mixable = ds.frame_indices(i)
        assert not mixable and f[0] == f[1] == f[2]
        assert ds[i]["label"].item() == -1  # no class map: labels unused


def test_labels_use_label_mask_and_unlabelled(make_store):
    store = _store(make_store, n_videos=6, frames=3, size=16, labelled=0.5)
    ds = VideoItemDataset(store, [1, 2, 4], class_to_index=CLASSES, use_label=[False, True, True])
    assert ds.labels == [-1, CLASSES[store[2].label], -1]  # masked, used, unlabelled video
    whole_store_mask = [i != 2 for i in range(6)]
    ds2 = VideoItemDataset(store, [1, 2], class_to_index=CLASSES, use_label=whole_store_mask)
    assert ds2.labels == [CLASSES[store[1].label], -1]
    with pytest.raises(UsclError, match="use_label"):
        VideoItemDataset(store, [1, 2], use_label=[True])
    with pytest.raises(UsclError, match="not among the classes"):
        VideoItemDataset(store, [0], class_to_index={"other": 0})


def test_draws_depend_only_on_seed_epoch_video(make_store):
    store = _store(make_store, n_videos=5, frames=20, size=8)
    a = VideoItemDataset(store, range(5), seed=3)
    b = VideoItemDataset(store, [4, 3, 2, 1, 0], seed=3)
    assert [a.frame_indices(i) for i in range(5)] == [b.frame_indices(4 - i) for i in range(5)]
    e0 = [a.frame_indices(i)[0] for i in range(5)]
    a.set_epoch(1)
    assert [a.frame_indices(i)[0] for i in range(5)] != e0
    assert torch.equal(a[(0, 2)]["frames"], VideoItemDataset(store, range(5), seed=3)[2]["frames"])
    assert [VideoItemDataset(store, range(5), seed=4).frame_indices(i)[0] for i in range(5)] != e0


def _epochs(loader, n):
    out = []
    for epoch in range(n):
        loader.set_epoch(epoch)
        out.append([(b["video"].tolist(), b["frames"].clone()) for b in loader])
    return out


def test_same_batches_with_0_and_2_workers(make_store):
    store = _store(make_store, n_videos=10, frames=12, size=8)
    ds = VideoItemDataset(store, range(10), seed=5)
    ref = _epochs(make_loader(ds, 4, shuffle=True, seed=9, drop_last=True), 2)
    multi = _epochs(make_loader(ds, 4, shuffle=True, seed=9, drop_last=True, num_workers=2), 2)
    assert len(ref[0]) == 2
    for e_ref, e_multi in zip(ref, multi):
        for (v1, f1), (v2, f2) in zip(e_ref, e_multi, strict=True):
            assert v1 == v2 and torch.equal(f1, f2)
    assert [v for v, _ in ref[0]] != [v for v, _ in ref[1]]  # epochs differ in order


def test_frame_dataset_items_labels_and_limits(make_store):
    store = _store(make_store, n_videos=4, frame_counts=[3, 10, 1, 5], size=8, labelled=0.75)
    ds = FrameDataset(store, [1, 3], CLASSES, max_frames_per_video=4)
    assert ds.items == [(1, 0), (1, 3), (1, 6), (1, 9), (3, 0), (3, 1), (3, 3), (3, 4)]
    item = ds[5]
    assert item["image"].shape == (1, 8, 8) and item["image"].dtype == torch.uint8
    assert torch.equal(item["image"], torch.from_numpy(np.array(store.frame(3, 1))).permute(2, 0, 1))
    assert item["video"].item() == 3 and item["frame"].item() == 1 and item["label"].item() == -1
    assert ds.labels[:4] == [CLASSES[store[1].label]] * 4
    assert len(FrameDataset(store, range(4), CLASSES)) == 19
    with pytest.raises(UsclError, match="not among the classes"):
        FrameDataset(store, [0], {"x": 0})


def test_mixed_sizes_and_channels(tmp_path):
    w = StoreWriter(tmp_path / "s")
    w.add_video("grey", np.zeros((3, 8, 8, 1), np.uint8) + 7)
    w.add_video("rgb", np.zeros((3, 8, 8, 3), np.uint8))
    w.add_video("big", np.zeros((3, 16, 16, 1), np.uint8))
    w.write_manifest()
    store = FrameStore(tmp_path / "s")
    ds = VideoItemDataset(store, [0, 1])
    assert ds[0]["frames"].shape == (3, 3, 8, 8)  # grey repeated to match the RGB video
    assert (ds[0]["frames"] == 7).all()
    with pytest.raises(UsclError, match="different frame sizes"):
        FrameDataset(store, [0, 2], None)
    with pytest.raises(UsclError, match="out of range"):
        VideoItemDataset(store, [5])


@pytest.mark.parametrize("t", [3, 5])
def test_batch_draws_are_uniform_over_ordered_triples(t):
    from uscl.data.pairs import batch_item_frames

    n = 120 * t * (t - 1) * (t - 2)
    frames, mixable = batch_item_frames(np.full(n, t), PairSamplingConfig(), 0, 0, np.arange(n))
    assert mixable.all() and frames.shape == (n, 3)
    assert (frames >= 0).all() and (frames < t).all()
    assert (frames[:, 0] != frames[:, 1]).all() and (frames[:, 1] != frames[:, 2]).all()
    assert (frames[:, 0] != frames[:, 2]).all()
    counts = Counter(map(tuple, frames.tolist()))
    assert len(counts) == t * (t - 1) * (t - 2)  # every ordered triple occurs
    expected = n / len(counts)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < len(counts) + 6 * np.sqrt(2 * len(counts))  # far inside the chi-square tail


def test_batch_draws_short_videos_modes_and_purity():
    from uscl.data.pairs import batch_item_frames

    cfg = PairSamplingConfig()
    lengths = np.array([1, 2, 9, 9, 2])
    frames, mixable = batch_item_frames(lengths, cfg, 3, 4, np.arange(5))
    assert mixable.tolist() == [False, False, True, True, False]
    assert frames[0].tolist() == [0, 0, 0]
    for row in (frames[1], frames[4]):  # two frames: f1 = f2, and f3 the other one
        assert row[0] == row[1] and {row[0], row[2]} == {0, 1}
    # a row depends on (seed, epoch, video) only, not on the rest of the batch
    again, _ = batch_item_frames(lengths[[3, 2]], cfg, 3, 4, np.array([3, 2]))
    assert again.tolist() == frames[[3, 2]].tolist()
    assert batch_item_frames(lengths, cfg, 3, 5, np.arange(5))[0].tolist() != frames.tolist()
    pairs, mix2 = batch_item_frames(np.full(50, 9), PairSamplingConfig(frames_per_item=2), 0, 0, np.arange(50))
    assert not mix2.any() and (pairs[:, 0] == pairs[:, 1]).all() and (pairs[:, 0] != pairs[:, 2]).all()
    one, mix1 = batch_item_frames(np.full(50, 9), PairSamplingConfig(mode="simclr"), 0, 0, np.arange(50))
    assert not mix1.any() and (one == one[:, :1]).all() and len(set(one[:, 0].tolist())) > 3


def test_get_batch_equals_items_and_rgb_mix(make_store):
    store = _store(make_store, n_videos=5, frame_counts=[1, 2, 6, 6, 7], size=8)
    ds = VideoItemDataset(store, range(5), class_to_index=CLASSES, seed=2)
    keys = [(3, 4), (3, 0), (3, 2), (3, 1)]
    batch = ds.get_batch(keys)
    items = [ds[k] for k in keys]
    for name in ("frames", "mixable", "label", "video"):
        assert torch.equal(batch[name], torch.stack([it[name] for it in items])), name
    assert batch["frames"].shape == (4, 3, 1, 8, 8)
    fds = FrameDataset(store, [2, 4], CLASSES)
    fb = fds.get_batch([0, 7, 3])
    for j, i in enumerate([0, 7, 3]):
        video, frame = fds.items[i]
        assert torch.equal(fb["image"][j], torch.from_numpy(np.array(store.frame(video, frame))).permute(2, 0, 1))
        assert fb["video"][j] == video and fb["frame"][j] == frame


def test_device_batch_loader_gives_the_loaders_batches(make_store):
    from uscl.data import DeviceBatchLoader, DeviceFrames

    store = _store(make_store, n_videos=7, frame_counts=[1, 2, 5, 6, 6, 9, 4], size=8)
    ds = VideoItemDataset(store, [6, 0, 2, 3, 5], class_to_index=CLASSES, seed=4)
    frames = DeviceFrames(store, ds.video_indices, ds.channels, "cpu")
    assert frames.nbytes == sum(store.videos[v].num_frames for v in ds.video_indices) * 64
    for world, rank in ((1, 0), (2, 1)):
        ref = make_loader(ds, 2, shuffle=True, seed=1, drop_last=True, world_size=world, rank=rank)
        dev = DeviceBatchLoader(ds, frames, 2, shuffle=True, seed=1, drop_last=True, world_size=world, rank=rank)
        assert len(ref) == len(dev)
        for epoch in range(2):
            ref.set_epoch(epoch)
            dev.set_epoch(epoch)
            for a, b in zip(ref, dev, strict=True):
                assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(KeyError):
        frames.read([1], np.zeros((1, 3), dtype=np.int64))  # video 1 was not loaded


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_frames_on_cuda_give_the_loaders_batches(make_store):
    from uscl.data import DeviceBatchLoader, DeviceFrames

    store = _store(make_store, n_videos=6, frame_counts=[2, 5, 6, 6, 9, 4], size=8)
    ds = VideoItemDataset(store, range(6), class_to_index=CLASSES, seed=1)
    dev = DeviceBatchLoader(ds, DeviceFrames(store, range(6), ds.channels, "cuda"), 3, shuffle=True, seed=2,
                            drop_last=True)
    for a, b in zip(make_loader(ds, 3, shuffle=True, seed=2, drop_last=True), dev, strict=True):
        assert b["frames"].device.type == "cuda" and torch.equal(a["frames"], b["frames"].cpu())

