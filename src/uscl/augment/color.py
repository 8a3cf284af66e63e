"""Per-image colour jitter on float images in [0, 1], batched.

Semantics follow torchvision's ``ColorJitter``: brightness, contrast and
saturation factors uniform in [max(0, 1-x), 1+x], hue shift uniform in
[-h, h], the four operations applied in a random order per image, clamped
to [0, 1] after each. Saturation and hue leave 1-channel images unchanged
(as they leave a grey image stored as RGB unchanged), so grey ultrasound
gets brightness and contrast only, in the order they were drawn.

Each image runs one operation per stage, so a stage is one fused pass for
all images: brightness is f*x, contrast f*x + (1-f)*mean(luma), saturation
f*x + (1-f)*luma, the identity f = 1 for images running another operation.
Hue (an HSV rotation) runs only on the images whose stage it is.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

GREY_WEIGHTS = (0.2989, 0.587, 0.114)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


@dataclass
class JitterParams:
    """Per-image draws (all tensors of length N)."""

    order: torch.Tensor  # (N, 4) permutation of the four ops
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    active: torch.Tensor  # bool: jitter applied to this image at all

    def to(self, device) -> "JitterParams":
        return JitterParams(*(getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)))

    def __getitem__(self, sl) -> "JitterParams":
        return JitterParams(*(getattr(self, f.name)[sl] for f in fields(self)))


def _uniform(n, lo, hi, generator, device):
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)


def sample_jitter(n: int, brightness: float, contrast: float, saturation: float, hue: float, p: float,
                  generator: torch.Generator | None = None, device=None) -> JitterParams:
    order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
    b = _uniform(n, max(0.0, 1 - brightness), 1 + brightness, generator, device)
    c = _uniform(n, max(0.0, 1 - contrast), 1 + contrast, generator, device)
    s = _uniform(n, max(0.0, 1 - saturation), 1 + saturation, generator, device)
    h = _uniform(n, -hue, hue, generator, device)
    active = torch.rand(n, generator=generator, device=device) < p
    return JitterParams(order, b, c, s, h, active)


def grey(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma, the weights torchvision uses."""
    out = x[:, 0:1] * GREY_WEIGHTS[0]
    out.add_(x[:, 1:2], alpha=GREY_WEIGHTS[1])
    return out.add_(x[:, 2:3], alpha=GREY_WEIGHTS[2])


def stage_ops(params: JitterParams, channels: int) -> list[torch.Tensor]:
    """The op each image runs at each stage (-1: none). For grey images only the
    relative order of brightness and contrast matters, so two stages suffice."""
    order = torch.where(params.active[:, None], params.order, -1)
    if channels == 3:
        return list(order.unbind(1))
    pos = order.argsort(dim=1)  # pos[:, op] = stage of op
    b_first = pos[:, BRIGHTNESS] < pos[:, CONTRAST]
    none = torch.full_like(b_first, -1, dtype=order.dtype)
    first = torch.where(params.active, torch.where(b_first, BRIGHTNESS, CONTRAST), none)
    second = torch.where(params.active, torch.where(b_first, CONTRAST, BRIGHTNESS), none)
    return [first, second]


@dataclass
class StagePlan:
    """What one stage does: each image's op (-1: none), which ops occur at all,
    and the images whose hue turns at this stage."""

    op: torch.Tensor
    has: tuple[bool, bool, bool, bool]
    hue_idx: torch.Tensor

    def to(self, device) -> "StagePlan":
        return StagePlan(self.op.to(device, non_blocking=True), self.has, self.hue_idx.to(device, non_blocking=True))


def plan_stages(params: JitterParams, channels: int) -> list[StagePlan]:
    """Plan the stages from the draws. Run it where the draws were made (the CPU
    by default): it reads values back, which on a GPU would be a device sync."""
    plans = []
    for op in stage_ops(params, channels):
        has = tuple(bool((op == k).any()) for k in range(4))
        hue_idx = torch.nonzero((op == HUE) & (params.hue != 0)).flatten() if channels == 3 and has[HUE] else \
            torch.zeros(0, dtype=torch.long, device=op.device)
        plans.append(StagePlan(op, has, hue_idx))
    return plans


def apply_jitter(x: torch.Tensor, params: JitterParams, *, hue_enabled: bool = True,
                 plan: list[StagePlan] | None = None) -> torch.Tensor:
    """Apply the drawn jitter to float images (N, C, H, W), C in {1, 3}; works in place on ``x``.

    ``plan`` (from :func:`plan_stages` on the CPU copy of the draws) avoids
    reading device values back; without it the plan is made here.
    """
    rgb = x.shape[1] == 3
    shape = (-1, 1, 1, 1)
    one = torch.ones((), device=x.device)
    for stage in plan if plan is not None else plan_stages(params, x.shape[1]):
        op, has = stage.op, stage.has
        if has[BRIGHTNESS] or has[CONTRAST] or (rgb and has[SATURATION]):
            fb = torch.where(op == BRIGHTNESS, params.brightness, one)
            fc = torch.where(op == CONTRAST, params.contrast, one)
            fs = torch.where(op == SATURATION, params.saturation, one) if rgb else one
            lum = grey(x) if rgb and (has[CONTRAST] or has[SATURATION]) else x
            shift = (1 - fc) * lum.mean(dim=(1, 2, 3)) if has[CONTRAST] else torch.zeros_like(fb)
            torch.addcmul(shift.view(shape), x, (fb * fc * fs).view(shape), out=x)
            if rgb and has[SATURATION]:
                x.addcmul_(lum, (1 - fs).view(shape))
            x.clamp_(0.0, 1.0)
        if rgb and hue_enabled and stage.hue_idx.numel():
            idx = stage.hue_idx
            x[idx] = adjust_hue(x[idx], params.hue[idx])
    return x


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of RGB images (M, 3, H, W) in [0, 1] by ``shift`` (M,) turns.

    A hue rotation keeps value (max) and chroma (max - min), so the result is
    ``max - chroma * m_c`` with the piecewise-linear HSV channel profiles m_c.
    """
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    d = chroma.clamp_min(1e-12)
    # hue in sixths: the sector of the max channel (0, 2, 4) plus the offset within it
    is_r, is_g = maxc == r, maxc == g
    num = torch.where(is_r, g - b, torch.where(is_g, b - r, r - g))
    sector = torch.where(is_r, 0.0, torch.where(is_g, 2.0, 4.0))
    h6 = torch.addcdiv(sector, num, d)
    h6.add_(6.0 * shift.view(-1, 1, 1))
    out = torch.empty_like(x)
    for c, n in enumerate((5.0, 3.0, 1.0)):  # three channels, not images
        k = torch.remainder(h6 + n, 6.0)
        m = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        torch.addcmul(maxc, chroma, m, value=-1.0, out=out[:, c])
    return out


def jitter_image(y: torch.Tensor, order: list[int], factors: tuple[float, float, float, float]) -> torch.Tensor:
    """The same jitter on ONE float image (C, H, W), with plain Python numbers; in place.

    The CPU path runs image by image so the pixels stay in cache: scalar
    operands keep torch on its fastest vectorised loops (a per-image factor
    broadcast over a batch is several times slower). ``order`` lists the ops
    to run (BRIGHTNESS..HUE); saturation and hue are skipped for 1 channel.
    """
    rgb = y.shape[0] == 3
    if not rgb and [op for op in order if op in (BRIGHTNESS, CONTRAST)] == [CONTRAST, BRIGHTNESS]:
        # grey, contrast then brightness: clamp(b * clamp(c*y + (1-c)*m, 0, 1), 0, 1) is
        # clamp(b*c*y + b*(1-c)*m, 0, min(1, b)) for b >= 0: one pass fewer of each
        b, c = factors[BRIGHTNESS], factors[CONTRAST]
        m = float(y.mean())
        return y.mul_(b * c).add_(b * (1.0 - c) * m).clamp_(0.0, min(1.0, b))
    for op in order:
        f = factors[op]
        if op == BRIGHTNESS:
            y.mul_(f)
        elif op == CONTRAST:
            m = float((grey(y[None]) if rgb else y).mean())
            y.mul_(f).add_(m * (1.0 - f))
        elif op == SATURATION and rgb:
            lum = grey(y[None])[0]
            y.mul_(f).add_(lum, alpha=1.0 - f)
        elif op == HUE and rgb:
            if f != 0:
                y.copy_(adjust_hue(y[None], torch.tensor([f], dtype=y.dtype))[0])
            continue
        else:
            continue
        y.clamp_(0.0, 1.0)
    return y
