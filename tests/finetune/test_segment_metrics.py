"""Segmentation metrics against hand computation and a brute-force HD95; the empty-region rules; summaries."""

import numpy as np
import pytest
from scipy import ndimage

from uscl.finetune.segment import metrics as segment_metrics
from uscl.finetune.segment.metrics import boundaries, fold_summary, image_metrics, summarise
from uscl.utils.intervals import t_interval


def square(shape, top, left, size, label=1, out=None):
    m = np.zeros(shape, dtype=np.int64) if out is None else out
    m[top:top + size, left:left + size] = label
    return m


def by_class(rows):
    return {r["class"]: r for r in rows}


# -- brute-force reference -----------------------------------------------------------------------------
def border_points(region, spacing):
    """Boundary pixels via binary_erosion with the 4-connected cross (the image edge counts as outside), scaled."""
    cross = ndimage.generate_binary_structure(2, 1)
    border = region & ~ndimage.binary_erosion(region, structure=cross, border_value=0)
    return np.argwhere(border) * np.asarray(spacing, dtype=np.float64)


def directed(a, b):
    """For every point of a: the distance to the nearest point of b (all pairs)."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(1)


def brute_hd95(pred_region, truth_region, spacing=(1.0, 1.0)):
    p, t = border_points(pred_region, spacing), border_points(truth_region, spacing)
    return max(np.percentile(directed(p, t), 95), np.percentile(directed(t, p), 95))


def random_labels(rng, shape, k, sigma=2.5):
    """Smooth random blobs of classes 1..k (argmax of smoothed noise, thresholded to leave background)."""
    fields = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(k + 1)])
    labels = fields.argmax(0)
    labels[fields.max(0) < np.quantile(fields.max(0), 0.3)] = 0
    return labels


# -- Dice / IoU ------------------------------------------------------------------------------------------
def test_dice_iou_of_overlapping_squares_by_hand():
    truth = square((8, 8), 2, 2, 3)
    shifted = square((8, 8), 2, 3, 3)  # one column over: 6 of 9 pixels shared
    r = image_metrics(shifted, truth, 1)[0]
    assert r["truth_area"] == 9 and r["pred_area"] == 9 and r["empty_truth"] is False
    assert r["dice"] == pytest.approx(2 * 6 / 18)
    assert r["iou"] == pytest.approx(6 / 12)
    diagonal = square((8, 8), 3, 3, 3)  # one down, one over: a 2x2 overlap
    r = image_metrics(diagonal, truth, 1)[0]
    assert r["dice"] == pytest.approx(8 / 18)
    assert r["iou"] == pytest.approx(4 / 14)
    r = image_metrics(truth, truth, 1)[0]
    assert (r["dice"], r["iou"], r["hd95"]) == (1.0, 1.0, 0.0)


def test_both_empty_is_a_correct_negative():
    rows = image_metrics(np.zeros((5, 5), int), np.zeros((5, 5), int), 2)
    assert [r["class"] for r in rows] == [1, 2]
    for r in rows:
        assert r == {"class": r["class"], "dice": 1.0, "iou": 1.0, "hd95": 0.0, "truth_area": 0, "pred_area": 0,
                     "empty_truth": True}


def test_empty_truth_with_a_prediction_is_a_false_positive():
    pred = square((6, 6), 1, 1, 2)
    r = image_metrics(pred, np.zeros((6, 6), int), 1)[0]
    assert r["dice"] == 0.0 and r["iou"] == 0.0 and r["hd95"] is None
    assert r["empty_truth"] is True and r["pred_area"] == 4 and r["truth_area"] == 0


def test_missed_structure_has_no_hd95():
    truth = square((6, 6), 1, 1, 3)
    r = image_metrics(np.zeros((6, 6), int), truth, 1)[0]
    assert r["dice"] == 0.0 and r["iou"] == 0.0 and r["hd95"] is None
    assert r["empty_truth"] is False and r["truth_area"] == 9 and r["pred_area"] == 0


def test_disjoint_regions_have_zero_overlap_and_a_distance():
    truth = square((10, 10), 0, 0, 2)
    pred = square((10, 10), 6, 6, 2)
    r = image_metrics(pred, truth, 1)[0]
    assert r["dice"] == 0.0 and r["iou"] == 0.0
    assert r["hd95"] == pytest.approx(brute_hd95(pred == 1, truth == 1))


def test_three_class_label_map_by_hand():
    truth = np.array([
        [1, 1, 0, 0, 2, 2],
        [1, 1, 0, 0, 2, 2],
        [0, 0, 0, 0, 0, 0],
        [3, 3, 3, 0, 0, 0],
    ])
    pred = np.array([
        [1, 1, 0, 0, 2, 0],
        [1, 0, 0, 0, 2, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 1],
    ])
    rows = by_class(image_metrics(pred, truth, 3))
    # class 1: truth 4 px, pred 5 px (3 inside + 2 in the last row), 3 shared
    assert rows[1]["truth_area"] == 4 and rows[1]["pred_area"] == 5
    assert rows[1]["dice"] == pytest.approx(6 / 9) and rows[1]["iou"] == pytest.approx(3 / 6)
    assert rows[1]["hd95"] == pytest.approx(brute_hd95(pred == 1, truth == 1))
    # class 2: truth 4 px, pred 2 px, both shared
    assert rows[2]["dice"] == pytest.approx(4 / 6) and rows[2]["iou"] == pytest.approx(2 / 4)
    # every truth pixel is a boundary pixel; pred is at distance 0, the right column at distance 1 -> p95 = 1
    assert rows[2]["hd95"] == pytest.approx(1.0)
    # class 3: missed
    assert rows[3]["dice"] == 0.0 and rows[3]["hd95"] is None and rows[3]["pred_area"] == 0
    assert not any(r["empty_truth"] for r in rows.values())


# -- HD95 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("axis", [0, 1])
def test_hd95_of_a_shifted_square_is_the_shift(d, axis):
    # A square of side 8 and its copy shifted by d < 8 along one axis. From A's boundary: the trailing edge
    # (8 of its 28 pixels, > 5%) lies d from B's trailing edge, and nothing is farther (the sides are at
    # max(d - j, 0), inside pixels at most d from B's leading edge), so each directed p95 is d; likewise from B.
    truth = square((24, 24), 4, 4, 8)
    top, left = (4 + d, 4) if axis == 0 else (4, 4 + d)
    pred = square((24, 24), top, left, 8)
    assert image_metrics(pred, truth, 1)[0]["hd95"] == pytest.approx(d)
    assert brute_hd95(pred == 1, truth == 1) == pytest.approx(d)
    # in physical units: the shift times the spacing along that axis
    spacing = (2.0, 0.5)
    assert image_metrics(pred, truth, 1, spacing=spacing)[0]["hd95"] == pytest.approx(d * spacing[axis])
    assert image_metrics(pred, truth, 1, spacing=0.25)[0]["hd95"] == pytest.approx(d * 0.25)


@pytest.mark.parametrize("seed", range(6))
def test_hd95_matches_brute_force_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    shape = (40, 48)
    truth = random_labels(rng, shape, 3)
    pred = random_labels(rng, shape, 3) if seed % 2 else np.roll(truth, (2, -3), (0, 1))
    spacing = (1.0, 1.0) if seed < 3 else (0.7, 1.3)
    rows = by_class(image_metrics(pred, truth, 3, spacing=spacing))
    for c in (1, 2, 3):
        p, t = pred == c, truth == c
        if p.any() and t.any():
            assert rows[c]["hd95"] == pytest.approx(brute_hd95(p, t, spacing), rel=1e-9)
        inter = int((p & t).sum())
        assert rows[c]["dice"] == pytest.approx(2 * inter / (p.sum() + t.sum()))
        assert rows[c]["iou"] == pytest.approx(inter / (p | t).sum())


def test_hd95_is_max_of_directed_percentiles_not_the_pooled_percentile():
    # truth: a square; prediction: the same square plus a far 2x2 speck (4 of 40 boundary pixels, 10%)
    truth = square((40, 40), 2, 2, 10)
    pred = square((40, 40), 32, 32, 2, out=truth.copy())
    p = border_points(pred == 1, (1, 1))
    t = border_points(truth == 1, (1, 1))
    medpy = max(np.percentile(directed(p, t), 95), np.percentile(directed(t, p), 95))
    pooled = np.percentile(np.concatenate([directed(p, t), directed(t, p)]), 95)
    assert medpy > pooled + 1  # the two definitions differ here
    assert image_metrics(pred, truth, 1)[0]["hd95"] == pytest.approx(medpy)


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_boundaries_equal_binary_erosion(seed):
    labels = random_labels(np.random.default_rng(seed), (30, 33), 4)
    labels[0, :5] = 2  # a class touching the image edge
    edge = boundaries(labels)
    cross = ndimage.generate_binary_structure(2, 1)
    for c in range(5):
        region = labels == c
        expect = region & ~ndimage.binary_erosion(region, structure=cross, border_value=0)
        assert np.array_equal(edge & region, expect)


def test_distance_transform_runs_only_when_both_regions_exist(monkeypatch):
    calls = []
    real = segment_metrics.distance_transform_edt
    monkeypatch.setattr(segment_metrics, "distance_transform_edt", lambda *a, **k: calls.append(1) or real(*a, **k))
    truth = square((12, 12), 1, 1, 3, label=1)
    pred = np.zeros((12, 12), int)
    square((12, 12), 6, 6, 3, label=2, out=truth)  # class 2 only in the truth
    square((12, 12), 1, 1, 3, label=1, out=pred)
    square((12, 12), 8, 1, 2, label=3, out=pred)  # class 3 only in the prediction; class 4 in neither
    rows = by_class(image_metrics(pred, truth, 4))
    assert len(calls) == 2  # class 1 only, once per direction
    assert rows[1]["hd95"] == 0.0 and rows[2]["hd95"] is None and rows[3]["hd95"] is None
    assert rows[4]["hd95"] == 0.0


def test_image_metrics_rejects_bad_input():
    ok = np.zeros((4, 4), int)
    with pytest.raises(ValueError):
        image_metrics(ok, np.zeros((4, 5), int), 1)
    with pytest.raises(ValueError):
        image_metrics(ok.astype(float), ok, 1)
    with pytest.raises(ValueError):
        image_metrics(ok + 2, ok, 1)  # label above K
    with pytest.raises(ValueError):
        image_metrics(ok - 1, ok, 1)
    with pytest.raises(ValueError):
        image_metrics(ok, ok, 0)
    for bad in (0.0, -1.0, (1.0, 2.0, 3.0), "x", float("nan")):
        with pytest.raises(ValueError):
            image_metrics(ok, ok, 1, spacing=bad)


# -- summarise ---------------------------------------------------------------------------------------------
def row(image, video, c, dice, iou, hd95, empty=False, pred_area=5):
    return {"image_id": image, "video_id": video, "class": c, "dice": dice, "iou": iou, "hd95": hd95,
            "empty_truth": empty, "pred_area": pred_area}


ROWS = [
    # class 1
    row("a1", "A", 1, 0.8, 0.6, 2.0),
    row("a2", "A", 1, 0.0, 0.0, None, pred_area=0),  # missed
    row("b1", "B", 1, 0.9, 0.8, 4.0),
    row("b2", "B", 1, 1.0, 1.0, 0.0, empty=True, pred_area=0),  # correct negative
    row("c1", "C", 1, 0.0, 0.0, None, empty=True, pred_area=10),  # false positive
    # class 2
    row("a1", "A", 2, 0.5, 1 / 3, 6.0),
    row("a2", "A", 2, 0.7, 0.55, 8.0),
    row("b1", "B", 2, 1.0, 1.0, 0.0, empty=True, pred_area=0),
    row("b2", "B", 2, 1.0, 1.0, 0.0, empty=True, pred_area=0),
    row("c1", "C", 2, 0.3, 0.2, 10.0),
    # class 3: in no truth and no prediction
    *[row(i, v, 3, 1.0, 1.0, 0.0, empty=True, pred_area=0)
      for i, v in (("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B"), ("c1", "C"))],
]


def test_summarise_by_hand():
    s = summarise(ROWS)
    assert s["classes"] == [1, 2, 3]
    c1 = s["per_class"][1]
    assert c1["n_images"] == 3 and c1["n_hd95"] == 2 and c1["n_missing"] == 1 and c1["n_videos"] == 2
    assert c1["dice"] == pytest.approx((0.8 + 0.0 + 0.9) / 3)
    assert c1["iou"] == pytest.approx((0.6 + 0.0 + 0.8) / 3)
    assert c1["hd95"] == pytest.approx(3.0)  # over a1, b1; a2 counts as missing
    assert c1["video_dice"] == pytest.approx((0.4 + 0.9) / 2)  # A: (0.8 + 0) / 2, B: 0.9
    assert c1["video_iou"] == pytest.approx((0.3 + 0.8) / 2)
    assert c1["video_hd95"] == pytest.approx((2.0 + 4.0) / 2)
    assert c1["empty_truth"] == {"n": 2, "fp_share": 0.5, "mean_fp_area": 5.0, "mean_fp_area_given_fp": 10.0}

    c2 = s["per_class"][2]
    assert c2["n_images"] == 3 and c2["n_missing"] == 0 and c2["n_videos"] == 2
    assert c2["dice"] == pytest.approx(0.5)
    assert c2["iou"] == pytest.approx((1 / 3 + 0.55 + 0.2) / 3)
    assert c2["hd95"] == pytest.approx(8.0)
    assert c2["video_dice"] == pytest.approx((0.6 + 0.3) / 2)  # A: (0.5 + 0.7) / 2, C: 0.3
    assert c2["video_hd95"] == pytest.approx((7.0 + 10.0) / 2)
    assert c2["empty_truth"] == {"n": 2, "fp_share": 0.0, "mean_fp_area": 0.0, "mean_fp_area_given_fp": None}

    c3 = s["per_class"][3]  # never in the truth: nothing to average, left out of the macro values
    assert c3["n_images"] == 0 and c3["dice"] is None and c3["hd95"] is None and c3["video_dice"] is None
    assert c3["empty_truth"]["n"] == 5 and c3["empty_truth"]["fp_share"] == 0.0

    m = s["macro"]
    assert m["dice"] == pytest.approx(((0.8 + 0.9) / 3 + 0.5) / 2)
    assert m["iou"] == pytest.approx((1.4 / 3 + (1 / 3 + 0.75) / 3) / 2)
    assert m["hd95"] == pytest.approx((3.0 + 8.0) / 2)
    assert m["video_dice"] == pytest.approx((0.65 + 0.45) / 2)
    assert m["video_iou"] == pytest.approx((0.55 + (0.5 * (1 / 3 + 0.55) + 0.2) / 2) / 2)
    assert m["video_hd95"] == pytest.approx((3.0 + 8.5) / 2)
    # row order does not matter
    assert summarise(ROWS[::-1]) == s


def test_summarise_takes_image_metrics_rows():
    truth = square((10, 10), 1, 1, 4)
    pred = square((10, 10), 1, 2, 4)
    rows = []
    for image, video, p in (("f0", "v0", pred), ("f1", "v0", truth), ("f2", "v1", np.zeros_like(truth))):
        rows += [{**r, "image_id": image, "video_id": video} for r in image_metrics(p, truth, 1)]
    s = summarise(rows)["per_class"][1]
    assert s["n_images"] == 3 and s["n_missing"] == 1 and s["n_videos"] == 2
    assert s["dice"] == pytest.approx((0.75 + 1.0 + 0.0) / 3)
    assert s["video_dice"] == pytest.approx((0.875 + 0.0) / 2)


def test_summarise_rejects_bad_rows():
    with pytest.raises(ValueError):
        summarise([])
    with pytest.raises(ValueError):
        summarise([row("a", "A", 1, 0.5, 0.3, 1.0), row("a", "A", 1, 0.6, 0.4, 1.0)])  # duplicate
    with pytest.raises(ValueError):
        summarise([row("a", "A", 1, 0.5, 0.3, 1.0), row("a", "B", 2, 0.6, 0.4, 1.0)])  # image in two videos
    with pytest.raises(ValueError):
        summarise([row("a", "A", 1, None, 0.3, 1.0)])


# -- fold_summary --------------------------------------------------------------------------------------------
def fold(dice, iou, hd95, vdice, viou, vhd95):
    return {"macro": {"dice": dice, "iou": iou, "hd95": hd95, "video_dice": vdice, "video_iou": viou,
                      "video_hd95": vhd95}}


def test_fold_summary_interval_is_t_interval():
    folds = [fold(0.7, 0.55, 4.0, 0.72, 0.57, 3.5),
             fold(0.8, 0.65, None, 0.78, 0.66, None),  # no defined HD95 in this fold
             fold(0.75, 0.6, 6.0, 0.74, 0.61, 5.0)]
    out = fold_summary(folds)
    assert out["n_folds"] == 3
    for level, prefix in (("image", ""), ("video", "video_")):
        for m in ("dice", "iou", "hd95"):
            values = [f["macro"][prefix + m] for f in folds]
            got = out[level][m]
            assert got["values"] == values
            iv = t_interval([v for v in values if v is not None], unit="fold")
            assert (got["mean"], got["std"], got["lo"], got["hi"], got["n"]) == pytest.approx(
                (iv.mean, iv.std, iv.lo, iv.hi, iv.n))
            assert got["confidence"] == 0.95
    assert out["image"]["hd95"]["n"] == 2 and out["image"]["dice"]["n"] == 3
    assert out["image"]["dice"]["mean"] == pytest.approx(0.75)
    assert out["image"]["dice"]["std"] == pytest.approx(0.05)
    assert fold_summary(folds, confidence=0.9)["image"]["dice"]["hi"] == pytest.approx(
        t_interval([0.7, 0.8, 0.75], confidence=0.9).hi)


def test_fold_summary_few_folds():
    one = fold_summary([fold(0.7, 0.5, None, 0.6, 0.4, None)])
    assert one["image"]["dice"]["mean"] == pytest.approx(0.7) and one["image"]["dice"]["lo"] is None
    assert one["image"]["hd95"] == {"mean": None, "std": None, "lo": None, "hi": None, "n": 0, "confidence": 0.95,
                                    "values": [None]}
    with pytest.raises(ValueError):
        fold_summary([])


def test_fold_summary_of_real_summaries():
    folds = [summarise(ROWS), summarise([r for r in ROWS if r["class"] != 2])]
    out = fold_summary(folds)
    assert out["image"]["dice"]["values"] == [folds[0]["macro"]["dice"], folds[1]["macro"]["dice"]]
    assert out["video"]["hd95"]["mean"] == pytest.approx((5.75 + 3.0) / 2)
