"""From a folder of labelled ultrasound videos to a report: ingest, pretrain, compare, report.

The honest default: without separate pretraining videos, the videos being
evaluated are also the pretraining set, so USCL runs without its supervised
term (``uscl-selfsup``) and no test label can reach a backbone. Given
``pretrain_videos`` (another labelled set, as the paper pretrains on US-4 and
evaluates on POCUS), USCL uses their labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from uscl.checkpoint.run_files import STATE_FILE
from uscl.errors import ConfigError, UsclError
from uscl.finetune.config import FinetuneConfig
from uscl.pretrain import pretrain, resume_config
from uscl.pretrain.config import config_from_dict
from uscl.report import compare
from uscl.store.prepare import PrepareOptions, prepare
from uscl.utils.atomic import atomic_write_text, prepare_output_dir
from uscl.utils.config import dump_yaml, load_yaml, setting_differences, to_dict
from uscl.video.labels import root_labels_csv

SELF_SUPERVISED = {"uscl": "uscl-selfsup"}
SETTINGS_FILE = "pipeline.yaml"
# settings a resumed run may change: where things are, and how to run (not what is computed)
MAY_DIFFER = ("out", "overwrite", "resume", "device")


@dataclass
class PipelineConfig:
    videos: str = ""  # the labelled videos to evaluate on (anything `uscl prepare` reads)
    out: str = "uscl-pipeline"
    labels: str | None = None  # labels CSV for `videos` (default: videos/labels.csv, else parent folder names)
    pretrain_videos: str | None = None  # separate videos to pretrain on (default: `videos`, without labels)
    pretrain_labels: str | None = None  # labels CSV for `pretrain_videos` (same default rule)
    methods: list[str] = field(default_factory=lambda: ["uscl", "simclr"])
    image_size: int = 112  # model input size
    store_size: int | None = None  # frame size of the stores (default: image_size, so no step resizes)
    fps: float | None = None  # frames per second kept at ingest (default: all)
    max_frames: int | None = None  # frames kept per video at ingest
    crop: bool = False  # crop black margins, mask static overlays
    where: list[str] = field(default_factory=list)  # keep inputs whose label CSV columns match, e.g. probe=convex
    classes: list[str] | None = None  # the classes to evaluate (default: every label)
    pretrain_epochs: int = 50
    pretrain_batch: int = 32
    select: str = "last"  # which pretraining checkpoint is evaluated (last | best by validation loss)
    finetune_mode: str = "linear"
    finetune_epochs: int = 10
    max_frames_per_video: int | None = None
    folds: int = 5
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False
    resume: bool = False  # continue a killed run in `out`: finished steps kept, the rest resumed

    def validate(self) -> "PipelineConfig":
        if not self.videos:
            raise ConfigError("no videos folder given: set videos", param="videos")
        if not self.methods:
            raise ConfigError("give at least one pretraining method (uscl, uscl-selfsup, simclr)", param="methods")
        return self


@dataclass
class PipelineResult:
    out: Path
    table: str
    report: Path
    pretrain_runs: dict[str, Path]
    seconds: dict


def run_pipeline(cfg: PipelineConfig, log=print, *, step_offset: int = 0, out_ready: bool = False) -> PipelineResult:
    """Ingest, pretrain each method, compare them with random init over video-level folds, report.

    ``step_offset``/``out_ready``: for a caller (the demo) that ran steps of its own in ``cfg.out``.
    """
    cfg.validate()
    if cfg.resume and cfg.overwrite:
        raise ConfigError("resume continues a run, overwrite replaces it: set only one of them", param="resume")
    if out_ready:
        out = Path(cfg.out)
    elif cfg.resume and (Path(cfg.out) / SETTINGS_FILE).is_file():
        out = Path(cfg.out)
        _check_settings(out, cfg)
        log(f"resuming {out}: finished steps are kept")
    else:
        out = prepare_output_dir(cfg.out, overwrite=cfg.overwrite)
    if not out_ready:
        atomic_write_text(out / SETTINGS_FILE, dump_yaml(to_dict(cfg)))
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    total = step_offset + 3 + len(cfg.methods)
    number = iter(range(step_offset + 1, total + 1))

    def step(title: str) -> float:
        log(f"\n== {next(number)}/{total} {title}")
        return time.perf_counter()

    size = cfg.store_size or cfg.image_size
    options = PrepareOptions(size=size, fps=cfg.fps, max_frames=cfg.max_frames, crop=cfg.crop)
    separate = cfg.pretrain_videos is not None
    sets = [("downstream", cfg.videos, cfg.labels)] + ([("pretrain", cfg.pretrain_videos, cfg.pretrain_labels)]
                                                     if separate else [])
    t0 = step(f"ingest the {' and '.join(name for name, _, _ in sets)} videos into frame stores ({size} px)")
    stores = {}
    for name, src, labels in sets:
        labels_csv, label_from = labels_options(src, labels)
        summary = prepare(src, out / f"{name}_store", options, labels_csv=labels_csv, label_from=label_from,
                          where=cfg.where or None, overwrite=cfg.overwrite, show_progress=False)
        names = {"labels_csv": "labels" if name == "downstream" else "pretrain_labels"}  # this function's parameters
        log(f"   {name}: " + summary.format(names).replace("\n", "\n   "))
        stores[name] = out / f"{name}_store"
    seconds["prepare"] = time.perf_counter() - t0
    pretrain_store = stores["pretrain" if separate else "downstream"]

    inits, runs = ["random"], {}
    for method in cfg.methods:
        actual = method if separate else SELF_SUPERVISED.get(method, method)
        t0 = step(f"pretrain {actual} ({cfg.pretrain_epochs} epochs, {cfg.image_size} px)")
        if actual != method:
            log("   the pretraining videos are the evaluation videos: USCL runs without its supervised term, "
                "so no test label reaches the backbone (give separate pretraining videos to use labels)")
        res = _pretrain_step(out / "pretrain" / method, dict(
            store=str(pretrain_store), out=str(out / "pretrain" / method), method=actual,
            epochs=cfg.pretrain_epochs, batch_size=cfg.pretrain_batch, seed=cfg.seed, device=cfg.device,
            overwrite=cfg.overwrite, select=cfg.select, dataset={"image_size": cfg.image_size},
        ), cfg.resume, log)
        seconds[f"pretrain_{method}"] = time.perf_counter() - t0
        kept = f"epoch {len(res.metrics)} kept" if cfg.select == "last" else f"best epoch {res.best_epoch} kept"
        log(f"   {kept}; lowest validation loss {res.best_val_loss:.4f} at epoch {res.best_epoch} "
            f"({seconds[f'pretrain_{method}']:.0f} s)" if res.best_val_loss is not None else f"   {kept}")
        inits.append(f"{method}=checkpoint:{res.run_dir}")
        runs[method] = res.run_dir

    trained = cfg.finetune_mode in ("paper", "full")
    t0 = step(f"fine-tune {', '.join(i.split('=')[0] for i in inits)} over {cfg.folds} video-level folds "
              f"(mode {cfg.finetune_mode}" + (f", {cfg.finetune_epochs} epochs, model after the last epoch)"
                                             if trained else ": frozen backbone, no epochs)"))
    base = FinetuneConfig(
        store=str(stores["downstream"]), out=str(out / "compare"), mode=cfg.finetune_mode, folds=cfg.folds,
        epochs=cfg.finetune_epochs, image_size=cfg.image_size, seed=cfg.seed, device=cfg.device,
        classes=cfg.classes, max_frames_per_video=cfg.max_frames_per_video, batch_size=32, overwrite=cfg.overwrite,
    )
    result = compare(base, inits, out / "compare", resume=cfg.resume, log=lambda msg: log("   " + str(msg)))
    seconds["compare"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_all

    step("results (mean ± std over folds; frame and video level)")
    log(result.table)
    log(f"\nreport: {result.report}")
    return PipelineResult(out=out, table=result.table, report=result.report, pretrain_runs=runs, seconds=seconds)


def labels_options(src: str | Path, labels: str | None) -> tuple[str | None, str | None]:
    """(labels_csv, label_from) for ``prepare`` of one set of videos.

    The CSV given; else ``src/labels.csv`` if there is one (``prepare`` uses it
    when given no labels option, and says so), as `uscl prepare` does; else
    the parent folder names.
    """
    if labels:
        return labels, None
    if root_labels_csv(src) is not None:
        return None, None
    return None, "parent"


def _check_settings(out: Path, cfg: PipelineConfig) -> None:
    """A resumed run must compute what the first one did: refuse other settings, naming them."""
    diff = setting_differences(load_yaml(out / SETTINGS_FILE), cfg, free=MAY_DIFFER)
    if diff:
        raise UsclError(f"cannot resume {out}: its settings differ from the ones given: {'; '.join(diff)}",
                        param="resume")


def _pretrain_step(run_dir: Path, settings: dict, resume: bool, log):
    """Pretrain, or with ``resume`` keep a finished run and continue an unfinished one."""
    if resume and (run_dir / STATE_FILE).is_file():
        cfg = resume_config(run_dir, epochs=settings["epochs"])
        log(f"   continuing {run_dir} (pretraining with resume; a finished run is only re-exported)")
        return pretrain(cfg)
    if resume and run_dir.is_dir():  # killed before its first epoch ended: start it again
        settings = {**settings, "overwrite": True}
    return pretrain(config_from_dict(settings))
