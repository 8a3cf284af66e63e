"""Throughput of the pretraining step, end to end, against the model alone.

The two are timed INTERLEAVED, one step at a time (model-only, end to end,
end to end, model-only, ...), and compared by their median step times: on a
shared, noisy machine separate blocks minutes apart measured the load, not
the data path (the model-only rate once moved 6.85 -> 4.85 img/s in one run).

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
    from uscl.augment import gpu_batch_to_views
    from uscl.data import PairSamplingConfig, VideoItemDataset, make_loader
    from uscl.models import build_model
    from uscl.utils.device import resolve_precision
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

    from common import make_train_step  # benchmarks/ is on sys.path when run as a script

    train_step = make_train_step(model, opt, scaler, precision, device, channels_last)

    # -- model alone vs end to end, INTERLEAVED: one model-only step on random tensors
    # of the same shape, then one real step, and so on. On a shared machine the
    # load changes by tens of percent within a minute; alternating single steps
    # exposes both to the same spells, and the ratio of medians ignores outliers.
    g = torch.Generator(device=device).manual_seed(1)
    r1 = torch.randn(args.batch_size, 3, size, size, device=device, generator=g)
    r2 = torch.randn(args.batch_size, 3, size, size, device=device, generator=g)
    rlabels = torch.randint(0, len(classes), (args.batch_size,), device=device, generator=g)
    per_step = 2 * args.batch_size  # images (2 views per video)
    state = {"epoch": 0, "it": None}

    def next_batch():
        while True:
            if state["it"] is None:
                loader.set_epoch(state["epoch"])
                state["it"] = iter(loader)
            try:
                return next(state["it"])
            except StopIteration:
                state["it"], state["epoch"] = None, state["epoch"] + 1

    def model_step() -> float:
        sync(device)
        t0 = time.perf_counter()
        train_step(r1, r2, rlabels)
        sync(device)
        return time.perf_counter() - t0

    def e2e_step() -> tuple[float, float]:
        sync(device)
        t0 = time.perf_counter()
        batch = next_batch()
        waited = time.perf_counter() - t0
        v1, v2, labels = gpu_batch_to_views(batch, augment, 0.5, True, device, generator=gen)
        train_step(v1, v2, labels.to(device))
        sync(device)
        return time.perf_counter() - t0, waited

    model.train()
    for _ in range(args.warmup):
        model_step()
        e2e_step()
    model_times, e2e_times, waits = [], [], []
    for k in range(args.steps):
        pair = (model_step, e2e_step) if k % 2 == 0 else (e2e_step, model_step)  # alternate who goes first
        for fn in pair:
            r = fn()
            if fn is model_step:
                model_times.append(r)
            else:
                e2e_times.append(r[0])
                waits.append(r[1])
    model_med, e2e_med = float(np.median(model_times)), float(np.median(e2e_times))
    model_only, e2e = per_step / model_med, per_step / e2e_med
    epoch = state["epoch"]

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
        "timing": "interleaved single steps (model-only, end-to-end alternating); rates from the medians",
        "end_to_end_images_per_s": round(e2e, 2),
        "model_only_images_per_s": round(model_only, 2),
        "ratio_end_to_end_over_model": round(model_med / e2e_med, 3),
        # the same from adjacent (model, end-to-end) pairs: robust also to slow drifts of the load
        "ratio_paired_median": round(float(np.median(np.array(model_times) / np.array(e2e_times))), 3),
        "model_only_step_s": [round(t, 3) for t in model_times],
        "end_to_end_step_s": [round(t, 3) for t in e2e_times],
        "data_wait_share": round(sum(waits) / sum(e2e_times), 3),
        "data_path_only_images_per_s": round(2 * n_items / data_time, 2),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="frame store to read (default: a temporary random one)")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 112])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="measured steps of each kind (interleaved)")
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
