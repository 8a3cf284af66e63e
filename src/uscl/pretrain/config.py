"""Pretraining configuration: typed dataclasses, the original config.yaml keys, one validator.

A YAML file may use the original release's keys (``batch_size``, ``epochs``,
``weight_decay``, ``fp16_precision``, ``model.out_dim``, ``model.base_model``,
``loss.temperature``, ``loss.use_cosine_similarity``, ``dataset.input_shape``,
``dataset.valid_size``, ``dataset.s``, ``dataset.num_workers``,
``log_every_n_steps``, ``eval_every_n_epochs``, ``fine_tune_from``) next to
ours. Unknown keys are an error naming them; original keys that have no
meaning here are accepted and ignored with a warning. ``validate_config`` is
the single place where the values are checked and derived settings resolved.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from uscl.errors import ConfigError
from uscl.utils.config import dump_yaml, from_dict, load_yaml, to_dict

METHODS = ("uscl", "uscl-selfsup", "simclr")

# keys of the original config.yaml that mean nothing here: accepted, ignored with a warning.
# Every key the original release's config.yaml is known to carry is mapped today (the channel
# count of dataset.input_shape is the one value ignored, with a warning); add names here,
# dotted, with the reason, should an original file turn up with others.
IGNORED_ORIGINAL_KEYS: dict[str, str] = {}


@dataclass
class ModelConfig:
    base_model: str = "resnet18"  # original key; --arch
    out_dim: int = 256
    classifier_input: Literal["projection", "feature"] = "projection"


@dataclass
class LossConfig:
    temperature: float = 0.5
    use_cosine_similarity: bool = True
    lambda_sup: float = 0.2  # weight of each view's cross-entropy (uscl only)


FRAMES_ON_DEVICE = ("auto", "always", "never")


@dataclass
class DatasetConfig:
    image_size: int = 224
    input_shape: str | None = None  # original "(224,224,3)": sets image_size when given
    valid_size: float = 0.2  # fraction of videos held out for the validation loss
    s: float = 1.0  # colour-jitter strength (original key)
    jitter_p: float = 1.0
    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (0.8, 1.25)
    flip_p: float = 0.5
    mean: float = 0.5
    std: float = 0.25
    num_workers: int = 0
    # keep every training frame on the GPU and gather batches there (no loader workers):
    # auto = on CUDA when the frames take at most a quarter of the free GPU memory
    frames_on_device: bool | str = "auto"  # auto | always | never (or true / false)
    frames_per_item: int = 3
    min_gap: int = 0
    max_gap: int | None = None


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs; saved resolved as RUN/config.yaml."""

    store: str | None = None
    out: str | None = None
    method: str = "uscl"  # uscl | uscl-selfsup | simclr
    mixup: bool = True  # ablation: false → views are f1 and f3, unmixed
    alpha: float = 0.5  # Beta(α, α) for the mixing weight
    label_rate: float = 1.0  # fraction of labelled training videos whose labels are used
    data_rate: float = 1.0  # fraction of the store's videos used at all
    batch_size: int = 32  # videos per (global) batch
    epochs: int = 100
    lr: float = 3e-4
    weight_decay: float = 1e-4
    flat_epochs: int = 10  # lr held flat for min(flat_epochs, epochs // 10) epochs, then cosine
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    fp16_precision: bool | None = None  # original key: true → fp16 on CUDA
    channels_last: bool = True
    compile: bool = False
    cuda_graphs: bool = True  # replay the augmentation of grey CUDA batches as a CUDA graph
    # which checkpoint becomes RUN/backbone.safetensors: "best" = lowest validation loss (the
    # original); "last" = the final epoch (a small validation set makes "best" a noisy choice)
    select: Literal["best", "last"] = "best"
    sync_bn: bool = True  # SyncBatchNorm under DDP on CUDA
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    eval_every_n_epochs: int = 1
    log_every_n_steps: int = 10
    fine_tune_from: str | None = None  # start from a run folder / .safetensors (weights only)
    max_steps_per_epoch: int | None = None  # cap (benchmarks, smoke tests)
    resume: str | None = None
    overwrite: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)

    @property
    def arch(self) -> str:
        return self.model.base_model

    @property
    def supervised(self) -> bool:
        """Whether the method asks for the supervised term (the data may still lack labels)."""
        return self.method == "uscl" and self.label_rate > 0 and self.loss.lambda_sup > 0


def flat_epochs_for(cfg: PretrainConfig) -> int:
    """Epochs at the start with a constant lr: the original's 10 of 300, scaled down for short runs."""
    return max(0, min(cfg.flat_epochs, cfg.epochs // 10))


def lr_at(cfg: PretrainConfig, epoch: int) -> float:
    """Learning rate used during ``epoch`` (0-based): flat, then cosine towards 0."""
    flat = flat_epochs_for(cfg)
    if epoch < flat:
        return cfg.lr
    span = max(1, cfg.epochs - flat)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - flat) / span))


def _pop_ignored(data: dict, prefix: str = "") -> list[str]:
    ignored = []
    for key in list(data):
        full = f"{prefix}{key}"
        if full in IGNORED_ORIGINAL_KEYS:
            ignored.append(full)
            del data[key]
        elif isinstance(data[key], dict) and full in ("model", "loss", "dataset"):
            ignored += _pop_ignored(data[key], full + ".")
    return ignored


def config_from_dict(data: dict | None) -> PretrainConfig:
    """Build (unvalidated) PretrainConfig; warns about ignored original keys."""
    data = copy.deepcopy(dict(data or {}))
    if "arch" in data:  # convenience alias
        data.setdefault("model", {})
        if not isinstance(data["model"], dict):
            raise ConfigError("model: expected a mapping")
        data["model"]["base_model"] = data.pop("arch")
    for key in _pop_ignored(data):
        warnings.warn(f"config key {key} is ignored: {IGNORED_ORIGINAL_KEYS[key]}", stacklevel=2)
    return from_dict(PretrainConfig, data)


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Set dotted keys (``model.base_model``) in a nested dict; None values are skipped."""
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = dotted.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{p}: expected a mapping")
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """YAML file (optional) + dotted overrides → validated PretrainConfig."""
    data = load_yaml(path) if path else {}
    return validate_config(config_from_dict(apply_overrides(data, overrides or {})))


def _parse_input_shape(text: str) -> tuple[int, int, int | None]:
    nums = [int(n) for n in re.findall(r"\d+", str(text))]
    if len(nums) not in (2, 3):
        raise ConfigError(f"dataset.input_shape: expected '(H,W,C)' like '(224,224,3)', got {text!r}")
    return nums[0], nums[1], (nums[2] if len(nums) == 3 else None)


def validate_config(cfg: PretrainConfig) -> PretrainConfig:
    """Check every value once, resolve derived settings; raise ConfigError naming the problem."""
    from uscl.models.backbone import ARCHITECTURES

    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model), loss=dataclasses.replace(cfg.loss),
                              dataset=dataclasses.replace(cfg.dataset))
    if cfg.method not in METHODS:
        raise ConfigError(f"method: {cfg.method!r} is not one of {', '.join(METHODS)}")
    if cfg.model.base_model not in ARCHITECTURES:
        raise ConfigError(f"model.base_model (--arch): {cfg.model.base_model!r} is not one of {', '.join(ARCHITECTURES)}")
    if cfg.dataset.input_shape:
        h, w, c = _parse_input_shape(cfg.dataset.input_shape)
        if h != w:
            raise ConfigError(f"dataset.input_shape: only square inputs are supported, got {h}x{w}")
        if c not in (None, 3):
            warnings.warn(f"dataset.input_shape channel count {c} is ignored: models always see 3 channels", stacklevel=2)
        cfg.dataset.image_size = h
        cfg.dataset.input_shape = None  # resolved into image_size
    if cfg.fp16_precision is not None:
        if cfg.fp16_precision and cfg.precision == "auto":
            cfg.precision = "fp16"
        cfg.fp16_precision = None  # resolved into precision

    def need(cond: bool, msg: str):
        if not cond:
            raise ConfigError(msg)

    need(cfg.batch_size >= 2, f"batch_size must be at least 2 (NT-Xent needs negatives), got {cfg.batch_size}")
    need(cfg.epochs >= 1, f"epochs must be at least 1, got {cfg.epochs}")
    need(cfg.lr > 0, f"lr must be > 0, got {cfg.lr}")
    need(cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}")
    need(cfg.flat_epochs >= 0, f"flat_epochs must be >= 0, got {cfg.flat_epochs}")
    need(cfg.alpha > 0, f"alpha (Beta parameter) must be > 0, got {cfg.alpha}")
    need(0 <= cfg.label_rate <= 1, f"label_rate must be within [0, 1], got {cfg.label_rate}")
    need(0 < cfg.data_rate <= 1, f"data_rate must be within (0, 1], got {cfg.data_rate}")
    need(cfg.eval_every_n_epochs >= 1, f"eval_every_n_epochs must be >= 1, got {cfg.eval_every_n_epochs}")
    need(cfg.log_every_n_steps >= 1, f"log_every_n_steps must be >= 1, got {cfg.log_every_n_steps}")
    need(cfg.max_steps_per_epoch is None or cfg.max_steps_per_epoch >= 1, "max_steps_per_epoch must be >= 1")
    need(cfg.model.out_dim >= 1, f"model.out_dim must be >= 1, got {cfg.model.out_dim}")
    need(cfg.loss.temperature > 0, f"loss.temperature must be > 0, got {cfg.loss.temperature}")
    need(cfg.loss.lambda_sup >= 0, f"loss.lambda_sup must be >= 0, got {cfg.loss.lambda_sup}")
    d = cfg.dataset
    need(d.image_size >= 16, f"dataset.image_size must be at least 16 px, got {d.image_size}")
    need(0 <= d.valid_size < 1, f"dataset.valid_size must be within [0, 1), got {d.valid_size}")
    need(d.s >= 0, f"dataset.s (jitter strength) must be >= 0, got {d.s}")
    need(0 <= d.jitter_p <= 1 and 0 <= d.flip_p <= 1, "dataset.jitter_p and dataset.flip_p must be within [0, 1]")
    need(len(d.scale) == 2 and 0 < d.scale[0] <= d.scale[1] <= 1, f"dataset.scale must be (lo, hi) within (0, 1], got {d.scale}")
    need(len(d.ratio) == 2 and 0 < d.ratio[0] <= d.ratio[1], f"dataset.ratio must be (lo, hi) with 0 < lo <= hi, got {d.ratio}")
    need(d.std > 0, f"dataset.std must be > 0, got {d.std}")
    need(d.num_workers >= 0, f"dataset.num_workers must be >= 0, got {d.num_workers}")
    if isinstance(d.frames_on_device, bool):  # YAML true/false/yes/no
        cfg.dataset.frames_on_device = d.frames_on_device = "always" if d.frames_on_device else "never"
    need(d.frames_on_device in FRAMES_ON_DEVICE,
         f"dataset.frames_on_device must be one of {', '.join(FRAMES_ON_DEVICE)}, got {d.frames_on_device!r}")
    need(d.frames_per_item == 3, f"dataset.frames_per_item must be 3 (f1, f2 anchor, f3), got {d.frames_per_item}")
    need(d.min_gap >= 0 and (d.max_gap is None or d.max_gap >= d.min_gap),
         f"dataset.min_gap/max_gap: need 0 <= min_gap <= max_gap, got {d.min_gap}/{d.max_gap}")
    if cfg.method == "simclr" and cfg.mixup:
        cfg.mixup = False  # two augmentations of one frame: nothing to mix
    if cfg.fine_tune_from in ("", "None", "none"):
        cfg.fine_tune_from = None
    return cfg


def config_to_yaml(cfg: PretrainConfig) -> str:
    return dump_yaml(cfg)


def config_dict(cfg: PretrainConfig) -> dict:
    return to_dict(cfg)
