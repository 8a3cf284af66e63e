"""report.md and loss curves for a pretraining run folder (from its metrics.csv and checkpoints).

When a labelled probe store is known (``probe.store`` of the run's config, or ``probe_store`` given),
the report adds what the exported backbone's frozen features separate on it (:mod:`uscl.report.embed`:
kNN class accuracy across videos, video purity, the t-SNE map by class) from ``RUN/embedding/``;
cheap: ``probe.frames_per_video`` frames per video.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from uscl.errors import UsclError
from uscl.pretrain.config import load_config
from uscl.report.plots import pyplot, save_figure
from uscl.utils.atomic import atomic_write_text

CURVES = "pretrain_curves.png"


def is_pretrain_run(path: str | Path) -> bool:
    path = Path(path)
    return (path / "metrics.csv").is_file() and (path / "config.yaml").is_file() and (path / "last.json").is_file()


def _rows(path: Path) -> list[dict]:
    with open(path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise UsclError(f"{path}/metrics.csv has no epochs yet")
    out = []
    for r in rows:
        out.append({k: (float(v) if v not in ("", None) else math.nan) for k, v in r.items()})
    return out


def _curves(path: Path, rows: list[dict], best_epoch: int | None) -> Path:
    plt = pyplot()
    ep = [int(r["epoch"]) for r in rows]
    fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_l.plot(ep, [r["contrastive_loss"] for r in rows], label="train contrastive")
    if any(not math.isnan(r.get("val_loss", math.nan)) for r in rows):
        ax_l.plot(ep, [r["val_loss"] for r in rows], "--", label="validation contrastive (unaugmented)")
    if any(r.get("supervised_loss", 0) > 0 for r in rows):
        ax_l.plot(ep, [r["supervised_loss"] for r in rows], ":", label="train supervised")
    if best_epoch:
        ax_l.axvline(best_epoch, color="grey", lw=0.8, label=f"best epoch {best_epoch}")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("loss")
    ax_l.legend(fontsize=7)
    probed = [r for r in rows if not math.isnan(r.get("probe_linear_acc", math.nan))]
    if probed:  # the online probe's accuracies on a second axis
        acc = ax_l.twinx()
        for key, style in (("probe_knn_acc", "o-"), ("probe_linear_acc", "s-")):
            acc.plot([int(r["epoch"]) for r in probed], [r[key] for r in probed], style, ms=3, color="tab:red",
                     alpha=0.8 if key.endswith("linear_acc") else 0.45, label=key.replace("_", " "))
        acc.set_ylabel("probe video accuracy", color="tab:red")
        acc.legend(fontsize=7, loc="lower right")
    ax_r.plot(ep, [r["lr"] for r in rows], color="tab:green")
    ax_r.set_xlabel("epoch")
    ax_r.set_ylabel("learning rate", color="tab:green")
    speed = ax_r.twinx()
    speed.plot(ep, [r["images_per_s"] for r in rows], color="tab:purple", alpha=0.6)
    speed.set_ylabel("images/s", color="tab:purple")
    fig.suptitle(f"pretraining: {path.name}")
    return save_figure(fig, path / CURVES)


EMBED_DIR = "embedding"


def _embedding_lines(path: Path, cfg, probe_store: str | None, embed: bool, log) -> list[str]:
    """The embedding section: numbers and class map of the run's backbone on the probe store (or nothing)."""
    from uscl.report.embed import EmbedSettings
    from uscl.report.embed import embed as run_embed
    from uscl.report.embed_report import numbers_lines, reading

    store = probe_store or cfg.probe.store
    if not embed or not store:
        return []
    if probe_store is None and not Path(store).is_dir():
        return [f"Embedding: the probe store `{store}` is not there any more; give it with --probe-store.", ""]
    settings = EmbedSettings(frames_per_video=cfg.probe.frames_per_video, k=8, map="tsne")
    summary = run_embed(str(path), store, path / EMBED_DIR, settings, overwrite=True, log=log).summary
    return [f"## What the backbone's features separate (probe store `{store}`)", "",
            f"Frozen features of {summary['counts']['frames']} frames ({cfg.probe.frames_per_video} per video) of "
            f"{summary['counts']['videos']} videos; details in `{EMBED_DIR}/embed.md`.", "",
            *numbers_lines(summary), "", reading(summary), "",
            f"![t-SNE map by class]({EMBED_DIR}/map_class.png) ![by video]({EMBED_DIR}/map_video.png)", ""]


def pretrain_report(path: str | Path, probe_store: str | None = None, embed: bool = True, log=print) -> Path:
    """Write RUN/report.md and RUN/pretrain_curves.png; returns report.md. With a probe store
    (``probe_store``, else the run's ``probe.store``) and ``embed``, also RUN/embedding/ and its section."""
    path = Path(path)
    if not is_pretrain_run(path):
        raise UsclError(f"{path} is not a pretraining run folder (needs metrics.csv, config.yaml, last.json)")
    rows = _rows(path)
    cfg = load_config(path / "config.yaml")
    last = json.loads((path / "last.json").read_text())
    best = json.loads((path / "best.json").read_text()) if (path / "best.json").is_file() else {}
    backbone = json.loads((path / "backbone.json").read_text()) if (path / "backbone.json").is_file() else {}
    labelled = json.loads((path / "labelled_videos.json").read_text()) if (path / "labelled_videos.json").is_file() else {}
    figure = _curves(path, rows, best.get("epoch"))
    probed = [r for r in rows if not math.isnan(r.get("probe_linear_acc", math.nan))]
    supervised = [v for v in labelled.get("videos") or [] if v.get("used_for") != "probe"]
    by_probe = [v for v in labelled.get("videos") or [] if v.get("used_for") == "probe"]
    first, final = rows[0], rows[-1]
    seconds = sum(r["epoch_time_s"] for r in rows)

    def fmt(x):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"

    lines = [
        f"# Pretraining run `{path.name}`",
        "",
        f"Method **{cfg.method}** ({cfg.arch}, {cfg.dataset.image_size} px, batch {cfg.batch_size} videos), "
        f"store `{cfg.store}` (id {last.get('store_id')}). Epochs run: {len(rows)} of {cfg.epochs}"
        + ("" if len(rows) >= cfg.epochs
           else " (**unfinished**: resuming continues it: `resume`, `uscl pretrain --resume`)") + ".",
        f"Labels used by the supervised term: {len(supervised)} videos"
        + (" (fine-tuning refuses to test on them; see labelled_videos.json)." if supervised else "."),
        *([f"Labels used by the online probe that chose the checkpoint: {len(by_probe)} videos (fine-tuning "
           "refuses to test on them too)."] if by_probe else []),
        "",
        "| | epoch | train contrastive | validation contrastive |",
        "|---|---:|---:|---:|",
        f"| first | {int(first['epoch'])} | {fmt(first['contrastive_loss'])} | {fmt(first.get('val_loss'))} |",
        f"| last | {int(final['epoch'])} | {fmt(final['contrastive_loss'])} | {fmt(final.get('val_loss'))} |",
    ]
    if best:
        lines.append(f"| best ({best.get('selected_by', 'val_loss').replace('_', ' ')}) | {best.get('epoch')} | "
                     f"{fmt(best.get('train_loss'))} | {fmt(best.get('val_loss'))} |")
    lines += [
        "",
        f"`backbone.safetensors` (torchvision keys) holds the **{backbone.get('source', cfg.select)}** checkpoint"
        + (f", epoch {backbone.get('epoch')}" if backbone.get("epoch") else "")
        + f" (`select: {cfg.select}`).",
        *([f"Online probe (video accuracy over video-level folds): last kNN {fmt(probed[-1]['probe_knn_acc'])}, "
           f"linear {fmt(probed[-1]['probe_linear_acc'])}; best linear {fmt(max(r['probe_linear_acc'] for r in probed))}; "
           f"{fmt(sum(r['probe_s'] for r in probed) / len(probed))} s per probe."] if probed else []),
        f"Training time: {seconds / 60:.1f} min over {len(rows)} epochs; last epoch "
        f"{final['images_per_s']:.1f} images/s, {100 * final.get('data_wait_share', 0):.0f}% of it waiting for data.",
        "",
        f"![loss curves]({figure.name})",
        "",
    ]
    lines += _embedding_lines(path, cfg, probe_store, embed, log)
    atomic_write_text(path / "report.md", "\n".join(lines))
    return path / "report.md"
