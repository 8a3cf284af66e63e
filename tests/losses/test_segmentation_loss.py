"""Cross-entropy + soft Dice against a pixel-by-pixel loop reference and a 2x2 example done by hand."""

import math

import pytest
import torch

from uscl.losses import dice_ce_loss, soft_dice_loss


def loop_reference(logits, target, dice_weight=1.0, ce_weight=1.0, smooth=1.0, ignore_index=None):
    """One pixel at a time in float64: CE averaged over kept pixels, then 1 - Dice per foreground class, averaged."""
    n, k1, h, w = logits.shape
    x = logits.double()
    ce_sum, kept = 0.0, 0
    inter = [0.0] * k1
    psum = [0.0] * k1
    tsum = [0.0] * k1
    for i in range(n):
        for r in range(h):
            for c in range(w):
                y = int(target[i, r, c])
                if ignore_index is not None and y == ignore_index:
                    continue
                z = [float(x[i, j, r, c]) for j in range(k1)]
                m = max(z)
                log_den = m + math.log(sum(math.exp(v - m) for v in z))
                probs = [math.exp(v - log_den) for v in z]
                ce_sum += log_den - z[y]
                kept += 1
                for j in range(1, k1):
                    t = 1.0 if y == j else 0.0
                    inter[j] += probs[j] * t
                    psum[j] += probs[j]
                    tsum[j] += t
    ce = ce_sum / kept if kept else 0.0
    dices = [(2 * inter[j] + smooth) / (psum[j] + tsum[j] + smooth) for j in range(1, k1)]
    dice_loss = sum(1 - d for d in dices) / len(dices) if dices else 0.0
    return ce_weight * ce + dice_weight * dice_loss


@pytest.mark.parametrize("k1", [2, 3, 5])
@pytest.mark.parametrize("smooth", [1.0, 1e-5])
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.5, 2.0), (1.0, 0.0), (0.0, 1.0)])
def test_matches_loop_reference(k1, smooth, weights):
    g = torch.Generator().manual_seed(k1 * 10 + int(smooth))
    logits = torch.randn(2, k1, 5, 4, generator=g) * 2
    target = torch.randint(0, k1, (2, 5, 4), generator=g)
    dw, cw = weights
    got = dice_ce_loss(logits, target, dice_weight=dw, ce_weight=cw, smooth=smooth)
    assert got.shape == () and got.dtype == torch.float32
    assert got.item() == pytest.approx(loop_reference(logits, target, dw, cw, smooth), rel=1e-5, abs=1e-6)


def test_ignore_index_matches_reference_and_gets_no_gradient():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    target[0, 0, :] = 255
    target[1, 2, 1] = 255
    got = dice_ce_loss(logits, target, ignore_index=255)
    assert got.item() == pytest.approx(loop_reference(logits.detach(), target, ignore_index=255), rel=1e-5)
    got.backward()
    ignored = (target == 255).unsqueeze(1).expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0)
    assert logits.grad[~ignored].abs().sum() > 0
    # changing ignored pixels' logits changes nothing
    other = logits.detach().clone()
    other[0, :, 0, :] += 7
    assert dice_ce_loss(other, target, ignore_index=255).item() == pytest.approx(got.item(), rel=1e-6)


def test_every_pixel_ignored_is_exactly_zero():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = dice_ce_loss(logits, torch.full((1, 2, 2), -1), ignore_index=-1)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_two_by_two_example_by_hand():
    # foreground probabilities 0.8, 0.2 / 0.5, 0.5 (background logit 0, foreground log-odds)
    fg = torch.tensor([[math.log(4), math.log(1 / 4)], [0.0, 0.0]])
    logits = torch.stack([torch.zeros(2, 2), fg]).unsqueeze(0)  # (1, 2, 2, 2)
    target = torch.tensor([[[1, 0], [1, 0]]])
    # CE: true-class probabilities 0.8, 0.8, 0.5, 0.5 -> (2 * -log 0.8 + 2 * log 2) / 4 = log(2.5) / 2
    ce = math.log(2.5) / 2
    # Dice (smooth 1): intersection 0.8 + 0.5 = 1.3, sum p = 2.0, sum t = 2 -> (2.6 + 1) / (4 + 1) = 0.72
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.28, rel=1e-6)
    assert dice_ce_loss(logits, target, dice_weight=0.0).item() == pytest.approx(ce, rel=1e-6)
    assert dice_ce_loss(logits, target).item() == pytest.approx(ce + 0.28, rel=1e-6)
    assert dice_ce_loss(logits, target, dice_weight=2.0, ce_weight=0.5).item() == pytest.approx(
        0.5 * ce + 2 * 0.28, rel=1e-6)
    # smooth -> 0: 2.6 / 4 = 0.65
    assert soft_dice_loss(logits, target, smooth=1e-9).item() == pytest.approx(0.35, rel=1e-6)


def test_background_is_not_in_the_dice_term():
    # all background, predicted as all background: only class 1 counts and it is absent from truth and prediction
    logits = torch.zeros(1, 2, 3, 3)
    logits[:, 0] = 30.0
    target = torch.zeros(1, 3, 3, dtype=torch.long)
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    # background-only logits: there is no foreground class, the Dice term is 0
    assert soft_dice_loss(torch.randn(1, 1, 3, 3), target).item() == 0.0


def test_absent_class_follows_the_smooth_term():
    # class 2 never in the truth; its predicted mass is sum p_2 = 9 * 0.25 -> Dice_2 = smooth / (2.25 + smooth)
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25])).view(1, 3, 1, 1).expand(1, 3, 3, 3).contiguous()
    target = torch.ones(1, 3, 3, dtype=torch.long)
    for smooth in (1.0, 10.0):
        dice1 = (2 * 9 * 0.25 + smooth) / (9 * 0.25 + 9 + smooth)
        dice2 = smooth / (9 * 0.25 + smooth)
        expect = ((1 - dice1) + (1 - dice2)) / 2
        assert soft_dice_loss(logits, target, smooth=smooth).item() == pytest.approx(expect, rel=1e-6)


def test_perfect_prediction_has_dice_part_near_zero():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    target[target == 3] = 2  # class 3 absent from truth and prediction
    logits = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float() * 40 - 20
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_ce_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    # and a poor prediction scores far worse
    assert soft_dice_loss(-logits, target).item() > 0.5


def test_gradients_flow_and_descend():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (2, 6, 6), generator=g)
    logits = torch.randn(2, 3, 6, 6, generator=g, requires_grad=True)
    for fn in (lambda x: dice_ce_loss(x, target), lambda x: soft_dice_loss(x, target),
               lambda x: dice_ce_loss(x, target, ce_weight=0.0)):
        x = logits.detach().clone().requires_grad_(True)
        loss = fn(x)
        loss.backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        with torch.no_grad():
            assert fn(x - 0.5 * x.grad / x.grad.norm()) < loss  # a small step down the gradient lowers the loss


def test_half_precision_input_is_computed_in_float32():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    got = dice_ce_loss(logits.bfloat16(), target)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(dice_ce_loss(logits.bfloat16().float(), target).item(), rel=1e-6)


def test_rejects_bad_input():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError):
        dice_ce_loss(logits[0], target)  # not 4-d
    with pytest.raises(ValueError):
        dice_ce_loss(logits, target[:, :3])  # shape mismatch
    with pytest.raises(ValueError):
        dice_ce_loss(logits, target.float())  # not integer
    with pytest.raises(ValueError):
        dice_ce_loss(logits, target + 3)  # label out of range
    with pytest.raises(ValueError):
        dice_ce_loss(logits, target - 1)  # negative label, no ignore_index
    with pytest.raises(ValueError):
        dice_ce_loss(logits, target, smooth=0.0)
    with pytest.raises(ValueError):
        dice_ce_loss(logits, target, dice_weight=-1.0)
