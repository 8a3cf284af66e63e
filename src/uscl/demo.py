"""The end-to-end demo, a small study: synthesise, ingest, pretrain each method with several
seeds, compare every backbone with random init over the same 5 video-level folds, with
confidence intervals (:func:`uscl.study.run_study`).

Sized to finish on a 2-core CPU in well under 15 minutes; every size is a
parameter, so the same function scales up on a real machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from uscl.store.prepare import PrepareOptions, prepare
from uscl.study import StudyConfig, run_study
from uscl.synth import generate
from uscl.utils.atomic import prepare_output_dir
from uscl.utils.seed import derive_seed


@dataclass
class DemoConfig:
    out: str = "uscl-demo"
    videos_per_class: int = 12  # downstream (fine-tuning) set
    pretrain_videos_per_class: int = 16  # a separate set of videos for pretraining
    frames: int = 24
    synth_size: int = 160  # rendered video size
    # 6-s clips sampled at 4 frames/s, as POCOVID-Net samples real clips (3/s): a video's frames differ
    # about as much as real ones do (benchmarks/frame_change.py), which sample pair generation needs
    synth_fps: float = 4.0
    store_size: int = 112  # frame store size: the training size, so no step resizes
    image_size: int = 112  # model input size
    pretrain_epochs: int = 30
    pretrain_batch: int = 12
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # pretraining seeds: the spread is the point
    modes: list[str] = field(default_factory=lambda: ["linear"])  # + "paper" to fine-tune the last block
    finetune_epochs: int = 8
    max_frames_per_video: int = 6  # training frames per video and epoch in fine-tuning
    folds: int = 5
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False
    methods: list[str] = field(default_factory=lambda: ["uscl", "simclr"])


@dataclass
class DemoResult:
    out: Path
    table: str
    report: Path
    seconds: dict


def run_demo(cfg: DemoConfig, log=print) -> DemoResult:
    out = prepare_output_dir(cfg.out, overwrite=cfg.overwrite)
    t_all = time.perf_counter()
    # Two disjoint synthetic sets, as in the paper (pretrain on US-4, evaluate on POCUS): the
    # pretraining videos (and the labels USCL's supervised term uses) never reach a test fold.
    t0 = time.perf_counter()
    log(f"\n== 1/3 synthesise {3 * cfg.pretrain_videos_per_class} pretraining and "
        f"{3 * cfg.videos_per_class} downstream lung-ultrasound videos ({cfg.frames} frames at {cfg.synth_fps:g}/s, "
        f"{cfg.synth_size} px)")
    stores = {}
    # the pretraining set's own seed: a set never shares its videos' randomness with the other
    for part, n, seed in (("pretrain", cfg.pretrain_videos_per_class, derive_seed(cfg.seed, "demo-pretrain-videos")),
                          ("downstream", cfg.videos_per_class, cfg.seed)):
        synth = generate(out / f"{part}_videos", videos_per_class=n, frames=cfg.frames,
                         size=cfg.synth_size, fps=cfg.synth_fps, seed=seed, overwrite=cfg.overwrite)
        log(f"   {part}: {len(synth.videos)} videos in {out / f'{part}_videos'} (seed {seed})")
        stores[part] = out / f"{part}_store"
    synth_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    log(f"\n== 2/3 ingest both sets into frame stores ({cfg.store_size} px)")
    for part, store in stores.items():
        summary = prepare(out / f"{part}_videos", store, PrepareOptions(size=cfg.store_size), overwrite=cfg.overwrite,
                          show_progress=False)
        log(f"   {part}: " + summary.format().replace("\n", "\n   "))
    prepare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    log(f"\n== 3/3 study: {', '.join(cfg.methods)} x seeds {', '.join(map(str, cfg.seeds))} vs random init, "
        f"{cfg.folds} video-level folds, modes {', '.join(cfg.modes)}")
    study = run_study(StudyConfig(
        store=str(stores["downstream"]), pretrain_store=str(stores["pretrain"]), out=str(out / "study"),
        methods=list(cfg.methods), seeds=list(cfg.seeds), modes=list(cfg.modes), epochs=cfg.pretrain_epochs,
        image_size=cfg.image_size, batch_size=cfg.pretrain_batch, folds=cfg.folds,
        finetune_epochs=cfg.finetune_epochs, max_frames_per_video=cfg.max_frames_per_video, seed=cfg.seed,
        device=cfg.device), log=log)
    seconds = {"synth": synth_s, "prepare": prepare_s, "study": time.perf_counter() - t0,
               "total": time.perf_counter() - t_all}
    table = "\n".join(ln for ln in study.report.read_text().splitlines()
                      if ln.startswith("# Mode") or (ln.startswith("|") and "[" in ln))
    log("\n== results (video accuracy, mean [95% CI] over seeds x folds)\n" + table)
    log(f"full report: {study.report}")
    log(f"total time {seconds['total'] / 60:.1f} min")
    return DemoResult(out=out, table=table, report=study.report, seconds=seconds)
