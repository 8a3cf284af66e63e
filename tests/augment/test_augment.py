"""Batched per-image augmentation: distributions match torchvision's per-sample
transforms, every image gets its own draw, grey handling, determinism."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import RandomResizedCrop

from uscl.augment import AugmentConfig, BatchAugment, eval_transform, finetune_augment_config
from uscl.augment.color import apply_jitter, sample_jitter, stage_ops
from uscl.augment.crop import resample, sample_crop_boxes
from uscl.errors import ConfigError
from uscl.utils.seed import make_generator


def _box_stats(boxes, size):
    top, left, h, w = boxes.double().unbind(1)
    area = h * w / (size * size)
    aspect = w / h
    return area, aspect


@pytest.mark.parametrize("scale,ratio", [((0.8, 1.0), (0.8, 1.25)), ((0.08, 1.0), (3 / 4, 4 / 3))])
def test_crop_boxes_match_torchvision_statistics(scale, ratio):
    size, n = 64, 4000
    ours = sample_crop_boxes(n, size, size, scale, ratio, generator=make_generator(0))
    torch.manual_seed(0)
    img = torch.zeros(1, size, size)
    ref = torch.tensor([RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)])
    a1, r1 = _box_stats(ours, size)
    a2, r2 = _box_stats(ref, size)
    assert a1.min() >= scale[0] - 0.03 and a1.max() <= 1.0
    assert abs(a1.mean() - a2.mean()) < 0.01
    assert abs(r1.mean() - r2.mean()) < 0.02
    for q in (0.1, 0.5, 0.9):
        assert abs(a1.quantile(q) - a2.quantile(q)) < 0.02
        assert abs(r1.quantile(q) - r2.quantile(q)) < 0.03
    # full-size fallback (all 10 tries rejected) happens about as often
    full1 = ((ours[:, 2] == size) & (ours[:, 3] == size)).double().mean()
    full2 = ((ref[:, 2] == size) & (ref[:, 3] == size)).double().mean()
    assert abs(full1 - full2) < 0.03
    # boxes lie inside the image, positions uniform over the free room (mean centre = image centre)
    top, left, h, w = ours.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= size).all() and (left + w <= size).all()
    assert abs((left + w / 2).double().mean() - size / 2) < 0.5
    assert abs((top + h / 2).double().mean() - size / 2) < 0.5


def test_crop_fallback_is_central_crop_clipped_to_ratio():
    # a 10x40 image: every try with aspect in [0.8, 1.25] and area >= 0.9 fails
    boxes = sample_crop_boxes(50, 10, 40, (0.9, 1.0), (0.8, 1.25), generator=make_generator(1))
    assert (boxes == torch.tensor([0, 14, 10, 12])).all()  # width = round(10 * 1.25) = 12, centred


def test_resample_equals_torchvision_resized_crop_and_flip():
    g = make_generator(3)
    for channels in (1, 3):
        x = torch.rand(6, channels, 24, 20, generator=g)
        boxes = sample_crop_boxes(6, 24, 20, (0.3, 1.0), (0.5, 2.0), generator=g)
        flip = torch.tensor([True, False, True, True, False, False])
        out = resample(x, boxes, 16, flip)
        for i, (top, left, h, w) in enumerate(boxes.tolist()):
            ref = TF.resized_crop(x[i], top, left, h, w, [16, 16], antialias=False)
            ref = TF.hflip(ref) if flip[i] else ref
            torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def _plain(size, **kw):
    """No crop randomness (full box), no jitter: only what kw turns on."""
    base = dict(size=size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_s=0.0)
    base.update(kw)
    return AugmentConfig(**base)


def test_flip_rate_is_one_half_and_per_image():
    ramp = torch.arange(8, dtype=torch.uint8).mul(30).view(1, 1, 1, 8).expand(2000, 1, 8, 8).contiguous()
    out = BatchAugment(_plain(8, flip_p=0.5, out_channels=1))(ramp, make_generator(0))
    plain = eval_transform(ramp[:1], 8, out_channels=1)
    flipped = torch.isclose(out, plain.flip(-1), atol=1e-5).flatten(1).all(1)
    same = torch.isclose(out, plain, atol=1e-5).flatten(1).all(1)
    assert (flipped ^ same).all()  # each image is exactly one of the two
    assert abs(flipped.double().mean().item() - 0.5) < 0.04


def test_jitter_draws_match_colorjitter_ranges():
    p = sample_jitter(20000, 0.8, 0.8, 0.8, 0.2, 1.0, generator=make_generator(0))
    for f in (p.brightness, p.contrast, p.saturation):
        assert 0.2 <= f.min() and f.max() <= 1.8 and abs(f.mean() - 1.0) < 0.02
        assert abs(f.std() - 1.6 / math.sqrt(12)) < 0.02  # uniform on [0.2, 1.8]
    assert -0.2 <= p.hue.min() and p.hue.max() <= 0.2 and abs(p.hue.mean()) < 0.01
    assert (p.order.sort(1).values == torch.arange(4)).all()  # permutations
    assert (p.order[:, 0].bincount(minlength=4).double() / 20000 - 0.25).abs().max() < 0.02
    p_half = sample_jitter(20000, 0.8, 0.8, 0.8, 0.2, 0.5, generator=make_generator(1))
    assert abs(p_half.active.double().mean() - 0.5) < 0.02


_TV_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


@pytest.mark.parametrize("channels", [3, 1])
def test_jitter_equals_torchvision_functional_per_image(channels):
    g = make_generator(5)
    x = torch.rand(12, channels, 10, 10, generator=g)
    p = sample_jitter(12, 0.8, 0.8, 0.8, 0.2, 1.0, generator=g)
    out = apply_jitter(x.clone(), p)
    factors = torch.stack([p.brightness, p.contrast, p.saturation, p.hue], 1)
    for i in range(12):
        ref = x[i]
        for op in p.order[i].tolist():
            ref = _TV_OPS[op](ref, factors[i, op].item())
        torch.testing.assert_close(out[i], ref, atol=2e-5, rtol=0)
    if channels == 1:
        assert len(stage_ops(p, 1)) == 2  # grey: only brightness/contrast order matters


def test_identical_images_in_a_batch_get_different_draws():
    img = torch.randint(0, 256, (1, 1, 32, 32), dtype=torch.uint8, generator=make_generator(0))
    out = BatchAugment(AugmentConfig(size=32))(img.expand(8, -1, -1, -1), make_generator(1))
    for i in range(1, 8):
        assert not torch.allclose(out[0], out[i])


@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_dtype_range(channels):
    x = torch.randint(0, 256, (6, channels, 40, 40), dtype=torch.uint8, generator=make_generator(0))
    out = BatchAugment(AugmentConfig(size=32))(x, make_generator(0))
    assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
    assert out.min() >= -2.0 - 1e-6 and out.max() <= 2.0 + 1e-6  # (0 - 0.5)/0.25 .. (1 - 0.5)/0.25
    if channels == 1:  # grey repeated to 3 identical channels
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    one = BatchAugment(AugmentConfig(size=32, out_channels=1))(x, make_generator(0))
    assert one.shape == (6, 1, 32, 32)


def test_grey_rgb_equals_grey_for_any_jitter():
    """A grey image stored as RGB goes through saturation/hue unchanged, like 1-channel input."""
    grey = torch.randint(0, 256, (10, 1, 16, 16), dtype=torch.uint8, generator=make_generator(0))
    aug = BatchAugment(AugmentConfig(size=16))
    a = aug(grey, make_generator(7))
    b = aug(grey.expand(-1, 3, -1, -1), make_generator(7))
    torch.testing.assert_close(a, b, atol=5e-4, rtol=0)  # luma weights sum to 0.9999, not 1


def test_seeded_generator_is_deterministic():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=make_generator(0))
    aug = BatchAugment(AugmentConfig(size=24))
    assert torch.equal(aug(x, make_generator(11)), aug(x, make_generator(11)))
    assert not torch.equal(aug(x, make_generator(11)), aug(x, make_generator(12)))


def test_chunking_does_not_change_results(monkeypatch):
    x = torch.randint(0, 256, (9, 3, 20, 20), dtype=torch.uint8, generator=make_generator(0))
    aug = BatchAugment(AugmentConfig(size=20))
    whole = aug(x, make_generator(4))
    monkeypatch.setattr(BatchAugment, "CPU_CHUNK_BYTES", 1)  # one image per chunk
    torch.testing.assert_close(aug(x, make_generator(4)), whole, atol=1e-6, rtol=0)


def test_resize_first_then_full_crop_equals_eval_transform():
    x = torch.randint(0, 256, (3, 1, 48, 40), dtype=torch.uint8, generator=make_generator(0))
    out = BatchAugment(_plain(32))(x, make_generator(0))
    torch.testing.assert_close(out, eval_transform(x, 32), atol=1e-5, rtol=0)


def test_eval_transform_values():
    x = torch.full((2, 1, 8, 8), 128, dtype=torch.uint8)
    out = eval_transform(x, 8)
    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out, torch.full_like(out, (128 / 255 - 0.5) / 0.25))
    assert torch.equal(eval_transform(x, 4), eval_transform(x, 4))
    f = x.float() / 255
    eval_transform(f, 8)
    assert torch.equal(f, x.float() / 255)  # float input is not modified in place


def test_finetune_config_has_no_jitter():
    cfg = finetune_augment_config(64)
    assert cfg.size == 64 and cfg.scale == (0.8, 1.0) and cfg.jitter_s == 0 and cfg.flip_p == 0.5
    const = torch.full((4, 1, 64, 64), 200, dtype=torch.uint8)
    out = BatchAugment(cfg)(const, make_generator(0))
    torch.testing.assert_close(out, torch.full_like(out, (200 / 255 - 0.5) / 0.25), atol=1e-5, rtol=0)


def test_jitter_p_zero_disables_jitter():
    x = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=make_generator(0))
    off = BatchAugment(AugmentConfig(size=16, jitter_s=0.0))(x, make_generator(2))
    never = BatchAugment(AugmentConfig(size=16, jitter_p=0.0))(x, make_generator(2))
    torch.testing.assert_close(off, never, atol=1e-6, rtol=0)


def test_bad_config_and_input_are_clear():
    with pytest.raises(ConfigError, match="scale"):
        AugmentConfig(scale=(0.9, 0.5))
    with pytest.raises(ConfigError, match="out_channels"):
        AugmentConfig(out_channels=2)
    with pytest.raises(ValueError, match="channels"):
        BatchAugment(AugmentConfig(size=8))(torch.zeros(2, 4, 8, 8, dtype=torch.uint8))
    from uscl.utils.config import from_dict

    cfg = from_dict(AugmentConfig, {"size": 112, "scale": [0.5, 1.0]})
    assert cfg.scale == (0.5, 1.0) and cfg.size == 112


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_the_same_generator():
    # frames at the training size: both paths are then exact (with a resize, the CPU
    # path rounds the resized frame to uint8 as PIL does; the batched GPU path does not)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=make_generator(0))
    aug = BatchAugment(AugmentConfig(size=32))
    cpu = aug(x, make_generator(3))
    gpu = aug(x.cuda(), make_generator(3))  # CPU generator: same draws, pixels on the GPU
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
    cuda_gen = aug(x.cuda(), make_generator(3, "cuda"))
    assert cuda_gen.shape == (16, 3, 32, 32) and torch.equal(cuda_gen, aug(x.cuda(), make_generator(3, "cuda")))


@pytest.mark.parametrize("channels", [1, 3])
def test_cpu_path_equals_torchvision_chain_per_image(channels):
    """The CPU path image by image == torchvision functional ops: Resize (uint8,
    antialiased, rounded like PIL's), resized_crop, hflip, the jitter in its drawn
    order, normalise; with the draws BatchAugment makes from the same generator."""
    size, n = 24, 10
    x = torch.randint(0, 256, (n, channels, 30, 34), dtype=torch.uint8, generator=make_generator(0))
    cfg = AugmentConfig(size=size)
    out = BatchAugment(cfg)(x, make_generator(9))
    g = make_generator(9)  # replay the draws in BatchAugment's order
    boxes = sample_crop_boxes(n, size, size, cfg.scale, cfg.ratio, generator=g)
    flip = torch.rand(n, generator=g) < cfg.flip_p
    p = sample_jitter(n, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, cfg.jitter_p, generator=g)
    factors = torch.stack([p.brightness, p.contrast, p.saturation, p.hue], 1)
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        # the uint8 antialiased resize (TF.resize of a uint8 tensor can differ from it by 1/255)
        ref = F.interpolate(x[i:i + 1], size=(size, size), mode="bilinear", antialias=True)[0].float() / 255
        ref = TF.resized_crop(ref, top, left, h, w, [size, size], antialias=False)
        ref = TF.hflip(ref) if flip[i] else ref
        for op in p.order[i].tolist():
            ref = _TV_OPS[op](ref, factors[i, op].item())
        ref = TF.normalize(ref.expand(3, -1, -1), [0.5] * 3, [0.25] * 3)
        torch.testing.assert_close(out[i], ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("channels,out_channels", [(1, 1), (1, 3), (3, 3), (3, 1)])
def test_fused_cpu_mix_equals_augment_then_mix(channels, out_channels):
    from uscl.augment import mix_views

    g = torch.Generator().manual_seed(channels * 10 + out_channels)
    frames = torch.randint(0, 256, (5, 3, channels, 40, 36), dtype=torch.uint8, generator=g)
    aug = BatchAugment(AugmentConfig(size=32, out_channels=out_channels))
    params = aug.draw(15, generator=torch.Generator().manual_seed(1))
    lam = torch.tensor([0.3, 1.0, 0.05, 0.99, 0.5])
    v1, v2 = aug.mix_cpu(frames, params, lam)
    out = aug.apply(frames.reshape(15, channels, 40, 36), params).view(5, 3, out_channels, 32, 32)
    r1, r2 = mix_views(out[:, 0], out[:, 1], out[:, 2], lam)
    assert v1.shape == (5, out_channels, 32, 32)
    torch.testing.assert_close(v1, r1, atol=2e-5, rtol=0)
    torch.testing.assert_close(v2, r2, atol=2e-5, rtol=0)
