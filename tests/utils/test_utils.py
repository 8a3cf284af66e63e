"""Shared utilities: atomic writes, device names."""

import pytest

from uscl.errors import UsclError


def test_atomic_writes_respect_the_umask(tmp_path):
    import os
    import stat

    from uscl.utils.atomic import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_device_names_are_checked_in_one_place():
    import torch

    from uscl.utils.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsclError, match="auto, cpu or cuda"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(UsclError, match="no CUDA device"):
            resolve_device("cuda:0")
