"""The segmenter's shapes, init and trainable modes; masks staying under their pixels through augmentation."""

import pytest
import torch

from uscl.augment import BatchAugment, finetune_augment_config
from uscl.augment.config import AugmentConfig
from uscl.augment.masks import MaskedAugment, resample_masks, resize_masks
from uscl.errors import UsclError
from uscl.models.backbone import build_backbone
from uscl.models.segmenter import build_segmenter, set_segmenter_trainable
from uscl.utils.seed import make_generator


def _squares(n=6, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, h, w, dtype=torch.uint8)
    masks = torch.zeros(n, h, w, dtype=torch.uint8)
    for i in range(n):
        y, x = torch.randint(4, h - 24, (2,), generator=g).tolist()
        s = int(torch.randint(8, 20, (1,), generator=g))
        images[i, 0, y:y + s, x:x + s] = 255
        masks[i, y:y + s, x:x + s] = 1
    return images, masks


@pytest.mark.parametrize("flip_p", [0.0, 1.0])
def test_square_stays_under_its_mask(flip_p):
    images, masks = _squares()
    cfg = AugmentConfig(size=64, scale=(0.3, 1.0), ratio=(0.6, 1.6), flip_p=flip_p, jitter_s=0.0, jitter_p=0.0,
                        mean=0.0, std=1.0)
    x, y = MaskedAugment(BatchAugment(cfg))(images, masks, make_generator(3), out_channels=1)
    assert x.shape == (6, 1, 64, 64) and y.shape == (6, 64, 64) and y.dtype == torch.int64
    v = x[:, 0]
    # the mask's pixel is the one nearest the image's bilinear sample: inside the square every axis
    # puts at least half its weight inside, outside at least one axis puts at most half
    assert (v[y == 1] >= 0.25 - 1e-5).all()
    assert (v[y == 0] <= 0.5 + 1e-5).all()
    assert (y == 1).any(dim=(1, 2)).sum() >= 4  # the crops kept most squares


def test_flip_moves_mask_with_image():
    images, masks = _squares(n=2)
    cfg = AugmentConfig(size=64, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0, jitter_s=0.0, jitter_p=0.0,
                        mean=0.0, std=1.0)
    x, y = MaskedAugment(BatchAugment(cfg))(images, masks, make_generator(0))
    assert torch.equal(y, masks.flip(-1).long())
    assert torch.allclose(x[:, 0], images[:, 0].flip(-1).float() / 255)


def test_resize_then_crop_agrees_with_image():
    images, masks = _squares(n=4, h=96, w=96)
    cfg = finetune_augment_config(64)
    cfg.mean, cfg.std = 0.0, 1.0
    x, y = MaskedAugment(BatchAugment(cfg))(images, masks, make_generator(1))
    agree = ((x[:, 0] > 0.5) == (y == 1)).float().mean()
    assert agree > 0.97  # only antialiased boundary pixels may differ


def test_resample_masks_identity_box_and_nearest_resize():
    m = torch.arange(16, dtype=torch.uint8).view(1, 4, 4)
    assert torch.equal(resample_masks(m, torch.tensor([[0, 0, 4, 4]]), 4), m)
    up = resize_masks(m, 8)
    assert torch.equal(up[0, ::2, ::2], m[0]) and set(up.unique().tolist()) == set(range(16))
    crop = resample_masks(m, torch.tensor([[1, 2, 2, 2]]), 2)
    assert crop[0].tolist() == [[6, 7], [10, 11]]


def test_mismatched_images_and_masks_refused():
    aug = MaskedAugment(BatchAugment(finetune_augment_config(32)))
    with pytest.raises(ValueError, match="same"):
        aug(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), torch.zeros(3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_segmenter_shapes_any_size(arch):
    model = build_segmenter(arch, 3).eval()
    for size in (64, 72):
        with torch.no_grad():
            assert model(torch.randn(2, 1, size, size)).shape == (2, 4, size, size)


def test_segmenter_loads_backbone_init_and_names_wrong_arch():
    bb, _ = build_backbone("resnet18")
    sd = {k: v for k, v in bb.state_dict().items() if not k.startswith("fc.")}
    model = build_segmenter("resnet18", 1, sd, "checkpoint:x")
    assert torch.equal(model.backbone.conv1.weight, sd["conv1.weight"])
    with pytest.raises(UsclError, match="resnet18 backbone, but the model is resnet50"):
        build_segmenter("resnet50", 1, sd, "checkpoint:x")


@pytest.mark.parametrize("mode,encoder_trains,layer4_last", [("frozen", False, False), ("paper", False, True),
                                                              ("full", True, True)])
def test_trainable_modes(mode, encoder_trains, layer4_last):
    model = build_segmenter("resnet18", 2)
    names = set(set_segmenter_trainable(model, mode))
    assert any(n.startswith("decoder.") for n in names) and "head.weight" in names
    assert ("backbone.conv1.weight" in names) == encoder_trains
    assert ("backbone.layer4.1.conv2.weight" in names) == layer4_last
