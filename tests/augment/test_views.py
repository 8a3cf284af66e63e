"""USCL's views: mixup of augmented frames, Beta draws, the CUDA-graph replay vs the eager path."""

from __future__ import annotations

import pytest
import torch

from uscl.augment import AugmentConfig, BatchAugment, eval_transform, gpu_batch_to_views, mix_views, sample_lambda
from uscl.augment.eager_views import eager_views
from uscl.augment.graphed_views import GraphedViews, graph_cache
from uscl.data import VideoItemDataset, make_loader
from uscl.errors import ConfigError
from uscl.store import FrameStore
from uscl.utils.seed import make_generator

CLASSES = {"covid": 0, "pneumonia": 1, "regular": 2}


def _store(make_store, **kw):
    return FrameStore(make_store(**kw))


def test_mix_views_hand_computed():
    f1 = torch.tensor([[[1.0, 2.0]], [[0.0, 4.0]]])
    f2 = torch.tensor([[[3.0, 0.0]], [[2.0, 2.0]]])
    f3 = torch.tensor([[[5.0, 1.0]], [[-2.0, 6.0]]])
    v1, v2 = mix_views(f1, f2, f3, torch.tensor([0.25, 1.0]))
    # item 0: 0.25*f + 0.75*f2 ; item 1: lam = 1 -> f1, f3 unchanged
    assert torch.equal(v1, torch.tensor([[[2.5, 0.5]], [[0.0, 4.0]]]))
    assert torch.equal(v2, torch.tensor([[[3.5, 0.25]], [[-2.0, 6.0]]]))


def test_lambda_is_beta_half_half():
    lam = sample_lambda(20000, 0.5, generator=make_generator(0))
    assert lam.shape == (20000,) and lam.dtype == torch.float32
    assert 0 <= lam.min() and lam.max() <= 1
    assert abs(lam.mean().item() - 0.5) < 0.01
    assert abs(lam.var().item() - 0.125) < 0.005  # Beta(a, a) variance 1 / (4 (2a + 1))
    tails = ((lam < 0.1) | (lam > 0.9)).double().mean().item()
    middle = ((lam > 0.4) & (lam < 0.6)).double().mean().item()
    assert abs(tails - 0.4097) < 0.015 and abs(middle - 0.1282) < 0.012  # U-shaped (arcsine law)
    assert torch.equal(sample_lambda(5, 0.5, make_generator(3)), sample_lambda(5, 0.5, make_generator(3)))
    with pytest.raises(ConfigError, match="alpha"):
        sample_lambda(3, 0.0)


def test_views_are_mixes_of_augmented_frames(make_store):
    store = _store(make_store, n_videos=4, frame_counts=[2, 6, 6, 1], size=16)
    ds = VideoItemDataset(store, range(4), class_to_index=CLASSES)
    batch = next(iter(make_loader(ds, 4, shuffle=False, seed=0, drop_last=True)))
    # deterministic augmentation (full crop, no flip, no jitter) so frames can be compared
    aug = BatchAugment(AugmentConfig(size=12, scale=(1, 1), ratio=(1, 1), flip_p=0, jitter_s=0))
    v1, v2, labels = gpu_batch_to_views(batch, aug, alpha=0.5, mixup=True, device="cpu",
                                        generator=make_generator(0))
    assert v1.shape == v2.shape == (4, 3, 12, 12) and v1.dtype == torch.float32
    assert torch.equal(labels, batch["label"])
    f = eval_transform(batch["frames"].flatten(0, 1), 12).view(4, 3, 3, 12, 12)
    for i in range(4):
        f1, f2, f3 = f[i]
        if not batch["mixable"][i]:
            torch.testing.assert_close(v1[i], f1)
            torch.testing.assert_close(v2[i], f3)
            continue
        d = (f1 - f2).flatten()
        lam = torch.dot((v1[i] - f2).flatten(), d) / torch.dot(d, d)
        assert 0 <= lam <= 1
        torch.testing.assert_close(v1[i], lam * f1 + (1 - lam) * f2, atol=1e-5, rtol=0)
        torch.testing.assert_close(v2[i], lam * f3 + (1 - lam) * f2, atol=1e-5, rtol=0)  # same lam, same anchor
    n1, n2, _ = gpu_batch_to_views(batch, aug, alpha=0.5, mixup=False, device="cpu")
    torch.testing.assert_close(n1, f[:, 0])
    torch.testing.assert_close(n2, f[:, 2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_views_on_cuda_from_a_pinned_loader(make_store):
    store = _store(make_store, n_videos=6, frames=5, size=16)
    ds = VideoItemDataset(store, range(6), class_to_index=CLASSES)
    batch = next(iter(make_loader(ds, 3, shuffle=True, seed=0, drop_last=True, pin_memory=True)))
    aug = BatchAugment(AugmentConfig(size=16))
    v1, v2, labels = gpu_batch_to_views(batch, aug, 0.5, True, "cuda", make_generator(0, "cuda"))
    c1, c2, _ = gpu_batch_to_views(batch, aug, 0.5, True, "cpu", make_generator(0))
    assert v1.device.type == "cuda" and labels.device.type == "cuda" and v1.shape == (3, 3, 16, 16)
    gpu_batch_to_views(batch, aug, 0.5, True, "cuda", make_generator(0))  # first use: graph made and checked
    torch.cuda.set_sync_debug_mode("error")  # a CPU generator must not make the host wait on the GPU
    try:
        g1, g2, _ = gpu_batch_to_views(batch, aug, 0.5, True, "cuda", make_generator(0))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(g1.cpu(), c1, atol=1e-4, rtol=0)
    torch.testing.assert_close(g2.cpu(), c2, atol=1e-4, rtol=0)


# -- the closed-form batch draws (no gap rules) and whole-batch reads -----------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("out_channels,frame_size", [(1, 16), (3, 20)])
def test_cuda_graph_views_equal_the_eager_views(out_channels, frame_size):
    """Replayed batch after batch (new frames, new draws), the graph gives the eager views."""
    g = torch.Generator().manual_seed(0)
    graphed = BatchAugment(AugmentConfig(size=16, out_channels=out_channels))
    eager = BatchAugment(AugmentConfig(size=16, out_channels=out_channels), cuda_graphs=False)
    ga, ge = make_generator(5), make_generator(5)
    for _ in range(3):
        batch = {"frames": torch.randint(0, 256, (6, 3, 1, frame_size, frame_size), dtype=torch.uint8,
                                         generator=g).cuda(),
                 "mixable": torch.tensor([True, True, False, True, True, True]),
                 "label": torch.arange(6)}
        for mixup in (True, False):  # mixed, and f1/f3 unmixed (SimCLR)
            a1, a2, _ = gpu_batch_to_views(batch, graphed, 0.5, mixup, "cuda", ga)
            e1, e2, _ = gpu_batch_to_views(batch, eager, 0.5, mixup, "cuda", ge)
            torch.testing.assert_close(a1, e1, atol=1e-5, rtol=0)
            torch.testing.assert_close(a2, e2, atol=1e-5, rtol=0)
    assert len(graph_cache(graphed)) == 2 and all(v is not None for v in graph_cache(graphed).values())


@pytest.mark.parametrize("out_channels,frame_size,mix", [(1, 16, True), (3, 20, True), (1, 16, False)])
def test_graphed_views_body_equals_the_eager_views_on_cpu(out_channels, frame_size, mix):
    """What the CUDA graph replays (packed draws -> views), run eagerly on the CPU: same views."""

    aug = BatchAugment(AugmentConfig(size=16, out_channels=out_channels))
    frames = torch.randint(0, 256, (5, 3, 1, frame_size, frame_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    gen = make_generator(2)
    k = 3 if mix else 2
    params = aug.draw(5 * k, gen)
    lam = torch.tensor([0.2, 1.0, 0.7, 0.5, 0.01]) if mix else None
    body = GraphedViews.__new__(GraphedViews)  # the graph's parts, without CUDA
    body.augment, body.n, body.device, body.jitter, body.mix, body.k = aug, 5, torch.device("cpu"), True, mix, k
    body.frames = frames.clone()
    body.packed = torch.zeros(5 * k * 9 + 5)
    body.pack(params, lam, body.packed)
    v1, v2 = body._body()
    e1, e2 = eager_views(frames, params, lam, aug, "cpu", mix=mix)
    assert v1.shape == (5, out_channels, 16, 16)
    # the CPU eager path rounds the resized frame to uint8 (as PIL does); the batched path does not
    tol = 1e-5 if frame_size == 16 else 0.02
    torch.testing.assert_close(v1, e1, atol=tol, rtol=0)
    torch.testing.assert_close(v2, e2, atol=tol, rtol=0)
