"""Fine-tuning configuration: one typed dataclass, filled from YAML and CLI flags.

Each setting with a command-line flag is declared here once, with its help
(:func:`uscl.utils.config.config_field`); `uscl finetune` and `uscl compare` generate
their flags from these fields.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from uscl.errors import ConfigError
from uscl.utils.config import config_field

SELECTED_ON_TEST = "SELECTED ON TEST FOLD — optimistic, for reproduction only"

# learning rates of the classification modes that train by gradient descent
DEFAULT_LR = {"paper": 0.01, "full": 1e-4}
GRADIENT_MODES = tuple(DEFAULT_LR)  # paper, full: the others (linear, knn) fit on frozen features
# segmentation (Adam) and detection (SGD with momentum, torchvision's reference): the new decoder /
# detection heads train at this lr in every mode, the trained encoder layers at ``encoder_lr`` times it
DENSE_LR = {"segment": 1e-3, "detect": 0.01}

Task = Literal["classify", "segment", "detect"]
TASKS: tuple[str, ...] = typing.get_args(Task)
FinetuneMode = Literal["paper", "full", "linear", "knn", "frozen"]
MODES: tuple[str, ...] = typing.get_args(FinetuneMode)
# the modes of each task: classification has frozen-feature modes (linear, knn), the dense tasks a
# frozen encoder under a trained decoder (frozen), the analogue of the linear probe
TASK_MODES = {"classify": ("paper", "full", "linear", "knn"), "segment": ("frozen", "paper", "full"),
              "detect": ("frozen", "paper", "full")}


def default_lr(task: str, mode: str) -> float:
    """The lr a run uses when none is set (0 for the modes without gradient steps)."""
    return DENSE_LR[task] if task in DENSE_LR else DEFAULT_LR.get(mode, 0.0)
Selection = Literal["last", "val"]
SELECTIONS: tuple[str, ...] = typing.get_args(Selection)


def _architectures() -> tuple[str, ...]:
    from uscl.models.backbone import ARCHITECTURES  # torchvision: imported when first asked for

    return tuple(ARCHITECTURES)


@dataclass
class FinetuneConfig:
    """Everything one ``uscl finetune`` run needs.

    ``mode``: ``paper`` (the USCL release: only the last residual block of
    layer4 and a new linear head train; other architectures: their last block,
    :mod:`uscl.models.families`), ``full`` (all layers), ``linear``
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

    store: str = config_field("", help="frame store folder (made by `uscl prepare`)")
    out: str = config_field("", help="output folder (refused if not empty, unless --overwrite or --resume)")
    init: str = config_field("random", help="random | imagenet:PATH | checkpoint:RUN_OR_FILE | uscl-official:PATH "
                                            "(default random)")
    task: Task = config_field("classify", help="classify (default): one class per video; segment: a label mask "
                                               "per frame; detect: boxes (from the masks, or --boxes) per frame")
    # detect only: boxes per stored frame from a CSV (uscl.finetune.detect.boxes) -> Faster R-CNN
    boxes: str | None = config_field(
        None, metavar="CSV", help="detect only: boxes per frame from this CSV instead of the masks' connected "
                                  "components; Faster R-CNN. Columns video_id (or path: the source path as "
                                  "ingested), frame, x1, y1, x2, y2, label. frame counts the STORED frames "
                                  "(after prepare's fps sampling, 0-based), not the source video's; boxes in "
                                  "stored-frame pixels, x2/y2 exclusive; integer labels are classes 1..K, else "
                                  "the sorted distinct names; only frames with a row are used")
    mode: FinetuneMode = config_field("paper", help="what trains (default paper). classify: paper | full | linear | "
                                                    "knn; segment, detect: frozen | paper | full")
    arch: str | None = config_field(None, choices=_architectures,
                                    help="default: the init checkpoint's, else resnet18")
    folds: int = config_field(5, help="number of folds (default 5)")
    splits: str | None = config_field(None, metavar="FILE",  # our splits.json or POCOVID-Net cross_val.json
                                      help="use these folds: a uscl splits.json or a POCOVID-Net cross_val.json")
    seed: int = config_field(0, help="seed for folds, init and augmentation (default 0)")
    classes: list[str] | None = config_field(
        None, help="comma-separated classes to use (others left out), e.g. covid,pneumonia,regular")
    # from the command line: repeatable --where KEY=VALUE (written in uscl.commands.finetune)
    where: dict[str, str] = field(default_factory=dict)
    merge_small_folds: bool = config_field(False, help="allow a class with fewer videos than folds "
                                                       "(tested in fewer folds)")
    epochs: int = config_field(100, help="epochs (default 100)")
    lr: float | None = config_field(None, help="learning rate (default classify: 0.01 paper, 1e-4 full; "
                                               "segment 1e-3, detect 0.01)")
    encoder_lr: float = config_field(0.1, help="segment, detect: the encoder's trained layers learn at this times "
                                               "the lr (default 0.1)")
    weight_decay: float = config_field(1e-4, help="Adam weight decay (default 1e-4)")
    layer_decay: float = config_field(1.0, help="layer-wise lr decay: each backbone stage below the head trains at "
                                                "this times the lr of the one above (default 1: one lr)")
    batch_size: int = config_field(32, help="batch size (default 32)")
    image_size: int = config_field(224, help="input size in pixels (default 224)")
    workers: int = config_field(0, help="data loader workers (default 0)")
    max_frames_per_video: int | None = config_field(  # training frames per video (test uses all)
        None, help="training frames per video, evenly spread (default all)")
    select: Selection = config_field(
        "last", help="model selection: last epoch (default) or best on validation")
    val_fraction: float = config_field(0.2, help="validation share of each training fold, by video (default 0.2)")
    select_on_test: bool = config_field(
        False, help="REPRODUCTION ONLY: keep the epoch with the best test accuracy (optimistic)")
    freeze_bn_stats: bool = True  # frozen layers keep their BatchNorm statistics (eval mode)
    knn_k: int = config_field(10, help="neighbours for --mode knn (default 10)")
    linear_c: float = 1.0  # inverse regularisation of the logistic regression
    device: str = config_field("auto", help="auto | cpu | cuda | cuda:N (default auto)")
    amp: bool = config_field(True, help="bf16 autocast on CUDA (default on; --no-amp: fp32)")
    unsafe_pickle: bool = config_field(
        False, help="UNSAFE: allow loading a legacy full-pickle .pth (runs code from the file)")
    overwrite: bool = config_field(False, help="reuse a non-empty output folder")
    only_folds: list[int] | None = config_field(  # fold indices to run (None: all)
        None, metavar="K,K,...", help="train and evaluate only these folds (0-based indices of the split), "
                                      "e.g. 0,2; the results then say they are partial")
    # continue a matching run folder: keep complete folds, redo the rest
    resume: bool = config_field(
        False, help="continue the run(s) in --out with the same settings: keep folds whose outputs are "
                    "complete, redo unfinished ones (with --only-folds: fill in those folds)")
    # run even when the init was pretrained with labels of the test videos (outputs say so)
    allow_pretraining_labels: bool = config_field(
        False, help="run even if the init's pretraining used the labels of videos tested here "
                    "(refused by default; every output then says the results are optimistic)")

    def validate(self) -> "FinetuneConfig":
        """Check every value; a problem is a ConfigError naming the setting (``param``)."""
        if not self.store:
            raise ConfigError("no frame store given: set store", param="store")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"layer_decay must lie in (0, 1], got {self.layer_decay}", param="layer_decay")
        if not self.out:
            raise ConfigError("no output folder given: set out", param="out")
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}", param="task")
        if self.mode not in TASK_MODES[self.task]:
            raise ConfigError(f"mode must be one of {', '.join(TASK_MODES[self.task])} for task {self.task}, "
                              f"got {self.mode!r}", param="mode")
        if self.task != "classify" and self.layer_decay != 1.0:
            raise ConfigError(f"layer_decay is for task classify; task {self.task} trains the encoder at encoder_lr "
                              "times the lr", param="layer_decay")
        if not 0 < self.encoder_lr <= 1:
            raise ConfigError(f"encoder_lr must lie in (0, 1], got {self.encoder_lr}", param="encoder_lr")
        if self.boxes is not None:
            if self.task != "detect":
                raise ConfigError(f"boxes (a boxes CSV) is for task detect only, not task {self.task}",
                                  param="boxes")
            if not Path(self.boxes).is_file():
                raise ConfigError(f"boxes file not found: {self.boxes}", param="boxes")
        if self.task == "detect" and self.select == "val":
            raise ConfigError("task detect keeps the last epoch; select='val' is for classify and segment",
                              param="select")
        if self.task != "classify" and self.select_on_test:
            raise ConfigError(f"select_on_test reproduces the classification protocol only; task {self.task} "
                              "selects on validation (select='val') or keeps the last epoch", param="select_on_test")
        if self.select not in SELECTIONS:
            raise ConfigError(f"select must be one of {', '.join(SELECTIONS)}, got {self.select!r}", param="select")
        if self.arch is not None and self.arch not in _architectures():
            raise ConfigError(f"arch must be one of {', '.join(_architectures())} (or unset: the init's), "
                              f"got {self.arch!r}", param="arch")
        for name in ("epochs", "batch_size", "image_size", "knn_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}", param=name)
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}", param="workers")
        if self.max_frames_per_video is not None and self.max_frames_per_video < 1:
            raise ConfigError(f"max_frames_per_video must be at least 1, got {self.max_frames_per_video}",
                              param="max_frames_per_video")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}", param="lr")
        if self.select_on_test and self.select == "val":
            raise ConfigError("choose one of select='val' and select_on_test", param="select_on_test")
        if self.mode in ("linear", "knn") and (self.select_on_test or self.select == "val"):
            which = "select_on_test" if self.select_on_test else "select"
            raise ConfigError(f"mode {self.mode} has no epochs to select; drop select='val' / select_on_test",
                              param=which)
        if self.resume and self.overwrite:
            raise ConfigError("choose one of resume (keep finished folds) and overwrite (start again)",
                              param="resume")
        if self.only_folds is not None:
            if not self.only_folds:
                raise ConfigError("only_folds is empty; give fold indices such as 0,2", param="only_folds")
            negative = [k for k in self.only_folds if k < 0]
            if negative:
                raise ConfigError(f"only_folds: fold indices start at 0, got {negative[0]}", param="only_folds")
            twice = sorted({k for k in self.only_folds if self.only_folds.count(k) > 1})
            if twice:
                raise ConfigError(f"only_folds lists fold(s) {', '.join(map(str, twice))} more than once",
                                  param="only_folds")
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else default_lr(self.task, self.mode)

    @property
    def selection(self) -> str:
        if self.mode in ("linear", "knn"):
            return "none (no epochs)"
        if self.task != "classify":
            return ("val (best validation mean Dice, validation carved from the training fold by video)"
                    if self.select == "val" else "last epoch")
        if self.select_on_test:
            return "test (" + SELECTED_ON_TEST + ")"
        return "val (best validation accuracy, validation carved from the training fold by video)" if self.select == "val" else "last epoch"
