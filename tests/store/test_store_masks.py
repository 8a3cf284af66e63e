"""Segmentation masks through `uscl prepare` and the frame store, on tiny generated files."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from uscl.cli import main
from uscl.errors import UsclError
from uscl.store import FrameStore, StoreWriter
from uscl.store.prepare import PrepareOptions, prepare
from uscl.video.mask_video import write_mask_video
from uscl.video.samples import moving_frames, write_dicom, write_video

NATIVE = PrepareOptions(size=0)


def _csv(path, rows, header=("path", "label", "mask")):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _skipped(out):
    with open(out / "skipped.csv", newline="") as fh:
        return {r["path"]: r["reason"] for r in csv.DictReader(fh)}


def _still(path, h=30, w=40, seed=0):
    img = np.random.default_rng(seed).integers(30, 200, size=(h, w), dtype=np.uint8)
    Image.fromarray(img).save(path)
    return img


def _box_mask(h, w, box, value=255):
    m = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = value
    return m


def _square_video(n, h, w, margin, size=12, dy=3, dx=4, seed=0):
    """Frames (n, h, w): noise inside ``margin`` px of black, a bright square moving (dy, dx) per frame;
    and masks (n, h, w) of that square (255)."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, h, w), np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        frames[i, margin:h - margin, margin:w - margin] = rng.integers(40, 90, size=(h - 2 * margin, w - 2 * margin))
        y, x = margin + 2 + i * dy, margin + 2 + i * dx
        frames[i, y:y + size, x:x + size] = 230
        masks[i, y:y + size, x:x + size] = 255
    return frames, masks


# -- sources -------------------------------------------------------------------------------------------------


def test_csv_mask_column_for_a_still(tmp_path):
    src = tmp_path / "src"
    (src / "imgs").mkdir(parents=True)
    (src / "seg").mkdir()
    _still(src / "imgs" / "a.png")
    _still(src / "imgs" / "b.png", seed=1)
    Image.fromarray(_box_mask(30, 40, (5, 15, 10, 30))).save(src / "seg" / "a_lesion.png")
    _csv(src / "labels.csv", [["imgs/a.png", "x", "seg/a_lesion.png"], ["imgs/b.png", "y", ""]])
    out = tmp_path / "store"
    summary = prepare(src, out, NATIVE, show_progress=False)
    store = FrameStore(out)
    assert sorted(v.source for v in store.videos) == ["imgs/a.png", "imgs/b.png"]  # the mask is no input
    assert store.mask_classes == ["foreground"] and store.options["mask_classes"] == ["foreground"]
    a = store["imgs__a"]
    assert store.has_mask("imgs__a") and not store.has_mask("imgs__b") and store.masks("imgs__b") is None
    assert a.mask == "masks/imgs__a.npy" and a.extra["mask_source"] == ["seg/a_lesion.png"]
    assert "mask" not in a.extra  # the CSV column is told by mask_source, not kept as an extra field
    np.testing.assert_array_equal(store.mask("imgs__a", 0), _box_mask(30, 40, (5, 15, 10, 30), 1))
    assert isinstance(store.masks("imgs__a"), np.memmap) and store.masks("imgs__a").shape == (1, 30, 40)
    assert store.videos_with_masks == [store.index_of("imgs__a")]
    with pytest.raises(UsclError, match="imgs__b.*has no mask"):
        store.mask("imgs__b", 0)
    assert summary.with_masks == 1 and summary.without_masks == 1
    assert summary.mask_counts == {"foreground": {"videos": 1, "frames": 1, "pixels": 200}}
    text = summary.format()
    assert "masks: 1 with masks, 1 without" in text and "foreground" in text
    assert store.verify() == 2


def test_csv_mask_column_for_videos_and_dicom(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    frames, masks = _square_video(8, 48, 64, margin=0)
    write_video(src / "clip.mp4", frames, fps=10)
    write_mask_video(src / "clip_seg.mkv", masks, fps=10)
    write_dicom(src / "cine.dcm", frames, frame_time_ms=100)
    write_dicom(src / "cine_seg.dcm", (masks > 0).astype(np.uint8), frame_time_ms=100)
    _csv(src / "labels.csv", [["clip.mp4", "a", "clip_seg.mkv"], ["cine.dcm", "b", "cine_seg.dcm"]])
    out = tmp_path / "store"
    prepare(src, out, PrepareOptions(size=0, fps=5, max_frames=3), show_progress=False)
    store = FrameStore(out)
    assert len(store) == 2
    for vid in ("clip", "cine"):
        v = store[vid]
        assert v.num_frames == 3 and store.masks(vid).shape == (3, 48, 64)
        # fps 5 of 10 keeps frames 0, 2, 4, 6; max_frames 3 of those: 0, 4, 6
        np.testing.assert_array_equal(np.asarray(store.masks(vid)), (masks[[0, 4, 6]] > 0).astype(np.uint8))


def test_csv_mask_column_for_a_frame_folder(tmp_path):
    src = tmp_path / "src"
    (src / "f").mkdir(parents=True)
    (src / "seg_f").mkdir()
    frames, masks = _square_video(5, 32, 48, margin=0, dy=4, dx=6)
    for i in range(5):
        Image.fromarray(frames[i]).save(src / "f" / f"frame_{i + 1}.png")
        Image.fromarray(masks[i]).save(src / "seg_f" / f"m_{i + 1}.png")
    _csv(src / "labels.csv", [["f", "a", "seg_f"]])
    out = tmp_path / "store"
    prepare(src, out, PrepareOptions(size=0, max_frames=3), show_progress=False)
    store = FrameStore(out)
    assert [v.source for v in store.videos] == ["f"]
    np.testing.assert_array_equal(np.asarray(store.masks("f")), (masks[[0, 2, 4]] > 0).astype(np.uint8))
    assert store["f"].extra["mask_source"] == ["seg_f"]


def test_suffix_masks_of_stills_with_union_and_rgb(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _still(src / "x.png")
    Image.fromarray(_box_mask(30, 40, (0, 10, 0, 10))).save(src / "x_mask.png")
    Image.fromarray(_box_mask(30, 40, (20, 30, 30, 40))).save(src / "x_mask_1.png")
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[5:10, 20:25] = (255, 255, 255)
    Image.fromarray(rgb).save(src / "x_mask_2.bmp")  # RGB, another image extension
    _still(src / "y.jpg", seed=2)
    Image.fromarray(_box_mask(30, 40, (0, 30, 0, 20))).save(src / "y_mask.png")
    _still(src / "z.png", seed=3)  # no mask
    Image.fromarray(_box_mask(30, 40, (0, 1, 0, 1))).save(src / "nobody_mask.png")  # names no input
    out = tmp_path / "store"
    summary = prepare(src, out, NATIVE, mask_suffix="_mask", show_progress=False)
    store = FrameStore(out)
    assert sorted(v.source for v in store.videos) == ["x.png", "y.jpg", "z.png"]
    expected = ((_box_mask(30, 40, (0, 10, 0, 10)) | _box_mask(30, 40, (20, 30, 30, 40))
                 | _box_mask(30, 40, (5, 10, 20, 25))) > 0).astype(np.uint8)
    np.testing.assert_array_equal(store.mask("x", 0), expected)
    assert store["x"].extra["mask_source"] == ["x_mask.png", "x_mask_1.png", "x_mask_2.bmp"]
    assert store["y"].extra["mask_source"] == ["y_mask.png"] and not store.has_mask("z")
    assert summary.orphan_masks == ["nobody_mask.png"] and "match no input" in summary.format()
    assert summary.with_masks == 2 and summary.without_masks == 1


def test_suffix_masks_of_a_video_and_a_frame_folder(tmp_path):
    src = tmp_path / "src"
    (src / "f").mkdir(parents=True)
    (src / "f_mask").mkdir()
    frames, masks = _square_video(6, 40, 40, margin=0, dy=3, dx=3)
    write_video(src / "clip.mp4", frames, fps=10)
    write_mask_video(src / "clip_mask.mkv", masks, fps=10)
    for i in range(4):
        Image.fromarray(frames[i]).save(src / "f" / f"{i}.png")
        Image.fromarray(masks[i]).save(src / "f_mask" / f"{i}.png")
    write_video(src / "lossy.avi", frames, fps=10)
    write_video(src / "lossy_mask.mp4", masks, fps=10)  # a {0, 255} mask through H.264: thresholded at 128
    out = tmp_path / "store"
    prepare(src, out, NATIVE, mask_suffix="_mask", show_progress=False)
    store = FrameStore(out)
    # clip_mask.mkv, lossy_mask.mp4 and f_mask/ are no inputs
    assert sorted(v.source for v in store.videos) == ["clip.mp4", "f", "lossy.avi"]
    np.testing.assert_array_equal(np.asarray(store.masks("clip")), (masks > 0).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(store.masks("f")), (masks[:4] > 0).astype(np.uint8))
    lossy = np.asarray(store.masks("lossy"))
    assert set(np.unique(lossy)) == {0, 1} and (lossy != (masks > 0)).mean() < 0.01


def test_label_map_with_three_classes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _still(src / "lung.png", h=20, w=20)
    lm = np.zeros((20, 20), np.uint8)
    lm[0:2] = 1  # pleura: 40 px
    lm[5:10, 0:4] = 2  # bline: 20 px
    lm[15:20, 15:20] = 3  # consolidation: 25 px
    Image.fromarray(lm).save(src / "lung_mask.png")
    out = tmp_path / "store"
    summary = prepare(src, out, NATIVE, mask_suffix="_mask", mask_classes=["pleura", "bline", "consolidation"],
                      show_progress=False)
    store = FrameStore(out)
    assert store.mask_classes == ["pleura", "bline", "consolidation"]
    np.testing.assert_array_equal(store.mask("lung", 0), lm)
    assert {c: n["pixels"] for c, n in summary.mask_counts.items()} == {"pleura": 40, "bline": 20,
                                                                         "consolidation": 25}
    # resized: nearest neighbour keeps the values class indices
    out2 = tmp_path / "store16"
    prepare(src, out2, PrepareOptions(size=16), mask_suffix="_mask", mask_classes="pleura,bline,consolidation",
            show_progress=False)
    assert set(np.unique(FrameStore(out2).mask("lung", 0))) == {0, 1, 2, 3}
    # the same label map taken for a binary mask (no classes named) is said to be read as background
    out3 = tmp_path / "binary"
    summary = prepare(src, out3, NATIVE, mask_suffix="_mask", show_progress=False)
    assert not FrameStore(out3).mask("lung", 0).any()
    assert any("a label map?" in n for _, n in summary.notes)


# -- bad masks: left out, the image kept ---------------------------------------------------------------------


def test_bad_masks_are_left_out_and_their_images_kept(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _still(src / "size.png", h=90, w=120)
    Image.fromarray(np.zeros((80, 100), np.uint8)).save(src / "size_mask.png")
    _still(src / "corrupt.png")
    (src / "corrupt_mask.png").write_bytes(b"\x89PNG not really")
    _still(src / "range.png")
    Image.fromarray(_box_mask(30, 40, (0, 5, 0, 5), value=7)).save(src / "range_mask.png")
    frames, masks = _square_video(6, 32, 32, margin=0)
    write_video(src / "count.mp4", frames, fps=10)
    write_mask_video(src / "count_mask.mkv", masks[:5], fps=10)
    _still(src / "empty.png")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(src / "empty_mask.png")  # all background: valid
    _still(src / "listed.png")
    _csv(src / "labels.csv", [["listed.png", "a", "gone/listed_mask.png"]])
    out = tmp_path / "store"
    summary = prepare(src, out, NATIVE, labels_csv=src / "labels.csv", mask_suffix="_mask",
                      mask_classes=["a", "b"], show_progress=False)
    store = FrameStore(out)
    assert sorted(v.video_id for v in store.videos) == ["corrupt", "count", "empty", "listed", "range", "size"]
    assert store.videos_with_masks == [store.index_of("empty")]
    skipped = _skipped(out)
    assert skipped["size_mask.png"] == "mask left out (image kept): size 100x80 differs from image 120x90"
    assert skipped["corrupt_mask.png"].startswith("mask left out (image kept): unreadable mask")
    assert skipped["range_mask.png"] == ("mask left out (image kept): values 7 outside the classes 0..2 "
                                         "(0 = background, 1..2 = a, b)")
    assert skipped["count_mask.mkv"] == "mask left out (video kept): the mask has 5 frames, the video 6"
    assert skipped["gone/listed_mask.png"] == ("mask left out (image kept): mask file not found "
                                               "(named in the labels CSV)")
    assert dict(summary.skipped) == skipped
    assert store["size"].mask is None and store["size"].extra["mask_skipped"][0]["path"] == "size_mask.png"
    assert summary.with_masks == 1 and summary.without_masks == 5
    assert "masks: 1 with masks, 5 without" in summary.format()
    # a re-run reuses them all and still reports the masks left out
    again = prepare(src, out, NATIVE, labels_csv=src / "labels.csv", mask_suffix="_mask", mask_classes=["a", "b"],
                    show_progress=False)
    assert again.decoded == 0 and dict(again.skipped) == skipped


# -- alignment -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop", [True, False])
def test_mask_follows_the_bright_square_through_sampling_crop_and_resize(tmp_path, crop):
    src = tmp_path / "src"
    src.mkdir()
    frames, masks = _square_video(16, 80, 96, margin=8, size=12, dy=3, dx=4)
    write_video(src / "clip.mp4", frames, fps=10)
    write_mask_video(src / "clip_mask.mkv", masks, fps=10)
    out = tmp_path / "store"
    prepare(src, out, PrepareOptions(fps=5, max_frames=6, crop=crop, size=48), mask_suffix="_mask",
            show_progress=False)
    store = FrameStore(out)
    rec = store["clip"]
    assert rec.num_frames == 6 and rec.orig_num_frames == 16
    if crop:  # the black margins are cut away
        assert store.frames("clip")[:, 0].max() > 30
    for t in range(rec.num_frames):
        bright = store.frame("clip", t)[..., 0] > 160
        mask = store.mask("clip", t) == 1
        assert mask.any() and bright.any()
        # every mask pixel is bright, and every bright pixel masked, but within 1 px of the square's edge
        assert not (ndimage.binary_erosion(mask) & ~bright).any(), t
        assert not (ndimage.binary_erosion(bright) & ~mask).any(), t
        # and the same place: a frame off (1.5-2.4 px at this size) would move the centre further
        cm, cb = np.array(ndimage.center_of_mass(mask)), np.array(ndimage.center_of_mass(bright))
        assert np.abs(cm - cb).max() < 0.75, (t, cm, cb)


# -- incremental runs and damage -----------------------------------------------------------------------------


def _touch_later(path):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_rerun_reuses_and_a_changed_mask_is_ingested_again(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _still(src / "a.png")
    _still(src / "b.png", seed=1)
    Image.fromarray(_box_mask(30, 40, (0, 10, 0, 10))).save(src / "a_mask.png")
    Image.fromarray(_box_mask(30, 40, (0, 5, 0, 5))).save(src / "b_mask.png")
    out = tmp_path / "store"
    run = lambda **kw: prepare(src, out, NATIVE, mask_suffix="_mask", show_progress=False, **kw)  # noqa: E731
    assert run().decoded == 2
    again = run()
    assert again.decoded == 0 and again.reused == 2 and again.with_masks == 2
    Image.fromarray(_box_mask(30, 40, (10, 20, 10, 20))).save(src / "a_mask.png")
    _touch_later(src / "a_mask.png")
    changed = run()
    assert changed.decoded == 1 and changed.reused == 1
    np.testing.assert_array_equal(FrameStore(out).mask("a", 0), _box_mask(30, 40, (10, 20, 10, 20), 1))
    (src / "b_mask.png").unlink()  # a removed mask: ingested again, without one
    removed = run()
    assert removed.decoded == 1 and not FrameStore(out).has_mask("b")
    assert not (out / "masks" / "b.npy").exists() and (out / "masks" / "a.npy").exists()
    # other classes never reuse the store silently
    with pytest.raises(UsclError, match="mask_classes") as err:
        run(mask_classes=["lesion", "cyst"])
    assert err.value.param == "overwrite"


def test_truncated_or_changed_mask_array_is_named_and_prepare_repairs_it(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _still(src / "a.png")
    Image.fromarray(_box_mask(30, 40, (0, 10, 0, 10))).save(src / "a_mask.png")
    out = tmp_path / "store"
    prepare(src, out, NATIVE, mask_suffix="_mask", show_progress=False)
    path = out / "masks" / "a.npy"
    data = path.read_bytes()
    path.write_bytes(data[:-50])
    with pytest.raises(UsclError, match=r"(?s)masks/a\.npy is truncated.*uscl prepare"):
        FrameStore(out)
    summary = prepare(src, out, NATIVE, mask_suffix="_mask", show_progress=False)
    assert summary.decoded == 1 and FrameStore(out).verify() == 1
    flipped = bytearray(path.read_bytes())
    flipped[-1] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(UsclError, match=r"masks/a\.npy differs from the sha256"):
        FrameStore(out).verify()


# -- store format and CLI ------------------------------------------------------------------------------------


def test_store_without_masks_and_writer_masks(tmp_path):
    w = StoreWriter(tmp_path / "plain", options={"size": 8})
    w.add_video("v", np.zeros((2, 8, 8, 1), np.uint8))
    w.write_manifest()
    plain = FrameStore(tmp_path / "plain")
    assert plain.mask_classes == [] and plain.videos_with_masks == [] and plain.masks("v") is None
    w = StoreWriter(tmp_path / "m", options={"size": 8, "mask_classes": ["lesion"]})
    m = np.zeros((2, 8, 8), np.uint8)
    m[1, 2:4, 2:4] = 1
    w.add_video("v", np.zeros((2, 8, 8, 1), np.uint8), masks=m)
    with pytest.raises(ValueError, match="like the frames"):
        w.add_video("bad", np.zeros((2, 8, 8, 1), np.uint8), masks=np.zeros((1, 8, 8), np.uint8))
    w.write_manifest()
    store = FrameStore(tmp_path / "m")
    assert store.mask_classes == ["lesion"] and store.mask("v", 1)[2, 2] == 1
    assert PrepareOptions.from_store(store).size == 8  # mask_classes is a store-level key, not a frame option


def test_cli_mask_flags(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    _still(src / "a.png")
    _still(src / "b.png", seed=1)
    lm = _box_mask(30, 40, (0, 10, 0, 10), value=2)
    Image.fromarray(lm).save(src / "a_mask.png")
    out = tmp_path / "store"
    assert main(["prepare", str(src), str(out), "--size", "16", "--mask-suffix", "_mask",
                 "--mask-classes", "pleura,bline"]) == 0
    text = capsys.readouterr().out
    assert "masks: 1 with masks, 1 without" in text and "bline" in text
    store = FrameStore(out)
    assert store.mask_classes == ["pleura", "bline"] and set(np.unique(store.mask("a", 0))) == {0, 2}
    assert main(["prepare", str(src), str(tmp_path / "o2"), "--mask-classes", ","]) == 2
    assert "(set with --mask-classes)" in capsys.readouterr().err


def test_readers_say_which_source_frames_they_kept(tmp_path):
    from uscl.video import read_frames

    frames = moving_frames(10, 32, 32)
    write_video(tmp_path / "v.mp4", frames, fps=10)
    write_dicom(tmp_path / "d.dcm", frames[..., 0], frame_time_ms=100)
    for name in ("v.mp4", "d.dcm"):
        video = read_frames(tmp_path / name, fps=5, max_frames=3)
        assert video.kept_indices == [0, 4, 8] and video.num_frames == 3, name
        assert read_frames(tmp_path / name).kept_indices == list(range(10))
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(frames[i]).save(folder / f"{i}.png")
    (folder / "2.png").write_bytes(b"broken")
    video = read_frames(folder, max_frames=5)
    assert video.kept_indices == [0, 1, 3, 4] and video.num_frames == 4  # positions in the files given
    Image.fromarray(frames[0]).save(tmp_path / "s.png")
    assert read_frames(tmp_path / "s.png").kept_indices == [0]


def test_store_id_changes_with_the_masks_only_where_there_are_masks(tmp_path):
    from uscl.store import FrameStore, StoreWriter

    frames = np.zeros((2, 8, 8, 1), np.uint8)
    ids = []
    for name, masks in (("plain", None), ("a", np.zeros((2, 8, 8), np.uint8)), ("b", np.ones((2, 8, 8), np.uint8))):
        w = StoreWriter(tmp_path / name, options={"size": 8, **({"mask_classes": ["x"]} if masks is not None else {})})
        w.add_video("v0", frames, masks=masks)
        w.write_manifest()
        ids.append(FrameStore(tmp_path / name).store_id)
    import hashlib

    v = FrameStore(tmp_path / "plain").videos[0]
    old = hashlib.sha256(f"v0|2|8|8|1|{v.content_hash}\n".encode()).hexdigest()[:16]
    assert ids[0] == old  # no masks: the id of earlier uscl versions, so their runs still resume
    assert len(set(ids)) == 3  # other mask content, other store
