"""Shared fixtures. Tests never need ../shared: they make their own data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("USCL_NO_PROGRESS", "1")

SHARED_POCUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pocus"


def pytest_configure(config):
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def make_store(tmp_path_factory):
    """Factory for small frame stores built straight from arrays (no video coding).

    ``make_store(n_videos=6, frames=5, size=32, channels=1, classes=("a", "b"), labelled=1.0)``
    returns the store folder. Frames hold a class-dependent pattern plus noise,
    so a model can learn something from them.
    """
    from uscl.store import StoreWriter

    def _make(n_videos=6, frames=5, size=32, channels=1, classes=("covid", "pneumonia", "regular"),
              labelled=1.0, seed=0, patients=False, frame_counts=None):
        rng = np.random.default_rng(seed)
        root = tmp_path_factory.mktemp("store")
        writer = StoreWriter(root, options={"size": size, "channels": "grey" if channels == 1 else "rgb"})
        n_lab = int(round(labelled * n_videos))
        for i in range(n_videos):
            t = frame_counts[i] if frame_counts is not None else frames
            cls = i % len(classes) if classes else 0
            base = np.zeros((size, size), np.float32)
            base[:, (cls * size) // max(1, len(classes)) : ((cls + 1) * size) // max(1, len(classes))] = 150
            arr = base[None] + rng.normal(0, 20, (t, size, size)) + np.arange(t)[:, None, None]
            arr = np.clip(arr, 0, 255).astype(np.uint8)[..., None]
            if channels == 3:
                arr = np.repeat(arr, 3, axis=-1)
            writer.add_video(
                f"v{i:03d}", arr,
                label=classes[cls] if (classes and i < n_lab) else None,
                patient=f"p{i // 2}" if patients else None,
                fps=10.0,
            )
        writer.write_manifest()
        return root

    return _make


@pytest.fixture
def pocus_dir():
    if not (SHARED_POCUS / "labels.csv").is_file():
        pytest.skip("../shared/data/pocus is not present")
    return SHARED_POCUS


@pytest.fixture(scope="session")
def mask_store(tmp_path_factory):
    """A frame store with segmentation masks: `uscl synth --masks` (2 videos per class, 6 frames, 64 px)
    ingested by `uscl prepare` with the generator's four mask classes. Returns the store folder."""
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth import MASK_CLASSES
    from uscl.synth.generate import generate

    root = tmp_path_factory.mktemp("mask_store")
    generate(root / "src", videos_per_class=2, frames=6, size=64, fps=4.0, seed=0, masks=True)
    prepare(root / "src", root / "store", PrepareOptions(size=64), mask_classes=list(MASK_CLASSES),
            show_progress=False)
    return root / "store"
