"""`uscl pretrain`: contrastive pretraining of a ResNet backbone on a frame store."""

from __future__ import annotations

import argparse
import os

from uscl.errors import UsclError

NAME = "pretrain"
HELP = "pretrain a backbone on a frame store (USCL, SimCLR, the paper's frame SimCLR, MoCo v2)"
ORDER = 30
DESCRIPTION = """\
Pretrain a ResNet backbone on the videos of a frame store (made with `uscl prepare`).

Methods: uscl (sample pair generation + mixup + NT-Xent + supervised CE on labelled
videos), uscl-selfsup (no supervised term), simclr (two augmentations of one frame),
and any method registered with uscl.pretrain.register_method.
The run folder gets config.yaml, metrics.csv, last/best checkpoints (safetensors +
JSON), train_state.pt and backbone.safetensors (torchvision key names).

examples:
  uscl pretrain --store store --out runs/uscl --epochs 100
  uscl pretrain --config configs/pretrain_uscl.yaml --store store --out runs/uscl
  uscl pretrain --resume runs/uscl                      # continue a killed run
  torchrun --nproc_per_node=4 -m uscl pretrain --store store --out runs/ddp
  torchrun --nproc_per_node=4 --max-restarts 3 -m uscl pretrain --store store --out runs/ddp --auto-resume
"""



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (ours, or the original USCL config.yaml keys)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out folder")
    p.add_argument("--auto-resume", action="store_true", default=None,
                   help="if --out holds an unfinished run with these very settings, continue it (for "
                        "`torchrun --max-restarts N`, whose restarts repeat the command line); a finished "
                        "run or one with other settings is refused")
    from uscl.pretrain.config import PretrainConfig
    from uscl.utils.config import add_config_flags

    # every other flag comes from the config dataclasses (uscl.pretrain.config), declared there once
    p.set_defaults(_config_flags=add_config_flags(p, PretrainConfig, skip=("resume", "overwrite", "auto_resume")))


def build_config(args: argparse.Namespace):
    """The PretrainConfig the flags ask for (the saved config of --resume RUN as a base)."""
    from uscl.pretrain.config import apply_overrides, config_from_dict, resume_config, validate_config
    from uscl.utils.config import load_yaml

    overrides = {key: getattr(args, dest) for dest, key in args._config_flags.items()}
    overrides["auto_resume"] = args.auto_resume
    if args.resume:
        if args.config:
            raise UsclError("--resume uses the run's saved config.yaml; drop --config")
        out = overrides.pop("out")
        cfg = resume_config(args.resume, **overrides)
        if out:
            cfg.out = out  # checked against the run folder by pretrain()
        return validate_config(cfg)
    data = apply_overrides(load_yaml(args.config) if args.config else {}, overrides)
    if args.overwrite:
        data["overwrite"] = True
    return validate_config(config_from_dict(data))


def run(args: argparse.Namespace) -> int:
    from uscl.pretrain import pretrain

    main_rank = int(os.environ.get("RANK", "0")) == 0
    try:
        result = pretrain(build_config(args))
    except UsclError:
        if not main_rank:  # under torchrun every rank fails alike; rank 0 tells the user
            return 2
        raise
    if result.backbone_epoch is not None and main_rank:
        print(f"backbone: {result.backbone_path} (epoch {result.backbone_epoch}); "
              f"fine-tune with `uscl finetune --init checkpoint:{result.run_dir}`")
    return 0
