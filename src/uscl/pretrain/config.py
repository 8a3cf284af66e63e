"""Pretraining configuration: typed dataclasses, the original config.yaml keys, one validator.

A YAML file may use the original release's keys (``batch_size``, ``epochs``,
``weight_decay``, ``fp16_precision``, ``model.out_dim``, ``model.base_model``,
``loss.temperature``, ``loss.use_cosine_similarity``, ``dataset.input_shape``,
``dataset.valid_size``, ``dataset.s``, ``dataset.num_workers``,
``log_every_n_steps``, ``eval_every_n_epochs``, ``fine_tune_from``) next to
ours; augmentation settings live in ``augment`` (:class:`~uscl.augment.AugmentSettings`),
and their older places (``dataset.s``, ``dataset.scale``...) still load (:data:`MOVED_KEYS`).
Each setting is declared once, here or in the dataclass it belongs to, with its command-line
flag (:func:`uscl.utils.config.config_field`). Unknown keys are an error naming them; original keys that have no
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

from uscl.augment.config import AugmentSettings
from uscl.checkpoint.inits import parse_init
from uscl.checkpoint.run_files import CONFIG_FILE
from uscl.errors import ConfigError, UsclError
from uscl.models.backbone import ARCHITECTURES
from uscl.pretrain.methods import method_class, method_names
from uscl.utils.config import config_field, dump_yaml, from_dict, load_yaml, to_dict

# keys of the original config.yaml that mean nothing here: accepted, ignored with a warning.
# Every key the original release's config.yaml is known to carry is mapped today (the channel
# count of dataset.input_shape is the one value ignored, with a warning); add names here,
# dotted, with the reason, should an original file turn up with others.
IGNORED_ORIGINAL_KEYS: dict[str, str] = {}
# where the augmentation keys of the original release (and of uscl configs before 0.2) live now
MOVED_KEYS = {"dataset.s": "augment.jitter_s", "dataset.jitter_p": "augment.jitter_p",
              "dataset.scale": "augment.scale", "dataset.ratio": "augment.ratio",
              "dataset.flip_p": "augment.flip_p", "dataset.mean": "augment.mean", "dataset.std": "augment.std"}
# settings a resumed run must share with the run it continues
RESUME_LOCKED = ("method", "model.base_model", "model.out_dim", "model.classifier_input", "mixup")


@dataclass
class ModelConfig:
    base_model: str = config_field("resnet18", flag="--arch", choices=lambda: tuple(ARCHITECTURES),
                                   help="backbone architecture (default resnet18)")  # original key
    out_dim: int = 256
    classifier_input: Literal["projection", "feature"] = "projection"


@dataclass
class LossConfig:
    temperature: float = config_field(0.5, help="NT-Xent temperature (default 0.5)")
    use_cosine_similarity: bool = True
    lambda_sup: float = config_field(0.2, help="weight of each view's supervised cross-entropy (uscl; default 0.2)")
    time_sigma: float | None = config_field(None, help="uscl-multi: weight positives by exp(-|dt| / (sigma * video "
                                                       "length)) (IVPP-style; default: unweighted)")


@dataclass
class MocoConfig:
    """MoCo v2's own settings (methods moco and moco-spg)."""

    queue_size: int = config_field(1024, help="MoCo: negatives kept in the queue (default 1024: a few epochs of "
                                              "a few hundred videos; the paper's 65536 was ~5%% of ImageNet)")
    momentum: float = config_field(0.99, flag="--moco-momentum",
                                   help="MoCo: key-encoder momentum (default 0.99; 0.999 barely moves in the "
                                        "few hundred steps of a small data set)")
    temperature: float = config_field(0.2, flag="--moco-temperature", help="MoCo: InfoNCE temperature (default 0.2)")


@dataclass
class ProbeConfig:
    """The online probe (uscl.pretrain.probe): kNN and linear probes on frozen features."""

    store: str | None = config_field(None, flag="--probe-store",
                                     help="labelled store for the online probe (default: the pretraining store)")
    every: int = config_field(0, flag="--probe-every",
                              help="run the online probe every N epochs and after the last (default 0: off; "
                                   "--select probe turns it on every 5)")
    folds: int = 5
    knn_k: int = 20
    frames_per_video: int = 4  # evenly spread frames per probe video (bounds the probe's cost)


FRAMES_ON_DEVICE = ("auto", "always", "never")


@dataclass
class DatasetConfig:
    image_size: int = config_field(224, help="training resolution in px (default 224)")
    input_shape: str | None = None  # original "(224,224,3)": sets image_size when given
    valid_size: float = config_field(0.2, help="fraction of videos (whole patients) held out for the "
                                               "validation loss (default 0.2)")
    num_workers: int = config_field(0, flag="--workers", help="data loader worker processes")
    # keep every training frame on the GPU and gather batches there (no loader workers):
    # auto = on CUDA when the frames take at most a quarter of the free GPU memory
    frames_on_device: bool | str = config_field(
        "auto", choices=lambda: FRAMES_ON_DEVICE,
        help="hold the training frames on the GPU and gather batches there, no workers "
             "(default auto: on CUDA when they fit in a quarter of the free GPU memory)")
    frames_per_item: int = 3
    frame_slots: int | None = config_field(None, help="frames per epoch for frame-sampling methods (simclr-frames; "
                                                      "default: every training frame once)")
    min_gap: int = config_field(0, help="fewest frames between two frames of one item (default 0)")
    max_gap: int | None = config_field(None, help="most frames between the first and last frame of an item "
                                                  "(default: the whole video)")


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs; saved resolved as RUN/config.yaml."""

    store: str | None = config_field(None, help="frame store folder (from `uscl prepare`)")
    out: str | None = config_field(None, help="run folder to create")
    method: str = config_field("uscl", choices=method_names, help="pretraining method (default uscl)")
    mixup: bool = config_field(True, help="mix the views (--no-mixup, ablation: views f1 and f3, unmixed)")
    alpha: float = config_field(0.5, help="Beta(alpha, alpha) for the mixup weight (default 0.5)")
    label_rate: float = config_field(1.0, help="fraction of labelled videos whose labels are used")
    data_rate: float = config_field(1.0, help="fraction of the store's videos used")
    batch_size: int = config_field(32, help="videos per (global) batch (default 32)")
    epochs: int = config_field(100, help="epochs (default 100)")
    lr: float = config_field(3e-4, help="Adam learning rate (default 3e-4)")
    weight_decay: float = 1e-4
    flat_epochs: int = 10  # lr held flat for min(flat_epochs, epochs // 10) epochs, then cosine
    precision: Literal["auto", "bf16", "fp16", "fp32"] = config_field(
        "auto", help="CUDA mixed precision (default auto = bf16); the CPU trains in fp32")
    fp16_precision: bool | None = None  # original key: true → fp16 on CUDA
    channels_last: bool = True
    compile: bool = config_field(False, help="torch.compile the model")
    cuda_graphs: bool = True  # replay the augmentation of grey CUDA batches as a CUDA graph
    # which checkpoint becomes RUN/backbone.safetensors: "best" = lowest validation loss (the
    # original); "last" = the final epoch (a small validation set makes "best" a noisy choice)
    select: Literal["best", "last", "probe"] = config_field(
        "best", help="checkpoint exported as backbone.safetensors: best = lowest validation loss "
                     "(default, as the original), last = the final epoch, probe = best online-probe accuracy")
    sync_bn: bool = True  # SyncBatchNorm under DDP on CUDA
    device: Literal["auto", "cpu", "cuda"] = config_field("auto", help="training device (default auto)")
    seed: int = config_field(0, help="seed of every random draw of the run (default 0)")
    eval_every_n_epochs: int = 1
    log_every_n_steps: int = 10
    fine_tune_from: str | None = None  # original key: start from a run folder / .safetensors (whole model)
    # the backbone's starting weights, as fine-tuning names them: imagenet:PATH (continued,
    # domain-adaptive pretraining from local ImageNet weights), checkpoint:RUN, uscl-official:PATH
    init: str | None = config_field(None, help="start the backbone from imagenet:PATH (a local torchvision "
                                               "state dict), checkpoint:RUN or uscl-official:PATH (default random)")
    max_steps_per_epoch: int | None = None  # cap (benchmarks, smoke tests)
    resume: str | None = None
    overwrite: bool = False
    # continue an unfinished run with the same settings found in ``out`` (torchrun --max-restarts)
    auto_resume: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    moco: MocoConfig = field(default_factory=MocoConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    @property
    def arch(self) -> str:
        return self.model.base_model

    @property
    def supervised(self) -> bool:
        """Whether the method asks for the supervised term (the data may still lack labels)."""
        return method_class(self.method).wants_labels and self.label_rate > 0 and self.loss.lambda_sup > 0


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
        elif isinstance(data[key], dict) and full in ("model", "loss", "dataset", "augment", "moco", "probe"):
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
    _move_keys(data)
    return from_dict(PretrainConfig, data)


def _move_keys(data: dict) -> None:
    """Original / older keys into their one place (``dataset.s`` → ``augment.jitter_s``);
    a key given in both places is an error."""
    for old, new in MOVED_KEYS.items():
        (osec, okey), (nsec, nkey) = old.split("."), new.split(".")
        section = data.get(osec)
        if not isinstance(section, dict) or okey not in section:
            continue
        target = data.setdefault(nsec, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{nsec}: expected a mapping", param=nsec)
        if nkey in target:
            raise ConfigError(f"{old} and {new} both given; they are one setting (use {new})", param=new)
        target[nkey] = section.pop(okey)


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
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model), loss=dataclasses.replace(cfg.loss),
                              dataset=dataclasses.replace(cfg.dataset), augment=dataclasses.replace(cfg.augment),
                              moco=dataclasses.replace(cfg.moco), probe=dataclasses.replace(cfg.probe))
    method = method_class(cfg.method)
    if cfg.model.base_model not in ARCHITECTURES:
        raise ConfigError(f"model.base_model: {cfg.model.base_model!r} is not one of {', '.join(ARCHITECTURES)}",
                          param="model.base_model")
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
        if not cond:  # the message starts with the key it is about
            raise ConfigError(msg, param=msg.split(" ", 1)[0].split("/")[0])

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
    need(cfg.moco.queue_size >= 1, f"moco.queue_size must be >= 1, got {cfg.moco.queue_size}")
    need(0 <= cfg.moco.momentum < 1, f"moco.momentum must be within [0, 1), got {cfg.moco.momentum}")
    need(cfg.moco.temperature > 0, f"moco.temperature must be > 0, got {cfg.moco.temperature}")
    if cfg.select == "probe" and cfg.probe.every == 0:
        cfg.probe.every = 5  # choosing by the probe needs the probe
    need(cfg.probe.every >= 0, f"probe.every must be >= 0, got {cfg.probe.every}")
    need(cfg.probe.folds >= 2, f"probe.folds must be >= 2, got {cfg.probe.folds}")
    need(cfg.probe.knn_k >= 1, f"probe.knn_k must be >= 1, got {cfg.probe.knn_k}")
    need(cfg.probe.frames_per_video >= 1, f"probe.frames_per_video must be >= 1, got {cfg.probe.frames_per_video}")
    need(cfg.loss.lambda_sup >= 0, f"loss.lambda_sup must be >= 0, got {cfg.loss.lambda_sup}")
    need(cfg.loss.time_sigma is None or cfg.loss.time_sigma > 0,
         f"loss.time_sigma must be > 0 (or unset), got {cfg.loss.time_sigma}")
    d = cfg.dataset
    need(d.image_size >= 16, f"dataset.image_size must be at least 16 px, got {d.image_size}")
    need(0 <= d.valid_size < 1, f"dataset.valid_size must be within [0, 1), got {d.valid_size}")
    defaults = AugmentSettings()
    for key, value in method.augment_defaults.items():  # the method's usual augmentation, where the run keeps ours
        if getattr(cfg.augment, key) == getattr(defaults, key):
            setattr(cfg.augment, key, value)
    cfg.augment.validate()
    need(d.num_workers >= 0, f"dataset.num_workers must be >= 0, got {d.num_workers}")
    if isinstance(d.frames_on_device, bool):  # YAML true/false/yes/no
        cfg.dataset.frames_on_device = d.frames_on_device = "always" if d.frames_on_device else "never"
    need(d.frames_on_device in FRAMES_ON_DEVICE,
         f"dataset.frames_on_device must be one of {', '.join(FRAMES_ON_DEVICE)}, got {d.frames_on_device!r}")
    need(d.frame_slots is None or d.frame_slots >= 1, f"dataset.frame_slots must be >= 1, got {d.frame_slots}")
    need(d.frames_per_item == 3, f"dataset.frames_per_item must be 3 (f1, f2 anchor, f3), got {d.frames_per_item}")
    need(d.min_gap >= 0 and (d.max_gap is None or d.max_gap >= d.min_gap),
         f"dataset.min_gap/max_gap: need 0 <= min_gap <= max_gap, got {d.min_gap}/{d.max_gap}")
    if not method.mixes and cfg.mixup:
        cfg.mixup = False  # e.g. simclr: two augmentations of one frame, nothing to mix
    if cfg.fine_tune_from in ("", "None", "none"):
        cfg.fine_tune_from = None
    if cfg.init in ("", "random"):
        cfg.init = None
    if cfg.init is not None:
        parse_init(cfg.init)  # a malformed spec is an error now, not after the data is read
        need(cfg.fine_tune_from is None, "init and fine_tune_from both start the model: give one of them")
    return cfg


def config_to_yaml(cfg: PretrainConfig) -> str:
    return dump_yaml(cfg)


def config_dict(cfg: PretrainConfig) -> dict:
    return to_dict(cfg)


# -- resuming ------------------------------------------------------------------------------------
def _get(cfg: PretrainConfig, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def resume_config(run_dir: str | Path, **overrides: Any) -> PretrainConfig:
    """The config saved in ``run_dir`` with ``resume`` set and dotted ``overrides`` applied."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UsclError(f"cannot resume {run_dir}: no {CONFIG_FILE} (is it a pretraining run folder?)",
                        param="resume")
    data = apply_overrides(load_yaml(path), overrides)
    data["resume"] = str(run_dir)
    data["out"] = str(run_dir)
    data["overwrite"] = False
    return config_from_dict(data)


def saved_config(run_dir: str | Path) -> PretrainConfig:
    """The validated config a run folder was started with."""
    return validate_config(config_from_dict(load_yaml(Path(run_dir) / CONFIG_FILE)))


def resume_differences(saved: PretrainConfig, cfg: PretrainConfig,
                       keys: tuple[str, ...] = RESUME_LOCKED) -> list[str]:
    """``key: run has X, asked for Y`` for each of ``keys`` where the two configs differ."""
    return [f"{k}: run has {_get(saved, k)!r}, asked for {_get(cfg, k)!r}" for k in keys if _get(saved, k) != _get(cfg, k)]


def elastic_differences(saved: PretrainConfig, cfg: PretrainConfig) -> list[str]:
    """Every setting that differs between a run folder's config and ``cfg`` (apart from how the
    run was started: ``resume``, ``overwrite``, ``auto_resume``), for an automatic resume, which
    must continue the very same run."""
    free = {"resume": None, "overwrite": False, "auto_resume": False, "out": None}
    a = to_dict(dataclasses.replace(saved, **free))
    b = to_dict(dataclasses.replace(cfg, **free))
    out: list[str] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in x:
                walk(x[k], y.get(k), f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix[:-1]}: run has {x!r}, asked for {y!r}")

    walk(a, b, "")
    return out
