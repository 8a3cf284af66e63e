"""The pretraining loop: one loop for uscl, uscl-selfsup and simclr, single process or DDP.

Run folder::

    RUN/config.yaml                       resolved configuration
    RUN/labelled_videos.json              the videos whose labels the supervised term used
    RUN/metrics.csv                       one row per epoch (rewritten atomically)
    RUN/last.safetensors + last.json      weights after the latest epoch
    RUN/best.safetensors + best.json      lowest validation loss so far (a hard link to that epoch's last)
    RUN/backbone.safetensors + .json      the best model's backbone, torchvision keys (written when
                                          the run stops; until then load_backbone reads best)
    RUN/train_state.pt                    optimizer, scaler, RNG, metrics (weights_only)
    RUN/tb/                               TensorBoard events (when tensorboard imports)

Resuming restores the weights, optimizer, scaler and RNG states at an epoch
boundary; frame draws and augmentation are seeded per (seed, epoch), so a CPU
run resumed after a kill reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from uscl import __version__
from uscl.checkpoint import (
    link_or_copy,
    load_train_state,
    load_weights,
    save_train_state,
    save_weights,
    strip_wrappers,
    unwrap_model,
)
from uscl.checkpoint.run_files import BACKBONE, BEST, CONFIG_FILE, LABELLED_FILE, LAST, METRICS_FILE, STATE_FILE
from uscl.errors import UsclError
from uscl.pretrain.config import (
    PretrainConfig,
    config_dict,
    config_from_dict,
    config_to_yaml,
    lr_at,
    validate_config,
)
from uscl.pretrain.methods import MethodSpec, compute_losses, method_spec
from uscl.pretrain.selection import choose_labelled, select_videos, split_train_val
from uscl.utils import dist
from uscl.utils.atomic import atomic_write_json, atomic_write_text
from uscl.utils.config import load_yaml
from uscl.utils.device import autocast_for, resolve_device
from uscl.utils.progress import progress
from uscl.utils.seed import make_generator, seed_everything

SMALL_VALIDATION = 32  # validation videos below which "best by validation loss" is flagged as noisy
METRIC_COLUMNS = ["epoch", "total_loss", "contrastive_loss", "supervised_loss", "lr", "val_loss",
                  "images_per_s", "data_wait_share", "epoch_time_s", "labelled_items"]
# settings a resumed run must share with the run it continues
RESUME_LOCKED = ("method", "model.base_model", "model.out_dim", "model.classifier_input", "mixup")


@dataclass
class PretrainResult:
    run_dir: Path
    last_path: Path
    best_path: Path
    backbone_path: Path
    metrics: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float | None = None
    selected_by: str = "val_loss"
    warnings: list[str] = field(default_factory=list)


# -- small helpers -------------------------------------------------------------------
def resolve_precision(precision: str, device: torch.device) -> str:
    if device.type != "cuda":
        return "fp32"
    return "bf16" if precision == "auto" else precision


def rng_state() -> dict[str, Any]:
    """Global RNG states as plain tensors/numbers (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


def _metrics_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in METRIC_COLUMNS})
    return buf.getvalue()


def _get(cfg: PretrainConfig, dotted: str):
    obj: Any = cfg
    for p in dotted.split("."):
        obj = getattr(obj, p)
    return obj


def resume_config(run_dir: str | Path, **overrides: Any) -> PretrainConfig:
    """The config saved in ``run_dir`` with ``resume`` set and dotted ``overrides`` applied."""
    from uscl.pretrain.config import apply_overrides

    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UsclError(f"cannot resume {run_dir}: no {CONFIG_FILE} (is it a `uscl pretrain` run folder?)")
    data = load_yaml(path)
    data = apply_overrides(data, overrides)
    data["resume"] = str(run_dir)
    data["out"] = str(run_dir)
    data["overwrite"] = False
    return config_from_dict(data)


class _Logger:
    """Prints on the main rank only and remembers warnings for the result."""

    def __init__(self, main: bool, stream=None):
        self.main = main
        self.stream = stream
        self.warnings: list[str] = []

    def info(self, msg: str) -> None:
        if self.main:
            print(msg, file=self.stream or sys.stdout, flush=True)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        if self.main:
            print(f"warning: {msg}", file=sys.stderr, flush=True)


# -- the run ----------------------------------------------------------------------------
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
        return _Run(cfg, dinfo, on_epoch_end, log_stream).run()
    finally:
        if created_group:
            dist.cleanup()


class _Run:
    def __init__(self, cfg: PretrainConfig, dinfo: dist.DistInfo, on_epoch_end, log_stream):
        self.cfg = cfg
        self.dinfo = dinfo
        self.on_epoch_end = on_epoch_end
        self.log = _Logger(dinfo.is_main, log_stream)
        self.device = resolve_device(cfg.device, dinfo.local_rank)
        self.precision = resolve_precision(cfg.precision, self.device)
        if self.device.type == "cpu" and cfg.precision in ("bf16", "fp16"):
            self.log.warn(f"precision {cfg.precision} applies to CUDA only; training in fp32 on the CPU")

    # -- setup ---------------------------------------------------------------------------
    def _run_dir(self) -> Path:
        cfg = self.cfg
        if cfg.resume:
            run_dir = Path(cfg.resume)
            if cfg.out and Path(cfg.out).resolve() != run_dir.resolve():
                raise UsclError(f"--resume {run_dir} continues that folder; --out {cfg.out} must be omitted or the same")
            for name in (CONFIG_FILE, STATE_FILE, LAST):
                if not (run_dir / name).is_file():
                    raise UsclError(f"cannot resume {run_dir}: {name} is missing (the run never finished an epoch?)")
            saved = validate_config(config_from_dict(load_yaml(run_dir / CONFIG_FILE)))
            diffs = [f"{k}: run has {_get(saved, k)!r}, asked for {_get(cfg, k)!r}"
                     for k in RESUME_LOCKED if _get(saved, k) != _get(cfg, k)]
            if diffs:
                raise UsclError(f"cannot resume {run_dir} with different settings ({'; '.join(diffs)}); "
                                "start a new run with another --out instead")
            return run_dir
        if not cfg.out:
            raise UsclError("no output folder: give --out RUN (or --resume RUN)")
        run_dir = Path(cfg.out)
        if run_dir.exists() and not run_dir.is_dir():
            raise UsclError(f"{run_dir} exists and is not a folder")
        if run_dir.is_dir() and any(run_dir.iterdir()) and not cfg.overwrite:
            hint = " (it holds a pretraining run: continue it with --resume)" if (run_dir / STATE_FILE).exists() else ""
            raise UsclError(f"output folder {run_dir} is not empty{hint}; choose another --out, or pass --overwrite")
        return run_dir

    def _open_store(self):
        from uscl.store import FrameStore

        cfg = self.cfg
        if not cfg.store:
            raise UsclError("no frame store: give --store STORE (made with `uscl prepare`)")
        store = FrameStore(cfg.store)
        if len(store) == 0:
            raise UsclError(f"the frame store {cfg.store} holds no videos; nothing to pretrain on")
        return store

    def _data(self, store):
        from uscl.data import PairSamplingConfig, VideoItemDataset, make_loader

        cfg, log = self.cfg, self.log
        world = self.dinfo.world_size
        used = select_videos(len(store), cfg.data_rate, cfg.seed)
        train, val = split_train_val(store, used, cfg.dataset.valid_size, cfg.seed)
        if cfg.dataset.valid_size > 0 and len(val) < 2:
            log.warn(f"too few videos ({len(used)}) to hold out a validation set; the best checkpoint is "
                     "chosen by the training loss")
            train, val = list(used), []
        elif val and cfg.select == "best" and len(val) < SMALL_VALIDATION:
            log.warn(f"the validation loss is measured on {len(val)} videos: a noisy guide, whose lowest value "
                     "may fall on an early epoch by chance; `--select last` exports the final epoch instead")
        if len(train) < 2 * world:
            raise UsclError(f"pretraining needs at least {2 * world} training videos "
                            f"({'2 per process' if world > 1 else 'NT-Xent needs negatives'}); the store gives {len(train)}")
        batch = cfg.batch_size
        if len(train) < batch:
            log.warn(f"only {len(train)} training videos for a batch of {batch} videos; using batch size {len(train)}")
            batch = len(train)
        if batch % world:
            new = batch - batch % world
            log.warn(f"batch size {batch} is not a multiple of the {world} processes; using {new}")
            batch = new
        self.global_batch = batch

        classes = store.classes
        has_labels = any(store.videos[i].label is not None for i in train)
        if cfg.method == "uscl" and cfg.label_rate > 0 and cfg.loss.lambda_sup > 0 and not has_labels:
            log.warn("the store has no labels for the training videos: --method uscl runs self-supervised "
                     "(no supervised term)")
        self.spec: MethodSpec = method_spec(cfg.method, mixup=cfg.mixup, wants_labels=cfg.supervised,
                                            has_labels=has_labels)
        self.classes = classes if self.spec.supervised else []
        c2i = {c: i for i, c in enumerate(self.classes)} if self.spec.supervised else None
        use_label = choose_labelled(store, train, cfg.label_rate, cfg.seed) if self.spec.supervised else None
        self.labelled_videos = sum(use_label) if use_label else 0
        # which videos' labels the supervised term sees: fine-tuning checks its test videos against them
        self.labelled_records = [{"video_id": store.videos[v].video_id, "source": store.videos[v].source,
                                  "content_hash": store.videos[v].content_hash}
                                 for v, used in zip(train, use_label or []) if used]
        self.store_id = store.store_id
        d = cfg.dataset
        pairs = PairSamplingConfig(frames_per_item=d.frames_per_item, min_gap=d.min_gap, max_gap=d.max_gap,
                                   mode=self.spec.sampling_mode)
        self.train_ds = VideoItemDataset(store, train, pairs, class_to_index=c2i, use_label=use_label, seed=cfg.seed)
        self.frames_on_device = self._frames_on_device(store, train)
        if self.frames_on_device:
            from uscl.data import DeviceBatchLoader, DeviceFrames

            frames = DeviceFrames(store, train, self.train_ds.channels, self.device)
            log.info(f"training frames on {self.device.type}: {frames.nbytes / 2**30:.2f} GiB, "
                     "batches gathered there (no loader workers)")
            self.train_loader = DeviceBatchLoader(self.train_ds, frames, batch // world, shuffle=True, seed=cfg.seed,
                                                  drop_last=True, world_size=world, rank=self.dinfo.rank)
        else:
            self.train_loader = make_loader(self.train_ds, batch // world, shuffle=True, seed=cfg.seed,
                                            drop_last=True, num_workers=d.num_workers, world_size=world,
                                            rank=self.dinfo.rank, pin_memory=self.device.type == "cuda")
        self.val_loader = None
        if val:
            # fixed draws: the same frames every evaluation (seed offset, epoch 0)
            self.val_ds = VideoItemDataset(store, val, pairs, class_to_index=None, seed=cfg.seed + 7919)
            self.val_loader = make_loader(self.val_ds, min(batch, len(val)), shuffle=False, seed=cfg.seed,
                                          drop_last=False, num_workers=0)
        self.train_videos, self.val_videos = train, val
        self.channels = self.train_ds.channels
        first = store.videos[train[0]]
        if (first.height, first.width) != (d.image_size, d.image_size):
            log.info(f"store frames are {first.height}x{first.width} px, views {d.image_size} px: each step resizes "
                     f"them first; a store prepared at the training size (`uscl prepare --size {d.image_size}`) "
                     "skips that (about 1.4x faster augmentation on a CPU)")

    def _frames_on_device(self, store, videos) -> bool:
        """Whether to hold the training frames on the device (dataset.frames_on_device)."""
        from uscl.data import frames_nbytes

        mode = self.cfg.dataset.frames_on_device
        if mode != "auto":
            return mode == "always"
        if self.device.type != "cuda":
            return False  # on the CPU the memory-mapped store already is in memory
        free, _ = torch.cuda.mem_get_info(self.device)
        return frames_nbytes(store, videos, self.train_ds.channels) <= free // 4

    def _model(self):
        from uscl.augment import AugmentConfig, BatchAugment
        from uscl.models import build_model

        cfg = self.cfg
        seed_everything(cfg.seed)
        model = build_model(cfg.arch, out_dim=cfg.model.out_dim, num_classes=len(self.classes),
                            classifier_input=cfg.model.classifier_input)
        if cfg.fine_tune_from:
            self._init_from(model, cfg.fine_tune_from)
        self.raw_model = model.to(self.device)
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.dinfo.distributed:
            if cfg.sync_bn and self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self.raw_model = model
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            model = torch.compile(model)
        self.model = model
        self.optimizer = torch.optim.Adam(self.raw_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        d = cfg.dataset
        # grey frames stay 1-channel: the backbone's first convolution takes them as RGB-repeated
        self.view_channels = 1 if self.channels == 1 else 3
        self.augment = BatchAugment(AugmentConfig(size=d.image_size, scale=d.scale, ratio=d.ratio, flip_p=d.flip_p,
                                                  jitter_s=d.s, jitter_p=d.jitter_p, mean=d.mean, std=d.std,
                                                  out_channels=self.view_channels),
                                    cuda_graphs=cfg.cuda_graphs)

    def _init_from(self, model: nn.Module, spec: str) -> None:
        path = Path(spec)
        if path.is_dir():
            path = path / BEST if (path / BEST).is_file() else path / LAST
        state, meta = load_weights(path)
        state = strip_wrappers(state)
        target = model if meta.get("key_format") != "torchvision" else model.backbone
        own = target.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise UsclError(f"fine_tune_from {spec}: no weights match a {self.cfg.arch} model")
        target.load_state_dict(usable, strict=False)
        skipped = sorted(set(own) - set(usable))
        self.log.info(f"initialised {len(usable)} tensors from {path}" + (f" ({len(skipped)} left as initialised)" if skipped else ""))

    # -- metadata -------------------------------------------------------------------------
    def _meta(self, epoch: int, val_loss: float | None, train_loss: float | None) -> dict:
        m = unwrap_model(self.raw_model)
        d = self.cfg.dataset
        return {
            "format": "uscl-pretrain", "uscl_version": __version__, "selected_by": self.selected_by,
            "arch": self.cfg.arch, "feature_dim": m.feature_dim, "out_dim": m.out_dim,
            "method": self.cfg.method, "supervised": self.spec.supervised, "mixup": self.spec.mixup,
            "classifier_input": m.classifier_input, "num_classes": m.num_classes, "class_names": self.classes,
            "epoch": epoch, "val_loss": val_loss, "train_loss": train_loss,
            "store_id": self.store.store_id, "store": str(self.cfg.store), "store_options": self.store.options,
            "image_size": d.image_size, "channels": self.channels, "mean": d.mean, "std": d.std,
            "train_videos": len(self.train_videos), "val_videos": len(self.val_videos),
            "labelled_videos": self.labelled_videos, "seed": self.cfg.seed, "config": config_dict(self.cfg),
        }

    # -- steps ------------------------------------------------------------------------------
    def _views(self, batch, generator):
        from uscl.data import gpu_batch_to_views

        v1, v2, labels = gpu_batch_to_views(batch, self.augment, self.cfg.alpha, self.spec.mixup, self.device,
                                            generator=generator)
        if self.channels_last:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        return v1, v2, labels.to(self.device)

    def _train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        lr = lr_at(cfg, epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.train_ds.set_epoch(epoch)
        for obj in (self.train_loader.sampler, getattr(self.train_loader, "batch_sampler", None)):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        # a CPU generator: random parameters are drawn on the host and copied without a sync
        gen = make_generator((cfg.seed * 1_000_003 + epoch) * 257 + self.dinfo.rank)
        steps = len(self.train_loader)
        if cfg.max_steps_per_epoch:
            steps = min(steps, cfg.max_steps_per_epoch)
        self.model.train()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        labelled = torch.zeros((), dtype=torch.int64, device=self.device)
        wait = 0.0
        images = 0
        t0 = time.perf_counter()
        bar = progress(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step")
        it = iter(self.train_loader)
        done = 0
        for step in range(steps):
            tw = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            wait += time.perf_counter() - tw
            v1, v2, labels = self._views(batch, gen)
            with autocast_for(self.precision, self.device):
                parts = compute_losses(self.model, v1, v2, labels, temperature=cfg.loss.temperature,
                                       cosine=cfg.loss.use_cosine_similarity, lambda_sup=cfg.loss.lambda_sup,
                                       supervised=self.spec.supervised, distributed=self.dinfo.distributed)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(parts.total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            sums += torch.stack([parts.total.detach(), parts.contrastive.detach(), parts.supervised.detach()]).double()
            labelled += parts.labelled
            images += 2 * v1.shape[0] * self.dinfo.world_size
            done += 1
            if done % cfg.log_every_n_steps == 0 or done == steps:
                loss_now = float(sums[0].item()) / done
                el = time.perf_counter() - t0
                bar.set_postfix(loss=f"{loss_now:.4f}", img_s=f"{images / max(el, 1e-9):.0f}")
            bar.update(1)
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - t0
        done = max(1, done)
        means = [dist.all_reduce_mean(float(v) / done, self.device) for v in sums.tolist()]
        return {"epoch": epoch + 1, "total_loss": means[0], "contrastive_loss": means[1], "supervised_loss": means[2],
                "lr": lr, "images_per_s": images / max(elapsed, 1e-9),
                "data_wait_share": dist.all_reduce_mean(wait / max(elapsed, 1e-9), self.device),
                "epoch_time_s": elapsed, "labelled_items": int(labelled.item()) if self.spec.supervised else 0}

    @torch.no_grad()
    def _validate(self) -> float | None:
        """NT-Xent on unaugmented frames (fixed draws and mixing weights): lower is better."""
        from uscl.augment import eval_transform
        from uscl.data import mix_views, sample_lambda
        from uscl.losses import nt_xent

        if self.val_loader is None:
            return None
        cfg, d = self.cfg, self.cfg.dataset
        model = unwrap_model(self.raw_model)
        model.eval()
        gen = make_generator(cfg.seed + 104729)
        total, rows = 0.0, 0
        for batch in self.val_loader:
            frames = batch["frames"].to(self.device)  # (B, 3, C, H, W) uint8
            b = frames.shape[0]
            lam = sample_lambda(b, cfg.alpha, generator=gen)
            if b < 2:
                continue
            x = eval_transform(frames.flatten(0, 1), d.image_size, d.mean, d.std,
                               self.view_channels).unflatten(0, (b, 3))
            f1, f2, f3 = x[:, 0], x[:, 1], x[:, 2]
            mixable = batch["mixable"].to(self.device).bool()
            if self.spec.mixup:
                lam = torch.where(mixable, lam.to(self.device), torch.ones_like(lam, device=self.device))
                v1, v2 = mix_views(f1, f2, f3, lam)
            else:
                v1, v2 = f1, f3
            if self.channels_last:
                v1 = v1.contiguous(memory_format=torch.channels_last)
                v2 = v2.contiguous(memory_format=torch.channels_last)
            with autocast_for(self.precision, self.device):
                _, z, _ = model(torch.cat([v1, v2], 0))
            loss = nt_xent(z[:b], z[b:], cfg.loss.temperature, cfg.loss.use_cosine_similarity)
            total += float(loss.item()) * 2 * b
            rows += 2 * b
        return total / rows if rows else None

    # -- saving -------------------------------------------------------------------------------
    def _save(self, row: dict, improved: bool) -> None:
        """last (+ best as a hard link when it improved), metrics, then the training state."""
        run_dir = self.run_dir
        cfg = self.cfg
        meta = self._meta(row["epoch"], row.get("val_loss"), row["total_loss"])
        save_weights(run_dir / LAST, unwrap_model(self.raw_model).state_dict(), meta)
        if improved:
            link_or_copy(run_dir / LAST, run_dir / BEST)
            atomic_write_json((run_dir / BEST).with_suffix(".json"), meta)
        atomic_write_text(run_dir / METRICS_FILE, _metrics_csv(self.metrics))
        save_train_state(run_dir / STATE_FILE, {
            "format": "uscl-train-state", "epoch": row["epoch"], "arch": cfg.arch, "method": cfg.method,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "schedule": {"base_lr": cfg.lr, "flat_epochs": cfg.flat_epochs, "epochs": cfg.epochs},
            "rng": rng_state(), "loader_epoch": row["epoch"], "metrics": self.metrics,
            "best": {"epoch": self.best_epoch, "score": self.best_score, "selected_by": self.selected_by},
        })

    def _restore(self) -> int:
        state = load_train_state(self.run_dir / STATE_FILE)
        if state.get("arch") != self.cfg.arch or state.get("method") != self.cfg.method:
            raise UsclError(f"cannot resume {self.run_dir}: its training state is for {state.get('arch')}/"
                            f"{state.get('method')}, not {self.cfg.arch}/{self.cfg.method}")
        weights, meta = load_weights(self.run_dir / LAST)
        if int(meta.get("epoch", -1)) != int(state["epoch"]):
            raise UsclError(f"cannot resume {self.run_dir}: last.safetensors (epoch {meta.get('epoch')}) and "
                            f"{STATE_FILE} (epoch {state['epoch']}) disagree")
        if meta.get("store_id") and meta["store_id"] != self.store.store_id:
            raise UsclError(f"cannot resume {self.run_dir}: it was trained on another frame store "
                            f"(store id {meta['store_id']}, this one {self.store.store_id})")
        model = unwrap_model(self.raw_model)
        try:
            model.load_state_dict(strip_wrappers(weights), strict=True)
        except RuntimeError as exc:
            raise UsclError(f"cannot resume {self.run_dir}: its weights do not fit this model: {exc}") from exc
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.metrics = list(state.get("metrics", []))
        best = state.get("best", {})
        self.best_epoch, self.best_score = best.get("epoch"), best.get("score")
        self.selected_by = best.get("selected_by", self.selected_by)
        return int(state["epoch"])

    def _export_backbone(self) -> None:
        """RUN/backbone.safetensors: the selected checkpoint's backbone (``select``: best or
        last) with torchvision key names."""
        source = self.cfg.select
        path = self.run_dir / (LAST if source == "last" else BEST)
        if not path.is_file():
            return
        state, meta = load_weights(path)
        backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        keep = ("arch", "feature_dim", "method", "epoch", "val_loss", "train_loss", "selected_by", "store_id",
                "image_size", "channels", "mean", "std", "class_names", "uscl_version")
        save_weights(self.run_dir / BACKBONE, backbone,
                     {k: meta.get(k) for k in keep} | {"source": source, "run": str(self.run_dir), "key_format": "torchvision"})

    def _tensorboard(self):
        if not self.dinfo.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # noqa: BLE001 - tensorboard is optional
            return None
        return SummaryWriter(str(self.run_dir / "tb"))

    # -- main -------------------------------------------------------------------------------------
    def run(self) -> PretrainResult:
        cfg, log = self.cfg, self.log
        self.run_dir = self._run_dir()
        dist.barrier()  # every rank has checked the folder before rank 0 writes to it
        self.store = self._open_store()
        self._data(self.store)
        self._model()
        self.metrics: list[dict] = []
        self.best_epoch: int | None = None
        self.best_score: float | None = None
        self.selected_by = "val_loss" if self.val_loader is not None else "train_loss"
        start = 0
        if cfg.resume:
            start = self._restore()
            log.info(f"resuming {self.run_dir} after epoch {start}")
            if self.dinfo.is_main:  # re-exported from best at the end; until then best stands in
                for p in (self.run_dir / BACKBONE, (self.run_dir / BACKBONE).with_suffix(".json")):
                    p.unlink(missing_ok=True)
        elif self.dinfo.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if cfg.overwrite:
                for name in (STATE_FILE, BEST, LAST, BACKBONE, METRICS_FILE):
                    for p in (self.run_dir / name, (self.run_dir / name).with_suffix(".json")):
                        if p.suffix in (".json", ".safetensors", ".pt", ".csv") and p.is_file():
                            p.unlink()
        if self.dinfo.is_main:
            atomic_write_text(self.run_dir / CONFIG_FILE, config_to_yaml(dataclasses.replace(cfg, resume=None, overwrite=False)))
            atomic_write_json(self.run_dir / LABELLED_FILE, {
                "what": "videos whose labels the supervised term of this pretraining run used",
                "store": cfg.store, "store_id": self.store_id, "method": cfg.method, "videos": self.labelled_records})
        dist.barrier()
        log.info(f"pretraining {cfg.method} ({cfg.arch}, {cfg.dataset.image_size} px) on {len(self.train_videos)} videos "
                 f"(+{len(self.val_videos)} validation), batch {self.global_batch}, "
                 f"{'labels of ' + str(self.labelled_videos) + ' videos' if self.spec.supervised else 'no labels'}, "
                 f"{self.device.type} {self.precision}" + (f", {self.dinfo.world_size} processes" if self.dinfo.distributed else ""))
        tb = self._tensorboard()
        try:
            for epoch in range(start, cfg.epochs):
                row = self._train_epoch(epoch)
                evaluate = (epoch + 1) % cfg.eval_every_n_epochs == 0 or epoch + 1 == cfg.epochs
                row["val_loss"] = self._validate() if evaluate else None
                if not math.isfinite(row["total_loss"]):
                    raise UsclError(f"the training loss became {row['total_loss']} in epoch {epoch + 1}; "
                                    "try a lower --lr or precision fp32")
                score = row["val_loss"] if self.selected_by == "val_loss" else row["total_loss"]
                improved = score is not None and (self.best_score is None or score < self.best_score)
                if improved:
                    self.best_score, self.best_epoch = score, epoch + 1
                self.metrics.append(row)
                if self.dinfo.is_main:
                    self._save(row, improved)
                    if tb is not None:
                        for k in METRIC_COLUMNS[1:]:
                            if row.get(k) is not None:
                                tb.add_scalar(k, row[k], epoch + 1)
                        tb.flush()
                dist.barrier()
                val = f"  val {row['val_loss']:.4f}" if row["val_loss"] is not None else ""
                sup = f", sup {row['supervised_loss']:.4f}" if self.spec.supervised else ""
                log.info(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['total_loss']:.4f} (con {row['contrastive_loss']:.4f}{sup})"
                         f"{val}  lr {row['lr']:.2e}  {row['images_per_s']:.1f} img/s  data {row['data_wait_share']:.0%}"
                         f"  {row['epoch_time_s']:.1f}s{'  *best' if improved else ''}")
                if self.on_epoch_end is not None:
                    self.on_epoch_end(dict(row))
        finally:
            if tb is not None:
                tb.close()
            if self.dinfo.is_main:
                self._export_backbone()
        best = (f"best epoch {self.best_epoch} ({self.selected_by.replace('_', ' ')} {self.best_score:.4f})"
                if self.best_score is not None else "no best epoch")
        log.info(f"done: {self.run_dir} ({best}; backbone.safetensors from the {cfg.select} checkpoint)")
        return PretrainResult(
            run_dir=self.run_dir, last_path=self.run_dir / LAST, best_path=self.run_dir / BEST,
            backbone_path=self.run_dir / BACKBONE, metrics=list(self.metrics), best_epoch=self.best_epoch,
            best_val_loss=self.best_score if self.selected_by == "val_loss" else None,
            selected_by=self.selected_by, warnings=list(log.warnings),
        )
