"""`uscl demo`: the whole pipeline on the embedded synthetic data set."""

from __future__ import annotations

import argparse

NAME = "demo"
ORDER = 1
HELP = "a small study on synthetic data: synth, prepare, pretrain each method x 3 seeds, 5-fold comparison with CIs"
DESCRIPTION = """\
Synthesise two disjoint sets of lung-ultrasound videos (pretraining, downstream),
ingest them, pretrain each method with each seed on the first set, then
evaluate every backbone and random init over the same 5 video-level folds of
the second (`uscl study`): mean and 95% CI over seeds x folds, paired
differences against random init and the best baseline. The defaults finish in
about 10 minutes on a 2-core CPU; flags scale it up.

example:
  uscl demo                       # writes ./uscl-demo; the report is uscl-demo/study/study.md
  uscl demo --out /tmp/demo --methods uscl,simclr,moco --seeds 0,1,2,3,4 --modes linear,paper
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
    p.add_argument("--methods", default=",".join(d.methods), help="pretraining methods or study rows "
                   "(see uscl study), comma-separated (default %(default)s)")
    p.add_argument("--seeds", default=",".join(map(str, d.seeds)), help="pretraining seeds (default %(default)s)")
    p.add_argument("--modes", default=",".join(d.modes), help="evaluation modes: linear, knn, paper, full "
                   "(default %(default)s)")
    add_run_options(p, d)


def run(args: argparse.Namespace) -> int:
    from uscl.demo import DemoConfig, run_demo
    from uscl.errors import ConfigError

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected integers such as 0,1,2, got {args.seeds!r}") from None
    cfg = DemoConfig(
        out=args.out, videos_per_class=args.videos_per_class, frames=args.frames,
        image_size=args.image_size, store_size=args.image_size,  # stores at the training size: no resize per step
        pretrain_epochs=args.pretrain_epochs, finetune_epochs=args.finetune_epochs,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()], seeds=seeds,
        modes=[m.strip() for m in args.modes.split(",") if m.strip()],
        folds=args.folds, seed=args.seed, device=args.device, overwrite=args.overwrite,
    )
    run_demo(cfg)
    return 0
