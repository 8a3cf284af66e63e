"""Fixtures of the `uscl serve` tests: tiny models fine-tuned on synthetic clips, and real uvicorn servers
(in a thread, on a free port of 127.0.0.1) around them."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="`uscl serve` needs fastapi (a dependency: pip install -e .)")
uvicorn = pytest.importorskip("uvicorn", reason="`uscl serve` needs uvicorn (a dependency: pip install -e .)")

SIZE = 64
MASK_CLASSES = ["lesion", "pleura"]


@pytest.fixture(scope="session")
def serve_data(tmp_path_factory):
    """Synth mp4s → `prepare` (fps 5 of 10, at most 4 frames, crop, 64 px) → `finetune` full, 1 epoch, 2 folds
    (ROOT/ft); a one-fold random segmenter on the same store (ROOT/seg/model.safetensors); a still PNG."""
    from PIL import Image

    from uscl.finetune.config import FinetuneConfig
    from uscl.finetune.train import finetune
    from uscl.store import FrameStore
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth import generate

    root = tmp_path_factory.mktemp("serve")
    generate(root / "synth", videos_per_class=2, frames=8, size=SIZE, fps=10)
    prepare(root / "synth", root / "store", PrepareOptions(size=SIZE, fps=5, max_frames=4, crop=True),
            labels_csv=root / "synth" / "labels.csv", show_progress=False)
    finetune(FinetuneConfig(out=str(root / "ft"), mode="full", store=str(root / "store"), folds=2, epochs=1,
                            image_size=SIZE, batch_size=8, device="cpu", seed=0), log=lambda *a: None)
    _segmenter(root / "seg" / "model.safetensors", FrameStore(root / "store"))
    Image.fromarray(np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (48, 1))).save(root / "still.png")
    return root


def _segmenter(path: Path, store) -> None:
    """A random segmenter saved as `uscl finetune --task segment` saves a fold (centred head: all labels occur)."""
    import torch

    from uscl.finetune.config import FinetuneConfig
    from uscl.finetune.outputs import model_meta, save_model
    from uscl.models.segmenter import build_segmenter

    cfg = FinetuneConfig(store=str(store.root), out=str(path.parent), task="segment", mode="full", image_size=SIZE,
                         folds=2, epochs=1, device="cpu")
    meta = {**model_meta(cfg, store, "resnet18", MASK_CLASSES, "random", "random"), "task": "segment",
            "mask_classes": MASK_CLASSES, "head": "unet", "epochs": 1, "fold": 0, "train_videos": 1,
            "test_videos": ["x"]}
    torch.manual_seed(10)
    net = build_segmenter("resnet18", len(MASK_CLASSES)).eval()
    with torch.no_grad():
        x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
        feats = net.decoder(net.encode(x), x.shape[-2:]).mean((0, 2, 3))
        net.head.weight.mul_(4)
        net.head.bias.copy_(-(net.head.weight[:, :, 0, 0] @ feats))
    save_model(path, net.state_dict(), meta)


def _clip(root: Path, cls: str = "covid", i: int = 0) -> Path:
    return sorted((root / "synth" / cls).glob("*.mp4"))[i]


@pytest.fixture
def clip_of():
    """``clip_of(serve_data, cls="covid", i=0)``: a synth clip of that class."""
    return _clip


class LiveServer:
    """`uscl serve`'s app under a real uvicorn server in a thread; ``url`` is its base address."""

    def __init__(self, app, work_dir: Path):
        self.app, self.work_dir = app, work_dir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def _live_server(model, tmp_path_factory, **kw) -> LiveServer:
    from uscl.serve import create_app

    work = tmp_path_factory.mktemp("serve_work") / "work"
    return LiveServer(create_app(model, device="cpu", work_dir=work, **kw), work)


@pytest.fixture
def live_server(tmp_path_factory):
    """``with live_server(model, max_upload_mb=..., ...) as s:`` a server of its own, stopped at the end."""
    return lambda model, **kw: _live_server(model, tmp_path_factory, **kw)


@pytest.fixture(scope="module")
def server(serve_data, tmp_path_factory):
    """The classification model (2-fold ensemble, Grad-CAM on) served with the default limits."""
    with _live_server(serve_data / "ft", tmp_path_factory) as s:
        yield s
