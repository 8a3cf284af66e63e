"""`uscl demo`: the whole pipeline on the embedded synthetic data set."""

from __future__ import annotations

import argparse

NAME = "demo"
ORDER = 1
HELP = "run the whole pipeline on synthetic data: synth, prepare, pretrain USCL and SimCLR, 5-fold compare, report"
DESCRIPTION = """\
Synthesise lung-ultrasound videos, ingest them, pretrain USCL and SimCLR
briefly, fine-tune random init vs SimCLR vs USCL over 5 video-level folds,
write the report and print the table. The defaults finish in under 15 minutes
on a 2-core CPU; flags scale it up.

example:
  uscl demo                       # writes ./uscl-demo
  uscl demo --out /tmp/demo --videos-per-class 30 --pretrain-epochs 100 --image-size 224
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from uscl.commands.pipeline import add_run_options
    from uscl.demo import DemoConfig

    d = DemoConfig()
    p.add_argument("--out", default=d.out, help=f"output folder (default: {d.out})")
    p.add_argument("--videos-per-class", type=int, default=d.videos_per_class)
    p.add_argument("--frames", type=int, default=d.frames, help="frames per synthetic video")
    p.add_argument("--image-size", type=int, default=d.image_size, help="model input size in pixels")
    p.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs)
    add_run_options(p, d)


def run(args: argparse.Namespace) -> int:
    from uscl.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        out=args.out, videos_per_class=args.videos_per_class, frames=args.frames,
        image_size=args.image_size, store_size=args.image_size,  # stores at the training size: no resize per step
        pretrain_epochs=args.pretrain_epochs, finetune_epochs=args.finetune_epochs,
        finetune_mode=args.finetune_mode, folds=args.folds, seed=args.seed, device=args.device,
        overwrite=args.overwrite,
    )
    run_demo(cfg)
    return 0
