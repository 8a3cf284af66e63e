"""The CPU variant of BatchAugment's pixel work: same draws, same result, cache-friendly.

On a GPU one batched op per step is best; on a CPU core the cost is memory
traffic and torch's slow paths (advanced indexing, per-image factors
broadcast over a batch). So here:

* the resize to the training size (as the original's ``Resize``) runs on
  uint8 with torch's antialiased SIMD kernel, grey frames packed three to an
  image as the channels of a channels-last tensor (the kernel's fast layout).
  The result is rounded to uint8, as the original PIL ``Resize`` rounds it;
* then image by image, while its pixels are in cache: crop + resize back with
  ``F.interpolate`` (exactly ``torchvision.transforms.functional.resized_crop``),
  flip, colour jitter with scalar factors, normalise into the output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uscl.augment.color import JitterParams, grey, jitter_image


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), antialiased bilinear, rounded.

    Grey (C = 1) frames are grouped three at a time as one 3-channel
    channels-last image: torch's uint8 antialias kernel is vectorised for
    3/4 interleaved channels, about twice as fast per plane as for one.
    """
    n, c = x.shape[:2]
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    if c == 1:
        k = n - n % 3
        if k:
            packed = x[:k].reshape(k // 3, 3, *x.shape[2:]).contiguous(memory_format=torch.channels_last)
            res = F.interpolate(packed, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            out[:k].view(k // 3, 3, size, size).copy_(res)
        if k < n:
            out[k:] = F.interpolate(x[k:], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return out
    src = x.contiguous(memory_format=torch.channels_last) if c == 3 else x
    out.copy_(F.interpolate(src, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return out


def augment_chunk_cpu(x: torch.Tensor, boxes: list, flips: list, jitter: JitterParams | None,
                      size: int, mean: float, std: float, out: torch.Tensor) -> torch.Tensor:
    """Augment uint8 or float (n, C, H, W) CPU frames into ``out`` (n, out_c, size, size).

    ``boxes``/``flips`` are Python lists (one ``(top, left, h, w)`` / bool per
    frame) in the coordinates of the ``size`` x ``size`` image.
    """
    if x.shape[-2:] != (size, size):
        x = resize_uint8(x, size) if x.dtype == torch.uint8 else \
            F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True).clamp_(0, 1)
    elif x.dtype != torch.uint8:
        x = x.to(torch.float32, copy=True)  # frames are changed in place below: never the caller's
    if x.dtype == torch.uint8:
        x = x.to(torch.float32).mul_(1.0 / 255.0)
    c, out_c = x.shape[1], out.shape[1]
    order = factors = None
    if jitter is not None:
        # the ops each image runs, in its drawn order (inactive images: none)
        active = jitter.active.tolist()
        order = [o if a else [] for o, a in zip(jitter.order.tolist(), active)]
        factors = list(zip(jitter.brightness.tolist(), jitter.contrast.tolist(), jitter.saturation.tolist(),
                           jitter.hue.tolist()))
    inv_std = 1.0 / std
    for i, (top, left, h, w) in enumerate(boxes):
        crop = x[i:i + 1, :, top:top + h, left:left + w]
        y = crop[0] if (h, w) == (size, size) else \
            F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0]
        if flips[i]:
            y = y.flip(-1)
        if order is not None and order[i]:
            jitter_image(y, order[i], factors[i])
        o = out[i]
        if c == 3 and out_c == 1:
            y = grey(y[None])[0]
        torch.sub(y, mean, out=o[:y.shape[0]])
        o[:y.shape[0]].mul_(inv_std)
        if y.shape[0] == 1 and out_c == 3:
            o[1:].copy_(o[:1].expand(2, -1, -1))
    return out
