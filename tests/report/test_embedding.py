"""`uscl embed`: the two numbers against brute-force references, and the command end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uscl.errors import UsclError
from uscl.report.embedding import group_codes, knn_class_accuracy, map_2d, nearest, video_purity


# -- brute-force references: one frame at a time, plain Python ---------------------------------------------
def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_neighbours(x, i, k, ok):
    cands = [j for j in range(len(x)) if j != i and ok(j)]
    return sorted(cands, key=lambda j: -float(_unit(x)[i] @ _unit(x)[j]))[:k]


def ref_knn(x, labels, groups, k, n_classes):
    right, scored, recall = 0, 0, {c: [] for c in range(n_classes)}
    for i in range(len(x)):
        if labels[i] < 0:
            continue
        nb = ref_neighbours(x, i, k, lambda j: labels[j] >= 0 and groups[j] != groups[i])
        if not nb:
            continue
        votes = np.bincount([labels[j] for j in nb], minlength=n_classes)
        pred = int(np.flatnonzero(votes == votes.max())[0])  # ties: the lower class index
        right += pred == labels[i]
        scored += 1
        recall[labels[i]].append(pred == labels[i])
    per = [np.mean(v) for v in recall.values() if v]
    return right / scored, float(np.mean(per)), scored


def ref_purity(x, videos, k):
    fr, ch = [], []
    for i in range(len(x)):
        nb = ref_neighbours(x, i, k, lambda j: True)
        fr.append(np.mean([videos[j] == videos[i] for j in nb]))
        ch.append((np.sum(videos == videos[i]) - 1) / (len(x) - 1))
    return float(np.mean(fr)), float(np.mean(ch))


def _clusters(centres, per, spread, rng):
    return np.concatenate([c + spread * rng.normal(size=(per, len(c))) for c in centres])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_numbers_match_brute_force_on_random_features(seed):
    rng = np.random.default_rng(seed)
    n, d = 60, 12
    x = rng.normal(size=(n, d)).astype(np.float32)
    videos = rng.integers(0, 9, n)
    labels = np.where(rng.random(n) < 0.2, -1, videos % 3)  # some frames unlabelled
    patients = videos // 2
    for k in (1, 4, 8):
        got = knn_class_accuracy(x, labels, group_codes(patients), k, ["a", "b", "c"])
        acc, bal, scored = ref_knn(x, labels, patients, k, 3)
        assert got.accuracy == pytest.approx(acc) and got.balanced_accuracy == pytest.approx(bal)
        assert got.scored == scored and got.unscored == int((labels >= 0).sum()) - scored
        pur = video_purity(x, videos, k)
        assert (pur.purity, pur.chance) == pytest.approx(ref_purity(x, videos, k))
    # chunking gives the same neighbours
    assert np.array_equal(nearest(x, 5, chunk=7), nearest(x, 5))


def test_per_video_clusters_are_pure_and_class_clusters_with_mixed_videos_are_not():
    rng = np.random.default_rng(0)
    d, per = 16, 6
    # every video its own tight cluster, classes unrelated to where the clusters lie
    centres = rng.normal(size=(8, d)) * 5
    x = _clusters(centres, per, 0.01, rng)
    videos = np.repeat(np.arange(8), per)
    memorised = video_purity(x, videos, per - 1)
    assert memorised.purity == pytest.approx(1.0) and memorised.chance == pytest.approx((per - 1) / (8 * per - 1))
    # three class directions; a video's frames are spread over its class's cluster like the others' frames
    cls_centres = np.eye(d)[:3] * 10
    labels = np.repeat(np.arange(3), 4 * per)
    x = np.stack([cls_centres[c] + rng.normal(size=d) for c in labels])
    videos = labels * 4 + rng.permutation(np.arange(len(labels)) % 4)
    acc = knn_class_accuracy(x, labels, group_codes(videos), 5, ["a", "b", "c"])
    mixed = video_purity(x, videos, 5)
    assert acc.accuracy == 1.0 and acc.balanced_accuracy == 1.0
    assert mixed.purity < 0.5 and mixed.purity == pytest.approx(mixed.chance, abs=0.2)


def test_unscored_frames_and_maps():
    x = np.eye(4, dtype=np.float32)
    one_group = knn_class_accuracy(x, np.array([0, 1, 0, 1]), np.zeros(4, int), 3, ["a", "b"])
    assert one_group.accuracy is None and one_group.unscored == 4
    unlabelled = knn_class_accuracy(x, np.full(4, -1), np.arange(4), 3, [])
    assert unlabelled.accuracy is None and unlabelled.scored == 0 and (unlabelled.predictions == -1).all()
    assert nearest(x, 6)[0].tolist()[-3:] == [-1, -1, -1]  # fewer candidates than k
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(30, 8))
    for method in ("pca", "tsne"):
        a, b = map_2d(feats, method, seed=3), map_2d(feats, method, seed=3)
        assert a.shape == (30, 2) and np.array_equal(a, b)
    with pytest.raises(UsclError, match="map"):
        map_2d(feats, "mds")


# -- the command -----------------------------------------------------------------------------------------------
def _check_outputs(out, figures=True):
    from PIL import Image

    data = json.loads((out / "embedding.json").read_text())
    for value in (data["knn"]["accuracy"], data["knn"]["balanced_accuracy"], data["video_purity"]["purity"],
                  data["video_purity"]["chance"]):
        assert 0.0 <= value <= 1.0
    if figures:
        for name in ("map_class.png", "map_video.png", "neighbours.png"):
            with Image.open(out / name) as im:
                im.verify()
        assert "video purity" in (out / "embed.md").read_text()
    rows = (out / "embedding.csv").read_text().splitlines()
    assert rows[0].startswith("video_id,frame,label") and len(rows) == data["counts"]["frames"] + 1
    return data


def test_embed_random_from_the_command_line_and_its_refusals(make_store, tmp_path, capsys):
    from uscl.cli import main

    store = make_store(n_videos=9, frames=6, size=32, labelled=0.8, patients=True)
    out = tmp_path / "emb"
    assert main(["embed", "random", "--store", str(store), "--out", str(out), "--frames-per-video", "4",
                 "--device", "cpu"]) == 0
    data = _check_outputs(out)
    assert data["counts"]["frames"] == 36 and data["counts"]["labelled_frames"] == 28
    assert data["knn"]["neighbours_from"] == "other patients" and data["backbone"]["kind"] == "random"
    assert data["settings"]["image_size"] == 32  # no training size: the store's
    before = (out / "embedding.json").read_text()
    assert main(["embed", "random", "--store", str(store), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "embedding.json").read_text() == before
    assert main(["embed", "random", "--store", str(store), "--out", str(tmp_path / "x"), "--k", "0"]) == 2
    assert "--k" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "nope"), "--store", str(store), "--out", str(tmp_path / "y")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["embed", "random", "--store", str(store), "--out", str(out), "--overwrite", "--map", "pca",
                 "--init-seed", "1", "--device", "cpu"]) == 0
    assert json.loads((out / "embedding.json").read_text())["settings"]["map"] == "pca"


def test_embed_a_pretraining_run_and_a_finetuned_fold(make_store, tmp_path):
    from uscl.finetune import FinetuneConfig
    from uscl.finetune.train import finetune
    from uscl.pretrain import PretrainConfig, pretrain
    from uscl.pretrain.config import DatasetConfig
    from uscl.report.embed import EmbedSettings, embed

    store = make_store(n_videos=8, frames=4, size=32)
    run = pretrain(PretrainConfig(store=str(store), out=str(tmp_path / "run"), epochs=1, batch_size=4, device="cpu",
                                  dataset=DatasetConfig(image_size=32, valid_size=0.0))).run_dir
    res = embed(str(run), store, tmp_path / "e1", EmbedSettings(map="pca", device="cpu"), log=lambda *a: None)
    data = _check_outputs(tmp_path / "e1")
    assert data["backbone"]["kind"] == "pretrain-run" and data["backbone"]["arch"] == "resnet18"
    assert data["settings"]["image_size"] == 32 and data["backbone"]["labels_used"] is True
    assert data["labelled_overlap"] == 8 and "optimistic" in (tmp_path / "e1" / "embed.md").read_text()
    # the pretraining report with a probe store: the numbers and the map of the exported backbone
    from uscl.report import pretrain_report

    text = pretrain_report(run, probe_store=str(store), log=lambda *a: None).read_text()
    assert "video purity" in text and "](embedding/map_class.png)" in text
    assert _check_outputs(run / "embedding")["counts"]["frames"] == 8 * 4  # probe.frames_per_video = 4
    assert "video purity" not in pretrain_report(run, log=lambda *a: None).read_text()  # no probe store known
    # the same weights through the init spec
    spec = embed(f"checkpoint:{run}", store, tmp_path / "e2", EmbedSettings(figures=False, device="cpu"),
                 log=lambda *a: None)
    assert spec.summary["knn"] == res.summary["knn"] and spec.summary["video_purity"] == res.summary["video_purity"]
    _check_outputs(tmp_path / "e2", figures=False)
    ft = tmp_path / "ft"
    finetune(FinetuneConfig(store=str(store), out=str(ft), mode="linear", folds=2, image_size=32, device="cpu",
                            init="random"), log=lambda *a: None)
    got = embed(str(ft), store, tmp_path / "e3", EmbedSettings(figures=False, device="cpu"), fold=1,
                log=lambda *a: None).summary
    assert got["backbone"]["kind"] == "finetune-fold" and got["backbone"]["fold"] == 1
    assert got["backbone"]["labels_used"] is True
    assert got["labelled_overlap"] == 4  # fold 1's training and validation videos (2 folds of 8 videos)
    with pytest.raises(UsclError, match="fold 5"):
        embed(str(ft), store, tmp_path / "e4", EmbedSettings(figures=False), fold=5)
