"""Mask R-CNN / Faster R-CNN on our ResNet (the USCL paper's detection experiment).

:func:`build_detector` takes the same ``(arch, init_sd, source)`` as
:func:`uscl.models.classifier.build_classifier`: the trunk is our
:func:`~uscl.models.backbone.build_backbone` ResNet with the init loaded by
:func:`~uscl.models.classifier.apply_init` (so a wrong or partial checkpoint is
an error naming its keys, never a silent partial load), wrapped in
torchvision's ``BackboneWithFPN`` (layer1..layer4 -> FPN levels '0'..'3' + 'pool'),
under torchvision's RPN / RoI heads. Nothing is downloaded.

Choices, and why:

* **Grey input, one channel.** Images are ``(1, H, W)`` floats in [0, 1]; the
  model's ``GeneralizedRCNNTransform`` normalises with ``image_mean=(0.5,)``,
  ``image_std=(0.25,)`` - the normalisation the classifier and pretraining use
  (``uscl.finetune.engine.cfg_mean_std``), so a pretrained trunk sees the
  inputs it was trained on. The first convolution is a ``GreyAwareConv2d``:
  a grey image gives exactly the output of the grey image repeated to RGB, at a
  third of the work and without a 3-channel copy. A 1-value mean/std
  broadcasts, so ``(3, H, W)`` RGB images also work (all images of one batch
  must have the same channel count).
* **BatchNorm.** Detection trains on 2-8 images per step, too few for batch
  statistics, and a pretrained trunk's running statistics are what its
  features were learnt with; so with an init (``init_sd`` given) every
  ``BatchNorm2d`` of the trunk becomes a ``FrozenBatchNorm2d`` (fixed
  statistics and affine: torchvision's choice for its pretrained detection
  backbones). A random trunk has no statistics worth keeping (mean 0, var 1:
  frozen, they are the identity, and the from-scratch trunk trains without
  normalisation; measured at init, its stage outputs' std grows 0.9 -> 2.4 from
  layer1 to layer4, against 1.0 throughout with batch statistics), so it keeps
  ordinary BatchNorm - again torchvision's choice when ``weights_backbone=None``.
  Its BatchNorm layers in frozen stages keep their statistics during training too
  (``uscl.finetune.detect.engine.train_one_epoch(freeze_bn_stats=True)``), so "frozen" and "paper" on a
  random trunk leave those stages exactly as built. ``frozen_bn=True/False`` overrides. The two
  choices give different state dicts (``FrozenBatchNorm2d`` has no
  ``num_batches_tracked``): whoever rebuilds a saved detector must pass the same
  ``frozen_bn`` (recorded as ``model.uscl_frozen_bn``).
* **Trainable layers** (:func:`set_detector_trainable`): ``"frozen"`` = the trunk
  fixed, FPN + RPN + RoI heads train; ``"paper"`` = layer4 + FPN + heads
  (torchvision ``trainable_layers=1``; note the classifier's paper mode trains
  only layer4's *last block*); ``"full"`` = everything. An int 0..5 is
  torchvision's ``trainable_backbone_layers`` (0 frozen, 3 = layer2..4, 5 all).
  ``FrozenBatchNorm2d`` has no parameters, so "full" with an init trains the
  convolutions around fixed normalisation, as torchvision does.
* ``num_classes`` is the number of object classes K, *without* background;
  the torchvision heads get K + 1 outputs, label 0 being background, so the
  targets' labels are 1..K.

Cost: on this project's 2 shared CPU cores a resnet18 Mask R-CNN training step on 2 images at
128 px takes 3-4.5 s with torchvision's default heads, 1-1.2 s with the heads shrunk
(see :mod:`uscl.finetune.detect.engine` for the measurements); the heads, not the trunk, dominate.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.misc import FrozenBatchNorm2d

from uscl.errors import ConfigError
from uscl.models.backbone import build_backbone
from uscl.models.families import require_dense
from uscl.models.classifier import apply_init

MODES = {"frozen": 0, "paper": 1, "full": 5}
# torchvision's order (resnet_fpn_backbone): the last n of these train; 5 adds the stem's bn1
_TRUNK_LAYERS = ["layer4", "layer3", "layer2", "layer1", "conv1"]

GREY_MEAN = (0.5,)
GREY_STD = (0.25,)


def build_detector(arch: str, num_classes: int, init_sd: dict[str, torch.Tensor] | None = None,
                   source: str = "random", *, with_masks: bool = True, trainable_layers: int | str = "full",
                   frozen_bn: bool | None = None, min_size: int = 224, max_size: int = 448,
                   image_mean: tuple[float, ...] = GREY_MEAN, image_std: tuple[float, ...] = GREY_STD,
                   **detector_kwargs) -> MaskRCNN | FasterRCNN:
    """Mask R-CNN (``with_masks``) or Faster R-CNN on an FPN over our ``arch`` ResNet, from ``init_sd``.

    ``num_classes``: object classes without background (labels 1..K).
    ``trainable_layers``: "frozen" | "paper" | "full" or torchvision's 0..5 (see the module docs).
    ``frozen_bn``: None = FrozenBatchNorm2d when ``init_sd`` is given, BatchNorm2d for a random trunk.
    ``min_size`` / ``max_size``: the transform resizes each image so its short side is ``min_size``
    (long side at most ``max_size``); keep them at the frames' size to avoid upsampling (torchvision's
    800 / 1333 are for COCO photos). Further keywords go to the torchvision constructor
    (``box_detections_per_img``, ``rpn_anchor_generator``, ...).
    """
    if int(num_classes) < 1:
        raise ConfigError(f"num_classes must be >= 1 object class (background excluded), got {num_classes}",
                          param="num_classes")
    require_dense(arch, "detect")  # U-Net / FPN over a ResNet's stem + layer1..4
    trunk, _ = build_backbone(arch)
    apply_init(trunk, init_sd, arch, source)  # before BN conversion: its key checks see ordinary BatchNorm
    frozen_bn = init_sd is not None if frozen_bn is None else bool(frozen_bn)
    if frozen_bn:
        trunk = freeze_batchnorm(trunk)
    # channels of layer1..4: resnet18 64..512 (BasicBlock), resnet50 256..2048 (Bottleneck)
    in_channels = [trunk.inplanes // 8 * 2 ** i for i in range(4)]
    backbone = BackboneWithFPN(trunk, {f"layer{k}": str(k - 1) for k in range(1, 5)}, in_channels, 256)
    ctor = MaskRCNN if with_masks else FasterRCNN
    model = ctor(backbone, num_classes=int(num_classes) + 1, min_size=min_size, max_size=max_size,
                 image_mean=list(image_mean), image_std=list(image_std), **detector_kwargs)
    model.uscl_frozen_bn = frozen_bn
    set_detector_trainable(model, trainable_layers)
    return model


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` replaced by a ``FrozenBatchNorm2d`` holding its statistics and affine.

    The replacement keeps the state-dict keys (weight, bias, running_mean, running_var), minus
    ``num_batches_tracked``. Returns the module (replaced itself when it is a BatchNorm2d).
    """
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def trainable_count(mode: int | str) -> int:
    """A mode name or torchvision's 0..5 -> the number of trunk layers that train."""
    if isinstance(mode, str):
        if mode not in MODES:
            raise ConfigError(f"unknown detection mode {mode!r} (known: {', '.join(MODES)}, or 0..5)", param="mode")
        return MODES[mode]
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 5:
        raise ConfigError(f"trainable_layers must be 0..5 or one of {', '.join(MODES)}, got {mode!r}",
                          param="trainable_layers")
    return mode


def set_detector_trainable(model: nn.Module, mode: int | str) -> list[str]:
    """Freeze the trunk but its last ``trainable_count(mode)`` layers; FPN, RPN and RoI heads always train.

    Returns the names of the trainable parameters. (A training loop should also keep the statistics
    of BatchNorm layers whose parameters are frozen: :func:`uscl.finetune.detect.engine.train_one_epoch` does.)
    """
    n = trainable_count(mode)
    layers = _TRUNK_LAYERS[:n] + (["bn1"] if n == 5 else [])
    for name, p in model.named_parameters():
        if name.startswith("backbone.body."):
            sub = name[len("backbone.body."):]
            p.requires_grad_(any(sub.startswith(layer + ".") for layer in layers))
        else:
            p.requires_grad_(True)
    return [name for name, p in model.named_parameters() if p.requires_grad]


def trunk_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trunk's weights under torchvision ResNet names (conv1..., layer4...), e.g. to compare with an init."""
    prefix = "backbone.body."
    return {k[len(prefix):]: v for k, v in model.state_dict().items() if k.startswith(prefix)}
