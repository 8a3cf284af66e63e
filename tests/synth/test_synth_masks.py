"""Segmentation masks of the synthetic generator: file contract, and that the labels sit where
the structures are drawn (with shifted and flipped masks as negative controls)."""

from __future__ import annotations

import csv

import av
import numpy as np
import pytest

from uscl.cli import main
from uscl.synth import (MASK_CLASSES, generate, geometry_for, read_mask_video, render_video,
                        sample_video_params, video_rng)
from uscl.synth.geometry import probe_geometry
from uscl.synth.masks import labels_from_weights
from uscl.synth.params import apply_overrides

PLEURA, BLINE, CONSOLIDATION, EFFUSION = 1, 2, 3, 4
SIZE = 96  # the location checks; the file checks use 64


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _render(label, seed, frames=8, **kw):
    video, labels = render_video(label, frames, SIZE, np.random.default_rng(seed), masks=True, **kw)
    params = apply_overrides(sample_video_params(label, np.random.default_rng(seed)), kw)
    sector = np.broadcast_to(geometry_for(params, SIZE).mask, video.shape)
    return video.astype(float), labels, sector


def _shift(mask, dy, dx, sector):
    return np.roll(mask, (dy, dx), axis=(-2, -1)) & sector


def _above_contrast(video, mask, sector, gap=3):
    """Mean grey under ``mask`` minus the mean of the pixels ``gap`` rows above it."""
    above = _shift(mask, -gap, 0, sector) & ~mask
    return video[mask].mean() - video[above].mean()


def _row_contrast(video, mask, rest):
    """Mean over rows of (grey under ``mask`` minus grey of ``rest`` in the same row)."""
    vals = []
    for f in range(len(video)):
        for r in np.where(mask[f].any(1) & rest[f].any(1))[0]:
            vals.append(video[f, r][mask[f, r]].mean() - video[f, r][rest[f, r]].mean())
    return float(np.mean(vals))


def _lung(labels, sector):
    """Sector pixels below the pleura mask of their column (the lung side)."""
    pleura = labels == PLEURA
    return (np.cumsum(pleura, axis=1) > 0) & ~pleura & sector


def test_mask_classes_constant():
    assert MASK_CLASSES == ("pleura", "bline", "consolidation", "effusion")


def test_generate_writes_lossless_masks_and_leaves_the_videos_alone(tmp_path):
    kw = dict(videos_per_class=2, frames=8, size=64, fps=12.5, seed=1)
    with_masks = generate(tmp_path / "m", masks=True, **kw)
    generate(tmp_path / "plain", **kw)
    fm, fp = _files(tmp_path / "m"), _files(tmp_path / "plain")
    videos = [rel for rel, _ in with_masks.videos]
    assert with_masks.masks == [rel[:-4] + "_mask.avi" for rel in videos]
    assert set(fm) == {"labels.csv", *videos, *with_masks.masks}
    assert set(fp) == {"labels.csv", *videos}
    assert all(fm[rel] == fp[rel] for rel in videos)  # masks change no video byte
    rows = list(csv.DictReader((tmp_path / "m" / "labels.csv").open()))
    assert list(rows[0]) == ["path", "label", "patient", "mask"]
    assert [(r["path"], r["mask"]) for r in rows] == list(zip(videos, with_masks.masks))
    # Without masks labels.csv is today's: the same rows without the mask column.
    plain = "".join(f"{r['path']},{r['label']},{r['patient']}\n" for r in rows)
    assert fp["labels.csv"].decode() == "path,label,patient\n" + plain
    for (rel, label), mask_rel in zip(with_masks.videos, with_masks.masks):
        path = tmp_path / "m" / mask_rel
        with av.open(str(path)) as c, av.open(str(tmp_path / "m" / rel)) as v:
            s, sv = c.streams.video[0], v.streams.video[0]
            assert s.codec_context.name == "ffv1" and s.codec_context.pix_fmt == "gray"
            assert (s.width, s.height) == (sv.width, sv.height) == (64, 64)
            assert s.average_rate == sv.average_rate and float(s.average_rate) == pytest.approx(12.5)
            decoded = np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)])
        assert decoded.shape == (8, 64, 64) and decoded.dtype == np.uint8
        index = int(rel[-7:-4])
        _, expected = render_video(label, 8, 64, video_rng(1, label, index), fps=12.5, masks=True)
        np.testing.assert_array_equal(decoded, expected)  # lossless
        np.testing.assert_array_equal(read_mask_video(path), expected)
        assert set(np.unique(decoded)) <= {0, 1, 2, 3, 4}
        sector = geometry_for(sample_video_params(label, video_rng(1, label, index)), 64).mask
        assert decoded[:, ~sector].max() == 0  # nothing outside the imaged sector
        present = [{int(k) for k in np.unique(frame)} for frame in decoded]
        assert all(PLEURA in p for p in present), (rel, present)
        if label == "regular":
            assert not any(CONSOLIDATION in p or EFFUSION in p for p in present)
        if label == "covid":
            assert all(BLINE in p for p in present)
        if label == "pneumonia":
            assert all(CONSOLIDATION in p for p in present)
    again = generate(tmp_path / "again", masks=True, **{**kw, "videos_per_class": 1})
    fa = _files(tmp_path / "again")
    assert all(fa[m] == fm[m] for m in again.masks)  # same seed, byte-identical masks


def test_pleura_mask_sits_on_the_bright_line():
    cases = [("regular", 0, {}), ("regular", 1, dict(probe="linear")), ("covid", 2, dict(ribs=[]))]
    for label, seed, kw in cases:
        video, labels, sector = _render(label, seed, **kw)
        pleura = labels == PLEURA
        # Mean grey under the mask moved dy rows: brightest exactly where it is.
        by_shift = {dy: video[_shift(pleura, dy, 0, sector)].mean() for dy in range(-4, 5)}
        assert max(by_shift, key=by_shift.get) == 0, (label, by_shift)
        # Negative controls: the mask moved 3 px up or down, or flipped upside down, is off the line.
        assert by_shift[0] > max(by_shift[-3], by_shift[3]) + 15, (label, by_shift)
        assert by_shift[0] > video[pleura[:, ::-1] & sector].mean() + 50, label
        assert _above_contrast(video, pleura, sector) > 25  # brighter than the wall just above


def test_b_line_mask_covers_the_bright_columns():
    video, labels, sector = _render("covid", 2, b_line_positions=[0.25, 0.6], b_line_widths=[0.02, 0.03], ribs=[])
    lung = _lung(labels, sector)
    bline = labels == BLINE
    assert bline.any(axis=(1, 2)).all()

    def contrast(mask):
        mask = mask & lung
        return _row_contrast(video, mask, lung & ~mask)

    by_shift = {dx: contrast(_shift(bline, 0, dx, sector)) for dx in range(-8, 9)}
    best = max(by_shift, key=by_shift.get)
    assert by_shift[0] > 50 and abs(best) <= 1, by_shift
    assert by_shift[-4] < by_shift[0] - 25 and by_shift[4] < by_shift[0] - 25, by_shift
    assert contrast(bline[:, :, ::-1]) < by_shift[0] - 50  # mirrored: between the lines
    # Depth: a B-line runs from the pleura down, never above it (where the column shows a pleura).
    pleura = labels == PLEURA
    above = (np.cumsum(pleura, axis=1) == 0) & pleura.any(axis=1, keepdims=True)
    assert not (bline & above).any()


def test_consolidation_and_effusion_masks_match_their_echoes():
    cons = dict(center=0.35, width=0.35, depth=0.35, bronchograms=2, brightness=0.45)
    video, labels, sector = _render("pneumonia", 3, consolidation=cons, effusion_thickness=0.08,
                                    b_line_positions=[], ribs=[])
    lung = _lung(labels, sector)
    cmask, emask = labels == CONSOLIDATION, labels == EFFUSION
    assert cmask.any(axis=(1, 2)).all() and emask.any(axis=(1, 2)).all()

    def contrast(mask):  # tissue-like consolidation vs the aerated lung at the same depth
        mask = mask & lung & ~emask
        return _row_contrast(video, mask, lung & ~mask & ~emask)

    by_shift = {dx: contrast(_shift(cmask, 0, dx, sector)) for dx in range(-8, 9, 2)}
    best = max(by_shift, key=by_shift.get)
    assert by_shift[0] > 40 and abs(best) <= 2, by_shift
    assert contrast(cmask[:, :, ::-1]) < by_shift[0] - 40  # mirrored: onto aerated lung
    # The effusion is the dark band between the pleura and the consolidation.
    eff = video[emask].mean()
    assert eff < video[cmask].mean() - 40
    assert eff < video[_shift(emask, -6, 0, sector)].mean() - 25  # moved up: onto the pleura/wall
    assert eff < video[_shift(emask, 6, 0, sector)].mean() - 25  # moved down: into the consolidation
    # Without a consolidation nothing is labelled as one.
    _, plain, _ = _render("pneumonia", 3, consolidation=None, effusion_thickness=0.0, subpleural_notches=0)
    assert not np.isin(plain, [CONSOLIDATION, EFFUSION]).any()


def test_masks_follow_the_motion_frame_by_frame():
    # A slow frame rate spans a whole breath: the chest moves the pleura, sliding moves the B-lines.
    kw = dict(b_line_positions=[0.25, 0.6], b_line_widths=[0.02, 0.03], ribs=[], breath_amp=0.02,
              slide_amp=0.05, fps=2.5)
    video, labels, sector = _render("covid", 2, frames=12, **kw)
    pleura, bline = labels == PLEURA, labels == BLINE
    rows = [np.where(pleura[f])[0].mean() for f in range(len(video))]
    cols = [np.where(bline[f])[1].mean() for f in range(len(video))]
    assert max(rows) - min(rows) > 2 and max(cols) - min(cols) > 4  # breathing and sliding move them
    f, g = int(np.argmin(rows)), int(np.argmax(rows))
    for a, b in ((f, g), (g, f)):  # each frame's own mask beats the other frame's
        own, other = video[a][pleura[a]].mean(), video[a][pleura[b]].mean()
        assert own > other + 20, (a, b, own, other)
    f, g = int(np.argmin(cols)), int(np.argmax(cols))
    lung = _lung(labels, sector)
    for a, b in ((f, g), (g, f)):
        rest = lung[a:a + 1]
        own = _row_contrast(video[a:a + 1], bline[a:a + 1] & rest, rest & ~bline[a:a + 1])
        other = _row_contrast(video[a:a + 1], bline[b:b + 1] & rest, rest & ~bline[b:b + 1])
        assert own > other + 40, (a, b, own, other)


def test_overlaps_go_to_the_earlier_class():
    geom = probe_geometry("linear", 32, 32, 32, linear_width=1.0)
    ones = np.ones((32, 32), np.float32)
    half = np.zeros((32, 32), np.float32)
    half[16:] = 1
    assert set(np.unique(labels_from_weights([ones, ones, ones, ones], geom)[geom.mask])) == {PLEURA}
    out = labels_from_weights([None, half, ones, ones], geom)
    assert set(np.unique(out[geom.mask])) == {BLINE, CONSOLIDATION}
    assert (out[:10][geom.mask[:10]] == CONSOLIDATION).all() and (out[-10:][geom.mask[-10:]] == BLINE).all()
    assert (labels_from_weights([None, None, None, ones], geom)[geom.mask] == EFFUSION).all()
    assert not labels_from_weights([None] * 4, geom).any()
    assert not labels_from_weights([ones] * 4, geom)[~geom.mask].any()


def test_cli_masks(tmp_path, capsys):
    out = tmp_path / "seg"
    args = ["synth", str(out), "--videos-per-class", "1", "--frames", "3", "--size", "32", "--classes",
            "covid,pneumonia", "--seed", "4", "--masks"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 videos" in printed and "masks: 2" in printed
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.avi")) == [
        "covid/Cov_synth_000_mask.avi", "pneumonia/Pneu_synth_000_mask.avi"]
    assert (out / "labels.csv").read_text().splitlines()[0] == "path,label,patient,mask"
    assert read_mask_video(out / "covid/Cov_synth_000_mask.avi").shape == (3, 32, 32)
    # Rewriting without --masks drops the earlier masks, so the folder matches labels.csv.
    assert main(args[:-1] + ["--overwrite"]) == 0
    assert "and 2 masks" in capsys.readouterr().out
    assert not list(out.rglob("*.avi"))
    assert (out / "labels.csv").read_text().splitlines()[0] == "path,label,patient"
    assert "--masks" in _help(capsys)


def _help(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    return capsys.readouterr().out
