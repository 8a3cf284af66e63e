"""Synthetic lung-ultrasound generator: determinism, real mp4 output, class structure, CLI."""

from __future__ import annotations

import csv

import av
import numpy as np
import pytest

from uscl.cli import main
from uscl.errors import UsclError
from uscl.synth import (CLASSES, generate, geometry_for, render_video, sample_video_params,
                        video_rng)
from uscl.synth.params import apply_overrides

# A plain linear probe with the beam grid filling the image width: beam-space
# lateral fraction u lands at image column u * (size - 1), no ribs, no motion.
FLAT = dict(probe="linear", linear_width=1.0, ribs=[], motion_scale=0.0, pleura_depth=0.2)


def _decode(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)])


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    kw = dict(videos_per_class=1, frames=4, size=64, seed=3)
    a = generate(tmp_path / "a", **kw)
    generate(tmp_path / "b", **kw)
    generate(tmp_path / "c", **{**kw, "seed": 4})
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert set(fa) == {"labels.csv", "covid/Cov_synth_000.mp4", "pneumonia/Pneu_synth_000.mp4",
                       "regular/Reg_synth_000.mp4"}
    assert fa == fb  # byte-identical, labels.csv included
    assert all(fa[k] != fc[k] for k in fa if k.endswith(".mp4"))
    assert [label for _, label in a.videos] == list(CLASSES)
    assert a.labels_csv == tmp_path / "a" / "labels.csv" and a.seconds > 0
    # A video depends only on (seed, class, index): asking for more videos or fewer classes keeps it.
    generate(tmp_path / "d", **{**kw, "videos_per_class": 2, "classes": "covid"})
    fd = _files(tmp_path / "d")
    assert fd["covid/Cov_synth_000.mp4"] == fa["covid/Cov_synth_000.mp4"]
    assert "covid/Cov_synth_001.mp4" in fd and not any(k.startswith("regular/") for k in fd)


def test_mp4_decodes_to_the_rendered_frames(tmp_path):
    summary = generate(tmp_path / "out", videos_per_class=2, frames=5, size=64, fps=12.5,
                       classes=("regular", "pneumonia"), seed=1)
    rows = list(csv.DictReader((tmp_path / "out" / "labels.csv").open()))
    assert [r["path"] for r in rows] == [p for p, _ in summary.videos]
    assert [(r["path"].split("/")[0], r["label"]) for r in rows] == [(r["label"], r["label"]) for r in rows]
    assert {r["path"].split("/")[1].split("_")[0] for r in rows} == {"Reg", "Pneu"}
    assert len({r["patient"] for r in rows}) == 4
    for rel, label in summary.videos:
        frames = _decode(tmp_path / "out" / rel)
        assert frames.shape == (5, 64, 64) and frames.dtype == np.uint8
        index = int(rel[-7:-4])
        expected = render_video(label, 5, 64, video_rng(1, label, index), fps=12.5)
        assert np.abs(frames.astype(int) - expected).mean() < 6  # lossy, but the same picture
    with av.open(str(tmp_path / "out" / summary.videos[0][0])) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == pytest.approx(12.5)


def _lung_columns(video, params, size):
    """Mean grey of each image column between just below the pleura and the bottom."""
    top = int(geometry_for(params, size).to_image(params.pleura_depth + 0.08, 0.5)[0])
    return video[:, top:size - 2, :].astype(float).mean(axis=(0, 1))


def test_covid_b_lines_are_bright_columns_where_asked():
    size, where = 96, [0.25, 0.5, 0.75]
    covid = render_video("covid", 3, size, np.random.default_rng(0), b_line_positions=where, **FLAT)
    regular = render_video("regular", 3, size, np.random.default_rng(0), b_line_positions=[], **FLAT)
    params = apply_overrides(sample_video_params("covid", np.random.default_rng(0)), FLAT)
    cov_cols, reg_cols = _lung_columns(covid, params, size), _lung_columns(regular, params, size)
    cov_excess = cov_cols - np.median(cov_cols)
    reg_excess = reg_cols - np.median(reg_cols)
    for u in where:
        x = int(round(u * (size - 1)))
        assert cov_excess[x - 1:x + 2].max() > 50, (u, cov_excess[x - 1:x + 2])
    assert reg_excess.max() < 30  # lung haze varies a little; a B-line stands out by ~100
    assert (cov_excess > 20).sum() > 3 * max(1, (reg_excess > 20).sum())


def test_regular_has_a_lines_at_multiples_of_the_pleural_depth():
    size = 128
    rng = np.random.default_rng(5)
    video = render_video("regular", 3, size, rng, a_line_strength=1.0, **FLAT).astype(float)
    params = apply_overrides(sample_video_params("regular", np.random.default_rng(5)), FLAT)
    geom = geometry_for(params, size)
    rows = video[:, :, size // 4: 3 * size // 4].mean(axis=(0, 2))
    y_pleura = geom.to_image(params.pleura_depth, 0.5)[0]
    y_a1 = geom.to_image(2 * params.pleura_depth, 0.5)[0]
    y_mid = geom.to_image(1.5 * params.pleura_depth, 0.5)[0]

    def peak(y):
        y = int(round(float(y)))
        return rows[y - 2:y + 3].max()

    assert peak(y_pleura) > peak(y_mid) + 40  # the pleural line
    assert peak(y_a1) > peak(y_mid) + 15  # first A-line, one pleural depth further down
    covid = render_video("covid", 3, size, np.random.default_rng(5), a_line_strength=0.0,
                         b_line_positions=[], **FLAT).astype(float)
    crow = covid[:, :, size // 4: 3 * size // 4].mean(axis=(0, 2))
    yc = int(round(float(y_a1)))
    assert crow[yc - 2:yc + 3].max() < rows[yc - 2:yc + 3].max() - 10


def test_pneumonia_consolidation_is_tissue_like_and_effusion_dark():
    size = 96
    cons = dict(center=0.3, width=0.35, depth=0.35, bronchograms=2, brightness=0.5)
    kw = dict(FLAT, b_line_positions=[], consolidation=cons, a_line_strength=0.3)
    video = render_video("pneumonia", 2, size, np.random.default_rng(2), effusion_thickness=0.0, **kw)
    y0, y1 = int(0.32 * size), int(0.42 * size)  # just below the pleura
    inside = video[:, y0:y1, int(0.22 * size):int(0.38 * size)].mean()
    aerated = video[:, y0:y1, int(0.65 * size):int(0.85 * size)].mean()
    assert inside > aerated + 15
    wet = render_video("pneumonia", 2, size, np.random.default_rng(2), effusion_thickness=0.1, **kw)
    band = slice(int(0.25 * size), int(0.29 * size))  # between the pleura and the lung beneath
    cols = slice(int(0.22 * size), int(0.38 * size))
    assert wet[:, band, cols].mean() < video[:, band, cols].mean() - 15


def test_convex_sector_is_black_outside():
    size = 64
    video = render_video("regular", 2, size, np.random.default_rng(7), probe="convex", ribs=[])
    params = apply_overrides(sample_video_params("regular", np.random.default_rng(7)), dict(probe="convex", ribs=[]))
    mask = geometry_for(params, size).mask
    assert (~mask).sum() > 0.1 * size * size
    assert video[:, ~mask].max() == 0
    assert video[0, 0, 0] == 0 and video[0, 0, -1] == 0
    assert video[:, mask].mean() > 20


def test_consecutive_frames_are_similar_but_not_identical():
    size, frames = 64, 6
    for label in CLASSES:
        v = render_video(label, frames, size, np.random.default_rng(11)).astype(float)
        other = render_video(label, 1, size, np.random.default_rng(12)).astype(float)
        inside = (v[0] > 0) & (other[0] > 0)  # correlate the imaged sector, not the black frame
        corrs = []
        for t in range(frames - 1):
            assert not np.array_equal(v[t], v[t + 1])
            corrs.append(np.corrcoef(v[t][inside], v[t + 1][inside])[0, 1])
        assert min(corrs) > 0.85, (label, corrs)
        assert np.corrcoef(v[0][inside], other[0][inside])[0, 1] < min(corrs) - 0.15


def test_bad_parameters_are_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(UsclError, match="unknown video parameter"):
        render_video("covid", 2, 32, rng, b_lines=[0.5])
    with pytest.raises(UsclError, match="unknown class"):
        render_video("flu", 2, 32, rng)
    with pytest.raises(UsclError, match="lateral fractions"):
        render_video("covid", 2, 32, rng, b_line_positions=[1.5])
    with pytest.raises(UsclError, match="even"):
        generate(tmp_path / "x", size=63)
    with pytest.raises(UsclError, match="unknown class"):
        generate(tmp_path / "y", classes="covid,flu")


def test_cli_writes_files_and_refuses_a_non_empty_out(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["synth", str(out), "--videos-per-class", "2", "--frames", "3", "--size", "32",
            "--classes", "covid,regular", "--seed", "9"]
    assert main(args) == 0
    assert "wrote 4 videos" in capsys.readouterr().out
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert names == ["covid/Cov_synth_000.mp4", "covid/Cov_synth_001.mp4",
                     "regular/Reg_synth_000.mp4", "regular/Reg_synth_001.mp4"]
    assert _decode(out / names[0]).shape == (3, 32, 32)
    before = _files(out)
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert _files(out) == before  # nothing touched
    # --overwrite with fewer videos rewrites and drops the earlier run's extra files.
    assert main(args[:3] + ["1"] + args[4:] + ["--overwrite"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == [
        "covid/Cov_synth_000.mp4", "regular/Reg_synth_000.mp4"]
    assert len((out / "labels.csv").read_text().splitlines()) == 3
    assert main(["synth", str(tmp_path / "z"), "--classes", "flu"]) == 2
