"""`uscl prepare SRC OUT`: videos, DICOM, images and frame folders → frame store."""

from __future__ import annotations

import argparse
import json

NAME = "prepare"
HELP = "ingest videos, DICOM cine loops, images and frame folders into a frame store"
ORDER = 10
DESCRIPTION = """\
Decode every video (mp4, m4v, avi, mov, mpeg, gif...), DICOM file, still image
(png, jpg, bmp, tif) and folder of numbered frames found under SRC, and store
the frames as one uint8 array per video plus manifest.json in OUT.

Labels: from --labels CSV, then --label-from for inputs the CSV does not
name. With neither option, SRC/labels.csv is used if there is one (what
`uscl synth` writes; the summary says so); otherwise the store is unlabelled.

Files that cannot be read are skipped and listed, with the reason, in
OUT/skipped.csv and the summary (an unreadable image of a folder of frames is
listed on its own; the folder stays one video of its readable frames).
Re-running into the same OUT reuses every video whose file is unchanged (also
after a killed run).

Masks: a 'mask' column in the labels CSV (a mask image, video, DICOM or
folder per input, path relative to SRC), or --mask-suffix _mask to take
x_mask.png beside x.png (x_mask_1.png... are merged), clip_mask.mkv beside
clip.mp4, f_mask/ beside the frame folder f/. --mask-classes names the
values 1..K of label maps (default: one class, 'foreground', binary masks).
Masks get the frames' sampling, crop box and size (nearest neighbour) and
land in OUT/masks/; a mask that does not fit is left out (listed in
skipped.csv), its image is kept.

Large archives: --workers N decodes in N processes (default: every core
this process may use); the store is the same byte for byte. --shard K/N
ingests the K-th of N shards (on N machines; an input's shard is a hash of
its path) and writes OUT/shards/K-of-N.json instead of the manifest; then
either `uscl prepare SRC OUT` on the shared OUT (reuses every shard's work,
writes the manifest), or `uscl prepare --merge OUT_1 ... OUT_N OUT` for
separate folders (SRC not needed). Both give the store of one run.

examples:
  uscl prepare data/pocus pocus_store --labels data/pocus/labels.csv
  uscl prepare data/pocus pocus224 --labels data/pocus/labels.csv \\
      --where probe=convex --fps 3 --max-frames 30 --crop --size 224
  uscl prepare my_videos store --label-from parent
  uscl prepare pocus_videos store --label-from prefix --prefix-map Cov=covid,Pneu=pneumonia,Reg=regular
  uscl prepare lesions store --mask-suffix _mask --mask-classes lesion
  uscl prepare lung store --labels lung/labels.csv --mask-classes pleura,bline,consolidation
  uscl prepare archive store --workers 8
  for k in 1 2 3 4; do uscl prepare archive store --shard $k/4 & done; wait; uscl prepare archive store
  uscl prepare --merge store_1 store_2 store_3 store_4 store
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="folder to ingest (searched recursively); with --merge: the first shard folder")
    p.add_argument("out", help="frame store folder to create or update; with --merge: the next shard folder, "
                               "or OUT")
    p.add_argument("more", nargs="*", metavar="FOLDER", help="with --merge only: more shard folders, then OUT")
    g = p.add_argument_group("labels")
    g.add_argument("--labels", dest="labels_csv", metavar="CSV",
                   help="CSV with columns path,label[,patient,...]; path relative to SRC; "
                        "other columns are kept in each record's extra fields "
                        "(default: SRC/labels.csv if it exists and --label-from is not given)")
    g.add_argument("--label-from", choices=["parent", "prefix"],
                   help="label inputs the CSV does not name: by parent folder name, or by file-name prefix "
                        "(given alone, SRC/labels.csv is not read)")
    g.add_argument("--prefix-map", metavar="P=L,...",
                   help="prefix→label map for --label-from prefix "
                        "(default Cov=covid,Pneu=pneumonia,pneu=pneumonia,Reg=regular,Vir=viral)")
    g.add_argument("--where", action="append", metavar="COLUMN=VALUE[,VALUE]",
                   help="keep only inputs whose CSV column (or label/patient) has one of these values, "
                        "e.g. --where probe=convex; repeat to require several")
    s = p.add_argument_group("frames")
    s.add_argument("--fps", type=_positive_float, help="keep the frames nearest to multiples of 1/FPS (default: all)")
    s.add_argument("--max-frames", type=_positive_int, metavar="N", help="then keep at most N frames, evenly spaced")
    s.add_argument("--crop", action="store_true",
                   help="crop to the live image (drop black margins and text around it) and mask static "
                        "burnt-in overlays inside it to black")
    s.add_argument("--size", type=int, default=256, help="resize to SIZE×SIZE (default 256; 0 keeps native size)")
    s.add_argument("--channels", choices=["grey", "rgb"], default="grey", help="default grey (luma)")
    s.add_argument("--no-frame-folders", action="store_true",
                   help="treat every image as a still, never a folder of images as one video")
    m = p.add_argument_group("masks")
    m.add_argument("--mask-suffix", metavar="SUFFIX",
                   help="take masks named after each input: x.png → x_mask.png (and x_mask_1.png..., merged), "
                        "clip.mp4 → clip_mask.mkv, folder f → f_mask (e.g. --mask-suffix _mask); "
                        "a 'mask' column in the labels CSV is used first")
    m.add_argument("--mask-classes", metavar="NAME[,NAME...]",
                   help="names of the mask values 1..K, 0 being background (default: foreground, "
                        "a binary mask); e.g. --mask-classes pleura,bline,consolidation")
    big = p.add_argument_group("large archives")
    big.add_argument("--workers", type=_positive_int, metavar="N",
                     help="decode in N processes (default: the cores this process may use; 1: in this process)")
    big.add_argument("--shard", metavar="K/N",
                     help="ingest only the K-th of N shards of SRC (1 <= K <= N) and write OUT/shards/K-of-N.json "
                          "instead of the manifest")
    big.add_argument("--merge", action="store_true",
                     help="uscl prepare --merge OUT_1 ... OUT_N OUT: merge the folders of --shard runs into the "
                          "store OUT (no SRC needed)")
    p.add_argument("--overwrite", action="store_true", help="replace a store in OUT made with other options")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _merge(args: argparse.Namespace) -> int:
    from uscl.errors import UsclError
    from uscl.store.merge import merge_shards

    given = {"--shard": args.shard, "--labels": args.labels_csv, "--label-from": args.label_from,
             "--where": args.where, "--mask-suffix": args.mask_suffix, "--mask-classes": args.mask_classes}
    misplaced = [flag for flag, value in given.items() if value]
    if misplaced:
        raise UsclError(f"--merge takes the shard folders and OUT only ({', '.join(misplaced)} belong to the shard "
                        "runs, whose options are merged as they are)")
    *folders, out = [args.src, args.out, *args.more]
    summary = merge_shards(folders, out)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.format(args._flags))
    return 0


def run(args: argparse.Namespace) -> int:
    from uscl.errors import UsclError
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.video.labels import FoundLabelsError

    if args.merge:
        return _merge(args)
    if args.more:
        raise UsclError(f"prepare takes SRC and OUT, got {2 + len(args.more)} folders (several folders are for "
                        "--merge OUT_1 ... OUT_N OUT)")
    options = PrepareOptions(size=args.size, channels=args.channels, fps=args.fps, max_frames=args.max_frames,
                             crop=args.crop)
    try:
        summary = prepare(
            args.src, args.out, options,
            labels_csv=args.labels_csv, label_from=args.label_from, prefix_map=args.prefix_map, where=args.where,
            frame_folders=not args.no_frame_folders, overwrite=args.overwrite,
            mask_suffix=args.mask_suffix, mask_classes=args.mask_classes, workers=args.workers, shard=args.shard,
        )
    except FoundLabelsError as exc:
        raise UsclError(f"{exc.problem}\n({exc.path} was found at the root of SRC and used because neither --labels "
                        "nor --label-from was given: fix it, or pass --labels CSV or --label-from)") from None
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.format(args._flags))
    return 0
