"""`uscl study`: pretraining methods × seeds against random init (and ImageNet) on the same folds."""

from __future__ import annotations

import argparse

NAME = "study"
ORDER = 45
HELP = "does pretraining help this task? methods x seeds vs random/ImageNet, with confidence intervals"
DESCRIPTION = """\
For each pretraining method and seed: pretrain a backbone on the store (or on
--pretrain-store), keep its final epoch; then evaluate every backbone, random
init and (with --imagenet PATH) ImageNet weights on the same video-level folds in
each --modes mode. Writes OUT/study.md: mean and 95% CI per init over seeds x
folds (and over seeds alone), per-seed rows, paired differences against random
and against the best baseline (CI, folds won/lost/tied), one point per seed and
fold in study_MODE.png, and with --label-fractions a label-rate curve
(fine-tuning on nested 10/25/50% subsets of each training fold's videos).

Pretraining on the evaluated videos uses none of their labels (uscl runs as
uscl-selfsup); methods see one item per video per epoch (equal compute).
--resume keeps finished pretraining runs and fine-tuning folds.

examples:
  uscl study --store pocus112 --out runs/study --epochs 30 --image-size 112
  uscl study --store pocus112 --out runs/study --methods uscl,simclr --seeds 0,1,2 \\
      --modes linear,paper --label-fractions 0.1,0.25,0.5 --imagenet resnet18_imagenet.pth
  uscl study --store pocus112 --out runs/study --resume        # after an interruption
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from uscl.study import StudyConfig
    from uscl.utils.config import add_config_flags

    p.add_argument("--resume", action="store_true", help="continue the study in --out (same settings)")
    p.add_argument("--overwrite", action="store_true", help="replace the study in --out")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default auto)")
    p.set_defaults(_config_flags=add_config_flags(p, StudyConfig))


def run(args: argparse.Namespace) -> int:
    from uscl.study import StudyConfig, check_study, run_study
    from uscl.utils.config import from_dict

    values = {key: getattr(args, dest) for dest, key in args._config_flags.items() if getattr(args, dest) is not None}
    values.update(resume=args.resume, overwrite=args.overwrite)
    if args.device:
        values["device"] = args.device
    cfg = from_dict(StudyConfig, values)
    check_study(cfg)
    result = run_study(cfg)
    for line in result.report.read_text().splitlines():  # the summary tables of each mode
        if line.startswith("# Mode") or (line.startswith("|") and "[" in line and "(" not in line):
            print(line)
    print(f"full report: {result.report}")
    return 0
