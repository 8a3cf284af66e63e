"""Reports of a fine-tuning run or a comparison of inits, recomputed from saved predictions.

``report(path)`` takes a run folder (``metrics.json`` of ``uscl finetune``) or a
comparison folder (``comparison.json`` of ``uscl compare``), recomputes every
metric from ``fold{k}/predictions.csv`` and writes ``report.md``,
``metrics.json`` and PNG plots beside them. Against the baseline (``random``
when present) it gives the paired per-fold difference, because the inits share
the same folds and fold-to-fold variation would otherwise swamp the effect.

A run of only some folds (``only_folds``, ``--only-folds``) is reported as such ("folds 0, 2
of 5 only") wherever its numbers appear; runs are paired only when they cover
the same folds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from uscl.errors import UsclError
from uscl.finetune import metrics as M
from uscl.finetune.config import SELECTED_ON_TEST
from uscl.finetune.predictions import read_predictions
from uscl.finetune.pretraining_labels import LEAKAGE_NOTE
from uscl.report import plots
from uscl.report.dense import dense_report
from uscl.utils.atomic import atomic_write_json, atomic_write_text

COMPARISON_FORMAT = "uscl-finetune-comparison"
TABLE_METRICS = (("accuracy", "acc"), ("balanced_accuracy", "bal. acc"), ("macro_f1", "macro-F1"), ("roc_auc", "AUC"))


# -- loading -------------------------------------------------------------------------------
def load_run(run_dir: str | Path) -> dict:
    """A run's metadata and metrics recomputed from its per-fold predictions and histories."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise UsclError(f"{run_dir} is not a finished fine-tuning run (no metrics.json)")
    meta = json.loads(path.read_text())
    classes = meta["classes"]
    folds, preds, histories = [], [], []
    for f in meta["folds"]:
        k = f["fold"]
        p = read_predictions(run_dir / f"fold{k}" / "predictions.csv", classes)
        fm = M.fold_metrics(p.video_ids, p.labels, p.probs, classes)
        folds.append({**{x: f.get(x) for x in ("fold", "selected_epoch", "n_train_videos", "n_val_videos", "n_test_videos")}, **fm})
        preds.append(p)
        histories.append(_read_history(run_dir / f"fold{k}" / "history.csv"))
    pooled = M.pooled_metrics([v for p in preds for v in p.video_ids], np.concatenate([p.labels for p in preds]),
                              np.concatenate([p.probs for p in preds]), classes)
    folds_run = [f["fold"] for f in folds]
    coverage = M.folds_coverage(folds_run, meta["n_folds"])
    metrics = {**meta, "folds_run": folds_run, "complete": coverage is None, "coverage": coverage,
               "folds": folds, "summary": M.summarize(folds, classes, pooled)}
    return {"dir": run_dir, "metrics": metrics, "predictions": preds, "histories": [h for h in histories if h]}


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _fold_tests(run_dir: Path, folds_run: list[int] | None = None) -> list[list[str]]:
    """Test videos of each fold the run evaluated (all folds of its splits.json when ``folds_run`` is None)."""
    data = json.loads((run_dir / "splits.json").read_text())
    return [sorted(f["test"]) for f in data["folds"] if folds_run is None or f["index"] in folds_run]


def label_of(metrics: dict, name: str | None = None) -> str:
    name = name or metrics["init"]
    return f"{name} [{SELECTED_ON_TEST}]" if metrics.get("selected_on_test") else name


# -- comparison arithmetic ----------------------------------------------------------------------------
def comparison_data(runs: dict[str, dict], baseline: str | None = None) -> dict:
    """Summary per init and paired per-fold differences against the baseline init."""
    names = list(runs)
    if not names:
        raise UsclError("nothing to compare: no finished runs")
    baseline = baseline if baseline in runs else ("random" if "random" in runs else names[0])
    tests = {n: _fold_tests(r["dir"], r["metrics"].get("folds_run")) for n, r in runs.items()}
    same_folds = all(t == tests[baseline] for t in tests.values())
    out = {
        "format": COMPARISON_FORMAT,
        "version": 1,
        "baseline": baseline,
        "same_folds": same_folds,
        "classes": runs[baseline]["metrics"]["classes"],
        "runs": {},
        "paired_vs_baseline": {},
    }
    for n, r in runs.items():
        m = r["metrics"]
        out["runs"][n] = {
            "dir": r["dir"].name,
            "init_spec": m.get("init_spec"),
            "mode": m.get("mode"),
            "arch": m.get("arch"),
            "selection": m.get("selection"),
            "n_folds": m.get("n_folds"),
            "folds_run": m.get("folds_run"),
            "coverage": m.get("coverage"),  # e.g. "folds 0, 2 of 5 only"; None for a full k-fold run
            "selected_on_test": bool(m.get("selected_on_test")),
            "label_leakage": m.get("pretraining_label_leakage"),
            "warning": m.get("warning") or (SELECTED_ON_TEST if m.get("selected_on_test") else None),
            "summary": {lvl: {k: m["summary"][lvl][k] for k, _ in TABLE_METRICS} for lvl in ("frame", "video")},
            "pooled": {lvl: {k: m["summary"]["pooled"][lvl][k] for k, _ in TABLE_METRICS} for lvl in ("frame", "video")},
        }
        if n == baseline or not same_folds:
            continue
        out["paired_vs_baseline"][n] = {
            lvl: {k: M.paired_difference(m["summary"][lvl][k]["values"],
                                         runs[baseline]["metrics"]["summary"][lvl][k]["values"])
                  for k, _ in TABLE_METRICS}
            for lvl in ("frame", "video")
        }
    return out


def _pm(d: dict | None) -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    return f"{d['mean']:.3f} ± {d['std']:.3f}"


def markdown_table(data: dict) -> str:
    """One row per init: mean ± std over folds of each metric, frame and video level."""
    cols = [f"{lvl} {short}" for lvl in ("frame", "video") for _, short in TABLE_METRICS]
    lines = ["| init | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for n, r in data["runs"].items():
        name = f"{n} **[{SELECTED_ON_TEST}]**" if r["selected_on_test"] else n
        if r.get("label_leakage"):
            name += f" **[{LEAKAGE_NOTE}]**"
        if r.get("coverage"):
            name += f" ({r['coverage']})"
        cells = [_pm(r["summary"][lvl][k]) for lvl in ("frame", "video") for k, _ in TABLE_METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(data: dict) -> str:
    if not data["paired_vs_baseline"]:
        if not data["same_folds"]:
            covered = "; ".join(f"{n}: {r.get('coverage') or 'all folds'}" for n, r in data["runs"].items())
            return f"_The runs do not share the same folds ({covered}): no paired comparison._"
        return "_Only one init: nothing to compare against._"
    lines = [f"Paired per-fold difference vs **{data['baseline']}** (same folds; positive = better than the baseline):",
             "", "| init | level | metric | Δ mean ± std | per-fold Δ | better in folds | paired t-test p |",
             "|---|---|---|---|---|---|---|"]
    for n, levels in data["paired_vs_baseline"].items():
        for lvl, per in levels.items():
            for k, short in TABLE_METRICS:
                d = per[k]
                if d["mean"] is None:
                    continue
                folds = ", ".join("n/a" if x is None else f"{x:+.3f}" for x in d["diff"])
                p = "n/a" if d["p_value"] is None else f"{d['p_value']:.3f}"
                lines.append(f"| {n} | {lvl} | {short} | {d['mean']:+.3f} ± {d['std']:.3f} | {folds} | "
                             f"{d['wins']}/{d['n']} | {p} |")
    return "\n".join(lines)


def winner_sentence(data: dict) -> str:
    runs = data["runs"]
    best = max(runs, key=lambda n: runs[n]["summary"]["video"]["accuracy"]["mean"] or -1)
    b = runs[best]["summary"]
    s = (f"Best video-level accuracy: **{best}** ({_pm(b['video']['accuracy'])}; frame level "
         f"{_pm(b['frame']['accuracy'])}).")
    pair = data["paired_vs_baseline"].get(best)
    if pair:
        d = pair["video"]["accuracy"]
        s += (f" Against {data['baseline']}: {d['mean']:+.3f} video accuracy on average, better in {d['wins']} of "
              f"{d['n']} folds.")
    if any(r["selected_on_test"] for r in runs.values()):
        s += f" **Some runs were {SELECTED_ON_TEST}.**"
    return s


# -- writing ----------------------------------------------------------------------------------
def _task_of(path: Path) -> str:
    """The task of a run (its metrics.json) or of a comparison (its comparison.json)."""
    for name in ("comparison.json", "metrics.json"):
        if (path / name).is_file():
            try:
                return json.loads((path / name).read_text()).get("task") or "classify"
            except (OSError, ValueError):
                return "classify"
    return "classify"


def report(path: str | Path) -> Path:
    """Write report.md, metrics.json and plots for a run or a comparison folder; returns report.md."""
    path = Path(path)
    if _task_of(path) != "classify":
        return dense_report(path)
    if (path / "comparison.json").is_file():
        comp = json.loads((path / "comparison.json").read_text())
        runs = {n: load_run(path / r["dir"]) for n, r in comp["runs"].items()}
        baseline = comp.get("baseline")
        title = f"Comparison of initialisations: {path.name}"
    elif (path / "metrics.json").is_file():
        run = load_run(path)
        runs = {run["metrics"]["init"]: run}
        baseline = None
        title = f"Fine-tuning run: {path.name}"
    else:
        raise UsclError(f"{path} holds neither a fine-tuning run (metrics.json) nor a comparison (comparison.json)")
    data = comparison_data(runs, baseline)
    classes = data["classes"]
    figs = write_plots(path, runs, classes)
    single = len(runs) == 1
    if single:
        atomic_write_json(path / "metrics.json", next(iter(runs.values()))["metrics"])
    else:
        atomic_write_json(path / "metrics.json", {**data, "per_init": {n: r["metrics"] for n, r in runs.items()}})
    atomic_write_text(path / "report.md", render_markdown(title, data, runs, figs))
    return path / "report.md"


def write_plots(path: Path, runs: dict[str, dict], classes) -> list[Path]:
    figs = []
    multi = len(runs) > 1
    for n, r in runs.items():
        m = r["metrics"]
        pooled = m["summary"]["pooled"]
        sfx = f"_{n}" if multi else ""
        figs.append(plots.confusion_matrices(
            path / f"confusion{sfx}.png",
            {"frames (pooled over folds)": pooled["frame"]["confusion_matrix"],
             "videos (pooled over folds)": pooled["video"]["confusion_matrix"]},
            classes, label_of(m, n)))
        y = np.concatenate([p.labels for p in r["predictions"]])
        pr = np.concatenate([p.probs for p in r["predictions"]])
        figs.append(plots.roc_curves(path / f"roc{sfx}.png", y, pr, classes, f"ROC, frames: {label_of(m, n)}"))
    # bars aligned by fold index, so runs of different folds (only_folds) do not shift
    indices = sorted({f["fold"] for r in runs.values() for f in r["metrics"]["folds"]})
    per_init = {}
    for n, r in runs.items():
        by_fold = {f["fold"]: f for f in r["metrics"]["folds"]}
        per_init[label_of(r["metrics"], n)] = {
            lvl: [by_fold[k][lvl]["accuracy"] if k in by_fold else None for k in indices] for lvl in ("frame", "video")}
    coverage = next((r["metrics"].get("coverage") for r in runs.values() if r["metrics"].get("coverage")), None)
    figs.append(plots.fold_accuracy(path / "fold_accuracy.png", per_init,
                                    "test accuracy per fold" + (f" ({coverage})" if coverage else ""),
                                    fold_labels=[f"fold {k}" for k in indices]))
    hist = {n: r["histories"] for n, r in runs.items() if r["histories"]}
    if hist:
        figs.append(plots.training_curves(path / "training_curves.png", hist, "training curves"))
    return figs


def render_markdown(title: str, data: dict, runs: dict, figs: list[Path]) -> str:
    any_test = any(r["selected_on_test"] for r in data["runs"].values())
    first = next(iter(runs.values()))["metrics"]
    coverages = sorted({r.get("coverage") for r in data["runs"].values() if r.get("coverage")})
    lines = [f"# {title}", ""]
    if coverages:
        partial = (f"> **Partial cross-validation: {'; '.join(coverages)}** (`only_folds`, `--only-folds`). "
                   f"The numbers below cover those folds only; they are not a full {first['n_folds']}-fold "
                   "estimate. Fill in the other folds by resuming the run (`resume`: `uscl finetune --resume` "
                   "or `uscl compare --resume`).")
        lines += [partial, ""]
    leaky = {n: r["label_leakage"] for n, r in data["runs"].items() if r.get("label_leakage")}
    for n, leak in leaky.items():
        lines += [f"> **WARNING: {LEAKAGE_NOTE} ({n}).** {leak['note'][0].upper() + leak['note'][1:]}. "
                  "Run with `allow_pretraining_labels` (`--allow-pretraining-labels`); pretrain with method "
                  "`uscl-selfsup` (`--method uscl-selfsup`) or on other videos for an honest estimate.", ""]
    if any_test:
        lines += [f"> **WARNING: {SELECTED_ON_TEST}.** Runs marked so kept, per fold, the epoch with the best "
                  "accuracy on the test fold (the original release's protocol); their numbers are inflated.", ""]
    lines += [
        f"Classes: {', '.join(data['classes'])}. Folds: "
        f"{'; '.join(coverages) if coverages else first['n_folds']} ({first.get('split_method')}), "
        f"split by video/patient, the same for every init: {'yes' if data['same_folds'] else 'NO'}.",
        f"Store: `{first.get('store')}` (id {first.get('store_id')}). Mode: {first.get('mode')}, arch {first.get('arch')}.",
        "Metrics: mean ± std (ddof 1) over folds; video level = mean of frame probabilities per video.",
        "",
        winner_sentence(data),
        "",
        "## Results",
        "",
        markdown_table(data),
        "",
        "## Paired difference",
        "",
        paired_table(data),
        "",
        "## Per init",
    ]
    for n, r in runs.items():
        m = r["metrics"]
        s = m["summary"]
        lines += ["", f"### {label_of(m, n)}", "",
                  f"Init `{m.get('init_spec')}`; model selection: {m.get('selection')}.", "",
                  "| fold | test videos | selected epoch | frame acc | video acc | frame macro-F1 | frame AUC |",
                  "|---|---|---|---|---|---|---|"]
        for f in m["folds"]:
            auc = f["frame"]["roc_auc"]
            lines.append(f"| {f['fold']} | {f.get('n_test_videos')} | {f.get('selected_epoch') or '-'} | "
                         f"{f['frame']['accuracy']:.3f} | {f['video']['accuracy']:.3f} | {f['frame']['macro_f1']:.3f} | "
                         f"{'n/a' if auc is None else f'{auc:.3f}'} |")
        lines += ["", "Per class (frames, mean ± std over folds):", "",
                  "| class | precision | recall | F1 | AUC |", "|---|---|---|---|---|"]
        for c, d in s["frame"]["per_class"].items():
            lines.append(f"| {c} | {_pm(d['precision'])} | {_pm(d['recall'])} | {_pm(d['f1'])} | {_pm(d['roc_auc'])} |")
        pooled = s["pooled"]
        lines += ["", f"Pooled over folds: frame accuracy {pooled['frame']['accuracy']:.3f} "
                      f"({pooled['frame']['n']} frames), video accuracy {pooled['video']['accuracy']:.3f} "
                      f"({pooled['video']['n']} videos)."]
    lines += ["", "## Figures", ""]
    lines += [f"![{f.stem}]({f.name})" for f in figs]
    return "\n".join(lines) + "\n"
