"""MoCo's InfoNCE and queue update against hand-written references."""

import math

import torch
import torch.nn.functional as F

from uscl.losses import enqueue, moco_infonce


def reference(q, k, queue, t):
    total = 0.0
    for i in range(len(q)):
        qi = q[i] / q[i].norm()
        ki = k[i] / k[i].norm()
        pos = math.exp(float(qi @ ki) / t)
        neg = sum(math.exp(float(qi @ n) / t) for n in queue)
        total += -math.log(pos / (pos + neg))
    return total / len(q)


def test_infonce_equals_the_hand_computation_and_keys_get_no_gradient():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, 8, generator=g, requires_grad=True)
    k = torch.randn(5, 8, generator=g, requires_grad=True)
    queue = F.normalize(torch.randn(7, 8, generator=g), dim=1)
    loss = moco_infonce(q, k, queue, 0.2)
    assert abs(float(loss.detach()) - reference(q.detach(), k.detach(), queue, 0.2)) < 1e-5
    loss.backward()
    assert q.grad is not None and k.grad is None


def test_enqueue_is_a_ring_buffer_of_normalised_keys():
    queue = torch.zeros(5, 2)
    keys = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
    p = enqueue(queue, 3, keys)
    assert p == 1
    assert torch.allclose(queue[3], torch.tensor([0.6, 0.8])) and torch.allclose(queue[4], torch.tensor([0.0, 1.0]))
    assert torch.allclose(queue[0], torch.tensor([1.0, 0.0])) and queue[1:3].abs().sum() == 0
    many = torch.arange(14.0).view(7, 2) + 1
    assert enqueue(queue, 0, many) == 2  # more keys than room: as if written one by one
    want = F.normalize(many, dim=1)
    assert torch.allclose(queue[:2], want[5:]) and torch.allclose(queue[2:], want[2:5])
