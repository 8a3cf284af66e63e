"""``pretrain(cfg)``: one loop for every pretraining method, single process or DDP.

The run folder (file names in :mod:`uscl.checkpoint.run_files`)::

    RUN/config.yaml                 resolved configuration
    RUN/labelled_videos.json        the videos whose labels the supervised term used
    RUN/metrics.csv                 one row per epoch (rewritten atomically)
    RUN/last.safetensors + .json    weights after the latest epoch
    RUN/best.safetensors + .json    the best epoch so far by validation loss (a hard link)
    RUN/backbone.safetensors + .json  the selected checkpoint's backbone, torchvision keys
                                    (written when the run stops; until then readers use best)
    RUN/train_state.pt              weights, optimizer, scaler, method state, RNG, metrics
    RUN/tb/                         TensorBoard events (when tensorboard imports)

The parts live in their own modules: settings and resumption (:mod:`.config`), methods
(:mod:`.methods`), building the run (:mod:`.setup`), the step (:mod:`.step`), the epoch and
validation functions (:mod:`.loop`), the folder and its records (:mod:`.run_folder`), the
training state (:mod:`.state`), which checkpoints are kept (:class:`uscl.checkpoint.CheckpointSaver`).

Resuming restores the state at an epoch boundary; frame draws and augmentation are seeded
per (seed, epoch), so a CPU run resumed after a kill reaches the same weights as an
uninterrupted one, also under ``torchrun --max-restarts`` with ``auto_resume``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from uscl import __version__
from uscl.checkpoint import CheckpointSaver, unwrap_model
from uscl.checkpoint.run_files import BACKBONE, BEST, CONFIG_FILE, LABELLED_FILE, LAST
from uscl.errors import UsclError
from uscl.pretrain.config import PretrainConfig, config_dict, config_to_yaml, lr_at, validate_config
from uscl.pretrain.loop import Training, train_one_epoch, validate
from uscl.pretrain.run_folder import EpochRecords, Logger, RunFolder, choose_run_folder, clear_outputs
from uscl.pretrain.setup import RunData, build_data, build_probe, build_training
from uscl.pretrain.state import restore_state, save_state
from uscl.utils import dist
from uscl.utils.atomic import atomic_write_json, atomic_write_text
from uscl.utils.device import resolve_device, resolve_precision


@dataclass
class PretrainResult:
    run_dir: Path
    last_path: Path
    best_path: Path
    backbone_path: Path
    metrics: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float | None = None
    selected_by: str = "val_loss"  # how the best epoch is chosen (val_loss, or train_loss without validation)
    backbone_epoch: int | None = None  # the epoch backbone.safetensors holds
    warnings: list[str] = field(default_factory=list)


def pretrain(cfg: PretrainConfig, *, on_epoch_end: Callable[[dict], None] | None = None,
             log_stream=None) -> PretrainResult:
    """Pretrain a backbone on a frame store; returns the run folder, checkpoints and metrics.

    >>> from uscl.pretrain import PretrainConfig, pretrain
    >>> res = pretrain(PretrainConfig(store="store", out="runs/uscl", epochs=100))
    >>> res.backbone_path   # for `uscl finetune --init checkpoint:runs/uscl`

    ``on_epoch_end(row)`` is called after each epoch's files are written (on every rank).
    """
    cfg = validate_config(cfg)
    created_group = not dist.is_initialized()
    device_hint = "cuda" if (cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())) else "cpu"
    dinfo = dist.init_distributed(device_hint)
    created_group = created_group and dist.is_initialized()
    try:
        return _run(cfg, dinfo, on_epoch_end, Logger(dinfo.is_main, log_stream))
    finally:
        if created_group:
            dist.cleanup()


def _run(cfg: PretrainConfig, dinfo: dist.DistInfo, on_epoch_end, log: Logger) -> PretrainResult:
    device = resolve_device(cfg.device, dinfo.local_rank)
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cpu" and cfg.precision in ("bf16", "fp16"):
        log.warn(f"precision {cfg.precision} applies to CUDA only; training in fp32 on the CPU")
    folder = choose_run_folder(cfg)
    dist.barrier()  # every rank has checked the folder before rank 0 writes to it
    data = build_data(cfg, dinfo, device, log)
    t = build_training(cfg, data, dinfo, device, precision, log)
    probe = build_probe(cfg, data, device, log)
    saver = _saver(cfg, folder.path, data)
    start, metrics = _open_folder(cfg, folder, t, saver, data, dinfo, log)
    log.info(f"pretraining {cfg.method} ({cfg.arch}, {cfg.dataset.image_size} px) on {len(data.train_videos)} videos "
             f"(+{len(data.val_videos)} validation), batch {data.global_batch}, "
             f"{'labels of ' + str(data.supervised_videos) + ' videos' if t.method.supervised else 'no labels'}, "
             f"{device.type} {precision}" + (f", {dinfo.world_size} processes" if dinfo.distributed else ""))
    records = EpochRecords(folder.path, enabled=dinfo.is_main)
    try:
        for epoch in range(start, cfg.epochs):
            row = train_one_epoch(t, data.train_loader, epoch, lr=lr_at(cfg, epoch), epochs=cfg.epochs,
                                  max_steps=cfg.max_steps_per_epoch, log_every=cfg.log_every_n_steps)
            evaluate = (epoch + 1) % cfg.eval_every_n_epochs == 0 or epoch + 1 == cfg.epochs
            row["val_loss"] = validate(t, data.val_loader, image_size=cfg.dataset.image_size,
                                       mean=cfg.augment.mean, std=cfg.augment.std) if evaluate else None
            if probe is not None and ((epoch + 1) % cfg.probe.every == 0 or epoch + 1 == cfg.epochs):
                row.update(probe(unwrap_model(t.raw_model).backbone))
            if not math.isfinite(row["total_loss"]):
                raise UsclError(f"the training loss became {row['total_loss']} in epoch {epoch + 1}; "
                                "try a lower lr or precision fp32", param="lr")
            metrics.append(row)
            improved = saver.update(epoch + 1, row.get("total_loss" if saver.criterion == "train_loss" else saver.criterion))
            if dinfo.is_main:
                saver.save(epoch + 1, unwrap_model(t.raw_model).state_dict(), _meta(cfg, data, t, row), improved)
                records.write(metrics)
                save_state(folder.path, epoch + 1, cfg, t, metrics, saver)
            dist.barrier()
            log.info(_epoch_line(row, cfg.epochs, t.method.supervised, improved))
            if on_epoch_end is not None:
                on_epoch_end(dict(row))
    finally:
        records.close()
        if dinfo.is_main:
            saver.export_backbone()
    return _result(cfg, folder.path, saver, metrics, log)


def _open_folder(cfg: PretrainConfig, folder: RunFolder, t: Training, saver: CheckpointSaver, data: RunData,
                 dinfo: dist.DistInfo, log: Logger) -> tuple[int, list[dict]]:
    """Restore a resumed run (or clear an overwritten one); write config.yaml and the labels used."""
    start, metrics = 0, []
    if folder.resume:
        start, metrics = restore_state(folder.path, cfg, t, saver, data.store.store_id)
        log.info(f"resuming {folder.path} after epoch {start}")
        if dinfo.is_main:
            saver.remove_backbone()
    elif dinfo.is_main:
        folder.path.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite or cfg.auto_resume:
            clear_outputs(folder.path)
    if dinfo.is_main:
        saved = dataclasses.replace(cfg, resume=None, overwrite=False)
        atomic_write_text(folder.path / CONFIG_FILE, config_to_yaml(saved))
        atomic_write_json(folder.path / LABELLED_FILE, {
            "what": "videos whose labels the supervised term of this pretraining run used",
            "store": cfg.store, "store_id": data.store.store_id, "method": cfg.method, "videos": data.labelled_records})
    dist.barrier()
    return start, metrics


def _saver(cfg: PretrainConfig, run_dir: Path, data: RunData) -> CheckpointSaver:
    """best by the online probe (``select: probe``, higher is better), else by the validation loss
    (the training loss without validation videos); backbone from best or last."""
    if cfg.select == "probe":
        return CheckpointSaver(run_dir, select="best", criterion="probe_linear_acc", higher_is_better=True)
    return CheckpointSaver(run_dir, select=cfg.select,
                           criterion="val_loss" if data.val_loader is not None else "train_loss")


def _meta(cfg: PretrainConfig, data: RunData, t: Training, row: dict) -> dict:
    """The JSON beside each checkpoint: what it is and how its inputs must be prepared."""
    m = unwrap_model(t.raw_model)
    return {
        "format": "uscl-pretrain", "uscl_version": __version__,
        "arch": cfg.arch, "feature_dim": m.feature_dim, "out_dim": m.out_dim,
        "method": cfg.method, "supervised": t.method.supervised, "mixup": t.method.mixup,
        "classifier_input": m.classifier_input, "num_classes": m.num_classes, "class_names": data.classes,
        "val_loss": row.get("val_loss"), "train_loss": row["total_loss"],
        "store_id": data.store.store_id, "store": str(cfg.store), "store_options": data.store.options,
        "image_size": cfg.dataset.image_size, "channels": data.channels, "mean": cfg.augment.mean,
        "std": cfg.augment.std, "train_videos": len(data.train_videos), "val_videos": len(data.val_videos),
        "labelled_videos": data.supervised_videos, "seed": cfg.seed, "config": config_dict(cfg),
    }


def _epoch_line(row: dict, epochs: int, supervised: bool, improved: bool) -> str:
    val = f"  val {row['val_loss']:.4f}" if row["val_loss"] is not None else ""
    if row.get("probe_linear_acc") is not None:
        val += (f"  probe knn {row['probe_knn_acc']:.3f} linear {row['probe_linear_acc']:.3f}"
                f" ({row['probe_s']:.1f}s)")
    sup = f", sup {row['supervised_loss']:.4f}" if supervised else ""
    return (f"epoch {row['epoch']}/{epochs}  loss {row['total_loss']:.4f} (con {row['contrastive_loss']:.4f}{sup})"
            f"{val}  lr {row['lr']:.2e}  {row['images_per_s']:.1f} img/s  data {row['data_wait_share']:.0%}"
            f"  {row['epoch_time_s']:.1f}s{'  *best' if improved else ''}")


def _result(cfg: PretrainConfig, run_dir: Path, saver: CheckpointSaver, metrics: list[dict], log: Logger) -> PretrainResult:
    exported = metrics[-1]["epoch"] if (cfg.select == "last" and metrics) else saver.best_epoch
    log.info(f"done: {run_dir} (backbone.safetensors holds epoch {exported}, the {cfg.select} checkpoint; "
             f"{saver.describe()})")
    return PretrainResult(
        run_dir=run_dir, last_path=run_dir / LAST, best_path=run_dir / BEST, backbone_path=run_dir / BACKBONE,
        metrics=list(metrics), best_epoch=saver.best_epoch,
        best_val_loss=saver.best_score if saver.criterion == "val_loss" else None,
        selected_by=saver.criterion,
        backbone_epoch=exported, warnings=list(log.warnings))
