"""`uscl finetune`: k-fold fine-tuning and evaluation of one initialisation."""

from __future__ import annotations

import argparse

from uscl.utils.config import from_dict, load_yaml

NAME = "finetune"
ORDER = 40
HELP = "fine-tune and evaluate a backbone with k-fold cross-validation split by video"
DESCRIPTION = """\
Fine-tune a backbone on a labelled frame store with k folds split by video (and
patient), stratified by class, and report frame- and video-level metrics.

Inits: random | imagenet:PATH (local torchvision .pth/.safetensors) |
checkpoint:RUN_OR_FILE (a `uscl pretrain` run) | uscl-official:PATH (the USCL
authors' best_model.pth). Modes: paper (last block of layer4 + new head, the
USCL protocol), full, linear (logistic regression on frozen features), knn.

The reported model is the one after the fixed epoch budget (--select last) or
the best epoch on a validation split carved from the training fold by video
(--select val). --select-on-test reproduces the original's selection on the
test fold and marks every output as optimistic.

--only-folds 0,2 trains and evaluates only those folds of the split (the split
is still made over all folds, so fold 2 holds the same videos either way);
metrics.json and the report then say "folds 0, 2 of 5 only". --resume
continues a run folder with the same settings: folds whose outputs are
complete are kept, unfinished ones are redone; a setting that differs is
refused by name. Together they fill in the missing folds later.

examples:
  uscl finetune --store pocus_store --out runs/ft_uscl --init checkpoint:runs/uscl \\
      --config configs/finetune_paper.yaml --classes covid,pneumonia,regular --where probe=convex
  uscl finetune --store pocus_store --out runs/ft_uscl --init checkpoint:runs/uscl \\
      --config configs/finetune_paper.yaml --only-folds 0,1          # a quick look at 2 of 5 folds
  uscl finetune --store pocus_store --out runs/ft_uscl --init checkpoint:runs/uscl \\
      --config configs/finetune_paper.yaml --resume                   # the other folds (or after a kill)
"""


def add_finetune_arguments(p: argparse.ArgumentParser, *, with_init: bool = True) -> None:
    """Flags shared by `finetune` and `compare` (defaults None: the YAML/dataclass decides)."""
    p.add_argument("--store", help="frame store folder (made by `uscl prepare`)")
    p.add_argument("--out", help="output folder (refused if not empty, unless --overwrite or --resume)")
    if with_init:
        p.add_argument("--init", help="random | imagenet:PATH | checkpoint:RUN_OR_FILE | uscl-official:PATH (default random)")
    p.add_argument("--mode", choices=["paper", "full", "linear", "knn"], help="what trains (default paper)")
    p.add_argument("--arch", choices=["resnet18", "resnet50"], help="default: the checkpoint's, else resnet18")
    p.add_argument("--folds", type=int, help="number of folds (default 5)")
    p.add_argument("--splits", metavar="FILE", help="use these folds: a uscl splits.json or a POCOVID-Net cross_val.json")
    p.add_argument("--classes", help="comma-separated classes to use (others left out), e.g. covid,pneumonia,regular")
    p.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="keep only videos whose record has KEY=VALUE (e.g. probe=convex); repeatable")
    p.add_argument("--merge-small-folds", action="store_true", default=None,
                   help="allow a class with fewer videos than folds (tested in fewer folds)")
    p.add_argument("--epochs", type=int, help="epochs (default 100)")
    p.add_argument("--lr", type=float, help="learning rate (default 0.01 paper, 1e-4 full)")
    p.add_argument("--weight-decay", type=float, help="Adam weight decay (default 1e-4)")
    p.add_argument("--batch-size", type=int, help="batch size (default 32)")
    p.add_argument("--image-size", type=int, help="input size in pixels (default 224)")
    p.add_argument("--max-frames-per-video", type=int, help="training frames per video, evenly spread (default all)")
    p.add_argument("--select", choices=["last", "val"], help="model selection: last epoch (default) or best on validation")
    p.add_argument("--val-fraction", type=float, help="validation share of each training fold, by video (default 0.2)")
    p.add_argument("--allow-pretraining-labels", action="store_true", default=None,
                   help="run even if the init's pretraining used the labels of videos tested here "
                        "(refused by default; every output then says the results are optimistic)")
    p.add_argument("--select-on-test", action="store_true", default=None,
                   help="REPRODUCTION ONLY: keep the epoch with the best test accuracy (optimistic)")
    p.add_argument("--knn-k", type=int, help="neighbours for --mode knn (default 10)")
    p.add_argument("--seed", type=int, help="seed for folds, init and augmentation (default 0)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--workers", type=int, help="data loader workers (default 0)")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="no bf16 autocast on CUDA")
    p.add_argument("--unsafe-pickle", action="store_true", default=None,
                   help="UNSAFE: allow loading a legacy full-pickle .pth (runs code from the file)")
    p.add_argument("--config", help="YAML file with FinetuneConfig keys; flags override it")
    p.add_argument("--overwrite", action="store_true", default=None, help="reuse a non-empty output folder")
    p.add_argument("--only-folds", metavar="K,K,...",
                   help="train and evaluate only these folds (0-based indices of the split), e.g. 0,2; "
                        "the results then say they are partial")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue the run(s) in --out with the same settings: keep folds whose outputs are "
                        "complete, redo unfinished ones (with --only-folds: fill in those folds)")


_FIELDS = ("store", "out", "init", "mode", "arch", "folds", "splits", "classes", "merge_small_folds", "epochs", "lr",
           "weight_decay", "batch_size", "image_size", "max_frames_per_video", "select", "val_fraction",
           "select_on_test", "knn_k", "seed", "device", "workers", "amp", "unsafe_pickle", "overwrite", "only_folds",
           "resume", "allow_pretraining_labels")


def config_from_args(args: argparse.Namespace):
    """YAML (--config) first, then every flag that was given."""
    from uscl.finetune.config import FinetuneConfig
    from uscl.finetune.splits import parse_where

    data = load_yaml(args.config) if getattr(args, "config", None) else {}
    for name in _FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = value
    if getattr(args, "where", None):
        data["where"] = {**dict(data.get("where") or {}), **parse_where(args.where)}
    return from_dict(FinetuneConfig, data)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_finetune_arguments(p)


def run(args: argparse.Namespace) -> int:
    from uscl.finetune.train import finetune

    cfg = config_from_args(args)
    result = finetune(cfg)
    cov = result.metrics.get("coverage")
    print(f"wrote {result.run_dir}/metrics.json (per fold and summary"
          + (f"; {cov}: add the other folds with --resume" if cov else "")
          + f"); report: uscl report {result.run_dir}")
    return 0
