"""Grad-CAM: real gradients (equal to the analytic CAM of a GAP + linear model) that follow the content."""

import numpy as np
import pytest
import torch

from uscl.errors import UsclError
from uscl.infer.gradcam import GradCAM
from uscl.infer.model import KnnHead, ProbabilityModel
from uscl.infer.overlay import overlay
from uscl.models import FinetunedClassifier, build_backbone

SIZE = 64


def _net(num_classes=2, seed=0):
    torch.manual_seed(seed)
    backbone, dim = build_backbone("resnet18")
    return ProbabilityModel(FinetunedClassifier(backbone, dim, num_classes)).eval()


def test_gradcam_equals_the_class_activation_map_of_a_gap_linear_model():
    """With global average pooling and a linear head, dy_c/dA_k(i, j) = w_ck / (h w) exactly,
    so Grad-CAM must equal ReLU(sum_k w_ck A_k) / (h w): a check that the hooks see real gradients."""
    net = _net(3)
    x = torch.randn(3, 3, SIZE, SIZE)
    cam, scores = GradCAM(net).raw(x, 2)
    with torch.no_grad():
        b = net.backbone
        a = b.layer4(b.layer3(b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x))))))))
        expected = torch.relu(torch.einsum("k,nkhw->nhw", net.head.weight[2], a)) / (a.shape[2] * a.shape[3])
        torch.testing.assert_close(scores, net.logits(x)[:, 2])
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in net.parameters())  # explaining never touches the weights' .grad
    maps = GradCAM(net)(x, 2)
    assert maps.shape == (3, SIZE, SIZE) and float(maps.min()) >= 0 and float(maps.amax((1, 2)).max()) <= 1


def _line_frames(positions, rng):
    from uscl.synth import render_video

    frames = [render_video("covid", 1, SIZE, rng, probe="linear", linear_width=1.0, ribs=[], motion_scale=0,
                           b_line_positions=[] if u is None else [u])[0] for u in positions]
    x = torch.from_numpy(np.stack(frames)).float().div(255)[:, None]
    return ((x - 0.5) / 0.25).expand(-1, 3, -1, -1).contiguous()


class TinyLineNet(torch.nn.Module):
    """A small CNN (conv stack, global average pooling, linear head): local receptive fields, a 16x16 last map."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 5, stride=2, padding=2), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def test_gradcam_follows_a_bright_vertical_line():
    """Train a tiny detector of B-lines (bright vertical lines), then move the line: the map moves with it."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = TinyLineNet()
    n = 48
    pos = rng.uniform(0.1, 0.9, n)
    x = _line_frames([u if i % 2 else None for i, u in enumerate(pos)], rng)
    y = torch.tensor([i % 2 for i in range(n)])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(80):
        idx = torch.from_numpy(rng.choice(n, 16, replace=False))
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_pos = [0.2, 0.8]
    xt = _line_frames(test_pos, np.random.default_rng(1))
    with torch.no_grad():
        assert (torch.softmax(net(xt), 1)[:, 1] > 0.5).all(), "the detector did not learn to see the line"
    maps = GradCAM(net, net.features[-1])(xt, 1).numpy()
    cols = np.arange(SIZE)
    for m, u in zip(maps, test_pos):
        centre = u * (SIZE - 1)
        band = np.abs(cols - centre) <= SIZE // 10
        profile = m.mean(0)
        assert profile[band].mean() > 2 * profile[~band].mean(), (u, profile.round(2))
        assert abs(int(profile.argmax()) - centre) <= SIZE // 10, (u, profile.round(2))
    # the hot side swaps with the line
    left, right = slice(0, SIZE // 2), slice(SIZE // 2, SIZE)
    assert maps[0][:, left].mean() > maps[0][:, right].mean() and maps[1][:, right].mean() > maps[1][:, left].mean()


def test_knn_models_are_refused_and_overlay_blends():
    bank = torch.randn(10, 512)
    net = _net(2)
    net.classifier.head = KnnHead(bank, torch.arange(10) % 2, 3, 2)
    with pytest.raises(UsclError, match="kNN"):
        GradCAM(net)
    img = np.full((1, 8, 8, 3), 100, np.uint8)
    cam = np.zeros((1, 8, 8), np.float32)
    cam[0, :, 4:] = 1.0
    out = overlay(img, cam, alpha=0.5)
    assert (out[0, :, :4] == 100).all() and not (out[0, :, 4:] == 100).all()
