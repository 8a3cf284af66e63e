"""`uscl finetune`: k-fold fine-tuning and evaluation of one initialisation."""

from __future__ import annotations

import argparse

from uscl.utils.config import add_config_flags, from_dict, load_yaml

NAME = "finetune"
ORDER = 40
HELP = "fine-tune and evaluate a backbone with k-fold cross-validation split by video"
DESCRIPTION = """\
Fine-tune a backbone on a labelled frame store with k folds split by video (and
patient), stratified by class, and report frame- and video-level metrics.

Inits: random | imagenet:PATH (local torchvision .pth/.safetensors) |
checkpoint:RUN_OR_FILE (a `uscl pretrain` run) | uscl-official:PATH (the USCL
authors' best_model.pth). Modes: paper (last block of layer4 + new head, the
USCL protocol; other --arch families: their last block, see README "Backbones"),
full, linear (logistic regression on frozen features), knn.

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
    """Flags shared by `finetune` and `compare` (defaults None: the YAML/dataclass decides).

    Every setting's flag, help and choices come from its FinetuneConfig field
    (uscl.finetune.config), declared there once; only ``--config`` and the repeatable
    ``--where KEY=VALUE`` (a mapping in the config) are written here.
    """
    from uscl.finetune.config import FinetuneConfig

    skip = ("where",) if with_init else ("where", "init")
    p.set_defaults(_config_flags=add_config_flags(p, FinetuneConfig, skip=skip))
    p.add_argument("--where", action="append", metavar="KEY=VALUE",
                   help="keep only videos whose record has KEY=VALUE (e.g. probe=convex); repeatable")
    p.add_argument("--config", help="YAML file with FinetuneConfig keys; flags override it")


def config_from_args(args: argparse.Namespace):
    """YAML (--config) first, then every flag that was given."""
    from uscl.finetune.config import FinetuneConfig
    from uscl.finetune.splits import parse_where

    data = load_yaml(args.config) if getattr(args, "config", None) else {}
    for dest, key in args._config_flags.items():
        value = getattr(args, dest, None)
        if value is not None:
            data[key] = value
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
