"""The baselines in the same loop: the paper's SimCLR (frames as independent images) and
MoCo v2 (momentum key encoder + queue), trained and resumed bit-identically on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uscl.checkpoint import load_weights
from uscl.data import FrameItemDataset, PairSamplingConfig, VideoItemDataset, make_loader
from uscl.pretrain import PretrainConfig, pretrain, resume_config
from uscl.pretrain.config import DatasetConfig
from uscl.store import FrameStore


class Killed(Exception):
    pass


def tiny(store, out, **kw):
    from uscl.pretrain.config import ProbeConfig

    if isinstance(kw.get("probe"), dict):
        kw["probe"] = ProbeConfig(**kw["probe"])
    base = dict(store=str(store), out=str(out), epochs=2, batch_size=4, device="cpu", seed=0,
                dataset=DatasetConfig(image_size=32, valid_size=0.25, frame_slots=8))
    return PretrainConfig(**{**base, **kw})


def batches_videos(loader, epochs=3):
    out = []
    for e in range(epochs):
        loader.set_epoch(e)
        out += [b["video"].tolist() for b in loader]
    return out


def test_simclr_frames_can_pair_two_frames_of_one_video_and_simclr_cannot(make_store):
    store = FrameStore(make_store(n_videos=4, frames=8, size=16))
    frames = FrameItemDataset(store, range(4), seed=0)
    assert len(frames) == 32  # an epoch covers every frame
    per_video = make_loader(VideoItemDataset(store, range(4), PairSamplingConfig(mode="simclr"), seed=0), 4,
                            shuffle=True, seed=0, drop_last=True)
    per_frame = make_loader(frames, 4, shuffle=True, seed=0, drop_last=True)
    assert all(len(set(b)) == len(b) for b in batches_videos(per_video))
    assert any(len(set(b)) < len(b) for b in batches_videos(per_frame))
    # every frame of every video once per epoch, each item unmixable with f1 = f2 = f3
    _, videos, picked, mixable = frames.plan_batch([(0, i) for i in range(32)])
    assert sorted(zip(videos, picked[:, 0].tolist())) == [(v, t) for v in range(4) for t in range(8)]
    assert not mixable.any() and (picked == picked[:, :1]).all()
    slots = FrameItemDataset(store, range(4), seed=0, slots=6)
    assert len(slots) == 6
    drawn = [tuple(f) for f in slots.plan_batch([(0, i) for i in range(6)])[2]]
    assert len(set(drawn)) > 1 and drawn != [tuple(f) for f in slots.plan_batch([(1, i) for i in range(6)])[2]]


@pytest.mark.parametrize("method", ["simclr-frames", "moco", "moco-spg", "uscl-multi"])
def test_baseline_trains_and_resumes_bit_identically(method, make_store, tmp_path):
    store = make_store(n_videos=8, frames=4, size=32)
    straight = pretrain(tiny(store, tmp_path / "straight", method=method))
    assert [r["epoch"] for r in straight.metrics] == [1, 2]
    assert all(np.isfinite(r["total_loss"]) for r in straight.metrics)

    def kill_after_first(row):
        if row["epoch"] == 1:
            raise Killed()

    with pytest.raises(Killed):
        pretrain(tiny(store, tmp_path / "killed", method=method), on_epoch_end=kill_after_first)
    resumed = pretrain(resume_config(tmp_path / "killed"))
    a, _ = load_weights(straight.last_path)
    b, _ = load_weights(resumed.last_path)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]


def test_multi_positive_gets_three_views_and_time_weights(make_store, tmp_path):
    from uscl.augment import AugmentConfig, BatchAugment
    from uscl.pretrain.config import LossConfig
    from uscl.pretrain.methods import method_class
    from uscl.utils.seed import make_generator

    store = FrameStore(make_store(n_videos=4, frames=10, size=32))
    data = VideoItemDataset(store, range(4), PairSamplingConfig(), seed=0)
    batch = data.get_batch([(0, i) for i in range(4)])
    cfg = tiny(store.root, tmp_path / "x", method="uscl-multi", loss=LossConfig(time_sigma=0.2))
    method = method_class("uscl-multi").from_config(cfg, supervised=False)
    inputs = method.make_inputs(batch, BatchAugment(AugmentConfig(size=24)), 0.5, "cpu", make_generator(0))
    assert len(inputs.views) == 3 and inputs.view1.shape == (4, 3, 24, 24)
    assert not torch.equal(inputs.views[0], inputs.views[2])  # each frame augmented on its own
    w = inputs.positive_weights
    t = batch["frame_index"].double()
    # weight of f1 -> f3 against its time gap, in units of 0.2 of the video's 10 frames
    assert torch.allclose(w[:, 0, 2].double(), torch.exp(-(t[:, 0] - t[:, 2]).abs() / 2.0), atol=1e-6)
    bigger = make_store(n_videos=8, frames=6, size=32)
    run = pretrain(tiny(bigger, tmp_path / "weighted", method="uscl-multi", loss=LossConfig(time_sigma=0.2)))
    assert all(np.isfinite([r["total_loss"], r["val_loss"]]).all() for r in run.metrics)


def test_online_probe_is_logged_chooses_the_checkpoint_and_guards_its_videos(make_store, tmp_path):
    import csv
    import json

    from uscl.finetune import FinetuneConfig, finetune
    from uscl.errors import UsclError

    store = make_store(n_videos=12, frames=4, size=32)
    res = pretrain(tiny(store, tmp_path / "run", method="uscl-selfsup", epochs=3, select="probe",
                        probe={"every": 2, "folds": 2, "knn_k": 3, "frames_per_video": 2}))
    rows = list(csv.DictReader((res.run_dir / "metrics.csv").open()))
    probed = [int(r["epoch"]) for r in rows if r["probe_linear_acc"]]
    assert probed == [2, 3]  # every 2 epochs and after the last
    for r in rows:
        if r["probe_linear_acc"]:
            assert 0 <= float(r["probe_knn_acc"]) <= 1 and 0 <= float(r["probe_linear_acc"]) <= 1
    best = max((float(r["probe_linear_acc"]), -int(r["epoch"])) for r in rows if r["probe_linear_acc"])
    assert res.selected_by == "probe_linear_acc" and res.best_epoch == -best[1]
    meta = json.loads((res.run_dir / "backbone.json").read_text())
    assert meta["selected_by"] == "probe_linear_acc" and meta["epoch"] == res.best_epoch
    listed = json.loads((res.run_dir / "labelled_videos.json").read_text())["videos"]
    assert len(listed) == 12 and all(v["used_for"] == "probe" for v in listed)
    # the probe saw these videos' labels: fine-tuning refuses to test on them
    with pytest.raises(UsclError, match="label"):
        finetune(FinetuneConfig(store=str(store), out=str(tmp_path / "ft"), init=f"checkpoint:{res.run_dir}",
                                mode="knn", folds=2, image_size=32, device="cpu"))


def test_pretraining_can_continue_from_local_imagenet_weights(make_store, tmp_path):
    from torchvision.models import resnet18

    from uscl.errors import UsclError

    torch.manual_seed(123)
    imagenet = resnet18().state_dict()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(imagenet, path)
    store = make_store(n_videos=8, frames=4, size=32)
    res = pretrain(tiny(store, tmp_path / "run", init=f"imagenet:{path}", epochs=1, lr=1e-12))
    got, _ = load_weights(res.last_path)
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.conv2.weight"):
        assert torch.allclose(got[f"backbone.{key}"], imagenet[key], atol=1e-6), key
    with pytest.raises(UsclError, match="not found|no such|missing"):
        pretrain(tiny(store, tmp_path / "missing", init=f"imagenet:{tmp_path / 'nope.pth'}", epochs=1))
    with pytest.raises(UsclError, match="init"):
        pretrain(tiny(store, tmp_path / "bad", init="imagenet", epochs=1))


def test_the_pretraining_report_shows_the_probe(make_store, tmp_path):
    from uscl.report import pretrain_report

    store = make_store(n_videos=12, frames=4, size=32)
    res = pretrain(tiny(store, tmp_path / "run", method="simclr", epochs=2,
                        probe={"every": 1, "folds": 2, "knn_k": 3, "frames_per_video": 2}))
    text = pretrain_report(res.run_dir).read_text()
    assert "Online probe" in text and "s per probe" in text and (res.run_dir / "pretrain_curves.png").is_file()


def test_moco_gets_its_usual_augmentation_unless_the_run_sets_one():
    from uscl.augment import AugmentSettings
    from uscl.pretrain.config import validate_config

    moco = validate_config(PretrainConfig(store="s", out="o", method="moco"))
    assert moco.augment.scale == (0.2, 1.0) and moco.augment.jitter_s == 0.5 and moco.augment.jitter_p == 0.8
    assert validate_config(moco).augment == moco.augment  # resolving twice changes nothing
    own = validate_config(PretrainConfig(store="s", out="o", method="moco", augment=AugmentSettings(scale=(0.5, 1.0))))
    assert own.augment.scale == (0.5, 1.0) and own.augment.jitter_s == 0.5
    for method in ("uscl", "moco-spg", "simclr"):
        assert validate_config(PretrainConfig(store="s", out="o", method=method)).augment == AugmentSettings()
