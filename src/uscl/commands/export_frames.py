"""`uscl export-frames STORE OUT`: a frame store → one folder of images per video."""

from __future__ import annotations

import argparse

NAME = "export-frames"
HELP = "write a frame store out as folders of images (OUT/<label>/<video_id>/frame_00000.png)"
ORDER = 15
DESCRIPTION = """\
Write every video of a frame store as a folder of numbered images, grouped by
label (OUT/<label or unlabelled>/<video_id>/frame_00000.png ...), plus
OUT/labels.csv, for tools that read the folder-of-frames layout.

example:
  uscl export-frames pocus_store pocus_frames
  uscl prepare pocus_frames store2 --labels pocus_frames/labels.csv --size 0   # reads it back
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="frame store folder (made by uscl prepare)")
    p.add_argument("out", help="folder to write (must be new or empty unless --overwrite)")
    p.add_argument("--format", choices=["png", "jpg"], default="png", help="image format (png is lossless)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT")


def run(args: argparse.Namespace) -> int:
    from uscl.store.export import export_frames

    summary = export_frames(args.store, args.out, overwrite=args.overwrite, image_format=args.format)
    print(f"exported {summary.videos} videos, {summary.frames} frames to {summary.out}")
    return 0
