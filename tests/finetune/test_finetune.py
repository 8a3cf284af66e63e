import json

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from uscl.errors import UsclError
from uscl.finetune.config import SELECTED_ON_TEST, FinetuneConfig
from uscl.checkpoint.inits import load_init, parse_init
from uscl.finetune.predictions import read_predictions
from uscl.finetune.train import finetune
from uscl.models.classifier import FinetunedClassifier, apply_init


def _cfg(store, out, **kw):
    base = dict(store=str(store), out=str(out), folds=2, epochs=1, image_size=32, batch_size=8)
    base.update(kw)
    return FinetuneConfig(**base)


def _official_checkpoint(path):
    """Lay out a state dict the way the USCL release does: ResNet children as features.*, plus heads."""
    torch.manual_seed(3)
    net = resnet18()
    features = nn.Sequential(*list(net.children())[:-2])
    sd = {f"features.{k}": v for k, v in features.state_dict().items()}
    sd.update({"l1.weight": torch.randn(512, 512), "l1.bias": torch.zeros(512),
               "l2.weight": torch.randn(256, 512), "l2.bias": torch.zeros(256),
               "fc.weight": torch.randn(12, 256), "fc.bias": torch.zeros(12)})
    torch.save(sd, path)
    return features


def test_official_checkpoint_import_gives_identical_features(tmp_path):
    path = tmp_path / "best_model.pth"
    features = _official_checkpoint(path)
    sd, meta = load_init(parse_init(f"uscl-official:{path}"))
    assert meta["arch"] == "resnet18" and not any(k.startswith(("fc.", "l1.", "features.")) for k in sd)
    from uscl.models import build_backbone

    backbone, _ = build_backbone("resnet18")
    apply_init(backbone, sd, "resnet18", str(path))
    x = torch.randn(2, 3, 64, 64)
    features.eval(), backbone.eval()
    with torch.no_grad():
        ref = torch.flatten(nn.functional.adaptive_avg_pool2d(features(x), 1), 1)
        torch.testing.assert_close(backbone(x), ref)


def test_bad_checkpoints_are_named_and_nothing_is_written(make_store, tmp_path):
    store = make_store(n_videos=6, frames=3)
    with pytest.raises(UsclError, match="not found.*nothing is downloaded"):
        load_init(parse_init(f"imagenet:{tmp_path / 'missing.pth'}"))
    r50 = tmp_path / "r50.pth"
    torch.save({k: v for k, v in __import__("torchvision").models.resnet50().state_dict().items()}, r50)
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("old result")
    with pytest.raises(UsclError, match="resnet50 backbone, but the model is resnet18"):
        finetune(_cfg(store, out, init=f"imagenet:{r50}", arch="resnet18", overwrite=True))
    sd = resnet18().state_dict()
    del sd["layer3.0.conv1.weight"]
    partial = tmp_path / "partial.pth"
    torch.save(sd, partial)
    with pytest.raises(UsclError, match="missing key.*layer3.0.conv1.weight"):
        finetune(_cfg(store, out, init=f"imagenet:{partial}", overwrite=True))
    legacy = tmp_path / "legacy.pth"
    torch.save(resnet18(), legacy)  # a whole pickled module
    with pytest.raises(UsclError, match="unsafe_pickle"):
        finetune(_cfg(store, out, init=f"imagenet:{legacy}", overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # nothing overwritten
    with pytest.raises(UsclError, match="not empty"):
        finetune(_cfg(store, out))
    sd, _ = load_init(parse_init(f"imagenet:{legacy}"), unsafe_pickle=True)
    assert "conv1.weight" in sd


@pytest.mark.parametrize("mode", ["paper", "linear", "knn"])
def test_modes_write_models_predictions_and_metrics(make_store, tmp_path, mode):
    store = make_store(n_videos=6, frames=3)
    res = finetune(_cfg(store, tmp_path / mode, mode=mode, max_frames_per_video=2))
    run = res.run_dir
    m = json.loads((run / "metrics.json").read_text())
    assert m["n_folds"] == 2 and len(m["folds"]) == 2 and m["warning"] is None
    assert 0 <= m["summary"]["frame"]["accuracy"]["mean"] <= 1
    assert set(m["summary"]["pooled"]["video"]) >= {"accuracy", "macro_f1", "confusion_matrix"}
    for k in range(2):
        pred = read_predictions(run / f"fold{k}" / "predictions.csv")
        assert len(pred) == 3 * 3  # every test frame (3 videos x 3 frames); max-frames limits training only
        np.testing.assert_allclose(pred.probs.sum(1), 1, atol=1e-4)
        meta = json.loads((run / f"fold{k}" / "model.json").read_text())
        assert meta["classes"] == ["covid", "pneumonia", "regular"] and meta["image_size"] == 32
        assert meta["mean"] == 0.5 and meta["std"] == 0.25 and meta["arch"] == "resnet18"
        assert (run / f"fold{k}" / "history.csv").is_file() == (mode == "paper")
    if mode == "linear":  # the saved model alone reproduces the fold's predictions
        from safetensors.torch import load_file
        from uscl.augment import eval_transform
        from uscl.models import build_backbone
        from uscl.store import FrameStore

        s = FrameStore(store)
        backbone, dim = build_backbone("resnet18")
        model = FinetunedClassifier(backbone, dim, 3)
        model.load_state_dict(load_file(str(run / "fold0" / "model.safetensors")))
        pred = read_predictions(run / "fold0" / "predictions.csv")
        imgs = torch.stack([torch.from_numpy(np.array(s.frame(v, t))).permute(2, 0, 1)
                            for v, t in zip(pred.video_ids, pred.frames)])
        with torch.no_grad():
            probs = torch.softmax(model.eval()(eval_transform(imgs, 32)), 1).numpy()
        np.testing.assert_allclose(probs, pred.probs, atol=1e-3)
    if mode == "paper":
        meta = json.loads((run / "fold0" / "model.json").read_text())
        assert meta["trainable"] == ["layer4.1", "head"]


def test_select_val_and_select_on_test_are_recorded(make_store, tmp_path):
    store = make_store(n_videos=9, frames=2)
    res = finetune(_cfg(store, tmp_path / "val", epochs=2, select="val"))
    f0 = res.splits.folds[0]
    assert f0.val and not set(f0.val) & set(f0.test)
    hist = (res.run_dir / "fold0" / "history.csv").read_text().splitlines()
    assert "val_acc" in hist[0] and "test_acc" not in hist[0] and len(hist) == 3
    res = finetune(_cfg(store, tmp_path / "test", epochs=2, select_on_test=True))
    m = res.metrics
    assert m["selected_on_test"] and m["warning"] == SELECTED_ON_TEST and SELECTED_ON_TEST in m["selection"]
    assert all(f["selected_epoch"] in (1, 2) for f in m["folds"])


def test_checkpoint_init_takes_our_runs_and_names_them_by_method(tmp_path):
    from uscl.checkpoint import export_backbone
    from uscl.checkpoint.inits import name_for
    from uscl.models import build_backbone

    net, _ = build_backbone("resnet18")
    run = tmp_path / "runs" / "x"
    export_backbone(net, run / "backbone.safetensors", {"arch": "resnet18", "method": "simclr"})
    spec = parse_init(f"checkpoint:{run}")
    sd, meta = load_init(spec)
    assert name_for(spec, meta) == "simclr" and name_for(parse_init(f"mine=checkpoint:{run}"), meta) == "mine"
    fresh, _ = build_backbone("resnet18")
    apply_init(fresh, sd, "resnet18", str(run))
    torch.testing.assert_close(fresh.state_dict()["layer4.1.bn2.weight"], net.state_dict()["layer4.1.bn2.weight"])
    r50, _ = build_backbone("resnet50")
    with pytest.raises(UsclError, match="resnet18 backbone, but the model is resnet50"):
        apply_init(r50, sd, "resnet50", str(run))
    with pytest.raises(UsclError, match="unknown init"):
        parse_init("imagenet1k")


def test_cli_errors_name_the_flag_of_the_setting(make_store, tmp_path, capsys):
    """The library says only_folds / init / where; `uscl finetune` and `uscl compare` add the flag."""
    from uscl.cli import main

    store = make_store(n_videos=6, frames=2)
    base = ["--store", str(store), "--out", str(tmp_path / "run"), "--folds", "2", "--epochs", "1"]
    assert main(["finetune", *base, "--only-folds", "0,0"]) == 2
    err = capsys.readouterr().err
    assert "only_folds lists fold(s) 0 more than once (set with --only-folds)" in err
    assert main(["finetune", *base, "--mode", "knn", "--select", "val"]) == 2
    assert "(set with --select)" in capsys.readouterr().err
    assert main(["compare", *base, "--init", "random", "--init", "imagenet1k"]) == 2
    assert "unknown init 'imagenet1k'" in (err := capsys.readouterr().err) and err.rstrip().endswith("(set with --init)")
    assert main(["compare", *base, "--init", "random", "--where", "probe"]) == 2
    assert "where expects key=value, got 'probe' (set with --where)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_layer_decay_gives_each_stage_its_lr_and_is_recorded(make_store, tmp_path):
    from uscl.finetune.modes import param_groups, set_trainable
    from uscl.models.classifier import build_classifier

    model = build_classifier("resnet18", 3)
    set_trainable(model, "full")
    groups = param_groups(model, 1e-3, 0.5)
    # head, layer4, layer3, layer2, layer1, stem (conv1 + bn1): every parameter exactly once
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 * 0.5 ** d for d in range(6)])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert groups[-1]["params"][0] is model.backbone.conv1.weight
    set_trainable(model, "paper")
    assert [len(g["params"]) for g in param_groups(model, 1e-2, 0.5)] == [2, 6]  # head, layer4.1
    with pytest.raises(UsclError, match="layer_decay"):
        _cfg("s", tmp_path / "x", layer_decay=0.0).validate()
    store = make_store(n_videos=6, frames=3)
    res = finetune(_cfg(store, tmp_path / "full", mode="full", layer_decay=0.5, max_frames_per_video=2))
    assert json.loads((res.run_dir / "fold0" / "model.json").read_text())["layer_decay"] == 0.5


def test_full_fine_tuning_a_pretrained_backbone_at_a_high_lr_is_flagged(make_store, tmp_path):
    from uscl.pretrain import PretrainConfig, pretrain
    from uscl.pretrain.config import DatasetConfig

    store = make_store(n_videos=6, frames=3)
    run = pretrain(PretrainConfig(store=str(store), out=str(tmp_path / "pre"), method="simclr", epochs=1,
                                  batch_size=4, device="cpu", dataset=DatasetConfig(image_size=32, valid_size=0.0)))
    lines = []
    finetune(_cfg(store, tmp_path / "hi", mode="full", lr=1e-3, init=f"checkpoint:{run.run_dir}",
                  max_frames_per_video=1, only_folds=[0]), log=lines.append)
    assert any("can undo the pretraining" in ln for ln in lines)
    lines = []
    finetune(_cfg(store, tmp_path / "lo", mode="full", init=f"checkpoint:{run.run_dir}", max_frames_per_video=1,
                  only_folds=[0]), log=lines.append)
    assert not any("can undo" in ln for ln in lines)
