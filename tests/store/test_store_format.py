import json

import numpy as np
import pytest

from uscl.errors import UsclError
from uscl.store import FrameStore, StoreWriter


def test_roundtrip_and_o1_frame_access(tmp_path):
    w = StoreWriter(tmp_path, options={"size": 16})
    a = np.arange(4 * 16 * 16, dtype=np.uint32).reshape(4, 16, 16, 1).astype(np.uint8)
    w.add_video("x", a, label="covid", patient="p1")
    w.add_video("y", a[:2], label=None)
    w.write_manifest()
    s = FrameStore(tmp_path)
    assert len(s) == 2 and s.classes == ["covid"] and s.labels == ["covid", None]
    assert s.num_frames == 6
    np.testing.assert_array_equal(s.frame("x", 3), a[3])
    assert isinstance(s.frames(0), np.memmap)
    assert s["y"].num_frames == 2 and s[0].patient == "p1"
    assert len(s.store_id) == 16
    assert s.options == {"size": 16}


def test_not_a_store_is_clear(tmp_path):
    with pytest.raises(UsclError, match="not a frame store"):
        FrameStore(tmp_path)
    with pytest.raises(UsclError, match="not found"):
        FrameStore(tmp_path / "nope")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(UsclError, match="not a uscl frame store"):
        FrameStore(tmp_path)


def test_writer_rejects_bad_arrays(tmp_path):
    w = StoreWriter(tmp_path)
    with pytest.raises(ValueError):
        w.write_array("bad", np.zeros((2, 4, 4), np.uint8))
    assert not list((tmp_path / "arrays").iterdir())



def _two_video_store(root):
    w = StoreWriter(root, options={"size": 16})
    rng = np.random.default_rng(0)
    w.add_video("x", rng.integers(0, 256, (4, 16, 16, 1), dtype=np.uint8), label="covid")
    w.add_video("y", rng.integers(0, 256, (3, 16, 16, 1), dtype=np.uint8), label="regular")
    w.write_manifest()
    return root


def test_truncated_or_missing_array_is_a_clear_error_when_the_store_is_opened(tmp_path):
    root = _two_video_store(tmp_path / "s")
    path = root / "arrays" / "x.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy cut short
    with pytest.raises(UsclError) as err:
        FrameStore(root)
    msg = str(err.value)
    assert "arrays/x.npy" in msg and "truncated" in msg and f"{len(data) // 2} bytes" in msg
    assert "uscl prepare" in msg and "y.npy" not in msg  # names the damaged file and the fix, only that one
    path.unlink()
    with pytest.raises(UsclError, match=r"(?s)arrays/x\.npy is missing.*uscl prepare"):
        FrameStore(root)
    # an array of another shape than the manifest says is refused too
    np.save(path, np.zeros((2, 16, 16, 1), np.uint8))
    with pytest.raises(UsclError, match=r"arrays/x\.npy holds .*\(2, 16, 16, 1\).*manifest says \(4, 16, 16, 1\)"):
        FrameStore(root)


def test_verify_checks_the_content_hash_of_every_array(tmp_path):
    root = _two_video_store(tmp_path / "s")
    store = FrameStore(root)
    assert all(len(v.array_hash) == 64 for v in store.videos)
    assert store.verify() == 2
    path = root / "arrays" / "y.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed: the cheap check at open cannot see it
    path.write_bytes(bytes(data))
    store = FrameStore(root)
    damaged = r"(?s)arrays/y\.npy differs from the sha256.*delete the damaged arrays.*uscl prepare"
    with pytest.raises(UsclError, match=damaged) as err:
        store.verify()
    assert "x.npy" not in str(err.value)
