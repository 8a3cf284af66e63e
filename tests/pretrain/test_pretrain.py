"""The pretraining loop end to end on tiny stores: files, resume equality, bad input, CLI."""

import csv
import hashlib
import importlib.util
import json
import warnings
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from uscl.checkpoint import load_backbone, load_weights
from uscl.cli import main
from uscl.errors import ConfigError, UsclError
from uscl.pretrain import PretrainConfig, load_config, lr_at, pretrain, resume_config, validate_config
from uscl.pretrain.config import DatasetConfig, config_from_dict
from uscl.pretrain.selection import choose_labelled, split_train_val
from uscl.store import FrameStore, StoreWriter


def tiny(store, out, **kw):
    """32 px, resnet18, batch 4, 2 epochs on the CPU."""
    base = dict(store=str(store), out=str(out), epochs=2, batch_size=4, device="cpu", seed=0,
                dataset=DatasetConfig(image_size=32, valid_size=0.25))
    base.update(kw)
    return PretrainConfig(**base)


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_tiny_pretrain_writes_the_run_folder(make_store, tmp_path):
    store = make_store(n_videos=10, frames=5, size=32, labelled=0.8)
    res = pretrain(tiny(store, tmp_path / "run"))
    run = res.run_dir
    for name in ("config.yaml", "metrics.csv", "last.safetensors", "last.json", "best.safetensors", "best.json",
                 "backbone.safetensors", "backbone.json", "train_state.pt"):
        assert (run / name).is_file(), name
    # TensorBoard events exactly when tensorboard is installed (an optional extra)
    assert (run / "tb").is_dir() == (importlib.util.find_spec("tensorboard") is not None)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        for k in ("total_loss", "contrastive_loss", "supervised_loss", "lr", "val_loss", "images_per_s",
                  "data_wait_share", "epoch_time_s"):
            assert float(r[k]) == float(r[k]), k  # present and not NaN
        assert float(r["supervised_loss"]) > 0
    assert len(res.metrics) == 2 and res.best_epoch in (1, 2) and res.selected_by == "val_loss"
    meta = json.loads((run / "best.json").read_text())
    assert meta["arch"] == "resnet18" and meta["method"] == "uscl" and meta["class_names"] == ["covid", "pneumonia", "regular"]
    assert meta["store_id"] == FrameStore(store).store_id and meta["epoch"] == res.best_epoch
    assert meta["val_loss"] == pytest.approx(res.best_val_loss)
    # the saved config reloads to the same settings
    again = load_config(run / "config.yaml")
    assert again.dataset.image_size == 32 and again.batch_size == 4 and again.method == "uscl"
    # the exported backbone is the best model's and plain torchvision takes it
    sd, bmeta = load_backbone(run)
    best, _ = load_weights(run / "best.safetensors")
    assert all(torch.equal(sd[k], best[f"backbone.{k}"]) for k in sd)
    missing = resnet18().load_state_dict(sd, strict=False).missing_keys
    assert sorted(missing) == ["fc.bias", "fc.weight"] and bmeta["epoch"] == res.best_epoch


class Killed(Exception):
    pass


def test_resume_after_a_kill_reaches_the_same_weights(make_store, tmp_path):
    store = make_store(n_videos=10, frames=6, size=32, labelled=0.6)
    straight = pretrain(tiny(store, tmp_path / "straight"))

    def kill_after_first(row):
        if row["epoch"] == 1:
            raise Killed()

    with pytest.raises(Killed):
        pretrain(tiny(store, tmp_path / "killed"), on_epoch_end=kill_after_first)
    assert json.loads((tmp_path / "killed" / "last.json").read_text())["epoch"] == 1
    resumed = pretrain(resume_config(tmp_path / "killed"))
    a, _ = load_weights(straight.last_path)
    b, meta = load_weights(resumed.last_path)
    assert meta["epoch"] == 2 and set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    for ra, rb in zip(straight.metrics, resumed.metrics):
        for k in ("total_loss", "contrastive_loss", "supervised_loss", "val_loss", "lr"):
            assert ra[k] == rb[k], k
    assert len(list(csv.DictReader((tmp_path / "killed" / "metrics.csv").open()))) == 2

    # resuming with another architecture or method: clear error, nothing touched
    before = digest(tmp_path / "killed")
    with pytest.raises(UsclError, match="model.base_model: run has 'resnet18', asked for 'resnet50'"):
        pretrain(resume_config(tmp_path / "killed", **{"model.base_model": "resnet50", "epochs": 3}))
    with pytest.raises(UsclError, match="method"):
        pretrain(resume_config(tmp_path / "killed", method="simclr", epochs=3))
    assert digest(tmp_path / "killed") == before


def test_existing_output_is_refused_unless_overwrite(make_store, tmp_path):
    store = make_store(n_videos=6, frames=4, size=32)
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsclError, match="not empty"):
        pretrain(tiny(store, out, epochs=1))
    assert (out / "keep.txt").read_text() == "mine"
    res = pretrain(tiny(store, out, epochs=1, overwrite=True, max_steps_per_epoch=1))
    assert res.last_path.is_file()
    with pytest.raises(UsclError, match="continue it with resume"):
        pretrain(tiny(store, out, epochs=1))
    # fine_tune_from starts a new run from that run's best weights
    first, _ = load_weights(out / "best.safetensors")
    res2 = pretrain(tiny(store, tmp_path / "second", epochs=1, max_steps_per_epoch=1, fine_tune_from=str(out), lr=1e-12))
    second, _ = load_weights(res2.last_path)
    assert torch.allclose(first["backbone.conv1.weight"], second["backbone.conv1.weight"], atol=1e-6)


def test_empty_store_and_unknown_key(tmp_path):
    empty = tmp_path / "empty"
    StoreWriter(empty, {}).write_manifest([])
    with pytest.raises(UsclError, match="holds no videos"):
        pretrain(tiny(empty, tmp_path / "r"))
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="dataset.colour"):
        config_from_dict({"dataset": {"colour": 1}})
    with pytest.raises(ConfigError, match="method"):
        validate_config(PretrainConfig(method="byol"))  # moco exists now
    with pytest.raises(ConfigError, match="base_model"):
        validate_config(config_from_dict({"arch": "vgg16"}))
    with pytest.raises(ConfigError, match="label_rate"):
        validate_config(PretrainConfig(label_rate=1.5))


def test_unlabelled_store_small_store_runs_self_supervised(make_store, tmp_path):
    store = make_store(n_videos=5, frames=4, size=32, labelled=0.0)
    res = pretrain(tiny(store, tmp_path / "r", epochs=1, batch_size=32,
                        dataset=DatasetConfig(image_size=32, valid_size=0.0)))
    text = " ".join(res.warnings)
    assert "no labels" in text and "batch size 5" in text
    assert res.metrics[0]["supervised_loss"] == 0.0 and res.selected_by == "train_loss"
    assert json.loads((res.run_dir / "best.json").read_text())["supervised"] is False


@pytest.mark.parametrize("kw", [dict(method="simclr"), dict(method="uscl", mixup=False, label_rate=0.5),
                                dict(method="uscl-selfsup", alpha=1.0)])
def test_methods_and_ablations_train(make_store, tmp_path, kw):
    store = make_store(n_videos=8, frames=5, size=32, frame_counts=[1, 2, 5, 5, 5, 5, 5, 5])
    res = pretrain(tiny(store, tmp_path / "r", epochs=1, max_steps_per_epoch=1, **kw))
    row = res.metrics[0]
    assert row["total_loss"] == row["total_loss"] and row["contrastive_loss"] > 0
    meta = json.loads((res.run_dir / "last.json").read_text())
    assert meta["method"] == kw["method"]
    assert meta["supervised"] == (kw["method"] == "uscl")
    assert meta["mixup"] == (kw["method"] == "uscl-selfsup")


def test_original_config_keys_and_schedule(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("batch_size: 16\nepochs: 300\nweight_decay: 10e-6\nfp16_precision: True\nfine_tune_from: None\n"
                    "log_every_n_steps: 50\neval_every_n_epochs: 2\n"
                    "model: {out_dim: 128, base_model: resnet50}\n"
                    "dataset: {s: 0.5, input_shape: '(112,112,1)', num_workers: 2, valid_size: 0.1}\n"
                    "loss: {temperature: 0.2, use_cosine_similarity: false}\n")
    with pytest.warns(UserWarning, match="channel count 1 is ignored"):
        cfg = load_config(path, {"epochs": 20})
    assert cfg.precision == "fp16" and cfg.dataset.image_size == 112 and cfg.arch == "resnet50"
    assert cfg.weight_decay == pytest.approx(1e-5) and cfg.fine_tune_from is None and cfg.epochs == 20
    assert cfg.loss.temperature == 0.2 and cfg.loss.use_cosine_similarity is False and cfg.augment.jitter_s == 0.5
    # flat for epochs//10 (max 10) epochs, then cosine to 0
    assert [lr_at(cfg, e) for e in (0, 1)] == [3e-4, 3e-4]
    assert lr_at(cfg, 2) == pytest.approx(3e-4) and lr_at(cfg, 11) == pytest.approx(1.5e-4)
    long = validate_config(PretrainConfig(epochs=300))
    assert lr_at(long, 9) == 3e-4 and lr_at(long, 10) == 3e-4 and lr_at(long, 11) < 3e-4
    short = validate_config(PretrainConfig(epochs=5))
    assert lr_at(short, 0) == 3e-4 and lr_at(short, 4) < lr_at(short, 1) < 3e-4
    # the shipped configs load without warnings
    root = Path(__file__).resolve().parents[2] / "configs"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = load_config(root / "pretrain_uscl.yaml")
        original = load_config(root / "original_config.yaml")
    assert ours.method == "uscl" and ours.loss.lambda_sup == 0.2 and ours.augment.scale == (0.8, 1.0)
    assert original.epochs == 300 and original.precision == "fp16" and original.dataset.image_size == 224


def test_split_by_patient_and_stratified_label_rate(make_store):
    store = FrameStore(make_store(n_videos=12, frames=2, size=16, patients=True))
    train, val = split_train_val(store, list(range(12)), 0.25, seed=3)
    assert len(val) >= 2 and not set(train) & set(val)
    patients = lambda idx: {store.videos[i].patient for i in idx}  # noqa: E731
    assert not patients(train) & patients(val)
    assert split_train_val(store, list(range(12)), 0.25, seed=3) == (train, val)
    mask = choose_labelled(store, train, 0.5, seed=1)
    assert mask == choose_labelled(store, train, 0.5, seed=1)
    chosen = {store.videos[train[i]].label for i, m in enumerate(mask) if m}
    assert chosen == {store.videos[i].label for i in train}  # every class keeps labelled videos
    assert 0 < sum(mask) < len(train)


def test_cli_pretrain_and_resume(make_store, tmp_path, capsys):
    store = make_store(n_videos=6, frames=4, size=32)
    out = tmp_path / "cli_run"
    args = ["pretrain", "--store", str(store), "--out", str(out), "--epochs", "1", "--batch-size", "4",
            "--image-size", "32", "--device", "cpu", "--seed", "1", "--method", "uscl-selfsup"]
    assert main(args) == 0
    assert "epoch 1/1" in capsys.readouterr().out
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(out), "--epochs", "2"]) == 0
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 2
    assert main(["pretrain", "--resume", str(out), "--epochs", "3", "--arch", "resnet50"]) == 2
    assert "resnet50" in capsys.readouterr().err


def test_frames_on_device_trains_exactly_like_the_loader(make_store, tmp_path):
    """Frames held on the device (here the CPU) give the same batches, so the same weights."""
    store = make_store(n_videos=10, frames=6, size=32, labelled=0.6)
    runs = {}
    for mode in ("never", "always"):
        cfg = tiny(store, tmp_path / mode, dataset=DatasetConfig(image_size=32, valid_size=0.25, frames_on_device=mode))
        runs[mode] = pretrain(cfg)
    a, _ = load_weights(runs["never"].last_path)
    b, _ = load_weights(runs["always"].last_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["total_loss"] for r in runs["never"].metrics] == [r["total_loss"] for r in runs["always"].metrics]
    assert validate_config(PretrainConfig(dataset=DatasetConfig(frames_on_device=True))).dataset.frames_on_device == "always"
    with pytest.raises(ConfigError, match="frames_on_device"):
        validate_config(PretrainConfig(dataset=DatasetConfig(frames_on_device="sometimes")))


def test_select_last_exports_the_final_epoch_and_small_validation_is_flagged(make_store, tmp_path):
    store = make_store(n_videos=10, frames=5, size=32, labelled=0.8)
    res = pretrain(tiny(store, tmp_path / "run", select="last", epochs=3))
    sd, meta = load_backbone(res.run_dir)
    last, _ = load_weights(res.last_path)
    assert meta["source"] == "last" and meta["epoch"] == 3
    assert all(torch.equal(sd[k], last[f"backbone.{k}"]) for k in sd)
    # every field says what is true: chosen as the last epoch, and the result and log name epoch 3
    assert meta["selected_by"] == "last" and res.backbone_epoch == 3
    best = pretrain(tiny(store, tmp_path / "best"))
    assert any("validation loss is measured on" in w for w in best.warnings)  # 2-3 validation videos
    assert load_backbone(best.run_dir)[1]["source"] == "best"
    with pytest.raises(ConfigError):
        config_from_dict({"select": "median"})


def test_report_on_a_pretraining_run(make_store, tmp_path, capsys):
    store = make_store(n_videos=10, frames=5, size=32, labelled=0.8)
    res = pretrain(tiny(store, tmp_path / "run"))
    assert main(["report", str(res.run_dir)]) == 0
    text = (res.run_dir / "report.md").read_text()
    assert "Method **uscl**" in text and "Epochs run: 2 of 2" in text and "best (val loss)" in text
    assert "holds the **best** checkpoint" in text and "Labels used by the supervised term" in text
    png = (res.run_dir / "pretrain_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "pretrain_curves.png" in capsys.readouterr().out
