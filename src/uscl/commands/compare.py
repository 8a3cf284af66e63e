"""`uscl compare`: several initialisations fine-tuned over the same folds, one table, one report."""

from __future__ import annotations

import argparse

from uscl.commands.finetune import add_finetune_arguments, config_from_args

NAME = "compare"
ORDER = 41
HELP = "compare initialisations (random, ImageNet, USCL, SimCLR...) over the same video-level folds"
DESCRIPTION = """\
Fine-tune several initialisations over the SAME folds (one splits.json) into
DIR/<name>/, print one table (mean ± std over folds, frame and video level),
and write DIR/comparison.json, comparison.md, report.md, metrics.json and plots,
including the paired per-fold difference against the random baseline.

Name an init with NAME=SPEC; otherwise checkpoint runs are named by their
pretraining method (uscl, simclr...).

--only-folds 0,2 runs only those folds for every init (same folds, so still
paired; the table says "folds 0, 2 of 5 only"). --resume keeps DIR's folds and
continues each init's run: complete folds are kept, the rest trained.

examples:
  uscl compare --store pocus_store --out runs/compare --init random \\
      --init checkpoint:runs/uscl --init checkpoint:runs/simclr \\
      --init imagenet=imagenet:weights/resnet18.pth --config configs/finetune_paper.yaml
  uscl compare --store pocus_store --out runs/compare --init random --init checkpoint:runs/uscl \\
      --config configs/finetune_paper.yaml --only-folds 0      # then the same with --resume for all folds
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_finetune_arguments(p, with_init=False)
    p.add_argument("--init", action="append", dest="inits", required=True, metavar="[NAME=]SPEC",
                   help="an init to compare (repeat): random | imagenet:PATH | checkpoint:RUN | uscl-official:PATH")
    p.config_flag_names = {**getattr(p, "config_flag_names", {}), "init": "--init"}  # an error about one init


def run(args: argparse.Namespace) -> int:
    from uscl.report import compare

    cfg = config_from_args(args)
    result = compare(cfg, args.inits, cfg.out)
    print(f"wrote {result.out}/comparison.json, comparison.md and {result.report}")
    return 0
