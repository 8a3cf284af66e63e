"""`uscl pretrain`: contrastive pretraining of a ResNet backbone on a frame store."""

from __future__ import annotations

import argparse

NAME = "pretrain"
HELP = "pretrain a backbone on a frame store (USCL, USCL self-supervised, SimCLR)"
ORDER = 30
DESCRIPTION = """\
Pretrain a ResNet backbone on the videos of a frame store (made with `uscl prepare`).

Methods: uscl (sample pair generation + mixup + NT-Xent + supervised CE on labelled
videos), uscl-selfsup (no supervised term), simclr (two augmentations of one frame).
The run folder gets config.yaml, metrics.csv, last/best checkpoints (safetensors +
JSON), train_state.pt and backbone.safetensors (torchvision key names).

examples:
  uscl pretrain --store store --out runs/uscl --epochs 100
  uscl pretrain --config configs/pretrain_uscl.yaml --store store --out runs/uscl
  uscl pretrain --resume runs/uscl                      # continue a killed run
  torchrun --nproc_per_node=4 -m uscl pretrain --store store --out runs/ddp
"""

# CLI flag -> dotted config key
OVERRIDES = {
    "store": "store", "out": "out", "method": "method", "epochs": "epochs", "batch_size": "batch_size",
    "image_size": "dataset.image_size", "lr": "lr", "seed": "seed", "device": "device",
    "workers": "dataset.num_workers", "arch": "model.base_model", "label_rate": "label_rate",
    "data_rate": "data_rate", "alpha": "alpha", "precision": "precision",
    "frames_on_device": "dataset.frames_on_device", "select": "select",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="frame store folder (from `uscl prepare`)")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--config", help="YAML config (ours, or the original USCL config.yaml keys)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out folder")
    p.add_argument("--method", choices=["uscl", "uscl-selfsup", "simclr"])
    p.add_argument("--arch", choices=["resnet18", "resnet50"])
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="videos per (global) batch (default 32)")
    p.add_argument("--image-size", type=int, help="training resolution in px (default 224)")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], help="CUDA mixed precision (default bf16)")
    p.add_argument("--workers", type=int, help="data loader worker processes")
    p.add_argument("--frames-on-device", choices=["auto", "always", "never"],
                   help="hold the training frames on the GPU and gather batches there, no workers "
                        "(default auto: on CUDA when they fit in a quarter of the free GPU memory)")
    p.add_argument("--label-rate", type=float, help="fraction of labelled videos whose labels are used")
    p.add_argument("--data-rate", type=float, help="fraction of the store's videos used")
    p.add_argument("--alpha", type=float, help="Beta(alpha, alpha) for the mixup weight (default 0.5)")
    mix = p.add_mutually_exclusive_group()
    mix.add_argument("--no-mixup", dest="mixup", action="store_false", default=None, help="ablation: views f1 and f3, unmixed")
    mix.add_argument("--mixup", dest="mixup", action="store_true", default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--select", choices=["best", "last"],
                   help="checkpoint exported as backbone.safetensors: best = lowest validation loss (default, "
                        "as the original), last = the final epoch")


def build_config(args: argparse.Namespace):
    """The PretrainConfig the flags ask for (the saved config of --resume RUN as a base)."""
    from uscl.pretrain.config import apply_overrides, config_from_dict, validate_config
    from uscl.pretrain.trainer import resume_config
    from uscl.utils.config import load_yaml

    overrides = {key: getattr(args, flag) for flag, key in OVERRIDES.items()}
    overrides["mixup"] = args.mixup
    overrides["compile"] = args.compile
    if args.resume:
        if args.config:
            from uscl.errors import UsclError

            raise UsclError("--resume uses the run's saved config.yaml; drop --config")
        out = overrides.pop("out")
        cfg = resume_config(args.resume, **overrides)
        if out:
            cfg.out = out  # checked against the run folder by pretrain()
        return validate_config(cfg)
    data = load_yaml(args.config) if args.config else {}
    data = apply_overrides(data, overrides)
    if args.overwrite:
        data["overwrite"] = True
    return validate_config(config_from_dict(data))


def run(args: argparse.Namespace) -> int:
    import os

    from uscl.errors import UsclError
    from uscl.pretrain import pretrain

    main_rank = int(os.environ.get("RANK", "0")) == 0
    try:
        result = pretrain(build_config(args))
    except UsclError:
        if not main_rank:  # under torchrun every rank fails alike; rank 0 tells the user
            return 2
        raise
    if result.best_epoch is not None and main_rank:
        print(f"backbone: {result.backbone_path} (epoch {result.best_epoch}); "
              f"fine-tune with `uscl finetune --init checkpoint:{result.run_dir}`")
    return 0
