"""The end-to-end demo: synthesise, ingest, pretrain USCL and SimCLR, compare over 5 folds, report.

Sized to finish on a 2-core CPU in well under 15 minutes; every size is a
parameter, so the same function scales up on a real machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from uscl.utils.atomic import prepare_output_dir


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
    from uscl.finetune.compare import compare
    from uscl.finetune.config import FinetuneConfig
    from uscl.pretrain import pretrain
    from uscl.pretrain.config import config_from_dict
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth import generate

    out = prepare_output_dir(cfg.out, overwrite=cfg.overwrite)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    def step(name: str, title: str):
        log(f"\n== {title}")
        return name, time.perf_counter()

    # Two disjoint synthetic sets, as in the paper (pretrain on US-4, evaluate on POCUS): the
    # pretraining videos (and the labels USCL's supervised term uses) never reach a test fold.
    stores = {}
    for part, n, seed in (("pretrain", cfg.pretrain_videos_per_class, cfg.seed + 1000),
                          ("downstream", cfg.videos_per_class, cfg.seed)):
        name, t0 = step(f"synth_{part}", f"1/5 synthesise {3 * n} {part} lung-ultrasound videos "
                        f"({cfg.frames} frames, {cfg.synth_size} px, seed {seed})")
        synth = generate(out / f"{part}_videos", videos_per_class=n, frames=cfg.frames,
                         size=cfg.synth_size, seed=seed, overwrite=cfg.overwrite)
        seconds[name] = time.perf_counter() - t0
        log(f"   {len(synth.videos)} videos in {out / f'{part}_videos'} ({seconds[name]:.1f} s)")

        name, t0 = step(f"prepare_{part}", f"2/5 ingest the {part} videos into a frame store")
        summary = prepare(out / f"{part}_videos", out / f"{part}_store", PrepareOptions(size=cfg.store_size),
                          labels_csv=out / f"{part}_videos" / "labels.csv", overwrite=cfg.overwrite,
                          show_progress=False)
        seconds[name] = time.perf_counter() - t0
        log("   " + summary.format().replace("\n", "\n   "))
        stores[part] = out / f"{part}_store"

    inits = ["random"]
    for method in cfg.methods:
        name, t0 = step(f"pretrain_{method}", f"3/5 pretrain {method} ({cfg.pretrain_epochs} epochs, {cfg.image_size} px)")
        res = pretrain(config_from_dict(dict(
            store=str(stores["pretrain"]), out=str(out / "pretrain" / method), method=method,
            epochs=cfg.pretrain_epochs, batch_size=cfg.pretrain_batch, seed=cfg.seed,
            device=cfg.device, overwrite=cfg.overwrite,
            # ~10 validation videos make "lowest validation loss" a noisy pick: keep the final epoch
            select="last", dataset={"image_size": cfg.image_size},
        )))
        seconds[name] = time.perf_counter() - t0
        log(f"   final epoch kept; lowest validation loss {res.best_val_loss:.4f} at epoch {res.best_epoch} "
            f"({seconds[name]:.0f} s)")
        inits.append(f"{method}=checkpoint:{res.run_dir}")

    name, t0 = step("compare", f"4/5 fine-tune {', '.join(i.split('=')[0] for i in inits)} over {cfg.folds} video-level folds "
                    f"(mode {cfg.finetune_mode}, {cfg.finetune_epochs} epochs, model after the last epoch)")
    base = FinetuneConfig(
        store=str(stores["downstream"]), out=str(out / "compare"), mode=cfg.finetune_mode, folds=cfg.folds,
        epochs=cfg.finetune_epochs, image_size=cfg.image_size, seed=cfg.seed, device=cfg.device,
        max_frames_per_video=cfg.max_frames_per_video, batch_size=32, overwrite=cfg.overwrite,
    )
    result = compare(base, inits, out / "compare", log=lambda msg: log("   " + str(msg)))
    seconds[name] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_all

    log("\n== 5/5 results (mean ± std over folds; frame and video level)\n")
    log(result.table)
    log(f"\nreport: {result.report}")
    log(f"total time {seconds['total'] / 60:.1f} min")
    return DemoResult(out=out, table=result.table, report=result.report, seconds=seconds)
