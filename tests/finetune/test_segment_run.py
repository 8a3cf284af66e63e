"""`uscl finetune --task segment` end to end on synthetic masks: modes, outputs, resume, compare, report, errors."""

import json

import numpy as np
import pytest
import torch

from uscl.cli import main
from uscl.errors import ConfigError, UsclError
from uscl.finetune.config import FinetuneConfig
from uscl.finetune.dense_run import read_per_image
from uscl.finetune.train import finetune
from uscl.models.backbone import build_backbone
from uscl.report import compare, report
from uscl.store import FrameStore


def _cfg(store, out, **kw):
    base = dict(store=str(store), out=str(out), task="segment", mode="full", epochs=1, folds=3, image_size=32,
                batch_size=16, device="cpu", max_frames_per_video=3)
    return FinetuneConfig(**{**base, **kw})


@pytest.mark.parametrize("mode", ["frozen", "paper", "full"])
def test_modes_write_models_per_image_scores_and_metrics(mask_store, tmp_path, mode):
    res = finetune(_cfg(mask_store, tmp_path / "run", mode=mode), log=lambda *a: None)
    # trained at 32 px, scored at the store's 64 px
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["task"] == "segment" and m["mode"] == mode and m["complete"] and m["folds_run"] == [0, 1, 2]
    assert m["classes"] == ["pleura", "bline", "consolidation", "effusion"]
    store = FrameStore(mask_store)
    tested = sorted(v for f in m["folds"] for v in f["test_videos"])
    assert tested == sorted(v.video_id for v in store)  # every masked video tested once
    dice = m["summary"]["image"]["dice"]
    assert dice["n"] == 3 and 0 <= dice["mean"] <= 1 and dice["lo"] <= dice["mean"] <= dice["hi"]
    rows = read_per_image(tmp_path / "run" / "fold0" / "per_image.csv")
    fold0 = res.splits.folds[0].test
    n_frames = sum(store[v].num_frames for v in fold0)
    assert len({r["image_id"] for r in rows}) == n_frames and {r["class"] for r in rows} == {1, 2, 3, 4}
    with np.load(tmp_path / "run" / "fold0" / "test_masks.npz", allow_pickle=False) as z:
        assert z["pred"].shape == (n_frames, 64, 64) and z["pred"].max() <= 4
    meta = json.loads((tmp_path / "run" / "fold0" / "model.json").read_text())
    assert meta["task"] == "segment" and meta["mask_classes"] == m["classes"]
    trains_stem = "backbone.conv1" in " ".join(meta["trainable"]) or "backbone.conv1" in meta["trainable"]
    assert (mode == "full") == trains_stem


def test_frozen_mode_leaves_the_encoder_as_initialised(mask_store, tmp_path):
    bb, _ = build_backbone("resnet18")
    sd = {k: v for k, v in bb.state_dict().items() if not k.startswith("fc.")}
    from safetensors.torch import save_file
    save_file(sd, str(tmp_path / "init.safetensors"))
    finetune(_cfg(mask_store, tmp_path / "run", mode="frozen", init=f"imagenet:{tmp_path / 'init.safetensors'}",
                  only_folds=[0]), log=lambda *a: None)
    from safetensors.torch import load_file
    saved = load_file(str(tmp_path / "run" / "fold0" / "model.safetensors"))
    for k in ("conv1.weight", "layer4.1.conv2.weight", "layer2.0.bn1.running_mean"):
        assert torch.equal(saved[f"backbone.{k}"], sd[k]), k


def test_resume_keeps_complete_folds(mask_store, tmp_path):
    out = tmp_path / "run"
    finetune(_cfg(mask_store, out, only_folds=[0]), log=lambda *a: None)
    before = (out / "fold0" / "model.safetensors").read_bytes()
    logs = []
    res = finetune(_cfg(mask_store, out, resume=True), log=logs.append)
    assert res.metrics["folds_kept"] == [0] and res.metrics["folds_trained_now"] == [1, 2]
    assert (out / "fold0" / "model.safetensors").read_bytes() == before
    with pytest.raises(UsclError, match="epochs"):
        finetune(_cfg(mask_store, out, resume=True, epochs=2), log=lambda *a: None)


def test_compare_and_report_pair_the_inits_and_draw_overlays(mask_store, tmp_path):
    bb, _ = build_backbone("resnet18")
    torch.save({k: v for k, v in bb.state_dict().items() if not k.startswith("fc.")}, tmp_path / "tv.pth")
    res = compare(_cfg(mask_store, tmp_path / "cmp", mode="frozen"), ["random", f"imagenet:{tmp_path / 'tv.pth'}"],
                  tmp_path / "cmp", log=lambda *a: None)
    data = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert data["task"] == "segment" and data["baseline"] == "random" and data["same_folds"]
    other = next(n for n in data["runs"] if n != "random")
    d = data["paired_vs_baseline"][other]["image"]["dice"]
    a = data["runs"][other]["summary"]["image"]["dice"]["values"]
    b = data["runs"]["random"]["summary"]["image"]["dice"]["values"]
    assert d["diff"] == pytest.approx([x - y for x, y in zip(a, b)])
    text = res.report.read_text()
    assert "Paired per-fold difference" in text and "overlay_" in text
    pngs = sorted(p.name for p in (tmp_path / "cmp").glob("overlay_*.png"))
    assert len(pngs) == 6 and (tmp_path / "cmp" / "fold_dice.png").is_file()
    assert report(tmp_path / "cmp") == res.report  # `uscl report` on the folder again


def test_errors_name_the_setting(mask_store, make_store, tmp_path):
    with pytest.raises(ConfigError, match="mode") as exc:
        _cfg(mask_store, tmp_path / "a", mode="linear").validate()
    assert exc.value.param == "mode"
    with pytest.raises(UsclError, match="no masks"):
        finetune(_cfg(make_store(), tmp_path / "b"), log=lambda *a: None)
    assert not (tmp_path / "b").exists()


def test_cli_runs_a_segmentation_fold(mask_store, tmp_path, capsys):
    assert main(["finetune", "--task", "segment", "--store", str(mask_store), "--out", str(tmp_path / "cli"),
                 "--mode", "frozen", "--epochs", "1", "--folds", "3", "--only-folds", "1", "--image-size", "64",
                 "--device", "cpu"]) == 0
    assert (tmp_path / "cli" / "fold1" / "metrics.json").is_file()
    assert main(["finetune", "--task", "segment", "--store", str(mask_store), "--out", str(tmp_path / "x"),
                 "--mode", "knn"]) == 2
    assert "--mode" in capsys.readouterr().err
