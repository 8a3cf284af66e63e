"""USCL views of a CUDA batch as one CUDA-graph replay (grey frames, one batch shape).

Eager, the augmentation and mixup of a batch are ~80 small kernel launches
plus a dozen host-to-device copies of random parameters: a few ms of Python
per step. When the GPU finishes the model step in ~15 ms (ResNet-18 at
112 px on an H200), that host time cannot hide behind it. Captured once per
batch shape and replayed, the same kernels cost one launch; the parameters
(drawn on the host exactly as the eager path draws them) travel in one
pinned buffer. Grey frames only: RGB jitter picks images for the hue turn
with data-dependent indexing, which a graph cannot hold.
"""

from __future__ import annotations

import warnings
import weakref

import torch

from uscl.augment.batch import BatchAugment
from uscl.augment.color import JitterParams, StagePlan, plan_stages
from uscl.augment.eager_views import eager_views
from uscl.augment.mixup import views_of

# columns of the packed per-frame parameters
_TOP, _LEFT, _H, _W, _FLIP, _OP0, _OP1, _B, _C = range(9)
_COLUMNS = 9
_ALL_GREY_OPS = (True, True, False, False)  # brightness, contrast (saturation, hue: no-ops on grey)


class GraphedViews:
    """``(view1, view2)`` of grey batches of one shape, by CUDA-graph replay.

    Same draws, same kernels as :func:`uscl.augment.gpu_batch_to_views` (tested
    equal on CUDA); the views returned are fresh tensors. ``mix``: the three
    frames of each item are augmented and mixed; else only f1 and f3 are
    augmented, unmixed (SimCLR, or a batch where no item is mixable).
    """

    def __init__(self, augment: BatchAugment, n: int, frame_shape: tuple[int, int, int], device, mix: bool = True):
        c, h, w = frame_shape
        if c != 1:
            raise ValueError("GraphedViews takes grey (1-channel) frames")
        self.augment = augment
        self.n = n
        self.mix = bool(mix)
        self.k = 3 if self.mix else 2  # frames augmented per item
        self.device = torch.device(device)
        self.jitter = augment.cfg.jitters
        self.frames = torch.zeros((n, 3, c, h, w), dtype=torch.uint8, device=self.device)
        self.packed = torch.zeros(n * self.k * _COLUMNS + n, device=self.device)
        self.staging = [torch.zeros(self.packed.shape, pin_memory=True) for _ in range(2)]
        self.staged = [torch.cuda.Event(), torch.cuda.Event()]
        self.turn = 0
        self._pack_defaults()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up outside the capture, as CUDA graphs require
            for _ in range(2):
                self._body()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: a loader's pin-memory thread may call CUDA while this thread captures
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.view1, self.view2 = self._body()

    def _pack_defaults(self) -> None:
        """A valid batch for the warm-up and capture: full crops, no flip, identity jitter, lam 1."""
        size = int(self.augment.cfg.size)
        p = self.packed[: self.n * self.k * _COLUMNS].view(-1, _COLUMNS)
        p[:, _H] = size
        p[:, _W] = size
        p[:, _OP0] = -1
        p[:, _OP1] = -1
        p[:, _B] = 1
        p[:, _C] = 1
        self.packed[self.n * self.k * _COLUMNS:] = 1

    def pack(self, params, lam: torch.Tensor, out: torch.Tensor) -> None:
        """Write the draws (CPU tensors) into a flat buffer laid out as ``self.packed``."""
        n3 = self.n * self.k
        p = out[: n3 * _COLUMNS].view(n3, _COLUMNS)
        p[:, _TOP:_W + 1] = params.boxes
        p[:, _FLIP] = params.flip
        if self.jitter:
            for col, stage in zip((_OP0, _OP1), plan_stages(params.jitter, 1)):
                p[:, col] = stage.op
            p[:, _B] = params.jitter.brightness
            p[:, _C] = params.jitter.contrast
        out[n3 * _COLUMNS:] = 1.0 if lam is None else lam

    def _body(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.augment.cfg
        size = int(cfg.size)
        n3 = self.n * self.k
        p = self.packed[: n3 * _COLUMNS].view(n3, _COLUMNS)
        lam = self.packed[n3 * _COLUMNS:]
        picked = self.frames if self.mix else self.frames[:, 0::2]
        jitter = plan = None
        if self.jitter:
            one = torch.ones(n3, device=self.device)
            jitter = JitterParams(order=torch.zeros((n3, 4), dtype=torch.long, device=self.device),
                                  brightness=p[:, _B], contrast=p[:, _C], saturation=one, hue=one * 0,
                                  active=one > 0)
            empty = torch.zeros(0, dtype=torch.long, device=self.device)
            plan = [StagePlan(p[:, col].round().long(), _ALL_GREY_OPS, empty) for col in (_OP0, _OP1)]
        out = self.augment.batched(picked.reshape(n3, *self.frames.shape[2:]), p[:, _TOP:_W + 1].round().long(),
                                   p[:, _FLIP] > 0.5, jitter, plan, 1)
        return views_of(out.view(self.n, self.k, 1, size, size), lam if self.mix else None, cfg.out_channels)

    def __call__(self, frames: torch.Tensor, params, lam: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of ``frames`` (N, 3, 1, H, W) uint8 (device or pinned host) with the drawn
        ``params`` (:class:`uscl.augment.AugmentParams` of the N*k frames, on the CPU) and
        ``lam`` (N,) (None without mixing)."""
        buf = self.staging[self.turn]
        self.staged[self.turn].synchronize()  # its previous copy to the device is done
        self.pack(params, lam, buf)
        self.packed.copy_(buf, non_blocking=True)
        self.staged[self.turn].record()
        self.turn ^= 1
        self.frames.copy_(frames, non_blocking=True)
        self.graph.replay()
        return self.view1.clone(), self.view2.clone()


# graphs made for each BatchAugment, by (frames shape, device, mix); None marks a shape that
# failed its capture or check (run eagerly). Weak keys: a graph lives as long as its augment.
_GRAPHS: "weakref.WeakKeyDictionary[BatchAugment, dict]" = weakref.WeakKeyDictionary()


def graph_cache(augment: BatchAugment) -> dict:
    """The graphs made so far for ``augment``: ``{(shape, device, mix): GraphedViews | None}``."""
    return _GRAPHS.setdefault(augment, {})


def graphed_views_for(augment: BatchAugment, frames: torch.Tensor, params, lam: torch.Tensor | None):
    """The cached :class:`GraphedViews` for this batch shape, checked once against the eager
    path; None (and a warning, once) where a graph cannot be made or disagrees."""
    cache = graph_cache(augment)
    mix = lam is not None
    key = (tuple(frames.shape), str(frames.device), mix)
    if key in cache:
        return cache[key]
    cache[key] = None
    try:
        graphed = GraphedViews(augment, frames.shape[0], tuple(frames.shape[2:]), frames.device, mix=mix)
        got = graphed(frames, params, lam)
    except Exception as exc:  # noqa: BLE001 - any capture failure: run eagerly
        warnings.warn(f"the views could not be captured as a CUDA graph ({type(exc).__name__}: {exc}); "
                      "running them eagerly", stacklevel=3)
        return None
    want = eager_views(frames, params, lam, augment, frames.device, mix=mix)
    diff = max(float((a - b).abs().max()) for a, b in zip(got, want))
    if diff > 1e-4:
        warnings.warn(f"the CUDA-graph views differ from the eager ones by {diff:.2e}; running them eagerly",
                      stacklevel=3)
        return None
    cache[key] = graphed
    return graphed
