"""`uscl embed`: what a backbone's frozen features separate (classes across videos, or videos)."""

from __future__ import annotations

import argparse

NAME = "embed"
ORDER = 43
HELP = "map a backbone's frame features (t-SNE) and measure kNN class accuracy across videos and video purity"
DESCRIPTION = """\
Extract frozen features of a store's frames (--frames-per-video evenly spread per
video) with a backbone and write into --out:

  embedding.json  kNN class accuracy across videos: each labelled frame takes the
                  majority class of its --k most similar labelled frames (cosine)
                  from other videos (other patients when the store names them);
                  video purity: the mean share of a frame's --k most similar frames
                  that come from its own video, with its chance level
                  ((frames in own video - 1) / (N - 1)). High purity with low class
                  accuracy is memorisation of videos, which USCL's pair generation
                  exists to prevent.
  map_class.png, map_video.png  a 2-D map (t-SNE by default) coloured by class / video
  neighbours.png  query frames and their 8 nearest frames from other videos
  embedding.csv, embed.md

BACKBONE_OR_RUN: a `uscl pretrain` run folder; a `uscl finetune` run folder (the
trunk of --fold, trained with labels), fold folder or model.safetensors; random
(--arch, --init-seed); imagenet:PATH, checkpoint:RUN or uscl-official:PATH as for
`uscl finetune --init`. Frames are resized to the size the backbone was trained at
(--image-size overrides).

t-SNE (scikit-learn, PCA init, fixed seed: deterministic) rather than UMAP: no new
dependency; --map umap works when umap-learn is installed, --map pca is instant.

examples:
  uscl embed runs/uscl --store pocus112 --out runs/uscl/embedding
  uscl embed random --store pocus112 --out runs/embed_random --image-size 112
  uscl embed runs/ft_pocus --fold 2 --store pocus112 --out runs/embed_ft
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from uscl.models.backbone import ARCHITECTURES

    p.add_argument("backbone", metavar="BACKBONE_OR_RUN",
                   help="pretraining or fine-tuning run folder, weights file, random, imagenet:PATH, checkpoint:RUN")
    p.add_argument("--store", required=True, help="frame store whose frames are embedded")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--frames-per-video", dest="frames_per_video", type=int, default=8,
                   help="evenly spread frames per video (default 8; 0: all)")
    p.add_argument("--k", type=int, default=8, help="neighbours of both numbers (default 8)")
    p.add_argument("--map", choices=["tsne", "pca", "umap"], default="tsne",
                   help="2-D map: tsne (default), pca (instant), umap (needs umap-learn)")
    p.add_argument("--seed", type=int, default=0, help="seed of the map and of the grid's query frames (default 0)")
    p.add_argument("--image-size", dest="image_size", type=int, default=None,
                   help="input size in px (default: the backbone's training size, else the store's)")
    p.add_argument("--fold", type=int, default=0, help="fold of a fine-tuning run folder (default 0)")
    p.add_argument("--arch", choices=list(ARCHITECTURES), default="resnet18",
                   help="architecture of `random` (default resnet18; otherwise the weights say)")
    p.add_argument("--init-seed", dest="init_seed", type=int, default=0, help="seed of `random`'s weights (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=64, help="frames per forward pass (default 64)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier embedding in --out")
    p.add_argument("--unsafe-pickle", dest="unsafe_pickle", action="store_true",
                   help="allow a legacy full-pickle .pth (UNSAFE: runs code from the file)")


def run(args: argparse.Namespace) -> int:
    from uscl.report.embed import EmbedSettings, embed

    settings = EmbedSettings(frames_per_video=args.frames_per_video or None, k=args.k, map=args.map, seed=args.seed,
                             image_size=args.image_size, device=args.device, batch_size=args.batch_size)
    result = embed(args.backbone, args.store, args.out, settings, fold=args.fold, arch=args.arch,
                   init_seed=args.init_seed, overwrite=args.overwrite, unsafe_pickle=args.unsafe_pickle)
    print(f"report: {result.out / 'embed.md'}")
    return 0
