"""Masks through the same geometry as their images: resize, random resized crop and flip, nearest neighbour.

:class:`MaskedAugment` draws one set of parameters per image with a
:class:`~uscl.augment.batch.BatchAugment` and applies them to the image
(bilinear, plus colour jitter) and to its label mask (nearest neighbour: a
label is never blended into another). Both paths sample the same points:
output pixel j of a crop box (start, length) looks at source position
``start + (j + 0.5) * length / size`` (pixel centres), the image bilinearly
around it and the mask at the pixel that contains it (PyTorch's
``nearest-exact``). The mask is first brought to size x size the same way,
as the image is (the original resizes before cropping).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uscl.augment.batch import AugmentParams, BatchAugment


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, H, W) label masks -> (N, size, size), nearest neighbour at pixel centres."""
    if masks.shape[-2:] == (size, size):
        return masks
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0].to(masks.dtype)


def _nearest_taps(start: torch.Tensor, length: torch.Tensor, size: int) -> torch.Tensor:
    """(n, size) source index of each output pixel along one axis: the pixel containing its centre."""
    start = start.to(torch.float64)[:, None]
    length = length.to(torch.float64)[:, None]
    j = torch.arange(size, device=start.device, dtype=torch.float64)
    pos = torch.floor(start + (j + 0.5) * (length / size))
    return torch.minimum(torch.maximum(pos, start), start + length - 1).long()


def resample_masks(masks: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop each mask (N, H, W) to its box ``(top, left, h, w)``, resize to size x size (nearest) and mirror
    where ``flip``: the label-map counterpart of :func:`uscl.augment.crop.resample`."""
    n, h, w = masks.shape
    boxes = boxes.to(masks.device)
    top, left, bh, bw = boxes.unbind(1)
    ys = _nearest_taps(top, bh, size)
    xs = _nearest_taps(left, bw, size)
    if flip is not None:
        xs = torch.where(flip.to(masks.device)[:, None], xs.flip(1), xs)
    rows = torch.gather(masks, 1, ys[:, :, None].expand(n, size, w))
    return torch.gather(rows, 2, xs[:, None, :].expand(n, size, size))


class MaskedAugment:
    """Images and their masks augmented together (one draw per pair).

    >>> aug = MaskedAugment(BatchAugment(finetune_augment_config(128)))
    >>> x, y = aug(images_uint8, masks_uint8, generator)   # float (N, C, 128, 128), int64 (N, 128, 128)
    """

    def __init__(self, augment: BatchAugment):
        self.augment = augment

    @property
    def size(self) -> int:
        return int(self.augment.cfg.size)

    def draw(self, n: int, generator: torch.Generator | None = None) -> AugmentParams:
        return self.augment.draw(n, generator)

    def apply(self, images: torch.Tensor, masks: torch.Tensor, params: AugmentParams, *,
              out_channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} must have the same "
                             "number and size")
        x = self.augment.apply(images, params, out_channels=out_channels)
        y = resample_masks(resize_masks(masks.to(images.device), self.size), params.boxes, self.size, params.flip)
        return x, y.long()

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator | None = None, *,
                 out_channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, C, H, W) and uint8 masks (N, H, W) -> float32 images, int64 masks at size x size."""
        return self.apply(images, masks, self.draw(len(images), generator), out_channels=out_channels)
