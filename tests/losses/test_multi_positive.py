"""Multi-positive NT-Xent against a hand-written loop; k = 2 is NT-Xent; time weights."""

import math

import pytest
import torch

from uscl.losses import multi_positive_nt_xent, nt_xent, time_weights


def loop_reference(z, temperature, cosine, weights=None):
    """Row by row: -sum_b w_ab log(exp(s(a, b)/T) / sum_{j != a} exp(s(a, j)/T)), averaged over n*k rows."""
    n, k, _ = z.shape
    flat = z.double().reshape(n * k, -1)
    if cosine:
        flat = flat / flat.norm(dim=1, keepdim=True)
    total = 0.0
    for i in range(n):
        for a in range(k):
            r = i * k + a
            denom = sum(math.exp(float(flat[r] @ flat[j]) / temperature) for j in range(n * k) if j != r)
            raw = [0.0 if b == a else (1.0 if weights is None else float(weights[i, a, b])) for b in range(k)]
            for b in range(k):
                if b != a:
                    p = math.exp(float(flat[r] @ flat[i * k + b]) / temperature) / denom
                    total += -(raw[b] / sum(raw)) * math.log(p)
    return total / (n * k)


@pytest.mark.parametrize("n,k", [(2, 2), (3, 3), (4, 5)])
@pytest.mark.parametrize("cosine", [True, False])
def test_matches_loop_reference(n, k, cosine):
    g = torch.Generator().manual_seed(10 * n + k)
    z = torch.randn(n, k, 8, generator=g) * (1.0 if cosine else 0.3)
    w = torch.rand(n, k, k, generator=g)
    for weights in (None, w):
        got = multi_positive_nt_xent(z, 0.5, cosine, weights)
        assert got.item() == pytest.approx(loop_reference(z, 0.5, cosine, weights), rel=1e-5, abs=1e-6)


def test_two_views_is_nt_xent():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    got = multi_positive_nt_xent(torch.stack([z1, z2], 1), 0.2, True)
    assert got.item() == pytest.approx(nt_xent(z1, z2, 0.2, True).item(), rel=1e-6)


def test_gradient_flows_and_bad_shapes_refused():
    z = torch.randn(3, 3, 4, requires_grad=True)
    multi_positive_nt_xent(z).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="n, k >= 2"):
        multi_positive_nt_xent(torch.randn(3, 1, 4))
    with pytest.raises(ValueError, match="weights must be"):
        multi_positive_nt_xent(torch.randn(3, 3, 4), weights=torch.ones(3, 2, 2))


def test_time_weights_favour_close_frames():
    w = time_weights(torch.tensor([[0, 1, 9]]), torch.tensor([10]), sigma=0.25)
    assert w.shape == (1, 3, 3)
    assert w[0, 0, 1] == pytest.approx(math.exp(-1 / 2.5))
    assert w[0, 0, 2] == pytest.approx(math.exp(-9 / 2.5))
    assert torch.allclose(w[0], w[0].t()) and torch.all(torch.diagonal(w[0]) == 1)
    with pytest.raises(ValueError, match="sigma"):
        time_weights(torch.tensor([[0, 1]]), torch.tensor([2]), sigma=0)
