"""Fine-tuning configuration: one typed dataclass, filled from YAML and CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from uscl.errors import ConfigError

SELECTED_ON_TEST = "SELECTED ON TEST FOLD — optimistic, for reproduction only"

# learning rates of the modes that train by gradient descent
DEFAULT_LR = {"paper": 0.01, "full": 1e-4}
GRADIENT_MODES = tuple(DEFAULT_LR)  # paper, full: the others (linear, knn) fit on frozen features


@dataclass
class FinetuneConfig:
    """Everything one ``uscl finetune`` run needs.

    ``mode``: ``paper`` (the USCL release: only the last residual block of
    layer4 and a new linear head train), ``full`` (all layers), ``linear``
    (frozen backbone, logistic regression on features), ``knn`` (k nearest
    neighbours on L2-normalised features).

    ``select``: ``last`` keeps the model after the fixed epoch budget; ``val``
    keeps the epoch with the best accuracy on a validation split carved from
    the training fold by video. ``select_on_test`` reproduces the original's
    per-fold choice of the epoch with the best *test* accuracy; every output
    then says so.

    ``only_folds`` trains and evaluates only these fold indices of the split
    (the split itself is always made over all folds, so fold 2 holds the same
    videos either way); the outputs then say the estimate is partial.
    ``resume`` continues a run folder whose saved settings match: folds with
    complete outputs are kept, the others are redone from scratch.
    """

    store: str = ""
    out: str = ""
    init: str = "random"
    mode: Literal["paper", "full", "linear", "knn"] = "paper"
    arch: str | None = None  # resnet18 | resnet50; None: from the init checkpoint, else resnet18
    folds: int = 5
    splits: str | None = None  # our splits.json or POCOVID-Net cross_val.json
    seed: int = 0
    classes: list[str] | None = None
    where: dict[str, str] = field(default_factory=dict)
    merge_small_folds: bool = False
    epochs: int = 100
    lr: float | None = None  # None: 0.01 (paper) / 1e-4 (full)
    weight_decay: float = 1e-4
    batch_size: int = 32
    image_size: int = 224
    workers: int = 0
    max_frames_per_video: int | None = None  # training frames per video (test uses all)
    select: Literal["last", "val"] = "last"
    val_fraction: float = 0.2
    select_on_test: bool = False
    freeze_bn_stats: bool = True  # frozen layers keep their BatchNorm statistics (eval mode)
    knn_k: int = 10
    linear_c: float = 1.0  # inverse regularisation of the logistic regression
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA (always fp32 on CPU)
    unsafe_pickle: bool = False
    overwrite: bool = False
    only_folds: list[int] | None = None  # fold indices to run (None: all)
    resume: bool = False  # continue a matching run folder: keep complete folds, redo the rest
    # run even when the init was pretrained with labels of the test videos (outputs say so)
    allow_pretraining_labels: bool = False

    def validate(self) -> "FinetuneConfig":
        if not self.store:
            raise ConfigError("no --store given")
        if not self.out:
            raise ConfigError("no --out given")
        if self.arch not in (None, "resnet18", "resnet50"):
            raise ConfigError(f"arch must be resnet18 or resnet50, got {self.arch!r}")
        for name in ("epochs", "batch_size", "image_size", "knn_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.max_frames_per_video is not None and self.max_frames_per_video < 1:
            raise ConfigError("max_frames_per_video must be at least 1")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.select_on_test and self.select == "val":
            raise ConfigError("choose one of --select val and --select-on-test")
        if self.mode in ("linear", "knn") and (self.select_on_test or self.select == "val"):
            raise ConfigError(f"mode {self.mode} has no epochs to select; drop --select val / --select-on-test")
        if self.resume and self.overwrite:
            raise ConfigError("choose one of --resume (keep finished folds) and --overwrite (start again)")
        if self.only_folds is not None:
            if not self.only_folds:
                raise ConfigError("--only-folds is empty; give fold indices such as 0,2")
            negative = [k for k in self.only_folds if k < 0]
            if negative:
                raise ConfigError(f"--only-folds: fold indices start at 0, got {negative[0]}")
            twice = sorted({k for k in self.only_folds if self.only_folds.count(k) > 1})
            if twice:
                raise ConfigError(f"--only-folds lists fold(s) {', '.join(map(str, twice))} more than once")
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.mode, 0.0)

    @property
    def selection(self) -> str:
        if self.mode in ("linear", "knn"):
            return "none (no epochs)"
        if self.select_on_test:
            return "test (" + SELECTED_ON_TEST + ")"
        return "val (best validation accuracy, validation carved from the training fold by video)" if self.select == "val" else "last epoch"
