import numpy as np
import pytest

from uscl.finetune.metrics import (classification_metrics, fold_metrics, mean_std, paired_difference, summarize,
                                   video_level)

CLASSES = ["a", "b", "c"]
Y = [0, 0, 1, 1, 2, 2]
P = np.array([
    [0.8, 0.1, 0.1],
    [0.3, 0.6, 0.1],
    [0.2, 0.7, 0.1],
    [0.1, 0.8, 0.1],
    [0.1, 0.2, 0.7],
    [0.5, 0.2, 0.3],
])  # predictions: a b b b c a


def test_frame_metrics_match_hand_computation():
    m = classification_metrics(Y, P, CLASSES)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    pc = m["per_class"]
    assert [pc[c]["precision"] for c in CLASSES] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert [pc[c]["recall"] for c in CLASSES] == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert [pc[c]["f1"] for c in CLASSES] == pytest.approx([0.5, 0.8, 2 / 3])
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    # one-vs-rest AUC: class a ranks 7 of its 8 positive/negative pairs correctly
    assert pc["a"]["roc_auc"] == pytest.approx(7 / 8)
    assert pc["b"]["roc_auc"] == pytest.approx(1.0) and pc["c"]["roc_auc"] == pytest.approx(1.0)
    assert m["roc_auc"] == pytest.approx((7 / 8 + 2) / 3)


def test_video_level_averages_frame_probabilities():
    videos = ["x", "x", "y", "y", "z", "w"]
    keys, yv, pv = video_level(videos, Y, P)
    assert list(keys) == ["w", "x", "y", "z"]
    np.testing.assert_allclose(pv[1], [0.55, 0.35, 0.1])
    fm = fold_metrics(videos, Y, P, CLASSES)
    assert fm["video"]["accuracy"] == pytest.approx(3 / 4)  # w (class c) is called a
    assert fm["video"]["n"] == 4 and fm["frame"]["n"] == 6
    with pytest.raises(ValueError, match="different labels"):
        video_level(["x", "x"], [0, 1], P[:2])


def test_single_class_fold_has_no_auc_and_macro_f1_over_present_classes():
    m = classification_metrics([0, 0, 0], P[:3], CLASSES)
    assert m["roc_auc"] is None and all(v["roc_auc"] is None for v in m["per_class"].values())
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["macro_f1"] == pytest.approx(0.5)  # only class a is present: P=1, R=1/3


def test_summary_and_paired_difference():
    ms = mean_std([0.5, 0.7])
    assert (ms["mean"], ms["std"]) == pytest.approx((0.6, np.sqrt(0.02)))
    f1 = fold_metrics(["x", "x", "y", "y", "z", "w"], Y, P, CLASSES)
    f2 = fold_metrics(["x", "y"], [0, 1], P[[0, 3]], CLASSES)
    s = summarize([f1, f2], CLASSES)
    assert s["frame"]["accuracy"]["mean"] == pytest.approx((4 / 6 + 1) / 2)
    assert s["frame"]["confusion_matrix_sum"] == [[2, 1, 0], [0, 3, 0], [1, 0, 1]]
    d = paired_difference([0.9, 0.8, 0.85], [0.8, 0.8, 0.7])
    assert d["diff"] == pytest.approx([0.1, 0.0, 0.15])
    assert d["mean"] == pytest.approx(0.25 / 3)
    assert (d["wins"], d["ties"], d["losses"]) == (2, 1, 0)
    assert 0 < d["p_value"] < 1
