"""Readers, discovery, labels, sampling and crop of uscl.video / uscl.store.crop on tiny generated media."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from uscl.video import (
    DecodeError,
    LabelResolver,
    discover_inputs,
    even_indices,
    fps_indices,
    label_by_prefix,
    parse_prefix_map,
    parse_where,
    read_frames,
    read_labels_csv,
    to_channels,
)
from uscl.video.sampling import NearestTimeSampler
from uscl.video.samples import moving_frames, write_dicom, write_video


def _frame_means(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(frames.shape[0], -1).mean(axis=1)


@pytest.mark.parametrize("ext", [".mp4", ".m4v", ".avi", ".mov", ".mpeg", ".mpg", ".gif"])
def test_every_video_container_decodes_all_frames_in_order(tmp_path, ext):
    src = moving_frames(8, 48, 64)
    path = write_video(tmp_path / f"clip{ext}", src, fps=25)
    video = read_frames(path)
    assert video.kind == "video"
    assert video.frames.shape == (8, 48, 64, 1) and video.frames.dtype == np.uint8
    assert (video.orig_num_frames, video.orig_height, video.orig_width) == (8, 48, 64)
    assert video.orig_fps == pytest.approx(25.0, rel=0.02)
    # each frame is brighter than the last by 8 grey levels: order and identity survive the codec
    np.testing.assert_allclose(_frame_means(video.frames), _frame_means(src[..., 0]), atol=3)
    rgb = read_frames(path, channels="rgb")
    assert rgb.frames.shape == (8, 48, 64, 3)


def test_video_scaled_by_decoder(tmp_path):
    path = write_video(tmp_path / "clip.mp4", moving_frames(4, 48, 64))
    video = read_frames(path, size=32)
    assert video.frames.shape == (4, 32, 32, 1)
    assert (video.orig_height, video.orig_width) == (48, 64)


def test_fps_sampling_and_max_frames_on_a_video(tmp_path):
    path = write_video(tmp_path / "clip.mp4", moving_frames(10, 32, 32), fps=10)
    sampled = read_frames(path, fps=5)  # every other frame of a 10 fps clip
    assert sampled.num_frames == 5 and sampled.orig_num_frames == 10
    assert sampled.fps == pytest.approx(5.0)
    np.testing.assert_allclose(_frame_means(sampled.frames), _frame_means(read_frames(path).frames)[::2], atol=0.01)
    capped = read_frames(path, max_frames=3)
    assert capped.num_frames == 3
    np.testing.assert_allclose(_frame_means(capped.frames), _frame_means(read_frames(path).frames)[[0, 4, 9]],
                               atol=0.01)


def test_nearest_time_sampling_rules():
    times = [i / 30 for i in range(91)]  # 3 s at 30 fps
    assert fps_indices(times, 3) == list(range(0, 91, 10))
    # a source slower than the target: every frame once, no duplicates
    assert fps_indices([0.0, 0.5, 1.0, 1.5], 10) == [0, 1, 2, 3]
    # irregular timing: the frame nearest to each multiple of 1/fps
    assert fps_indices([0.0, 0.4, 0.45, 1.1, 1.9, 2.05], 1) == [0, 3, 5]
    assert even_indices(10, 4) == [0, 3, 6, 9]
    assert even_indices(3, 5) == [0, 1, 2]
    sampler = NearestTimeSampler(2)
    kept = [p for i, t in enumerate([0.0, 0.2, 0.45, 0.7, 1.05]) for p in sampler.push(t, i)]
    assert kept == [0, 2, 4]


def test_dicom_example_cine_ybr_to_rgb_and_frame_time():
    from pydicom import examples

    path = examples.get_path("ybr_color")
    rgb = read_frames(path, channels="rgb")
    assert rgb.kind == "dicom" and rgb.frames.shape == (30, 240, 320, 3)
    assert rgb.orig_fps == pytest.approx(1000 / 33.333, rel=1e-3)  # FrameTime 33.333 ms
    # the scanner's green marker stays green: YBR was converted to RGB
    r, g, b = rgb.frames[0, 20, 190].astype(int)
    assert g > r + 40 and g > b
    grey = read_frames(path, fps=10)
    assert grey.frames.shape == (10, 240, 320, 1)
    np.testing.assert_array_equal(grey.frames[1], to_channels(rgb.frames[3], "grey"))


def test_dicom_photometric_variants(tmp_path):
    img = moving_frames(3, 32, 40)[..., 0]
    mono1 = read_frames(write_dicom(tmp_path / "m1.dcm", img[:1], photometric="MONOCHROME1"))
    np.testing.assert_array_equal(mono1.frames[0, ..., 0], 255 - img[0])
    assert mono1.num_frames == 1 and mono1.orig_fps is None
    wide = read_frames(write_dicom(tmp_path / "m16.dcm", img.astype(np.uint16) * 200, frame_time_ms=100))
    assert wide.frames.min() == 0 and wide.frames.max() == 255 and wide.orig_fps == pytest.approx(10)
    palette = np.stack([np.arange(256), 255 - np.arange(256), np.zeros(256)], 1).astype(np.uint8)
    pal = read_frames(write_dicom(tmp_path / "pal.dcm", img, photometric="PALETTE COLOR", palette=palette,
                                  cine_rate=15), channels="rgb")
    np.testing.assert_array_equal(pal.frames[..., 0], img)
    np.testing.assert_array_equal(pal.frames[..., 1], 255 - img)
    assert pal.orig_fps == 15


def test_dicom_without_pixels_or_decoder_is_a_clear_decode_error(tmp_path):
    img = moving_frames(2, 16, 16)[..., 0]
    with pytest.raises(DecodeError, match="no pixel data"):
        read_frames(write_dicom(tmp_path / "report.dcm", img, pixel_data=False))
    jpeg_ls = "1.2.840.10008.1.2.4.80"
    with pytest.raises(DecodeError, match="no decoder .* installed"):
        read_frames(write_dicom(tmp_path / "jls.dcm", img, transfer_syntax=jpeg_ls))


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the cut values it reads
def test_truncated_dicom_is_reported_as_truncated_not_as_without_pixels(tmp_path):
    whole = write_dicom(tmp_path / "cine.dcm", moving_frames(3, 16, 16)[..., 0], frame_time_ms=100).read_bytes()
    pixels_at = whole.index(b"\xe0\x7f\x10\x00")  # the (7FE0,0010) PixelData tag
    cut = tmp_path / "cut.dcm"
    for n in range(1, len(whole)):  # every cut: preamble, file meta, header elements, pixel data
        cut.write_bytes(whole[:n])
        with pytest.raises(DecodeError) as err:
            read_frames(cut)
        assert "truncated" in str(err.value), (n, str(err.value))
        if n <= pixels_at:
            assert str(err.value).startswith("DICOM file is truncated or unreadable"), (n, str(err.value))
    # an object that ends cleanly without pixels is still a report, not a cut file
    report = write_dicom(tmp_path / "report.dcm", moving_frames(1, 16, 16)[..., 0], pixel_data=False)
    import pydicom

    ds = pydicom.dcmread(report)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.save_as(report, enforce_file_format=True)
    with pytest.raises(DecodeError, match="has no pixel data") as err:
        read_frames(report)
    assert "truncated" not in str(err.value)


@pytest.mark.parametrize("ext,mode", [(".png", "RGB"), (".jpg", "L"), (".bmp", "RGB"), (".tif", "RGB"),
                                      (".png", "RGBA"), (".png", "P"), (".png", "I;16")])
def test_still_images_are_one_frame_videos(tmp_path, ext, mode):
    arr = moving_frames(1, 24, 30)[0]
    img = Image.fromarray(arr)
    if mode == "I;16":
        img = Image.fromarray(arr[..., 0].astype(np.uint16) * 256)
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(tmp_path / f"still{ext}")
    video = read_frames(tmp_path / f"still{ext}")
    assert video.kind == "image" and video.frames.shape == (1, 24, 30, 1)
    assert abs(float(video.frames.mean()) - float(arr[..., 0].mean())) < 6


def test_luma_matches_pil():
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_channels(rgb, "grey")[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
    assert to_channels(rgb[..., :1], "rgb").shape == (16, 16, 3)


def test_broken_files_raise_decode_error(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    full = write_video(tmp_path / "full.mp4", moving_frames(8, 32, 32)).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(full[: len(full) // 2])
    with pytest.raises(DecodeError, match="empty file"):
        read_frames(tmp_path / "empty.mp4")
    with pytest.raises(DecodeError, match="not a readable video"):
        read_frames(tmp_path / "text.mp4")
    with pytest.raises(DecodeError):
        read_frames(tmp_path / "cut.mp4")  # moov atom at the end: nothing to decode


def test_truncated_faststart_video_keeps_what_decoded(tmp_path):
    full = write_video(tmp_path / "full.mp4", moving_frames(10, 64, 64), faststart=True).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(full[: int(len(full) * 0.6)])
    video = read_frames(tmp_path / "cut.mp4")
    assert 1 <= video.num_frames < 10
    assert len(video.notes) == 1 and f"kept the {video.num_frames} frames that decoded" in video.notes[0]


def _write_folder(folder, names, size=(20, 16)):
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((size[1], size[0]), 20 * i, np.uint8)).save(folder / name)


def test_frame_folder_rule_and_natural_order(tmp_path):
    _write_folder(tmp_path / "cls" / "vid1", ["frame_10.png", "frame_2.png", "frame_1.png"])
    _write_folder(tmp_path / "stills", ["Cov_a.png", "Reg_b.png"])  # not a numbered sequence
    (tmp_path / "mixed").mkdir()
    Image.new("L", (20, 16)).save(tmp_path / "mixed" / "img1.png")
    Image.new("L", (30, 16)).save(tmp_path / "mixed" / "img2.png")  # sizes differ
    _write_folder(tmp_path / "listed", ["1.jpg", "2.jpg"])
    (tmp_path / "notes.txt").write_text("x")
    found = discover_inputs(tmp_path, stills={"listed/1.jpg"})
    kinds = {i.rel: i.kind for i in found.inputs}
    assert kinds == {"cls/vid1": "frames", "listed/1.jpg": "image", "listed/2.jpg": "image",
                     "mixed/img1.png": "image", "mixed/img2.png": "image",
                     "stills/Cov_a.png": "image", "stills/Reg_b.png": "image"}
    assert found.ignored == ["notes.txt"]
    folder = next(i for i in found.inputs if i.kind == "frames")
    assert [f.name for f in folder.files] == ["frame_1.png", "frame_2.png", "frame_10.png"]
    video = read_frames(folder.path)
    assert video.kind == "frames" and video.frames.shape == (3, 16, 20, 1)
    # written as 0, 20, 40 for names 10, 2, 1: natural order reads 40, 20, 0
    np.testing.assert_array_equal(video.frames[:, 0, 0, 0], [40, 20, 0])
    assert not any(i.kind == "frames" for i in discover_inputs(tmp_path, frame_folders=False).inputs)


def test_frame_folder_with_unreadable_frames_stays_one_video(tmp_path):
    names = [f"frame_{i}.png" for i in range(1, 7)]
    _write_folder(tmp_path / "cls" / "vid", names)
    (tmp_path / "cls" / "vid" / "frame_3.png").write_bytes(b"not a png at all")  # unreadable header
    found = discover_inputs(tmp_path)
    assert [(i.rel, i.kind) for i in found.inputs] == [("cls/vid", "frames")]  # not 5 one-frame stills
    folder = found.inputs[0]
    assert [f.name for f in folder.files] == ["frame_1.png", "frame_2.png", "frame_4.png", "frame_5.png", "frame_6.png"]
    assert [p.name for p, _ in folder.unreadable] == ["frame_3.png"]
    assert "not a readable image" in folder.unreadable[0][1]
    assert [f.name for f in folder.members] == names  # the fingerprint covers the bad member too
    # a member whose header reads but whose pixels are cut is dropped at decode time, and named
    whole = (folder.path / "frame_5.png").read_bytes()
    (folder.path / "frame_5.png").write_bytes(whole[: len(whole) // 2])
    video = read_frames(folder.path, kind="frames", files=list(folder.files))
    assert video.num_frames == 4 and video.orig_num_frames == 4
    np.testing.assert_array_equal(video.frames[:, 0, 0, 0], [0, 20, 60, 100])
    assert [p.name for p, _ in video.dropped] == ["frame_5.png"] and "not a readable image" in video.dropped[0][1]
    # a folder whose images are all unreadable is no video: each file is its own (failing) input
    (tmp_path / "bad").mkdir()
    for name in ("1.png", "2.png"):
        (tmp_path / "bad" / name).write_bytes(b"junk")
    kinds = {i.rel: i.kind for i in discover_inputs(tmp_path).inputs}
    assert kinds == {"cls/vid": "frames", "bad/1.png": "image", "bad/2.png": "image"}


def test_labels_csv_prefix_and_parent(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label,probe,patient\n./a/Cov_1.mp4,covid,convex,p1\nb\\x.gif,,linear,\n")
    rows = read_labels_csv(csv_path, tmp_path)
    assert rows["a/Cov_1.mp4"].label == "covid" and rows["a/Cov_1.mp4"].patient == "p1"
    assert rows["a/Cov_1.mp4"].extra == {"probe": "convex"}
    assert rows["b/x.gif"].label is None
    resolver = LabelResolver(rows, label_from="prefix", prefix_map=parse_prefix_map(None))
    assert resolver.resolve("a/Cov_1.mp4").label == "covid"
    assert resolver.resolve("z/pneu-case.mp4").label == "pneumonia"
    assert resolver.resolve("z/Other.mp4").label is None
    assert resolver.unmatched_rows() == ["b/x.gif"]
    assert LabelResolver(label_from="parent").resolve("convex/Reg_1.mp4").label == "convex"
    assert label_by_prefix("Pneumothorax", parse_prefix_map("Pneu=pneumonia,Pneumo=ptx")) == "ptx"
    where = parse_where(["probe=convex,curved"])
    assert LabelResolver.matches(rows["a/Cov_1.mp4"], where)
    assert not LabelResolver.matches(rows["b/x.gif"], where)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na,b\n")
    from uscl.errors import UsclError

    with pytest.raises(UsclError, match="needs columns 'path' and 'label'"):
        read_labels_csv(bad)
    with pytest.raises(UsclError, match="PREFIX=LABEL"):
        parse_prefix_map("Cov")


def test_crop_drops_margins_text_and_masks_static_overlay():
    from uscl.store.crop import plan_crop

    rng = np.random.default_rng(0)
    frames = np.zeros((12, 60, 80, 1), np.uint8)
    frames[:, 10:50, 20:70, 0] = rng.integers(60, 200, size=(12, 40, 50))  # live image
    frames[:, 2:6, 2:15, 0] = 255  # static text in the margin
    frames[:, 12:15, 22:30, 0] = 250  # static overlay burnt into the image
    frames[:, 55:58, 60:75, 0] = rng.integers(100, 255, size=(12, 3, 15))  # a changing clock in the margin
    plan = plan_crop(frames)
    assert plan.box == (10, 50, 20, 70)
    out = plan.apply(frames)
    assert out.shape == (12, 40, 50, 1)
    assert (out[:, 2:5, 2:10] == 0).all()  # the overlay is masked to black
    assert out[:, 20:30, 20:30].min() >= 60  # live content untouched
    # a still (one frame) has no temporal signal: cropped to its largest non-black region, nothing masked
    still = plan_crop(frames[:1])
    assert still.overlay is None and still.box == (10, 50, 20, 70)
    assert (still.apply(frames[:1])[0, 2:5, 2:10] == 250).all()


def test_real_pocus_inputs_are_found_and_labelled(pocus_dir):
    """The shared POCUS set (when present): 163 inputs, prefix labels agree with labels.csv."""
    found = discover_inputs(pocus_dir)
    assert len(found.inputs) == 163 and {i.kind for i in found.inputs} == {"video", "image"}
    rows = read_labels_csv(pocus_dir / "labels.csv", pocus_dir)
    by_prefix = LabelResolver(label_from="prefix")
    disagree = [i.rel for i in found.inputs if rows[i.rel].label not in ("uncertain", by_prefix.resolve(i.rel).label)]
    assert disagree == []
    first_gif = next(i for i in found.inputs if i.rel.endswith(".gif"))
    video = read_frames(first_gif.path, fps=3, max_frames=30)
    assert video.num_frames >= 1 and video.orig_num_frames == int(rows[first_gif.rel].extra["frames"])
