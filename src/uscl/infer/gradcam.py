"""Grad-CAM (Selvaraju et al. 2017) on the last convolutional features of a fine-tuned backbone.

For class c with score y_c (the head's logit) and the activations A_k of the
family's target layer (:func:`cam_layer_name`: ``backbone.layer4`` of a ResNet,
``backbone.relu`` after DenseNet's ``features.norm5``, ``backbone.features.-1`` of
MobileNetV3 / EfficientNet, ``backbone.conv5`` of ShuffleNetV2; a forward hook
captures them; a hook on the activation tensor captures dy_c/dA_k during the
backward pass):

    alpha_k = mean over (i, j) of dy_c/dA_k(i, j)
    CAM     = ReLU(sum_k alpha_k A_k), upsampled (bilinear) to the input size

Each map is divided by its own maximum, so it lies in [0, 1]. For an ensemble
the folds' normalised maps are averaged (each fold explains its own logit of
the same class), matching the averaged probabilities that made the
prediction. Computed in float32 (no autocast) so small gradients are not lost
to bf16.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uscl.errors import UsclError
from uscl.models.backbone import build_backbone
from uscl.models.families import family_of, module_path, submodule


@functools.lru_cache(maxsize=None)
def cam_layer_name(arch: str) -> str:
    """The Grad-CAM target of ``arch`` as a module name of the fold network (``backbone.layer4``,
    ``backbone.features.16``)."""
    with torch.device("meta"):
        backbone, _ = build_backbone(arch)
    return f"backbone.{module_path(backbone, family_of(arch).cam_layer)}"


def cam_layer(net: nn.Module) -> nn.Module:
    """The Grad-CAM target module of a fold network (its ``arch``; ResNet's ``layer4`` when it has none)."""
    arch = getattr(net, "arch", None)
    return submodule(net.backbone, family_of(arch).cam_layer) if arch else net.backbone.layer4


class GradCAM:
    """Hooks on one layer of one fold model; ``__call__(x, class_idx)`` → maps (N, H, W) in [0, 1]."""

    def __init__(self, net: nn.Module, layer: nn.Module | None = None):
        if getattr(net, "is_knn", False):
            raise UsclError("Grad-CAM needs class scores with gradients; a kNN model has none "
                            "(explain a model fine-tuned with mode paper, full or linear)")
        self.net = net
        self.layer = layer if layer is not None else cam_layer(net)
        self._act: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None

    def _forward_hook(self, module, inputs, output):
        self._act = output
        output.register_hook(self._grad_hook)

    def _grad_hook(self, grad: torch.Tensor) -> None:
        self._grad = grad

    def raw(self, x: torch.Tensor, class_idx: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-normalised maps at the layer's resolution (N, h, w) and the class scores (N,)."""
        self.net.eval()
        handle = self.layer.register_forward_hook(self._forward_hook)
        try:
            with torch.enable_grad():
                x = x.detach().float().requires_grad_(True)  # a graph exists even with frozen weights
                logits = self._logits(x)
                idx = torch.as_tensor(class_idx, device=logits.device).long().expand(len(x))
                score = logits.gather(1, idx[:, None]).squeeze(1)
                # BatchNorm is in eval mode, so each frame's score depends on that frame alone:
                # the gradient of the sum is every frame's own gradient
                torch.autograd.grad(score.sum(), [self._act])
        finally:
            handle.remove()
        act, grad = self._act.detach(), self._grad.detach()
        self._act = self._grad = None
        weights = grad.mean(dim=(2, 3), keepdim=True)
        return F.relu((weights * act).sum(1)), score.detach()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.logits(x) if hasattr(self.net, "logits") else self.net(x)

    def __call__(self, x: torch.Tensor, class_idx: torch.Tensor | int) -> torch.Tensor:
        cam, _ = self.raw(x, class_idx)
        cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return normalise_maps(cam)


def normalise_maps(cam: torch.Tensor) -> torch.Tensor:
    """Divide each map by its maximum (an all-zero map stays zero)."""
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)
    return (cam / peak[:, None, None]).clamp(0, 1)


@dataclass
class CamResult:
    maps: np.ndarray  # (T, H, W) float32 in [0, 1], at the model's input size
    class_index: int
    how: str  # what was averaged


def explain_frames(model, x: torch.Tensor, class_idx: int, *, batch_size: int = 32) -> CamResult:
    """Grad-CAM maps of normalised inputs x (T, 3, H, W) for ``class_idx``, averaged over the folds."""
    folds = model.folds
    cams = [GradCAM(f.net) for f in folds]
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        total = sum(c(xb, class_idx) for c in cams)
        out.append((total / len(cams)).cpu().numpy().astype(np.float32))
    how = (f"mean of the {len(folds)} folds' Grad-CAM maps (each normalised to its maximum)"
           if len(folds) > 1 else "Grad-CAM of the one model")
    return CamResult(np.concatenate(out) if out else np.zeros((0,) + tuple(x.shape[-2:]), np.float32), class_idx, how)
