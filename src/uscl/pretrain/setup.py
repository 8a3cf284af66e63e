"""Building a pretraining run's parts from its config: the videos and loaders (:func:`build_data`),
then the model, method, optimiser and augmentation (:func:`build_training`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from uscl.augment import AugmentConfig, BatchAugment
from uscl.checkpoint import load_weights, strip_wrappers
from uscl.checkpoint.inits import load_init, parse_init
from uscl.checkpoint.run_files import BEST, LAST
from uscl.data import (DeviceBatchLoader, DeviceFrames, FrameItemDataset, PairSamplingConfig, VideoItemDataset,
                       frames_nbytes, make_loader)
from uscl.errors import UsclError
from uscl.models import build_model
from uscl.models.classifier import apply_init
from uscl.pretrain.config import PretrainConfig
from uscl.pretrain.loop import Training
from uscl.pretrain.methods import PretrainMethod, method_class
from uscl.pretrain.probe import OnlineProbe
from uscl.pretrain.selection import choose_labelled, select_videos, split_train_val
from uscl.store import FrameStore
from uscl.utils.dist import DistInfo
from uscl.utils.seed import derive_seed, seed_everything

SMALL_VALIDATION = 32  # validation videos below which "best by validation loss" is flagged as noisy


@dataclass
class RunData:
    """The videos a run trains and validates on, and how they are read."""

    store: FrameStore
    method: PretrainMethod
    train_videos: list[int]
    val_videos: list[int]
    train_loader: object
    val_loader: object | None
    global_batch: int
    classes: list[str]  # the supervised term's classes ([] without it)
    channels: int  # of the stored frames
    frames_on_device: bool
    labelled_records: list[dict] = field(default_factory=list)  # whose labels the run uses (term, probe)
    supervised_videos: int = 0  # videos whose labels the supervised term uses


def open_store(store: str | None) -> FrameStore:
    if not store:
        raise UsclError("no frame store: set store (a folder made by `uscl prepare`)", param="store")
    opened = FrameStore(store)
    if len(opened) == 0:
        raise UsclError(f"the frame store {store} holds no videos; nothing to pretrain on", param="store")
    return opened


def batch_size_for(cfg: PretrainConfig, items: int, world: int, log) -> int:
    """The global batch: at most the training items (videos, or frames), a multiple of the process count."""
    batch = cfg.batch_size
    if items < batch:
        log.warn(f"only {items} training items for a batch of {batch}; using batch size {items}")
        batch = items
    if batch % world:
        log.warn(f"batch size {batch} is not a multiple of the {world} processes; using {batch - batch % world}")
        batch -= batch % world
    return batch


def split_videos(cfg: PretrainConfig, store: FrameStore, world: int, log) -> tuple[list[int], list[int]]:
    """Training and validation videos (data rate, then a by-patient hold-out)."""
    used = select_videos(len(store), cfg.data_rate, cfg.seed)
    train, val = split_train_val(store, used, cfg.dataset.valid_size, cfg.seed)
    if cfg.dataset.valid_size > 0 and len(val) < 2:
        log.warn(f"too few videos ({len(used)}) to hold out a validation set; the best checkpoint is "
                 "chosen by the training loss")
        train, val = list(used), []
    elif val and cfg.select == "best" and len(val) < SMALL_VALIDATION:
        log.warn(f"the validation loss is measured on {len(val)} videos: a noisy guide, whose lowest value "
                 "may fall on an early epoch by chance; select='last' exports the final epoch instead")
    if len(train) < 2 * world and method_class(cfg.method).sampling_mode != "frames":
        raise UsclError(f"pretraining needs at least {2 * world} training videos "
                        f"({'2 per process' if world > 1 else 'NT-Xent needs negatives'}); the store gives {len(train)}",
                        param="store")
    return train, val


def build_method(cfg: PretrainConfig, has_labels: bool) -> PretrainMethod:
    return method_class(cfg.method).from_config(cfg, supervised=cfg.supervised and has_labels)


def build_data(cfg: PretrainConfig, dinfo: DistInfo, device: torch.device, log) -> RunData:
    store = open_store(cfg.store)
    world = dinfo.world_size
    train, val = split_videos(cfg, store, world, log)
    has_labels = any(store.videos[i].label is not None for i in train)
    if cfg.supervised and not has_labels:
        log.warn(f"the store has no labels for the training videos: method {cfg.method} runs self-supervised "
                 "(no supervised term)")
    method = build_method(cfg, has_labels)
    classes = list(store.classes) if method.supervised else []
    c2i = {c: i for i, c in enumerate(classes)} if method.supervised else None
    use_label = choose_labelled(store, train, cfg.label_rate, cfg.seed) if method.supervised else None
    records = [{"video_id": store.videos[v].video_id, "source": store.videos[v].source,
                "content_hash": store.videos[v].content_hash} for v, used in zip(train, use_label or []) if used]
    d = cfg.dataset
    frames_mode = method.sampling_mode == "frames"  # independent frames, not one item per video
    pairs = PairSamplingConfig(frames_per_item=d.frames_per_item, min_gap=d.min_gap, max_gap=d.max_gap,
                               mode="simclr" if frames_mode else method.sampling_mode)
    if frames_mode:
        train_ds = FrameItemDataset(store, train, class_to_index=c2i, use_label=use_label, seed=cfg.seed,
                                    slots=d.frame_slots)
        log.info(f"{method.name}: an epoch is {len(train_ds)} frames of the {len(train)} training videos"
                 f" ({train_ds.num_frames} frames in all); two frames of one video may share a batch")
    else:
        train_ds = VideoItemDataset(store, train, pairs, class_to_index=c2i, use_label=use_label, seed=cfg.seed)
    batch = batch_size_for(cfg, len(train_ds), world, log)
    on_device = frames_on_device(d.frames_on_device, store, train, train_ds.channels, device)
    if on_device:
        frames = DeviceFrames(store, train, train_ds.channels, device)
        log.info(f"training frames on {device.type}: {frames.nbytes / 2**30:.2f} GiB, "
                 "batches gathered there (no loader workers)")
        train_loader = DeviceBatchLoader(train_ds, frames, batch // world, shuffle=True, seed=cfg.seed,
                                         drop_last=True, world_size=world, rank=dinfo.rank)
    else:
        train_loader = make_loader(train_ds, batch // world, shuffle=True, seed=cfg.seed, drop_last=True,
                                   num_workers=d.num_workers, world_size=world, rank=dinfo.rank,
                                   pin_memory=device.type == "cuda")
    val_loader = None
    if val:  # fixed draws: the same frames every evaluation (epoch 0 of their own seed)
        val_ds = VideoItemDataset(store, val, pairs, class_to_index=None, seed=derive_seed(cfg.seed, "validation-frames"))
        val_loader = make_loader(val_ds, min(batch, len(val)), shuffle=False, seed=cfg.seed, drop_last=False,
                                 num_workers=0)
    first = store.videos[train[0]]
    if (first.height, first.width) != (d.image_size, d.image_size):
        log.info(f"store frames are {first.height}x{first.width} px, views {d.image_size} px: each step resizes "
                 f"them first; a store prepared at the training size (PrepareOptions(size={d.image_size})) "
                 "skips that (about 1.4x faster augmentation on a CPU)")
    return RunData(store, method, train, val, train_loader, val_loader, batch, classes, train_ds.channels,
                   on_device, records, len(records))


def frames_on_device(mode: str, store: FrameStore, videos: list[int], channels: int, device: torch.device) -> bool:
    """Whether to hold the training frames on the device (``dataset.frames_on_device``)."""
    if mode != "auto":
        return mode == "always"
    if device.type != "cuda":
        return False  # on the CPU the memory-mapped store already is in memory
    free, _ = torch.cuda.mem_get_info(device)
    return frames_nbytes(store, videos, channels) <= free // 4


def build_training(cfg: PretrainConfig, data: RunData, dinfo: DistInfo, device: torch.device, precision: str,
                   log) -> Training:
    seed_everything(cfg.seed)
    model = build_model(cfg.arch, out_dim=cfg.model.out_dim, num_classes=len(data.classes),
                        classifier_input=cfg.model.classifier_input)
    if cfg.fine_tune_from:
        init_from(model, cfg.fine_tune_from, cfg.arch, log)
    if cfg.init:
        spec = parse_init(cfg.init)
        state, _ = load_init(spec)
        apply_init(model.backbone, state, cfg.arch, spec.spec)
        log.info(f"backbone initialised from {spec.spec}: continued pretraining")
    raw = model.to(device)
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dinfo.distributed:
        if cfg.sync_bn and device.type == "cuda":
            model = raw = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    data.method.setup(raw, device)
    # grey frames stay 1-channel: the backbone's first convolution takes them as RGB-repeated
    view_channels = 1 if data.channels == 1 else 3
    augment = BatchAugment(AugmentConfig.of(cfg.augment, cfg.dataset.image_size, view_channels),
                           cuda_graphs=cfg.cuda_graphs)
    return Training(model=model, raw_model=raw, method=data.method,
                    optimizer=torch.optim.Adam(raw.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay),
                    scaler=torch.amp.GradScaler("cuda", enabled=precision == "fp16"), augment=augment,
                    device=device, precision=precision, channels_last=channels_last, alpha=cfg.alpha,
                    view_channels=view_channels, seed=cfg.seed, world_size=dinfo.world_size, rank=dinfo.rank)


def init_from(model: nn.Module, spec: str, arch: str, log) -> None:
    """Start from the weights of a run folder or file (``fine_tune_from``): every tensor that fits."""
    path = Path(spec)
    if path.is_dir():
        path = path / BEST if (path / BEST).is_file() else path / LAST
    state, meta = load_weights(path)
    state = strip_wrappers(state)
    if meta.get("arch") and meta["arch"] != arch:
        raise UsclError(f"fine_tune_from {spec}: it holds a {meta['arch']} model, but arch is {arch} "
                        f"(set arch={meta['arch']})", param="fine_tune_from")
    target = model if meta.get("key_format") != "torchvision" else model.backbone
    own = target.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise UsclError(f"fine_tune_from {spec}: no weights match a {arch} model", param="fine_tune_from")
    target.load_state_dict(usable, strict=False)
    skipped = sorted(set(own) - set(usable))
    log.info(f"initialised {len(usable)} tensors from {path}" + (f" ({len(skipped)} left as initialised)" if skipped else ""))


def build_probe(cfg: PretrainConfig, data: RunData, device: torch.device, log) -> OnlineProbe | None:
    """The online probe when ``probe.every`` > 0, on ``probe.store`` or the pretraining store;
    when it chooses the checkpoint, its labelled videos join the run's labelled list."""
    if cfg.probe.every <= 0:
        return None
    store = open_store(cfg.probe.store) if cfg.probe.store else data.store
    p = cfg.probe
    probe = OnlineProbe(store, folds=p.folds, knn_k=p.knn_k, frames_per_video=p.frames_per_video,
                        image_size=cfg.dataset.image_size, mean=cfg.augment.mean, std=cfg.augment.std,
                        device=device, seed=cfg.seed)
    log.info(f"online probe every {p.every} epochs: kNN (k={p.knn_k}) and linear on {len(probe.plan.videos)} "
             f"labelled videos of {store.root} ({len(probe.plan.folds)} video-level folds, {p.frames_per_video} "
             "frames per video)")
    if cfg.select == "probe":
        data.labelled_records = data.labelled_records + probe.labelled_records()
        log.info("the probe chooses the checkpoint: its videos are listed in labelled_videos.json, and "
                 "fine-tuning refuses to test on them")
    return probe
