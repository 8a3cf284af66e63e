"""The end-to-end demo: synthesise, ingest, pretrain USCL and SimCLR, compare over 5 folds, report.

Sized to finish on a 2-core CPU in well under 15 minutes; every size is a
parameter, so the same function scales up on a real machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from uscl.pipeline import PipelineConfig, run_pipeline
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
    store_size: int = 112  # frame store size: the training size, so no step resizes
    image_size: int = 112  # model input size
    pretrain_epochs: int = 50
    pretrain_batch: int = 12
    finetune_epochs: int = 8
    finetune_mode: str = "paper"
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
    log(f"\n== 1/{4 + len(cfg.methods)} synthesise {3 * cfg.pretrain_videos_per_class} pretraining and "
        f"{3 * cfg.videos_per_class} downstream lung-ultrasound videos ({cfg.frames} frames, {cfg.synth_size} px)")
    # the pretraining set's own seed: a set never shares its videos' randomness with the other
    for part, n, seed in (("pretrain", cfg.pretrain_videos_per_class, derive_seed(cfg.seed, "demo-pretrain-videos")),
                          ("downstream", cfg.videos_per_class, cfg.seed)):
        synth = generate(out / f"{part}_videos", videos_per_class=n, frames=cfg.frames,
                         size=cfg.synth_size, seed=seed, overwrite=cfg.overwrite)
        log(f"   {part}: {len(synth.videos)} videos in {out / f'{part}_videos'} (seed {seed})")
    synth_s = time.perf_counter() - t0
    result = run_pipeline(PipelineConfig(
        videos=str(out / "downstream_videos"), labels=str(out / "downstream_videos" / "labels.csv"),
        pretrain_videos=str(out / "pretrain_videos"), pretrain_labels=str(out / "pretrain_videos" / "labels.csv"),
        out=str(out), methods=list(cfg.methods), image_size=cfg.image_size, store_size=cfg.store_size,
        pretrain_epochs=cfg.pretrain_epochs, pretrain_batch=cfg.pretrain_batch,
        # ~10 validation videos make "lowest validation loss" a noisy pick: keep the final epoch
        select="last", finetune_mode=cfg.finetune_mode, finetune_epochs=cfg.finetune_epochs,
        max_frames_per_video=cfg.max_frames_per_video, folds=cfg.folds, seed=cfg.seed, device=cfg.device,
        overwrite=cfg.overwrite,
    ), log=log, step_offset=1, out_ready=True)
    seconds = {"synth": synth_s, **result.seconds, "total": time.perf_counter() - t_all}
    log(f"total time {seconds['total'] / 60:.1f} min")
    return DemoResult(out=out, table=result.table, report=result.report, seconds=seconds)
