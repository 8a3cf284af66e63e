"""`uscl pipeline`: your labelled videos -> frame stores -> pretraining -> 5-fold comparison -> report."""

from __future__ import annotations

import argparse

NAME = "pipeline"
ORDER = 2
HELP = "the whole pipeline on your videos: ingest, pretrain USCL and SimCLR, compare with random init, report"
DESCRIPTION = """\
Ingest a folder of labelled ultrasound videos (labels from --labels CSV; without
it from VIDEOS/labels.csv if there is one, as `uscl prepare` does, else from the
parent folder names), pretrain USCL and SimCLR, compare them with random init over
video-level folds, and write the report. Without --pretrain-videos the
evaluated videos are also the pretraining set, so USCL runs without its
supervised term (no test label reaches a backbone); give a separate labelled
set to pretrain with labels, as the paper does.

examples:
  uscl pipeline pocus --labels pocus/labels.csv --out runs/pocus --fps 3 --max-frames 30 --crop \\
      --where probe=convex --classes covid,pneumonia,regular
  uscl pipeline target_videos --pretrain-videos other_videos --pretrain-labels other.csv --out runs/p
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from uscl.finetune.config import FinetuneConfig
    from uscl.pipeline import PipelineConfig
    from uscl.pretrain.config import PretrainConfig
    from uscl.utils.config import field_choices, field_help

    d = PipelineConfig()
    p.add_argument("videos", help="folder of labelled videos to evaluate on")
    p.add_argument("--out", default=d.out, help=f"output folder (default: {d.out}; refused if not empty)")
    p.add_argument("--labels", help="labels CSV for the videos (path,label[,patient]); default: VIDEOS/labels.csv "
                                    "if it exists, else the parent folder names")
    p.add_argument("--pretrain-videos", help="a separate folder of videos to pretrain on")
    p.add_argument("--pretrain-labels", help="labels CSV for --pretrain-videos (default: its labels.csv if it exists, "
                                             "else the parent folder names)")
    p.add_argument("--methods", default=",".join(d.methods), help="pretraining methods (default: %(default)s)")
    p.add_argument("--classes", help=field_help(FinetuneConfig, "classes") + " (default: every label)")
    p.add_argument("--image-size", type=int, default=d.image_size, help="model input and store size in px")
    p.add_argument("--fps", type=float, help="frames per second kept at ingest (default: all)")
    p.add_argument("--max-frames", type=int, help="frames kept per video at ingest")
    p.add_argument("--crop", action="store_true", help="crop black margins and mask static overlays")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="keep only inputs whose labels-CSV column matches (repeatable), e.g. probe=convex")
    p.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs)
    p.add_argument("--pretrain-batch", type=int, default=d.pretrain_batch, help="videos per pretraining batch")
    p.add_argument("--select", default=d.select, choices=field_choices(PretrainConfig, "select"),
                   help="pretraining checkpoint evaluated: last = the final epoch, best = lowest validation "
                        "loss (default %(default)s)")
    p.add_argument("--max-frames-per-video", type=int,
                   help="fine-tuning: " + field_help(FinetuneConfig, "max_frames_per_video"))
    add_run_options(p, d)
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run in --out with the same settings: finished steps are kept")


def add_run_options(p: argparse.ArgumentParser, d) -> None:
    """The fine-tuning and run flags `uscl pipeline` and `uscl demo` share (defaults from config ``d``).

    They set FinetuneConfig (and PretrainConfig) settings under the pipeline's names; the
    allowed values come from those configs, not from here. ``--finetune-mode`` only where ``d``
    has one mode (the demo, a study, has ``modes``).
    """
    from uscl.finetune.config import FinetuneConfig
    from uscl.pretrain.config import PretrainConfig
    from uscl.utils.config import field_choices

    if hasattr(d, "finetune_mode"):
        p.add_argument("--finetune-mode", default=d.finetune_mode, choices=field_choices(FinetuneConfig, "mode"),
                       help="what trains in fine-tuning (default %(default)s)")
        # a fine-tuning error about ``mode`` names the pipeline's flag for it
        p.config_flag_names = {**getattr(p, "config_flag_names", {}), "mode": "--finetune-mode"}
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs,
                   help="fine-tuning epochs (default %(default)s)")
    p.add_argument("--folds", type=int, default=d.folds, help="video-level folds (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of every step (default %(default)s)")
    # one device for pretraining and fine-tuning: the values both accept
    p.add_argument("--device", default=d.device, choices=field_choices(PretrainConfig, "device"),
                   help="default %(default)s")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty output folder")


def run(args: argparse.Namespace) -> int:
    from uscl.pipeline import PipelineConfig, run_pipeline

    cfg = PipelineConfig(
        videos=args.videos, out=args.out, labels=args.labels, pretrain_videos=args.pretrain_videos,
        pretrain_labels=args.pretrain_labels, methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        classes=[c.strip() for c in args.classes.split(",")] if args.classes else None,
        image_size=args.image_size, fps=args.fps, max_frames=args.max_frames, crop=args.crop, where=args.where,
        pretrain_epochs=args.pretrain_epochs, pretrain_batch=args.pretrain_batch, select=args.select,
        finetune_mode=args.finetune_mode, finetune_epochs=args.finetune_epochs,
        max_frames_per_video=args.max_frames_per_video, folds=args.folds, seed=args.seed, device=args.device,
        overwrite=args.overwrite, resume=args.resume,
    )
    run_pipeline(cfg)
    return 0
