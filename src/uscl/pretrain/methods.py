"""What a pretraining method is, and the ones built in.

A method is a small object the loop calls through a few hooks:

* ``sampling_mode``: how a video becomes items ("spg": three frames f1, f2, f3; "simclr": one
  frame twice; "frames": every frame its own item), and ``mixup``: whether the views are mixes;
* ``make_inputs(batch, augment, alpha, device, generator)``: the step's :class:`StepInputs`
  (by default the two views of :func:`uscl.augment.gpu_batch_to_views`; a method with more
  views per item, or weights between them, overrides it);
* ``loss(model, inputs)``: the loss of one step (:class:`StepLosses`);
* ``validation_loss(model, inputs)``: a loss on unaugmented views (lower is better);
* ``from_config(cfg)``, ``setup(model, device)``: build it from the run's settings, and what
  depends on the model (a key encoder, a queue) once the model exists;
* ``after_step(model)``: work after each optimiser step (a momentum encoder's update);
* ``state_dict()`` / ``load_state_dict()``: extra state (a queue, a key encoder) saved in
  ``train_state.pt`` and restored on resume.

The loop (:mod:`uscl.pretrain.loop`) knows nothing else about a method, so a new one is
a subclass registered with :func:`register_method`; its name is then a valid
``method`` setting and ``--method`` choice. Built in:

* ``uscl``: SPG with mixup + NT-Xent + λ·(CE(view1) + CE(view2)) on labelled items;
* ``uscl-selfsup``: the same without the supervised term;
* ``uscl-multi``: SPG's three frames as three views, every one a positive of the other two
  (multi-positive NT-Xent), optionally weighted by closeness in time (``loss.time_sigma``,
  IVPP-style); no mixup, no labels;
* ``simclr``: two augmentations of one random frame per video, NT-Xent only;
* ``simclr-frames``: the paper's SimCLR baseline: frames sampled as independent images (an
  epoch covers every training frame, or ``dataset.frame_slots`` of them), so two frames of
  one video can be each other's negatives.

``mixup: false`` (ablation) keeps SPG's frame drawing but uses f1 and f3 unmixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from uscl.augment import BatchAugment, gpu_batch_to_frame_views, gpu_batch_to_views
from uscl.errors import ConfigError
from uscl.losses import masked_cross_entropy, multi_positive_nt_xent, nt_xent, time_weights


@dataclass
class StepInputs:
    """What one step feeds a method: k views of each of N items, their labels, and for
    multi-view methods how much each view counts as a positive of each other one."""

    views: tuple[torch.Tensor, ...]  # k float tensors (N, C, S, S) on the device
    labels: torch.Tensor  # (N,) int64, -1 where unlabelled
    positive_weights: torch.Tensor | None = None  # (N, k, k), or None: uniform

    @property
    def view1(self) -> torch.Tensor:
        return self.views[0]

    @property
    def view2(self) -> torch.Tensor:
        return self.views[1]


@dataclass
class StepLosses:
    total: torch.Tensor
    contrastive: torch.Tensor
    supervised: torch.Tensor
    labelled: torch.Tensor  # labelled items in the global batch (0-d tensor)


def compute_losses(model: nn.Module, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor, *,
                   temperature: float = 0.5, cosine: bool = True, lambda_sup: float = 0.2,
                   supervised: bool = False, distributed: bool = False) -> StepLosses:
    """Forward both views in one batch (BN sees all 2n images) and combine the losses.

    Under DDP each rank's loss is scaled so that DDP's gradient averaging gives
    the gradient of the loss over the global batch (see uscl.losses).
    """
    n = view1.shape[0]
    _, z, logits = model(torch.cat([view1, view2], 0))
    z1, z2 = z[:n], z[n:]
    contrastive = nt_xent(z1, z2, temperature, cosine, distributed=distributed)
    labelled = torch.zeros((), dtype=torch.int64, device=view1.device)
    if supervised and logits is not None:
        ce1, labelled = masked_cross_entropy(logits[:n], labels, distributed=distributed)
        ce2, _ = masked_cross_entropy(logits[n:], labels, distributed=distributed)
        sup = lambda_sup * (ce1 + ce2)
    else:
        sup = torch.zeros((), device=contrastive.device)
    return StepLosses(contrastive + sup, contrastive, sup, labelled)


class PretrainMethod:
    """The base of every method: NT-Xent on the two views of each item, no extra state.

    ``temperature``, ``cosine``, ``lambda_sup`` come from the run's ``loss`` settings;
    ``mixup`` is the run's setting where the method mixes at all; ``supervised`` is
    whether the supervised term is on (the method asks for it, the settings allow it,
    and the training videos have labels).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    sampling_mode: ClassVar[str] = "spg"  # one of SAMPLING_MODES
    mixes: ClassVar[bool] = True  # whether the views may be mixes (the run's mixup setting decides)
    wants_labels: ClassVar[bool] = False  # whether it has a supervised term for labelled videos
    # the method's usual augmentation (AugmentSettings fields), used where a run keeps the USCL default
    augment_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, temperature: float = 0.5, cosine: bool = True, lambda_sup: float = 0.2,
                 mixup: bool = True, supervised: bool = False):
        self.temperature = temperature
        self.cosine = cosine
        self.lambda_sup = lambda_sup
        self.mixup = bool(mixup) and self.mixes
        self.supervised = bool(supervised) and self.wants_labels

    @classmethod
    def from_config(cls, cfg: Any, *, supervised: bool) -> "PretrainMethod":
        """The method with a run's settings (``cfg``: a PretrainConfig); a method with settings of
        its own reads them here."""
        return cls(temperature=cfg.loss.temperature, cosine=cfg.loss.use_cosine_similarity,
                   lambda_sup=cfg.loss.lambda_sup, mixup=cfg.mixup, supervised=supervised)

    def setup(self, model: nn.Module, device: torch.device) -> None:
        """Called once with the (unwrapped) model on its device before training or a resume:
        build what depends on it (a key encoder copy, a queue)."""

    def describe(self) -> str:
        """One line for the log: the method and its settings."""
        return self.name

    views_per_item: ClassVar[int] = 2  # views make_inputs gives per item (and validation builds)

    def make_inputs(self, batch: dict, augment: BatchAugment, alpha: float, device,
                    generator: torch.Generator | None = None) -> StepInputs:
        """The step's inputs from a loader batch: two augmented (mixed, where the method mixes) views."""
        view1, view2, labels = gpu_batch_to_views(batch, augment, alpha, self.mixup, device, generator=generator)
        return StepInputs((view1, view2), labels)

    def positive_weights(self, batch: dict) -> torch.Tensor | None:
        """(N, k, k) weights between the views of each item, or None (uniform)."""
        return None

    def loss(self, model: nn.Module, inputs: StepInputs, *, distributed: bool = False) -> StepLosses:
        return compute_losses(model, inputs.view1, inputs.view2, inputs.labels, temperature=self.temperature,
                              cosine=self.cosine, lambda_sup=self.lambda_sup, supervised=self.supervised,
                              distributed=distributed)

    def validation_loss(self, model: nn.Module, inputs: StepInputs) -> torch.Tensor:
        """NT-Xent of the projections of unaugmented views (one process, no gradient)."""
        b = inputs.view1.shape[0]
        _, z, _ = model(torch.cat([inputs.view1, inputs.view2], 0))
        return nt_xent(z[:b], z[b:], self.temperature, self.cosine)

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimiser step (nothing to do for NT-Xent methods)."""

    def state_dict(self) -> dict[str, Any]:
        """Extra state to save with the training state (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"method {self.name} keeps no state, but the saved state has {sorted(state)}")


_METHODS: dict[str, type[PretrainMethod]] = {}
# "spg": three frames of one video per item; "simclr": one frame of one video per item, twice;
# "frames": every frame an independent item (two frames of one video may share a batch)
SAMPLING_MODES = ("spg", "simclr", "frames")


def register_method(cls: type[PretrainMethod]) -> type[PretrainMethod]:
    """Class decorator: make ``cls.name`` a pretraining method (a valid ``method`` setting)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a method needs a name")
    if cls.sampling_mode not in SAMPLING_MODES:
        raise ValueError(f"{cls.__name__}.sampling_mode must be one of {', '.join(SAMPLING_MODES)}, "
                         f"got {cls.sampling_mode!r}")
    _METHODS[cls.name] = cls
    return cls


def unregister_method(name: str) -> None:
    _METHODS.pop(name, None)


def method_names() -> tuple[str, ...]:
    return tuple(_METHODS)


def method_class(name: str) -> type[PretrainMethod]:
    try:
        return _METHODS[name]
    except KeyError:
        raise ConfigError(f"method: {name!r} is not one of {', '.join(_METHODS)}", param="method") from None


@register_method
class USCL(PretrainMethod):
    name = "uscl"
    summary = "sample pair generation + mixup + NT-Xent + supervised CE on labelled videos"
    wants_labels = True


@register_method
class USCLSelfSupervised(PretrainMethod):
    name = "uscl-selfsup"
    summary = "USCL without the supervised term"


@register_method
class USCLMulti(PretrainMethod):
    """SPG's three frames f1, f2, f3, each augmented on its own, as three views; each view's
    positives are the other two (:func:`uscl.losses.multi_positive_nt_xent`), weighted by
    exp(-|Δt| / (time_sigma · T)) when ``loss.time_sigma`` is set (frames close in time count
    more), uniform otherwise. Nothing is mixed; the supervised term is not used."""

    name = "uscl-multi"
    summary = "SPG's three frames as three views, each a positive of the others (multi-positive NT-Xent)"
    mixes = False
    views_per_item = 3

    def __init__(self, *, time_sigma: float | None = None, **kw):
        super().__init__(**kw)
        if time_sigma is not None and not time_sigma > 0:
            raise ConfigError(f"loss.time_sigma must be > 0 (or unset), got {time_sigma}", param="loss.time_sigma")
        self.time_sigma = time_sigma

    @classmethod
    def from_config(cls, cfg: Any, *, supervised: bool) -> "USCLMulti":
        return cls(time_sigma=cfg.loss.time_sigma, temperature=cfg.loss.temperature,
                   cosine=cfg.loss.use_cosine_similarity, mixup=False, supervised=False)

    def describe(self) -> str:
        return self.name + (f" (time-weighted positives, sigma {self.time_sigma} of a video)" if self.time_sigma else "")

    def make_inputs(self, batch: dict, augment: BatchAugment, alpha: float, device,
                    generator: torch.Generator | None = None) -> StepInputs:
        views, labels = gpu_batch_to_frame_views(batch, augment, device, generator=generator)
        return StepInputs(views, labels, self.positive_weights(batch))

    def positive_weights(self, batch: dict) -> torch.Tensor | None:
        if self.time_sigma is None:
            return None
        return time_weights(batch["frame_index"], batch["num_frames"], self.time_sigma)

    def _loss(self, model: nn.Module, inputs: StepInputs, distributed: bool) -> torch.Tensor:
        n, k = inputs.view1.shape[0], len(inputs.views)
        _, z, _ = model(torch.cat(inputs.views, 0))  # view-major: (k n, d)
        z = z.view(k, n, -1).transpose(0, 1)  # (n, k, d)
        return multi_positive_nt_xent(z, self.temperature, self.cosine, inputs.positive_weights,
                                      distributed=distributed)

    def loss(self, model: nn.Module, inputs: StepInputs, *, distributed: bool = False) -> StepLosses:
        contrastive = self._loss(model, inputs, distributed)
        zero = torch.zeros((), device=contrastive.device)
        return StepLosses(contrastive, contrastive, zero, torch.zeros((), dtype=torch.int64, device=zero.device))

    def validation_loss(self, model: nn.Module, inputs: StepInputs) -> torch.Tensor:
        return self._loss(model, inputs, False)


@register_method
class SimCLR(PretrainMethod):
    name = "simclr"
    summary = "two augmentations of one frame per video"
    sampling_mode = "simclr"
    mixes = False


@register_method
class SimCLRFrames(SimCLR):
    name = "simclr-frames"
    summary = "the paper's SimCLR: every frame an independent image (frames of one video may be negatives)"
    sampling_mode = "frames"
