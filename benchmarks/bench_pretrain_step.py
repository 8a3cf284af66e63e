"""Throughput of the pretraining step, end to end, against the model alone.

For each image size: images/s of the full step (loader → SPG frames → batched
augmentation + mixup → forward/backward of both views → Adam), and of the
model's own forward+backward+step on random tensors of the same shape, run in
the same process; their ratio says how much the data path costs, and the
share of time spent waiting on the loader says whether the data path is the
bottleneck. Images = model inputs (2 views per video).

    python benchmarks/bench_pretrain_step.py --sizes 224 112 --steps 5 --out bench.json
    python benchmarks/bench_pretrain_step.py --device cuda --batch-size 32 --steps 30

With no --store, a store of random grey 256 px videos is written to a temp folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_store(root: Path, videos: int, frames: int, size: int) -> Path:
    from uscl.store import StoreWriter

    rng = np.random.default_rng(0)
    writer = StoreWriter(root, {"size": size, "channels": "grey"})
    for i in range(videos):
        base = rng.integers(0, 255, (1, size, size, 1), dtype=np.uint8)
        noise = rng.integers(0, 40, (frames, size, size, 1), dtype=np.uint8)
        writer.add_video(f"v{i:04d}", base // 2 + noise, label=("a", "b", "c")[i % 3])
    writer.write_manifest()
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_size(store_path: str, size: int, args, device: torch.device) -> dict:
    from uscl.augment import AugmentConfig, BatchAugment
    from uscl.data import PairSamplingConfig, VideoItemDataset, gpu_batch_to_views, make_loader
    from uscl.models import build_model
    from uscl.pretrain.methods import compute_losses
    from uscl.pretrain.trainer import autocast_for, resolve_precision
    from uscl.store import FrameStore
    from uscl.utils.seed import make_generator, seed_everything

    seed_everything(0)
    store = FrameStore(store_path)
    precision = resolve_precision(args.precision, device)
    classes = store.classes
    ds = VideoItemDataset(store, range(len(store)), PairSamplingConfig(), {c: i for i, c in enumerate(classes)}, seed=0)
    loader = make_loader(ds, args.batch_size, shuffle=True, seed=0, drop_last=True, num_workers=args.workers,
                         pin_memory=device.type == "cuda")
    augment = BatchAugment(AugmentConfig(size=size))
    model = build_model(args.arch, num_classes=len(classes)).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=1e-4)
    if args.compile:
        model = torch.compile(model)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    gen = make_generator(0)  # CPU: augmentation parameters are drawn on the host, no per-step sync

    def train_step(v1, v2, labels):
        if channels_last:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        with autocast_for(precision, device):
            parts = compute_losses(model, v1, v2, labels, supervised=True)
        opt.zero_grad(set_to_none=True)
        scaler.scale(parts.total).backward()
        scaler.step(opt)
        scaler.update()

    # -- model alone on random tensors of the same shape (before and after the end-to-end run) --
    g = torch.Generator(device=device).manual_seed(1)
    r1 = torch.randn(args.batch_size, 3, size, size, device=device, generator=g)
    r2 = torch.randn(args.batch_size, 3, size, size, device=device, generator=g)
    rlabels = torch.randint(0, len(classes), (args.batch_size,), device=device, generator=g)
    images = 2 * args.batch_size * args.steps

    def model_only_rate(warmup: int) -> float:
        for _ in range(warmup):
            train_step(r1, r2, rlabels)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            train_step(r1, r2, rlabels)
        sync(device)
        return images / (time.perf_counter() - t0)

    model.train()
    model_before = model_only_rate(args.warmup)

    # -- end to end ---------------------------------------------------------------
    steps_needed = args.warmup + args.steps
    epoch, it = 0, None
    wait = 0.0
    t_start = None
    done = 0
    while done < steps_needed:
        if it is None:
            loader.set_epoch(epoch)
            it = iter(loader)
        if done == args.warmup:
            sync(device)
            t_start, wait = time.perf_counter(), 0.0
        tw = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it, epoch = None, epoch + 1
            continue
        wait += time.perf_counter() - tw
        v1, v2, labels = gpu_batch_to_views(batch, augment, 0.5, True, device, generator=gen)
        train_step(v1, v2, labels.to(device))
        done += 1
    sync(device)
    e2e_time = time.perf_counter() - t_start
    e2e = images / e2e_time

    model_after = model_only_rate(0)
    model_only = (model_before + model_after) / 2

    # -- the data path alone (loader + augmentation + mixup, no model) ----------------------
    loader.set_epoch(epoch + 1)
    it = iter(loader)
    t0 = time.perf_counter()
    n_items = 0
    for _ in range(args.steps):
        try:
            batch = next(it)
        except StopIteration:
            loader.set_epoch(epoch + 2)
            it = iter(loader)
            batch = next(it)
        gpu_batch_to_views(batch, augment, 0.5, True, device, generator=gen)
        n_items += batch["frames"].shape[0]
    sync(device)
    data_time = time.perf_counter() - t0
    return {
        "image_size": size,
        "batch_videos": args.batch_size,
        "steps": args.steps,
        "precision": precision,
        "end_to_end_images_per_s": round(e2e, 2),
        "model_only_images_per_s": round(model_only, 2),
        "model_only_before_after": [round(model_before, 2), round(model_after, 2)],
        "ratio_end_to_end_over_model": round(e2e / model_only, 3),
        "data_wait_share": round(wait / e2e_time, 3),
        "data_path_only_images_per_s": round(2 * n_items / data_time, 2),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="frame store to read (default: a temporary random one)")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 112])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or str(make_store(Path(tmp) / "store", videos=max(64, 2 * args.batch_size), frames=8, size=256))
        results = [bench_size(store, s, args, device) for s in args.sizes]
    report = {
        "benchmark": "pretrain_step",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores visible)",
        "torch_threads": torch.get_num_threads(),
        "loader_workers": args.workers,
        "arch": args.arch,
        "compiled": bool(args.compile),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "store": args.store or "temporary random grey 256 px store",
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
