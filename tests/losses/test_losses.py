"""NT-Xent against hand-written references; masked supervised cross-entropy."""

import math

import pytest
import torch
import torch.nn.functional as F

from uscl.losses import masked_cross_entropy, nt_xent


def loop_reference(z1, z2, temperature, cosine):
    """Textbook NT-Xent, one row at a time: -log(exp(s_pos/T) / sum_{k != i} exp(s_ik/T)), averaged over 2N."""
    z = torch.cat([z1, z2]).double()
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        def sim(a, b):
            if cosine:
                return float(torch.dot(z[a], z[b]) / (z[a].norm() * z[b].norm()))
            return float(torch.dot(z[a], z[b]))
        pos = (i + n) % n2
        denom = sum(math.exp(sim(i, k) / temperature) for k in range(n2) if k != i)
        total += -math.log(math.exp(sim(i, pos) / temperature) / denom)
    return total / n2


def original_formulation(z1, z2, temperature, cosine):
    """The release's way: 2N x 2N similarities, positives from the ±N diagonals, negatives
    by mask, logits = [pos, negs] / T, CE(sum) with target 0, divided by 2N."""
    reps = torch.cat([z2, z1]).double()  # the original concatenates (zjs, zis)
    n = z1.shape[0]
    if cosine:
        sim = F.cosine_similarity(reps.unsqueeze(1), reps.unsqueeze(0), dim=-1)
    else:
        sim = reps @ reps.t()
    l_pos = torch.diag(sim, n)
    r_pos = torch.diag(sim, -n)
    positives = torch.cat([l_pos, r_pos]).view(2 * n, 1)
    eye = torch.eye(2 * n)
    mask = (1 - (eye + torch.diag(torch.ones(n), n) + torch.diag(torch.ones(n), -n))).bool()
    negatives = sim[mask].view(2 * n, -1)
    logits = torch.cat([positives, negatives], dim=1) / temperature
    labels = torch.zeros(2 * n, dtype=torch.long)
    return F.cross_entropy(logits, labels, reduction="sum") / (2 * n)


@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("cosine", [True, False])
def test_nt_xent_matches_references(n, temperature, cosine):
    g = torch.Generator().manual_seed(n * 100 + int(temperature * 10))
    scale = 1.0 if cosine else 0.3  # keep dot products in a numerically sane range
    z1 = torch.randn(n, 16, generator=g) * scale
    z2 = torch.randn(n, 16, generator=g) * scale
    got = nt_xent(z1, z2, temperature, cosine)
    assert got.shape == ()
    assert got.item() == pytest.approx(loop_reference(z1, z2, temperature, cosine), rel=1e-5, abs=1e-6)
    assert got.item() == pytest.approx(original_formulation(z1, z2, temperature, cosine).item(), rel=1e-5, abs=1e-6)


def test_nt_xent_orders_pairs_and_has_gradients():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 8, generator=g)
    close = z + 0.01 * torch.randn(6, 8, generator=g)
    shuffled = close[torch.tensor([1, 2, 3, 4, 5, 0])]
    aligned = nt_xent(z, close)
    assert aligned < nt_xent(z, shuffled)
    # lower bound for perfectly aligned pairs whose negatives are orthogonal: log(1 + (2N-2) e^{-1/T}/e^{1/T})
    zz = torch.eye(4)
    expect = math.log(1 + 6 * math.exp(-2.0))
    assert nt_xent(zz, zz, 0.5).item() == pytest.approx(expect, rel=1e-6)
    a = torch.randn(4, 8, requires_grad=True)
    b = torch.randn(4, 8, requires_grad=True)
    nt_xent(a, b).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_nt_xent_rejects_bad_input():
    with pytest.raises(ValueError):
        nt_xent(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(3, 4), torch.randn(3, 4), temperature=0)


def test_nt_xent_half_precision_input_is_computed_in_float32():
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    assert nt_xent(z1.bfloat16(), z2.bfloat16()).dtype == torch.float32


def test_masked_cross_entropy_uses_labelled_items_only():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 3, generator=g, requires_grad=True)
    labels = torch.tensor([0, -1, 2, -1, 1, 1])
    loss, count = masked_cross_entropy(logits, labels)
    keep = labels >= 0
    assert count == 4
    assert loss.item() == pytest.approx(F.cross_entropy(logits[keep], labels[keep]).item(), rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[~keep] == 0)  # unlabelled rows get no gradient
    assert torch.all(logits.grad[keep].abs().sum(1) > 0)
    # changing an unlabelled item's logits changes nothing
    other = logits.detach().clone()
    other[1] += 10
    assert masked_cross_entropy(other, labels)[0].item() == pytest.approx(loss.item(), rel=1e-6)


def test_masked_cross_entropy_all_unlabelled_is_exactly_zero():
    logits = torch.randn(5, 3, requires_grad=True)
    loss, count = masked_cross_entropy(logits, torch.full((5,), -1))
    assert count == 0
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)
