"""`uscl predict`: class probabilities (and Grad-CAM explanations) of a fine-tuned model on new files."""

from __future__ import annotations

import argparse
import sys

NAME = "predict"
ORDER = 50
HELP = ("predict classes (optionally with Grad-CAM maps), masks or detections of videos/images with a "
        "fine-tuned model")
DESCRIPTION = """\
Predict with a model from `uscl finetune`: per-frame class probabilities and a
video-level prediction (mean probability over frames, and the share of frames
that agree with it). MODEL is a run folder (the ensemble of all its folds,
averaging probabilities, or one fold with --fold) or one model.safetensors.
INPUT: videos, DICOM (cine or still), images, or folders of them (searched
recursively). Preprocessing (fps sampling, crop, size, channels, input size,
normalisation) is the one recorded in the model at training time.

A file that cannot be read is reported and skipped; the exit status is
non-zero only when nothing could be predicted.

With --out DIR: frames.csv, videos.csv, predictions.json (and skipped.csv).
The CSVs grow as inputs are predicted (memory stays flat however many there
are); predictions.json is written at the end. --resume continues a run into
the same DIR that was interrupted (killed, crashed), skipping the inputs it
had already written. --workers N decodes in N processes ahead of the model
(1: in this process; default: every core on a GPU, 1 on the CPU, where the
model needs the cores); the results are the same whatever N.

With --explain: Grad-CAM maps of the last convolutional features (a ResNet's
layer4; each backbone family's own) for the predicted class (or --class),
under DIR/explain/<input>/ (overlay PNGs, overlay.mp4, sheet.png, cam.npy).
An ensemble's maps are the mean of its folds' maps.

A segmentation model (`uscl finetune --task segment`) gives label masks
instead (per pixel the arg-max of the probabilities, averaged over the folds
of an ensemble; value 0 background, k the k-th mask class). With --out DIR:
DIR/<input>/masks/frame_00000.png (8-bit, value = class), DIR/<input>/overlays/
frame_00000.png (each class filled and outlined in its colour: red, green,
yellow, blue, ... in the order of the mask classes), DIR/<input>/overlay.mp4
for clips, segments.csv (pixel area of each class per frame) and
predictions.json (per input: mean area and share of frames with each class).

A detection model (`uscl finetune --task detect`) gives instances: boxes,
instance masks and scores of one fold's Mask R-CNN (--fold K; default the
run's first fold, as the output says: the instance sets of different folds do
not average, so there is no ensemble). Detections scoring below
--score-threshold (default 0.5) are dropped. With --out DIR: DIR/<input>/
overlays/frame_00000.png (each instance's mask outline, box and "class score"
label in its class's colour), DIR/<input>/overlay.mp4 for clips,
detections.csv (input, frame, class, score, x1, y1, x2, y2 in stored-frame
pixels, x2/y2 exclusive) and predictions.json (per input: per class the number
of detections and the share of frames with one).

example:
  uscl predict runs/ft_pocus clips/patient7.mp4 more_clips/ --fold 0 --explain --out preds
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="`uscl finetune` run folder, fold folder or model.safetensors")
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="video/DICOM/image files or folders of them")
    p.add_argument("--out", metavar="DIR", help="write frames.csv, videos.csv, predictions.json here")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--fold", type=int, metavar="K", help="use fold K of a run folder")
    which.add_argument("--ensemble", action="store_true", help="average all folds' probabilities (the default)")
    p.add_argument("--explain", action="store_true", help="Grad-CAM overlays per input (needs --out)")
    p.add_argument("--class", dest="class_name", metavar="NAME", help="class to explain (default: the predicted one)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="frames per forward pass (default 64; 16 for a segmentation, 4 for a detection model)")
    p.add_argument("--score-threshold", type=float, default=None, metavar="S",
                   help="detection models: keep detections scoring at least S (default 0.5)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no bf16 autocast on CUDA")
    p.add_argument("--quiet", action="store_true", help="no table on the terminal")
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out folder")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run into --out, skipping the inputs already written there")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="decoding processes ahead of the model (1: in this process; default: every core with a GPU, "
                        "1 on the CPU)")


def run(args: argparse.Namespace) -> int:
    from uscl.errors import UsclError
    from uscl.infer.explain import ExplainOptions, Explainer
    from uscl.infer.inputs import gather_inputs
    from uscl.infer.model import CLASSIFY, DETECT, SEGMENT, TASK_NAMES, load_model
    from uscl.infer.prediction_files import PredictionWriter
    from uscl.infer.predict import format_table, predict_items, resolve_device
    from uscl.utils.atomic import Streamed

    if args.explain and not args.out:
        raise UsclError("--explain writes images: give --out DIR")
    if args.class_name and not args.explain:
        raise UsclError("--class chooses the class --explain explains; add --explain")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsclError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.resume and not args.out:
        raise UsclError("--resume continues a run written to --out: give --out DIR")
    model = load_model(args.model, args.fold)
    device = resolve_device(args.device)
    if args.resume and model.task != CLASSIFY:
        raise UsclError(f"--resume continues classification runs; {args.model} is a {TASK_NAMES[model.task]} "
                        "model: predict into a new --out folder")
    if model.task == DETECT:
        return _run_detect(args, model, device)
    if args.score_threshold is not None:
        raise UsclError(f"--score-threshold applies to detection models; {args.model} is a "
                        f"{TASK_NAMES[model.task]} model")
    if model.task == SEGMENT:
        return _run_segment(args, model, device)
    args.batch_size = 64 if args.batch_size is None else args.batch_size
    explainer = None
    if args.explain:  # checked before the output folder is touched
        explainer = Explainer(model, args.out, ExplainOptions(class_name=args.class_name, device=str(device)))
    print(f"model: {model.describe()}; device {device}", file=sys.stderr)
    items = gather_inputs(args.inputs)
    writer = None
    if args.out:
        out = _output_dir(args)
        writer = PredictionWriter(out, model, str(device), resume=args.resume)
        if writer.done:
            print(f"resuming: {len(writer.done)} input(s) already in {out}", file=sys.stderr)
            items = [it for it in items if it.name not in writer.done]

    def on_skip(name: str, reason: str) -> None:
        print(f"skipped {name}: {reason}", file=sys.stderr)

    def on_result(pred) -> None:
        record = explainer(pred) if explainer else None
        if writer is not None:
            writer.add(pred, explainer.record_dict(record) if record is not None else None)

    table = writer is None or len(items) <= TABLE_MAX
    run_ = predict_items(model, items, batch_size=args.batch_size, device=device, amp=args.amp,
                         on_skip=on_skip, on_result=on_result, workers=_workers(args, device), keep_results=table)
    if not args.quiet:
        print(format_table(run_) if table else f"predicted {run_.predicted} inputs, skipped {len(run_.skipped)} "
              f"(the table is in {writer.out / 'videos.csv'})")
    if writer is not None and writer.done:
        extra = {"explain": {**explainer.describe(), "inputs": Streamed("explain")}} if explainer else {}
        paths = writer.close(run_.skipped, extra)
        print(f"wrote {', '.join(str(p) for p in paths.values())}"
              + (f"; explanations under {writer.out / 'explain'}" if explainer else ""), file=sys.stderr)
    if not run_.predicted and not (writer and writer.done):
        print(f"nothing could be predicted: all {len(run_.skipped)} input(s) were skipped", file=sys.stderr)
        return 1
    return 0


TABLE_MAX = 200  # more inputs than this: no terminal table (and no results held in memory)


def _workers(args: argparse.Namespace, device) -> int:
    """--workers; by default every core on a GPU (decoding is then what waits), none on the CPU, where the
    model needs the same cores (benchmarks/RESULTS.md: 2 decoding processes on 2 cores ran x0.71)."""
    from uscl.errors import UsclError
    from uscl.utils.ordered_pool import available_cores

    if args.workers is None:
        return available_cores() if getattr(device, "type", str(device)) == "cuda" else 1
    if args.workers < 1:
        raise UsclError(f"--workers must be at least 1, got {args.workers}")
    return args.workers


def _output_dir(args: argparse.Namespace):
    """--out, new (or --overwrite) or, with --resume, as the interrupted run left it."""
    from pathlib import Path

    from uscl.errors import UsclError
    from uscl.utils.atomic import prepare_output_dir

    if args.resume:
        if args.overwrite:
            raise UsclError("--resume continues the run in --out; --overwrite would start it again: give one")
        path = Path(args.out)
        if path.exists() and not path.is_dir():
            raise UsclError(f"{path} exists and is not a folder")
        path.mkdir(parents=True, exist_ok=True)
        return path
    return prepare_output_dir(args.out, overwrite=args.overwrite, marker="predictions.json")


def _run_segment(args: argparse.Namespace, model, device) -> int:
    """`uscl predict` on a segmentation model: label masks, overlays, segments.csv, predictions.json."""
    from uscl.infer.inputs import gather_inputs
    from uscl.infer.model import CLASSIFY, SEGMENT, check_task
    from uscl.infer.segment import SegmentWriter, format_segment_table, predict_segment_items, write_segment_outputs
    from uscl.utils.atomic import prepare_output_dir

    if args.explain or args.class_name:
        check_task(SEGMENT, CLASSIFY, args.model, "--explain and --class (Grad-CAM of a class score) need a "
                   "classification model; a segmentation model's masks and overlays (--out) show what it found")
    out = prepare_output_dir(args.out, overwrite=args.overwrite, marker="predictions.json") if args.out else None
    print(f"model: {model.describe()} (segmentation); device {device}", file=sys.stderr)

    def on_skip(name: str, reason: str) -> None:
        print(f"skipped {name}: {reason}", file=sys.stderr)

    run_ = predict_segment_items(model, gather_inputs(args.inputs), batch_size=args.batch_size or 16,
                                 device=device, amp=args.amp, on_skip=on_skip, workers=_workers(args, device),
                                 on_result=SegmentWriter(model, out) if out is not None else None)
    if not args.quiet:
        print(format_segment_table(run_))
    if out is not None and run_.results:
        paths = write_segment_outputs(run_, out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}; masks and overlays under {out}/<input>/",
              file=sys.stderr)
    if not run_.results:
        print(f"nothing could be predicted: all {len(run_.skipped)} input(s) were skipped", file=sys.stderr)
        return 1
    return 0


def _run_detect(args: argparse.Namespace, model, device) -> int:
    """`uscl predict` on a detection model: one fold's instances, overlays, detections.csv, predictions.json."""
    from uscl.errors import UsclError
    from uscl.finetune.detect.fold import SCORE_THRESHOLD
    from uscl.infer.detect import DetectWriter, format_detect_table, predict_detect_items, write_detect_outputs
    from uscl.infer.inputs import gather_inputs
    from uscl.infer.model import CLASSIFY, DETECT, check_task
    from uscl.utils.atomic import prepare_output_dir

    if args.explain or args.class_name:
        check_task(DETECT, CLASSIFY, args.model, "--explain and --class (Grad-CAM of a class score) need a "
                   "classification model; a detection model's overlays (--out) show what it found")
    if args.ensemble:
        raise UsclError("--ensemble: a detection run's folds are not averaged (their instance sets do not "
                        "average; combining them would be a new method such as weighted box fusion); "
                        "pick one with --fold K (default: the first fold)")
    threshold = SCORE_THRESHOLD if args.score_threshold is None else args.score_threshold
    if not 0.0 <= threshold <= 1.0:
        raise UsclError(f"--score-threshold must be in [0, 1], got {threshold}")
    out = prepare_output_dir(args.out, overwrite=args.overwrite, marker="predictions.json") if args.out else None
    print(f"model: {model.describe()} (detection); device {device}", file=sys.stderr)

    def on_skip(name: str, reason: str) -> None:
        print(f"skipped {name}: {reason}", file=sys.stderr)

    run_ = predict_detect_items(model, gather_inputs(args.inputs), score_threshold=threshold,
                                batch_size=args.batch_size or 4, device=device, on_skip=on_skip,
                                workers=_workers(args, device),
                                on_result=DetectWriter(model, out) if out is not None else None)
    if not args.quiet:
        print(format_detect_table(run_))
    if out is not None and run_.results:
        paths = write_detect_outputs(run_, out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}; overlays under {out}/<input>/", file=sys.stderr)
    if not run_.results:
        print(f"nothing could be predicted: all {len(run_.skipped)} input(s) were skipped", file=sys.stderr)
        return 1
    return 0
