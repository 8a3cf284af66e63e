"""``uscl study``: does pretraining help this task, compared with what one would otherwise do,
by how much, and with what uncertainty?

For each method × pretraining seed, pretrain a backbone (the final epoch is kept: no
checkpoint is chosen with labels), then evaluate every backbone, random init and, when a
local file is given, ImageNet weights, on the SAME video-level folds in each mode. The
report gives mean and 95% CI per init (over seeds × folds, and over seeds alone), per-seed
rows, paired differences against random init and against the best baseline (CI, folds
won), a plot with one point per seed and fold, and optionally a label-fraction curve
(fine-tuning on 10/25/50/100% of each training fold's videos, nested subsets). Each backbone's
frozen features are also embedded (``embed``, on by default; :mod:`uscl.report.embed`): kNN class
accuracy across videos and video purity on the evaluated store, a few frames per video, mean and
CI over seeds per row.

Honest defaults: pretraining on the evaluated videos themselves (no separate pretraining
store) uses no labels at all (``uscl`` runs as ``uscl-selfsup``, supervised terms off), and
methods are compared at equal compute: every method sees one item per pretraining video per
epoch (``simclr-frames`` gets as many frame slots as there are videos). Resumable: finished
pretraining runs and fine-tuning folds are kept.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from uscl.checkpoint.run_files import STATE_FILE
from uscl.checkpoint.weights import load_train_state
from uscl.errors import ConfigError, UsclError
from uscl.finetune.compare import finetune_inits
from uscl.finetune.config import TASK_MODES, TASKS, FinetuneConfig
from uscl.finetune.label_fraction import subsample_splits
from uscl.finetune.train import finetune
from uscl.pipeline import SELF_SUPERVISED
from uscl.pretrain import PretrainConfig, method_names, pretrain, resume_config
from uscl.pretrain.config import (DatasetConfig, apply_overrides, config_from_dict, elastic_differences,
                                  saved_config, validate_config)
from uscl.report import stats
from uscl.report.embed_report import study_lines, study_record
from uscl.report.plots import pyplot, save_figure
from uscl.store import FrameStore
from uscl.utils.atomic import atomic_write_json, atomic_write_text, prepare_output_dir
from uscl.utils.config import config_field, to_dict

STUDY_FILE = "study.json"
EMBED_FRAMES, EMBED_K = 4, 8  # the study's embedding: frames per video, neighbours
MODES = ("linear", "knn", "paper", "full")
# the per-fold score a study compares, by task: (where in a fold's metrics.json, its name)
TASK_METRIC = {
    "classify": (lambda f: f["video"]["accuracy"], "video accuracy"),
    "segment": (lambda f: f["summary"]["macro"]["dice"], "mean Dice"),
    "detect": (lambda f: f["coco"]["bbox_map50"], "box mAP@0.5"),
}


@dataclass
class StudyConfig:
    store: str = config_field("", help="labelled frame store to evaluate on (with masks for segment, detect)")
    task: str = config_field("classify", help="classify (default; video accuracy) | segment (mean Dice) | "
                                              "detect (box mAP@0.5)")
    out: str = config_field("uscl-study", help="study folder")
    pretrain_store: str | None = config_field(None, help="separate store to pretrain on (default: the evaluated "
                                                         "store, without its labels)")
    methods: list[str] = config_field(default_factory=lambda: ["uscl", "simclr", "simclr-frames", "moco"],
                                      help="pretraining methods, comma-separated; a variant (an ablation row) is "
                                           "NAME=METHOD+KEY=VALUE+..., with pretraining settings as dotted keys, "
                                           "e.g. no-mixup=uscl+mixup=false or near=uscl+dataset.max_gap=4")
    seeds: list[int] = config_field(default_factory=lambda: [0, 1, 2], help="pretraining seeds (default 0,1,2)")
    modes: list[str] = config_field(default_factory=lambda: ["linear"], help="evaluation modes: linear, knn, "
                                                                             "paper, full (default linear); "
                                                                             "segment, detect: frozen, paper, full")
    epochs: int = config_field(30, help="pretraining epochs (default 30)")
    image_size: int = config_field(112, help="pretraining and fine-tuning size in px (default 112)")
    batch_size: int = config_field(32, help="pretraining batch in videos (default 32)")
    folds: int = config_field(5, help="video-level folds (default 5)")
    finetune_epochs: int = config_field(30, help="fine-tuning epochs of the paper/full modes (default 30)")
    max_frames_per_video: int | None = config_field(None, help="paper/full modes: training frames per video and "
                                                               "epoch, evenly spread (default all)")
    layer_decay: float = config_field(1.0, help="paper/full modes: layer-wise lr decay (see uscl finetune)")
    imagenet: str | None = config_field(None, help="local torchvision ImageNet weights: adds the imagenet row")
    label_fractions: list[float] = config_field(default_factory=list,
                                                help="fractions of each training fold's videos for the label-rate "
                                                     "curve, e.g. 0.1,0.25,0.5,1 (default: none)")
    embed: bool = config_field(True, help="kNN class accuracy across videos and video purity of every backbone's "
                                           "frozen features on --store (uscl embed, 4 frames per video; default "
                                           "on, --no-embed to skip)")
    classes: list[str] | None = None
    seed: int = 0  # the folds' seed (the same folds for every init)
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False

    def validate(self) -> None:
        if not self.store:
            raise ConfigError("store: a labelled frame store is needed", param="store")
        if not self.methods:
            raise ConfigError("methods: none given", param="methods")
        rows = [parse_variant(m) for m in self.methods]
        names = [r.name for r in rows]
        if len(set(names)) != len(names):
            raise ConfigError(f"methods: each row needs its own name, got {names}", param="methods")
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}", param="task")
        allowed = TASK_MODES[self.task]
        bad = [m for m in self.modes if m not in allowed]
        if bad or not self.modes:
            raise ConfigError(f"modes: {bad or 'none'} not among {', '.join(allowed)} (task {self.task})",
                              param="modes")
        if self.task != "classify" and self.label_fractions:
            raise ConfigError("label_fractions: the label-rate curve is for task classify", param="label_fractions")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: need distinct seeds, got {self.seeds}", param="seeds")
        if any(not 0 < f <= 1 for f in self.label_fractions):
            raise ConfigError(f"label_fractions must lie in (0, 1], got {self.label_fractions}", param="label_fractions")
        if self.epochs < 1 or self.folds < 2:
            raise ConfigError("epochs must be >= 1 and folds >= 2", param="epochs" if self.epochs < 1 else "folds")


@dataclass(frozen=True)
class Variant:
    """One pretraining row of a study: a method with settings of its own (an ablation)."""

    name: str  # the row's name (the method's name when no settings are given)
    method: str
    settings: tuple[tuple[str, str], ...] = ()  # dotted PretrainConfig keys and their values


def parse_variant(text: str) -> Variant:
    """``METHOD`` or ``NAME=METHOD+KEY=VALUE+...`` (values as in a YAML file: ``false``, ``4``, ``0.2``)."""
    text = text.strip()
    name, _, spec = text.partition("=") if "=" in text.split("+", 1)[0] else ("", "", text)
    method, *pairs = spec.split("+")
    if method not in method_names():
        raise ConfigError(f"methods: {method!r} (in {text!r}) is not among {', '.join(method_names())}",
                          param="methods")
    settings = []
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"methods: {pair!r} in {text!r} is not KEY=VALUE", param="methods")
        settings.append((key.strip(), value.strip()))
    name = name.strip() or method
    if settings and name == method:
        raise ConfigError(f"methods: {text!r} changes settings, so it needs a name of its own (NAME={spec})",
                          param="methods")
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"methods: {name!r} cannot name a run folder", param="methods")
    for key, _ in settings:
        if key in ("store", "out", "method", "seed", "resume", "overwrite"):
            raise ConfigError(f"methods: {key} is set by the study itself (in {text!r})", param="methods")
    variant = Variant(name, method, tuple(settings))
    _check_settings(variant)
    return variant


def _check_settings(variant: Variant) -> None:
    """Refuse settings that are not pretraining settings, naming them."""
    if variant.settings:
        try:
            config_from_dict(apply_overrides({}, {k: yaml.safe_load(v) for k, v in variant.settings}))
        except ConfigError as exc:
            raise ConfigError(f"methods: {variant.name}: {exc}", param="methods") from None


@dataclass
class StudyResult:
    out: Path
    tables: dict[str, dict]  # mode (or "mode@fraction") -> {row: {(seed, fold): video accuracy}}
    report: Path
    notes: list[str] = field(default_factory=list)


def run_study(cfg: StudyConfig, log=print) -> StudyResult:
    cfg.validate()
    check_study(cfg)
    out = Path(cfg.out)
    if not cfg.resume:
        prepare_output_dir(out, overwrite=cfg.overwrite, marker=STUDY_FILE)
    out.mkdir(parents=True, exist_ok=True)
    same = cfg.pretrain_store is None or Path(cfg.pretrain_store).resolve() == Path(cfg.store).resolve()
    notes = _notes(cfg, same)
    for n in notes:
        log(f"note: {n}")
    rows = [parse_variant(m) for m in cfg.methods]
    backbones = {(v, s): pretrain_one(cfg, v, s, same, out, log) for v in rows for s in cfg.seeds}
    inits = ["random"] + ([f"imagenet=imagenet:{cfg.imagenet}"] if cfg.imagenet else [])
    inits += [f"{_label(v, same)}-s{s}=checkpoint:{d}" for (v, s), d in backbones.items()]
    # each init's row and pretraining seed (random and ImageNet have none)
    members = {"random": ("random", None), "imagenet": ("imagenet", None)}
    members.update({f"{_label(v, same)}-s{s}": (_label(v, same), s) for v, s in backbones})
    embedding = embed_backbones(cfg, backbones, same, out, log) if cfg.embed else {}
    tables = {}
    for mode in cfg.modes:
        base = FinetuneConfig(store=cfg.store, task=cfg.task, mode=mode, folds=cfg.folds, image_size=cfg.image_size,
                              epochs=cfg.finetune_epochs, seed=cfg.seed, device=cfg.device,
                              classes=cfg.classes, max_frames_per_video=cfg.max_frames_per_video,
                              layer_decay=cfg.layer_decay)
        runs = finetune_inits(base, inits, out / "eval" / mode, resume=cfg.resume, log=log)
        tables[mode] = _table(runs.out, runs.specs, members, cfg.task)
        for fraction in cfg.label_fractions:
            if fraction < 1:
                tables[f"{mode}@{fraction:g}"] = _fraction_runs(base, runs, fraction, cfg, members, log)
    report = write_report(cfg, out, tables, [_label(v, same) for v in rows], notes, ours=_ours(rows, same),
                          embedding=embedding)
    log(f"study report: {report}")
    return StudyResult(out, tables, report, notes)


def _method(variant: Variant, same: bool) -> str:
    """The method as run: without labels (``same``), the self-supervised variant, as the pipeline does."""
    return SELF_SUPERVISED.get(variant.method, variant.method) if same else variant.method


def _label(variant: Variant, same: bool) -> str:
    """The row's name: a plain method's name as run; a variant keeps the name it was given."""
    return _method(variant, same) if variant.name == variant.method else variant.name


def _ours(rows: list[Variant], same: bool) -> list[str]:
    """The rows of the methods this tool exists for (and their variants); the rest are baselines."""
    return [_label(v, same) for v in rows if _method(v, same) in OURS]


def _notes(cfg: StudyConfig, same: bool) -> list[str]:
    notes = []
    if same:
        notes.append("pretraining on the evaluated videos: no labels reach a backbone (uscl runs as uscl-selfsup, "
                     "supervised terms off)")
    if not cfg.imagenet:
        notes.append("no ImageNet row: give imagenet=PATH (local torchvision weights) to add it")
    notes.append("every method sees one item per pretraining video per epoch (simclr-frames: as many frame slots), "
                 "the final epoch is kept")
    return notes


def pretrain_config(cfg: StudyConfig, variant: Variant, seed: int, same: bool, run_dir: Path) -> PretrainConfig:
    """The settings of one pretraining run: the study's, then the variant's own."""
    store = cfg.pretrain_store or cfg.store
    pcfg = PretrainConfig(store=store, out=str(run_dir), method=_method(variant, same), seed=seed, epochs=cfg.epochs,
                          batch_size=cfg.batch_size, select="last", device=cfg.device, overwrite=True,
                          label_rate=0.0 if same else 1.0,
                          dataset=DatasetConfig(image_size=cfg.image_size, valid_size=0.0,
                                                frame_slots=len(FrameStore(store))))
    if variant.settings:
        data = apply_overrides(to_dict(pcfg), {k: yaml.safe_load(v) for k, v in variant.settings})
        pcfg = config_from_dict(data)
        if same:
            pcfg.label_rate = 0.0  # never the evaluated videos' labels, whatever the variant says
    return pcfg


def pretrain_one(cfg: StudyConfig, variant: Variant, seed: int, same: bool, out: Path, log) -> Path:
    """One pretraining run of the study (kept when finished with the same settings, continued when not)."""
    run_dir = out / "pretrain" / f"{_label(variant, same)}-s{seed}"
    pcfg = pretrain_config(cfg, variant, seed, same, run_dir)
    if (run_dir / STATE_FILE).is_file():
        diffs = [d for d in elastic_differences(saved_config(run_dir), validate_config(copy.deepcopy(pcfg)))
                 if not d.startswith(("device:", "dataset.num_workers:"))]
        if diffs:
            raise UsclError(f"{run_dir} was pretrained with other settings ({'; '.join(diffs)}); "
                            "use another --out or rename the row", param="methods")
        done = int(load_train_state(run_dir / STATE_FILE).get("epoch", 0))
        if done >= pcfg.epochs:
            log(f"pretraining {run_dir.name}: finished earlier, kept")
            return run_dir
        log(f"pretraining {run_dir.name}: continuing after epoch {done}")
        pretrain(resume_config(run_dir))
        return run_dir
    extra = "".join(f", {k}={v}" for k, v in variant.settings)
    log(f"pretraining {run_dir.name} ({pcfg.epochs} epochs, {cfg.image_size} px{extra})")
    pretrain(pcfg)
    return run_dir


def embed_backbones(cfg: StudyConfig, backbones: dict, same: bool, out: Path, log) -> dict[str, list[dict]]:
    """Each backbone's embedding numbers on the evaluated store (random init: one per seed), by row;
    OUT/embed/INIT/embedding.json holds each one's details."""
    from uscl.report.embed import EmbedSettings, embed

    jobs = [("random", s, "random") for s in cfg.seeds]
    jobs += [("imagenet", None, f"imagenet:{cfg.imagenet}")] if cfg.imagenet else []
    jobs += [(_label(v, same), s, str(d)) for (v, s), d in backbones.items()]
    settings = EmbedSettings(frames_per_video=EMBED_FRAMES, k=EMBED_K, figures=False, image_size=cfg.image_size,
                             device=cfg.device)
    rows: dict[str, list[dict]] = {}
    for row, seed, source in jobs:
        name = row if seed is None else f"{row}-s{seed}"
        summary = embed(source, cfg.store, out / "embed" / name, settings, init_seed=seed or 0, overwrite=True,
                        log=lambda *a: None).summary
        record = study_record(summary, seed)
        rows.setdefault(row, []).append(record)
        log(f"embedding {name}: " + ", ".join(f"{k.replace('_', ' ')} {'n/a' if v is None else f'{v:.3f}'}"
                                               for k, v in record.items() if k != "seed"))
    return rows


def _table(runs_dir: Path, specs: dict[str, str], members: dict[str, tuple[str, int | None]],
           task: str = "classify") -> dict:
    """``{row: {(seed, fold): score}}`` from the runs' metrics.json (the task's score, :data:`TASK_METRIC`):
    each row's seeds merged (``members``: init name -> (row, pretraining seed); random and ImageNet have none)."""
    score = TASK_METRIC[task][0]
    table: dict[str, dict] = {}
    for name in specs:
        row, seed = members[name]
        metrics = json.loads((runs_dir / name / "metrics.json").read_text())
        table.setdefault(row, {}).update({(seed, int(f["fold"])): float(score(f)) for f in metrics["folds"]})
    return table


def _fraction_runs(base: FinetuneConfig, runs, fraction: float, cfg: StudyConfig, members: dict, log) -> dict:
    """Every init fine-tuned on ``fraction`` of each training fold's videos (same test videos)."""
    splits = subsample_splits(runs.splits, fraction, cfg.seed, store=FrameStore(cfg.store))
    where = runs.out / f"fraction-{fraction:g}"
    for name, spec in runs.specs.items():
        run_cfg = dataclasses.replace(base, init=spec, out=str(where / name), resume=cfg.resume)
        done = where / name / "metrics.json"
        if cfg.resume and done.is_file() and json.loads(done.read_text()).get("complete"):
            continue
        finetune(run_cfg, splits=splits, log=log, log_splits=False)
    return _table(where, runs.specs, members)


# the methods this tool exists for; every other init is a baseline a user could pick instead
OURS = ("uscl", "uscl-selfsup", "uscl-multi", "moco-spg")


def _baselines(table: dict, ours: list[str] | None = None) -> list[str]:
    """random, imagenet and the other methods (SimCLR, the paper's SimCLR, MoCo) when ours are run."""
    ours = list(OURS) if ours is None else ours
    ours_run = any(n in ours for n in table)
    return [n for n in table if n in ("random", "imagenet") or (ours_run and n not in ours)]


def write_report(cfg: StudyConfig, out: Path, tables: dict, methods: list[str], notes: list[str],
                 ours: list[str] | None = None, embedding: dict | None = None) -> Path:
    metric = TASK_METRIC[cfg.task][1]
    lines = ["# Study", "", f"Task {cfg.task}; evaluated on `{cfg.store}`; pretrained on "
             f"`{cfg.pretrain_store or cfg.store}`; "
             f"{cfg.epochs} pretraining epochs at {cfg.image_size} px; seeds {', '.join(map(str, cfg.seeds))}; "
             f"{cfg.folds} video-level folds (the same for every init). Metric: {metric}.", ""]
    lines += [f"- {n}" for n in notes] + [""]
    data = {}
    for key, table in tables.items():
        grouped = table
        base = _baselines(grouped, ours)
        mine = [m for m in methods if m in grouped and m not in base]
        lines += [f"# Mode {key}", "", stats.study_markdown(grouped, mine or [m for m in methods if m in grouped],
                                                            base if mine else _baselines({}) or ["random"],
                                                            unit="cell", metric=metric),
                  "", "Over seeds alone (each seed's fold mean is one unit: the stricter interval):", "",
                  stats.summary_table(grouped, unit="seed", metric=metric), ""]
        data[key] = {name: [[s, f, v] for (s, f), v in cells.items()] for name, cells in grouped.items()}
    if embedding:
        by_patient = any(v.patient for v in FrameStore(cfg.store).videos)
        lines += study_lines(embedding, EMBED_FRAMES, EMBED_K, "other patients" if by_patient else "other videos")
    lines += _plots(out, tables, methods, metric)
    atomic_write_json(out / STUDY_FILE, {"config": dataclasses.asdict(cfg), "notes": notes, "scores": data,
                                         "embedding": embedding or {}})
    report = out / "study.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report


def _plots(out: Path, tables: dict, methods: list[str], metric: str = "video accuracy") -> list[str]:
    """One point per seed and fold per init; the label-fraction curve when fractions were run."""
    plt = pyplot()
    lines = []
    for key, table in tables.items():
        if "@" in key:
            continue
        grouped = table
        fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(grouped), 3.4))
        for x, (name, cells) in enumerate(grouped.items()):
            vals = list(cells.values())
            ax.scatter([x + 0.08 * ((i % 5) - 2) for i in range(len(vals))], vals, s=14, alpha=0.7)
            ax.hlines(sum(vals) / len(vals), x - 0.3, x + 0.3, color="k")
        ax.set_xticks(range(len(grouped)), list(grouped), rotation=30, ha="right")
        ax.set_ylabel(f"{metric} (one point per seed and fold)")
        ax.set_title(f"mode {key}")
        save_figure(fig, out / f"study_{key}.png")
        lines += [f"![mode {key}](study_{key}.png)", ""]
        fracs = sorted({float(k.split("@")[1]) for k in tables if k.startswith(f"{key}@")})
        if fracs:
            fig, ax = plt.subplots(figsize=(5, 3.4))
            for name in grouped:
                xs, ys = [], []
                for fr in fracs + [1.0]:
                    g = tables[key if fr == 1.0 else f"{key}@{fr:g}"]
                    if name in g:
                        xs.append(fr)
                        ys.append(stats.summarize(g[name]).mean)
                ax.plot(xs, ys, marker="o", label=name)
            ax.set_xscale("log")
            ax.set_xlabel("fraction of each training fold's videos")
            ax.set_ylabel(f"mean {metric}")
            ax.legend(fontsize=7)
            save_figure(fig, out / f"study_{key}_label_fraction.png")
            lines += [f"![label fraction, mode {key}](study_{key}_label_fraction.png)", ""]
    return lines


def check_study(cfg: StudyConfig) -> None:
    """Raise for a study whose folder holds a different study (resume). Rows and seeds may be
    added (each pretraining run is checked against its own saved settings)."""
    saved = Path(cfg.out) / STUDY_FILE
    if cfg.resume and saved.is_file():
        old = json.loads(saved.read_text())["config"]
        diffs = [k for k in ("store", "pretrain_store", "epochs", "image_size", "folds", "seed", "finetune_epochs")
                 if old.get(k) != getattr(cfg, k)]
        if old.get("task", "classify") != cfg.task:
            diffs.append("task")
        if diffs:
            raise UsclError(f"{cfg.out} holds a study with other settings ({', '.join(diffs)}); use another out",
                            param="resume")
