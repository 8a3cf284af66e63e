"""`uscl prepare` / `uscl export-frames` end to end on tiny generated inputs."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

import uscl.store.prepare as prep
from uscl.cli import main
from uscl.errors import UsclError
from uscl.store import FrameStore
from uscl.store.prepare import PrepareOptions, prepare, preprocess_frames, read_and_preprocess
from uscl.video.samples import moving_frames, write_dicom, write_video

SMALL = PrepareOptions(size=32)


@pytest.fixture
def src(tmp_path):
    """Mixed inputs: videos in three containers, a DICOM cine, a still, a frame folder, a text file."""
    root = tmp_path / "src"
    (root / "convex").mkdir(parents=True)
    (root / "linear").mkdir()
    write_video(root / "convex" / "Cov_a.mp4", moving_frames(6, 48, 48, seed=1), fps=10)
    write_video(root / "convex" / "Reg-b.avi", moving_frames(5, 48, 64, seed=2), fps=10)
    write_video(root / "linear" / "Pneu_c.gif", moving_frames(4, 40, 40, seed=3), fps=10)
    write_dicom(root / "linear" / "Reg_cine.dcm", moving_frames(7, 40, 48, seed=4)[..., 0], frame_time_ms=100)
    Image.fromarray(moving_frames(1, 30, 30)[0]).save(root / "convex" / "Cov_still.png")
    folder = root / "convex" / "Pneu_frames"
    folder.mkdir()
    for i, f in enumerate(moving_frames(3, 32, 32, seed=5)):
        Image.fromarray(f).save(folder / f"frame_{i + 1}.png")
    (root / "README.txt").write_text("not media")
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient", "probe"])
        w.writerow(["convex/Cov_a.mp4", "covid", "p1", "convex"])
        w.writerow(["convex/Reg-b.avi", "regular", "p2", "convex"])
        w.writerow(["linear/Pneu_c.gif", "pneumonia", "p3", "linear"])
        w.writerow(["convex/Pneu_frames", "pneumonia", "p4", "convex"])
        w.writerow(["convex/missing.mp4", "covid", "", "convex"])
    return root


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_prepare_every_format_with_csv_labels(src, tmp_path):
    out = tmp_path / "store"
    summary = prepare(src, out, SMALL, labels_csv=src / "labels.csv", show_progress=False)
    store = FrameStore(out)
    by_source = {v.source: v for v in store.videos}
    assert set(by_source) == {"convex/Cov_a.mp4", "convex/Reg-b.avi", "linear/Pneu_c.gif", "linear/Reg_cine.dcm",
                              "convex/Cov_still.png", "convex/Pneu_frames"}
    counts = {s: (v.kind, v.num_frames) for s, v in by_source.items()}
    assert counts == {"convex/Cov_a.mp4": ("video", 6), "convex/Reg-b.avi": ("video", 5),
                      "linear/Pneu_c.gif": ("video", 4), "linear/Reg_cine.dcm": ("dicom", 7),
                      "convex/Cov_still.png": ("image", 1), "convex/Pneu_frames": ("frames", 3)}
    a = by_source["convex/Cov_a.mp4"]
    assert (a.label, a.patient, a.extra, a.video_id) == ("covid", "p1", {"probe": "convex"}, "convex__Cov_a")
    assert (a.orig_height, a.orig_width, a.orig_fps, a.fps) == (48, 48, 10.0, 10.0)
    assert a.content_hash == __import__("hashlib").sha256((src / "convex/Cov_a.mp4").read_bytes()).hexdigest()
    assert by_source["linear/Reg_cine.dcm"].orig_fps == 10.0 and by_source["linear/Reg_cine.dcm"].label is None
    for v in store.videos:
        assert store.frames(v.video_id).shape == (v.num_frames, 32, 32, 1)
    assert store.options == SMALL.to_dict()
    assert PrepareOptions.from_store(store) == SMALL
    assert summary.videos == 6 and summary.frames == 26 and not summary.skipped
    assert summary.per_label == {"covid": {"videos": 1, "frames": 6}, "pneumonia": {"videos": 2, "frames": 7},
                                 "regular": {"videos": 1, "frames": 5}, "unlabelled": {"videos": 2, "frames": 8}}
    assert summary.unmatched_labels == ["convex/missing.mp4"] and sorted(summary.ignored) == ["README.txt", "labels.csv"]
    assert "covid" in summary.format() and "frames/s" in summary.format()
    # predict-time preprocessing gives exactly the stored frames
    for name in ("convex/Cov_a.mp4", "linear/Reg_cine.dcm", "convex/Pneu_frames"):
        np.testing.assert_array_equal(read_and_preprocess(src / name, store.options), store.frames(by_source[name].video_id))
    assert (out / "skipped.csv").read_text() == "path,reason\n"


def test_labels_from_parent_and_prefix_and_where(src, tmp_path):
    s1 = prepare(src, tmp_path / "s1", SMALL, label_from="parent", show_progress=False)
    assert set(s1.per_label) == {"convex", "linear"}
    prepare(src, tmp_path / "s2", SMALL, label_from="prefix", show_progress=False)
    labels = {v.source: v.label for v in FrameStore(tmp_path / "s2").videos}
    assert labels == {"convex/Cov_a.mp4": "covid", "convex/Reg-b.avi": "regular", "linear/Pneu_c.gif": "pneumonia",
                      "linear/Reg_cine.dcm": "regular", "convex/Cov_still.png": "covid",
                      "convex/Pneu_frames": "pneumonia"}
    prepare(src, tmp_path / "s3", SMALL, label_from="prefix", prefix_map="Cov=c,Reg=r", show_progress=False)
    assert {v.label for v in FrameStore(tmp_path / "s3").videos} == {"c", "r", None}
    s4 = prepare(src, tmp_path / "s4", SMALL, labels_csv=src / "labels.csv", where=["probe=convex"],
                 show_progress=False)
    assert {v.source for v in FrameStore(tmp_path / "s4").videos} == {"convex/Cov_a.mp4", "convex/Reg-b.avi",
                                                                      "convex/Pneu_frames"}
    assert s4.filtered == 3


def test_bad_files_are_skipped_with_reasons(src, tmp_path):
    bad = src / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("hello, I am not a video\n" * 10)
    whole = write_video(tmp_path / "whole.mp4", moving_frames(8, 48, 48)).read_bytes()
    (bad / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    write_dicom(bad / "report.dcm", moving_frames(2, 16, 16)[..., 0], pixel_data=False)
    fast = write_video(tmp_path / "fast.mp4", moving_frames(10, 64, 64), faststart=True).read_bytes()
    (bad / "partial.mp4").write_bytes(fast[: int(len(fast) * 0.6)])
    out = tmp_path / "store"
    summary = prepare(src, out, SMALL, show_progress=False)
    with open(out / "skipped.csv", newline="") as fh:
        skipped = {r["path"]: r["reason"] for r in csv.DictReader(fh)}
    assert set(skipped) == {"bad/empty.mp4", "bad/text.mp4", "bad/cut.mp4", "bad/report.dcm"}
    assert "empty file" in skipped["bad/empty.mp4"]
    assert "not a readable video" in skipped["bad/text.mp4"]
    assert "no pixel data" in skipped["bad/report.dcm"]
    assert dict(summary.skipped) == skipped and "skipped 4 files" in summary.format()
    # a truncated file that decodes partly is kept, with a note
    partial = next(v for v in FrameStore(out).videos if v.source == "bad/partial.mp4")
    assert 1 <= partial.num_frames < 10 and "undecodable" in partial.extra["ingest_notes"][0]
    assert [p for p, _ in summary.notes] == ["bad/partial.mp4"]
    assert summary.videos == 7


def test_frame_folder_with_corrupt_frames_stays_one_video_and_reports_them(tmp_path):
    src = tmp_path / "src"
    folder = src / "covid" / "vid"
    folder.mkdir(parents=True)
    frames = moving_frames(6, 32, 32, seed=7)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"frame_{i + 1}.png")
    (folder / "frame_3.png").write_bytes(b"garbage, not an image")  # unreadable header
    whole = (folder / "frame_5.png").read_bytes()
    (folder / "frame_5.png").write_bytes(whole[: len(whole) // 2])  # header reads, pixels cut
    out = tmp_path / "store"
    summary = prepare(src, out, SMALL, label_from="parent", show_progress=False)
    store = FrameStore(out)
    assert [(v.source, v.kind, v.num_frames, v.label) for v in store.videos] == [("covid/vid", "frames", 4, "covid")]
    rec = store.videos[0]
    assert rec.orig_num_frames == 4
    np.testing.assert_array_equal(store.frames(rec.video_id), preprocess_frames(frames[[0, 1, 3, 5]], SMALL))
    with open(out / "skipped.csv", newline="") as fh:
        skipped = {r["path"]: r["reason"] for r in csv.DictReader(fh)}
    assert set(skipped) == {"covid/vid/frame_3.png", "covid/vid/frame_5.png"}
    assert all("frame of covid/vid" in r and "not a readable image" in r for r in skipped.values())
    assert dict(summary.skipped) == skipped
    text = summary.format()
    assert "skipped 2 files" in text and "covid/vid/frame_3.png" in text and "covid/vid/frame_5.png" in text
    assert [m["path"] for m in rec.extra["skipped_members"]] == ["covid/vid/frame_3.png", "covid/vid/frame_5.png"]
    # an incremental re-run reuses the video and still reports its skipped members
    again = prepare(src, out, SMALL, label_from="parent", show_progress=False)
    assert again.decoded == 0 and again.reused == 1 and dict(again.skipped) == skipped
    with open(out / "skipped.csv", newline="") as fh:
        assert {r["path"] for r in csv.DictReader(fh)} == set(skipped)


def test_labels_csv_at_the_root_of_src_is_used_when_no_labels_option_is_given(tmp_path, capsys):
    from uscl.synth import generate

    data = tmp_path / "synth"
    generate(data, videos_per_class=1, frames=3, size=32, fps=10.0, seed=0)
    with open(data / "labels.csv", newline="") as fh:
        truth = {r["path"]: r["label"] for r in csv.DictReader(fh)}
    summary = prepare(data, tmp_path / "auto", SMALL, show_progress=False)
    assert {v.source: v.label for v in FrameStore(tmp_path / "auto").videos} == truth
    assert summary.labels_csv == str(data / "labels.csv") and summary.labels_found
    assert (f"labels from {data / 'labels.csv'} (found at the root of the source; pass labels_csv to choose another)"
            in summary.format())
    # the CLI says so too, naming its flag
    assert main(["prepare", str(data), str(tmp_path / "cli"), "--size", "32"]) == 0
    assert "found at the root of the source; pass --labels to choose another" in capsys.readouterr().out
    assert {v.source: v.label for v in FrameStore(tmp_path / "cli").videos} == truth
    # explicit options win: another CSV, or labels from the folder names
    other = tmp_path / "other.csv"
    other.write_text("path,label\n" + "".join(f"{p},x{i}\n" for i, p in enumerate(sorted(truth))))
    s2 = prepare(data, tmp_path / "csv", SMALL, labels_csv=other, show_progress=False)
    assert {v.label for v in FrameStore(tmp_path / "csv").videos} == {"x0", "x1", "x2"}
    assert s2.labels_csv == str(other) and not s2.labels_found and "found at the root" not in s2.format()
    (data / "covid").rename(data / "folder_a")  # parent names now differ from the CSV labels
    s3 = prepare(data, tmp_path / "parent", SMALL, label_from="parent", show_progress=False)
    assert "folder_a" in {v.label for v in FrameStore(tmp_path / "parent").videos}
    assert s3.labels_csv is None and "found at the root" not in s3.format()
    # without any labels, the summary says the store is unlabelled and how to label it
    (data / "labels.csv").unlink()
    s4 = prepare(data, tmp_path / "none", SMALL, show_progress=False)
    assert all(v.label is None for v in FrameStore(tmp_path / "none").videos)
    assert "no labels" in s4.format() and "labels_csv" in s4.format() and "label_from parent" in s4.format()


def test_a_root_labels_csv_that_is_not_a_labels_csv_is_named_in_the_error(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "a.mp4", moving_frames(3, 32, 32), fps=10)
    (src / "labels.csv").write_text("name,score\na.mp4,3\n")
    with pytest.raises(UsclError, match=r"found at the root of .*labels_csv"):
        prepare(src, tmp_path / "out", SMALL, show_progress=False)
    assert main(["prepare", str(src), str(tmp_path / "out"), "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert "labels.csv was found at the root of SRC" in err and "--label-from" in err
    # an explicit choice still works
    prepare(src, tmp_path / "out", SMALL, label_from="parent", show_progress=False)
    assert [v.source for v in FrameStore(tmp_path / "out").videos] == ["a.mp4"]


def test_sampling_and_crop_options(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    frames = moving_frames(20, 64, 64, margin=12)
    frames[:, 14:18, 14:24] = 255  # a static overlay inside the image
    write_video(src / "clip.mp4", frames, fps=10)
    out = tmp_path / "store"
    options = PrepareOptions(size=0, fps=5, max_frames=4, crop=True)
    prepare(src, out, options, show_progress=False)
    rec = FrameStore(out).videos[0]
    assert rec.num_frames == 4 and rec.orig_num_frames == 20
    assert 38 <= rec.height <= 42 and 38 <= rec.width <= 42  # 64 - 2·12 black margin, give or take the codec
    # all 4 frames at native size after crop; the same through the public function
    direct = preprocess_frames(frames[::2][[0, 3, 6, 9]][..., :1], PrepareOptions(size=0, crop=True))
    assert abs(direct.shape[1] - rec.height) <= 2


def test_killed_run_resumes_without_redecoding_and_matches_a_clean_run(src, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    prepare(src, clean, SMALL, labels_csv=src / "labels.csv", show_progress=False)

    real = prep._ingest_one
    calls = []

    def dies_after_two(inp, *a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the process were killed here
        calls.append(inp.rel)
        return real(inp, *a, **k)

    out = tmp_path / "store"
    monkeypatch.setattr(prep, "_ingest_one", dies_after_two)
    with pytest.raises(KeyboardInterrupt):  # in this process (workers=1); worker runs: test_prepare_workers.py
        prepare(src, out, SMALL, labels_csv=src / "labels.csv", show_progress=False, workers=1)
    assert not (out / "manifest.json").exists()  # nothing a reader would take as a store
    with pytest.raises(UsclError, match="not a frame store"):
        FrameStore(out)

    second = []
    monkeypatch.setattr(prep, "_ingest_one", lambda inp, *a, **k: second.append(inp.rel) or real(inp, *a, **k))
    summary = prepare(src, out, SMALL, labels_csv=src / "labels.csv", show_progress=False, workers=1)
    assert summary.reused == 2 and summary.decoded == 4
    assert not set(second) & set(calls)
    assert _manifest(out) == _manifest(clean)
    for v in FrameStore(out).videos:
        np.testing.assert_array_equal(FrameStore(out).frames(v.video_id), FrameStore(clean).frames(v.video_id))

    # a third run decodes nothing; a touched file is decoded again
    second.clear()
    assert prepare(src, out, SMALL, labels_csv=src / "labels.csv", show_progress=False, workers=1).decoded == 0
    st = os.stat(src / "convex/Cov_a.mp4")
    os.utime(src / "convex/Cov_a.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert prepare(src, out, SMALL, labels_csv=src / "labels.csv", show_progress=False, workers=1).decoded == 1
    assert second == ["convex/Cov_a.mp4"] and _manifest(out) == _manifest(clean)


def test_other_options_refused_unless_overwrite(src, tmp_path):
    out = tmp_path / "store"
    prepare(src, out, SMALL, show_progress=False)
    with pytest.raises(UsclError, match=r"different options \(size 32 → 48\)"):
        prepare(src, out, PrepareOptions(size=48), show_progress=False)
    prepare(src, out, PrepareOptions(size=48), overwrite=True, show_progress=False)
    assert {v.height for v in FrameStore(out).videos} == {48}
    not_store = tmp_path / "busy"
    not_store.mkdir()
    (not_store / "mine.txt").write_text("x")
    with pytest.raises(UsclError, match="holds no frame store"):
        prepare(src, not_store, SMALL, show_progress=False)


def test_no_usable_input_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(UsclError, match="no usable file"):
        prepare(empty, tmp_path / "o1", SMALL, show_progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.mp4").write_text("nope")
    assert main(["prepare", str(bad), str(tmp_path / "o2")]) == 2
    assert "a.mp4" in (tmp_path / "o2" / "skipped.csv").read_text()


def test_cli_prepare_and_export_frames_round_trip(src, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["prepare", str(src), str(store), "--labels", str(src / "labels.csv"), "--size", "32",
                 "--channels", "rgb"]) == 0
    assert "frame store" in capsys.readouterr().out
    frames_dir = tmp_path / "frames"
    assert main(["export-frames", str(store), str(frames_dir)]) == 0
    assert (frames_dir / "covid" / "convex__Cov_a" / "frame_00005.png").is_file()
    assert (frames_dir / "unlabelled" / "linear__Reg_cine" / "frame_00006.png").is_file()
    assert main(["export-frames", str(store), str(frames_dir)]) == 2  # never overwritten silently
    # the exported layout reads back as the same videos, labels and pixels
    back = tmp_path / "back"
    assert main(["prepare", str(frames_dir), str(back), "--labels", str(frames_dir / "labels.csv"),
                 "--size", "0", "--channels", "rgb"]) == 0
    a, b = FrameStore(store), FrameStore(back)
    assert len(a) == len(b)
    by_id = {v.video_id: v for v in a.videos}
    for v in b.videos:
        orig_id = v.source.split("/")[1]
        assert v.label == by_id[orig_id].label and v.patient == by_id[orig_id].patient
        np.testing.assert_array_equal(b.frames(v.video_id), a.frames(orig_id))


def test_synth_round_trip(tmp_path):
    synth = pytest.importorskip("uscl.synth")
    data = tmp_path / "synth"
    synth.generate(data, videos_per_class=1, frames=4, size=48, fps=10.0, seed=0)
    with open(data / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    summary = prepare(data, tmp_path / "store", SMALL, labels_csv=data / "labels.csv", show_progress=False)
    store = FrameStore(tmp_path / "store")
    assert not summary.skipped and len(store) == len(rows) == 3
    assert sorted(v.label for v in store.videos) == sorted(r["label"] for r in rows)
    assert all(v.num_frames == 4 and v.orig_fps == pytest.approx(10.0) for v in store.videos)


def test_truncated_array_is_named_on_open_and_prepare_decodes_it_again(src, tmp_path, capsys):
    out = tmp_path / "store"
    prepare(src, out, SMALL, labels_csv=src / "labels.csv", show_progress=False)
    before = {v.video_id: np.array(FrameStore(out).frames(v.video_id)) for v in FrameStore(out).videos}
    manifest = _manifest(out)
    path = out / "arrays" / "convex__Cov_a.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # a full disk / a copy cut short
    with pytest.raises(UsclError, match=r"(?s)arrays/convex__Cov_a\.npy is truncated.*uscl prepare"):
        FrameStore(out)
    # what pretrain says (no raw 'mmap length is greater than file size')
    assert main(["pretrain", "--store", str(out), "--out", str(tmp_path / "run"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "convex__Cov_a.npy is truncated" in err and "mmap length" not in err
    # the same prepare decodes that video again (and only it), and the store is whole
    summary = prepare(src, out, SMALL, labels_csv=src / "labels.csv", show_progress=False)
    assert summary.decoded == 1 and summary.reused == 5
    store = FrameStore(out)
    assert store.verify() == 6 and _manifest(out) == manifest
    for vid, frames in before.items():
        np.testing.assert_array_equal(store.frames(vid), frames)


def test_cli_errors_name_the_flag_of_the_parameter(tmp_path, capsys):
    """prepare() says labels_csv / where / overwrite; `uscl prepare` adds --labels / --where / --overwrite."""
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "a.mp4", moving_frames(3, 32, 32), fps=10)
    with pytest.raises(UsclError, match="labels CSV not found") as err:
        prepare(src, tmp_path / "out", SMALL, labels_csv=tmp_path / "nope.csv", show_progress=False)
    assert err.value.param == "labels_csv" and "--" not in str(err.value)
    assert main(["prepare", str(src), str(tmp_path / "out"), "--labels", str(tmp_path / "nope.csv")]) == 2
    assert "(set with --labels)" in capsys.readouterr().err
    assert main(["prepare", str(src), str(tmp_path / "out"), "--where", "probe"]) == 2
    assert "bad where entry 'probe'" in (err := capsys.readouterr().err) and "(set with --where)" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("x")
    assert main(["prepare", str(src), str(tmp_path / "full")]) == 2
    assert "set overwrite (set with --overwrite)" in capsys.readouterr().err
