"""Batched per-image augmentation of uint8 frames, on whatever device they live.

Replaces the original PIL chain (Resize, RandomResizedCrop, RandomHorizontalFlip,
ColorJitter, ToTensor, Normalize) applied image by image. Every image gets its
own crop box, flip, jitter factors and jitter order (torchvision.transforms.v2
on a batch tensor would draw once for the whole batch), yet there is no Python
loop over images: random parameters are drawn as small tensors, the pixels are
touched by a handful of batched ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from uscl.augment.color import JitterParams, apply_jitter, grey, plan_stages, sample_jitter
from uscl.augment.config import AugmentConfig
from uscl.augment.cpu_path import augment_chunk_cpu, mix_chunk_cpu, resize_uint8
from uscl.augment.crop import resample, sample_crop_boxes


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"expected a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]} (shape {tuple(images.shape)})")


def grey_as_rgb(images: torch.Tensor) -> bool:
    """True when every image has three identical channels (ultrasound saved as RGB)."""
    return bool(torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2]))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is taken as already in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).mul_(1.0 / 255.0)
    return images.to(torch.float32)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize to size x size (no-op when already that size)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)


def normalise(x: torch.Tensor, mean: float, std: float, out_channels: int) -> torch.Tensor:
    """(x - mean) / std, in place on ``x``; RGB -> luma for 1 output channel.

    Grey input for 3 output channels comes back as a stride-0 expanded view:
    copy it into its destination (or call ``.contiguous()``).
    """
    if x.shape[1] == 3 and out_channels == 1:
        x = grey(x)
    x = x.sub_(mean).mul_(1.0 / std)
    if x.shape[1] == 1 and out_channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return x


@dataclass
class AugmentParams:
    """The draws of N images: crop boxes (N, 4) as (top, left, h, w), flips (N,), jitter."""

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: JitterParams | None

    def jitter_slice(self, sl: slice) -> JitterParams | None:
        return None if self.jitter is None else self.jitter[sl]


class BatchAugment:
    """Random resized crop + flip + colour jitter + normalise, one draw per image.

    >>> aug = BatchAugment(AugmentConfig(size=224))
    >>> views = aug(frames_uint8.cuda(), generator=make_generator(0))  # (N, 3, 224, 224) float32

    The random parameters (a few numbers per image) are drawn on the
    generator's device and the pixels processed on the images' device. A CPU
    generator (or none: torch's global CPU RNG) is the best choice also for
    CUDA images: results then match the CPU path and nothing waits on the
    GPU; a CUDA generator works but costs a few device syncs per call.
    Grey frames stored as RGB are detected on CPU and processed as one
    channel (saturation and hue cannot change them).
    """

    def __init__(self, cfg: AugmentConfig | None = None, cuda_graphs: bool = True):
        self.cfg = cfg if cfg is not None else AugmentConfig()
        # USCL views of grey CUDA batches replayed as a CUDA graph (uscl.augment.graphed_views)
        self.cuda_graphs = cuda_graphs

    def __repr__(self) -> str:
        return f"BatchAugment({self.cfg})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (N, C, H, W), C in {1, 3}, any device -> float32 (N, out_channels, size, size)."""
        return self.augment(images, generator)

    def augment(self, images: torch.Tensor, generator: torch.Generator | None = None, *,
                out_channels: int | None = None) -> torch.Tensor:
        """Like ``__call__``; ``out_channels`` overrides the config (1 keeps grey frames
        single-channel, e.g. to mix before repeating to 3 channels)."""
        _check_images(images)
        params = self.draw(len(images), generator)
        return self.apply(images, params, out_channels=out_channels)

    def draw(self, n: int, generator: torch.Generator | None = None) -> AugmentParams:
        """The random parameters of ``n`` images, on the generator's device (CPU by default)."""
        cfg = self.cfg
        size = int(cfg.size)
        pdev = generator.device if generator is not None else torch.device("cpu")
        boxes = sample_crop_boxes(n, size, size, cfg.scale, cfg.ratio, generator=generator, device=pdev)
        flip = torch.rand(n, generator=generator, device=pdev) < cfg.flip_p
        jitter = None
        if cfg.jitters:
            jitter = sample_jitter(n, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, cfg.jitter_p,
                                   generator=generator, device=pdev)
        return AugmentParams(boxes, flip, jitter)

    def _grey_input(self, images: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Grey frames stored as RGB (checked on CPU only): saturation and hue are
        no-ops for them, so the 1-channel path does a third of the work."""
        c = images.shape[1]
        if c == 3 and images.device.type == "cpu" and grey_as_rgb(images):
            return images[:, :1], 1
        return images, c

    def apply(self, images: torch.Tensor, params: AugmentParams, *, out_channels: int | None = None) -> torch.Tensor:
        """Augment ``images`` with drawn ``params`` -> float32 (N, out_channels, size, size)."""
        _check_images(images)
        cfg = self.cfg
        out_c = cfg.out_channels if out_channels is None else out_channels
        n = images.shape[0]
        size = int(cfg.size)
        device = images.device
        images, c = self._grey_input(images)
        out = torch.empty((n, out_c, size, size), device=device)
        if device.type == "cpu":
            box_list, flip_list = params.boxes.tolist(), params.flip.tolist()
            for sl in self._cpu_chunks(images, c):
                augment_chunk_cpu(images[sl], box_list[sl], flip_list[sl], params.jitter_slice(sl),
                                  size, cfg.mean, cfg.std, out[sl])
            return out
        if n:  # on a GPU: the whole batch in a handful of batched ops
            jitter = plan = None
            if params.jitter is not None:
                plan = [p.to(device) for p in plan_stages(params.jitter, c)]  # planned where drawn: no sync
                jitter = params.jitter.to(device)
            out[:] = self.batched(images, params.boxes.to(device, non_blocking=True),
                                  params.flip.to(device, non_blocking=True), jitter, plan, out_c)
        return out

    def batched(self, images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, jitter: JitterParams | None,
                plan, out_channels: int) -> torch.Tensor:
        """The batched pixel work (GPU; also what a CUDA graph captures): resize, crop, flip,
        jitter with a precomputed ``plan``, normalise; all parameters already on the images' device."""
        cfg = self.cfg
        size = int(cfg.size)
        x = images
        if x.shape[-2:] != (size, size):  # the original resizes to `size` before cropping
            x = resize(to_float(x), size)
        x = resample(x, boxes, size, flip)
        if jitter is not None:
            x = apply_jitter(x, jitter, plan=plan)
        return normalise(x, cfg.mean, cfg.std, out_channels)

    def mix_cpu(self, frames: torch.Tensor, params: AugmentParams, lam: torch.Tensor, *,
                out_channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """USCL's two views of CPU items ``frames`` (N, 3, C, H, W), augmented, mixed and normalised
        item by item while the item's three frames are in cache (same result as ``apply`` +
        :func:`uscl.augment.mix_views`, to rounding). ``params`` are those of the N*3 frames."""
        cfg = self.cfg
        out_c = cfg.out_channels if out_channels is None else out_channels
        n, k = frames.shape[:2]
        if k != 3:
            raise ValueError(f"mix_cpu expects 3 frames per item, got {k}")
        size = int(cfg.size)
        images, c = self._grey_input(frames.reshape(n * 3, *frames.shape[2:]))
        v1 = torch.empty((n, out_c, size, size))
        v2 = torch.empty((n, out_c, size, size))
        box_list, flip_list, lam_list = params.boxes.tolist(), params.flip.tolist(), lam.tolist()
        for sl in self._cpu_chunks(images, c, group=3):
            items = slice(sl.start // 3, sl.stop // 3)
            mix_chunk_cpu(images[sl], box_list[sl], flip_list[sl], params.jitter_slice(sl), size, cfg.mean,
                          cfg.std, lam_list[items], v1[items], v2[items])
        return v1, v2

    # On CPU the pipeline runs in chunks whose tensors stay below glibc's mmap
    # threshold (32 MB): bigger temporaries are fresh mappings, page-faulted
    # anew on every call, which costs more than the arithmetic.
    CPU_CHUNK_BYTES = 4 * 2**20

    def _cpu_chunks(self, images: torch.Tensor, c: int, group: int = 1):
        n = images.shape[0]
        size = int(self.cfg.size)
        per_image = max(images[0].numel() if n else 1, c * size * size) * 4
        step = max(group, self.CPU_CHUNK_BYTES // per_image // group * group)
        for start in range(0, n, step):
            yield slice(start, min(n, start + step))


def eval_transform(images: torch.Tensor, size: int, mean: float = 0.5, std: float = 0.25,
                   out_channels: int = 3) -> torch.Tensor:
    """Deterministic test transform: resize to size x size and normalise (uint8 in, float32 out)."""
    _check_images(images)
    size = int(size)
    if images.device.type == "cpu" and images.dtype == torch.uint8 and images.shape[-2:] != (size, size):
        x = to_float(resize_uint8(images, size))  # as the CPU training path (and PIL): rounded to uint8
    else:
        x = resize(to_float(images), size)
    if x.data_ptr() == images.data_ptr():
        x = x.clone()
    return normalise(x, mean, std, out_channels).contiguous()
