"""`uscl report`: report.md, metrics.json and plots for a fine-tuning run or a comparison."""

from __future__ import annotations

import argparse
import json

NAME = "report"
ORDER = 42
HELP = "write report.md and plots for a finetune run, a compare folder or a pretraining run"
DESCRIPTION = """\
Recompute every metric from the saved per-fold predictions of a `uscl finetune`
run or a `uscl compare` folder and write report.md, metrics.json and PNG plots
(confusion matrices, per-fold accuracy, ROC curves, training curves) into it.
For a `uscl pretrain` run folder: report.md with the losses, the exported
checkpoint and the labels used, and pretrain_curves.png; with a labelled probe
store (the run's probe.store, or --probe-store) also what the backbone's frozen
features separate on it (`uscl embed`: kNN class accuracy across videos, video
purity, t-SNE map) in RUN/embedding/.

examples:
  uscl report runs/compare
  uscl report runs/uscl          # a pretraining run
  uscl report runs/uscl --probe-store pocus112
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a finetune run folder, a compare folder or a pretraining run folder")
    p.add_argument("--probe-store", dest="probe_store", default=None,
                   help="pretraining run: labelled store to embed the backbone's frames of (default: the run's "
                        "probe.store, if any)")
    p.add_argument("--no-embed", dest="embed", action="store_false",
                   help="pretraining run: leave the embedding section out")


def run(args: argparse.Namespace) -> int:
    from uscl.report import is_pretrain_run, pretrain_report, report

    if is_pretrain_run(args.path):
        path = pretrain_report(args.path, probe_store=args.probe_store, embed=args.embed)
        print(f"wrote {path} and {path.parent / 'pretrain_curves.png'}"
              + (" (and embedding/)" if "](embedding/" in path.read_text() else ""))
        return 0

    if args.probe_store:
        from uscl.errors import UsclError

        raise UsclError(f"{args.path} is not a pretraining run: --probe-store is for pretraining runs "
                        "(embed any backbone with `uscl embed`)", param="probe_store")
    path = report(args.path)
    dense = (path.parent / "report.json").is_file()  # segmentation / detection: report.json, metrics.json untouched
    metrics = json.loads((path.parent / ("report.json" if dense else "metrics.json")).read_text())
    runs = metrics.get("runs", {}).values() if dense else [metrics, *metrics.get("per_init", {}).values()]
    partial = sorted({m["coverage"] for m in runs if m.get("coverage")})
    print(f"wrote {path} (and {'report.json' if dense else 'metrics.json'}, *.png beside it)"
          + (f"; note: partial cross-validation ({'; '.join(partial)}), not a full k-fold estimate" if partial else ""))
    return 0
