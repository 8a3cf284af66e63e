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

