"""``uscl synth OUT``: write the synthetic lung-ultrasound data set."""

from __future__ import annotations

NAME = "synth"
HELP = "generate synthetic lung-ultrasound videos (covid / pneumonia / regular)"
ORDER = 5
DESCRIPTION = """\
Generate synthetic B-mode lung-ultrasound videos in three classes that mimic
the POCUS task: regular (A-lines, lung sliding), covid (irregular pleura,
B-lines) and pneumonia (consolidation with air bronchograms). Writes
OUT/<class>/<Cov|Pneu|Reg>_synth_NNN.mp4 (H.264) and OUT/labels.csv
(path,label,patient). The same --seed gives byte-identical files.

--masks also writes, per video, OUT/<class>/<Name>_mask.avi: a lossless
(FFV1, gray) label video with the same frames, size and fps, each pixel
0 background, 1 pleura, 2 bline, 3 consolidation, 4 effusion (where they
overlap, the lower label wins), taken from the geometry that draws the pixels;
labels.csv gains a mask column. The videos are the same with or without it.

example:
  uscl synth data/synth --videos-per-class 30 --frames 50 --size 256 --seed 0
  uscl synth data/synth_seg --masks --videos-per-class 10 --size 128
"""


def add_arguments(parser) -> None:
    parser.add_argument("out", metavar="OUT", help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--videos-per-class", type=int, default=10, metavar="N", help="videos per class (default 10)")
    parser.add_argument("--frames", type=int, default=50, metavar="F", help="frames per video (default 50)")
    parser.add_argument("--size", type=int, default=256, metavar="S", help="frame size in pixels, even (default 256)")
    parser.add_argument("--fps", type=float, default=10.0, metavar="R", help="frame rate (default 10)")
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (default 0)")
    parser.add_argument("--classes", default="covid,pneumonia,regular",
                        help="comma-separated classes (default covid,pneumonia,regular)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT")
    parser.add_argument("--masks", action="store_true",
                        help="also write per-frame label videos <Name>_mask.avi (0 background, 1 pleura, "
                             "2 bline, 3 consolidation, 4 effusion) and a mask column in labels.csv")


def run(args) -> int:
    from uscl.synth import generate
    from uscl.synth.masks import MASK_SUFFIX

    summary = generate(
        args.out, videos_per_class=args.videos_per_class, frames=args.frames, size=args.size,
        fps=args.fps, seed=args.seed, classes=args.classes, overwrite=args.overwrite, masks=args.masks,
    )
    counts: dict[str, int] = {}
    for _, label in summary.videos:
        counts[label] = counts.get(label, 0) + 1
    per_class = ", ".join(f"{n} {label}" for label, n in counts.items())
    print(f"wrote {len(summary.videos)} videos ({per_class}) to {summary.out} in {summary.seconds:.1f} s")
    if summary.masks:
        print(f"masks: {len(summary.masks)} label videos (<Name>_mask.avi), listed in the mask column")
    print(f"labels: {summary.labels_csv}")
    if summary.removed_stale:
        n_masks = sum(rel.endswith(MASK_SUFFIX) for rel in summary.removed_stale)
        n_videos = len(summary.removed_stale) - n_masks
        extra = f" and {n_masks} masks" if n_masks else ""
        print(f"removed {n_videos} videos{extra} of an earlier run that this run did not write")
    return 0
