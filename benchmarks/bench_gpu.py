"""Pretraining throughput on a CUDA device: end to end vs the model alone, plus a mixed-precision smoke run.

Self-contained (builds random grey stores at the training size, as
`uscl prepare --size` would, in a temp folder) and sized to finish in well
under 5 minutes on one GPU. For each image size:

* model only: ResNet-18 forward of both views + NT-Xent + CE + backward +
  Adam on random tensors already on the device (the ceiling);
* end to end, frames on the device (what `uscl pretrain` does on CUDA when
  the frames fit): SPG draws on the host, batches gathered on the GPU,
  gpu_batch_to_views (batched augmentation + mixup), the same step;
* end to end through loader workers (≤ 4, pinned memory): memory-mapped
  store → worker → shared memory → pinned → device, then the same;
* the loader alone (+ copy to the device), to tell a starved model from a slow step.

bf16 autocast and channels_last, as `uscl pretrain` does on CUDA; --compile
adds torch.compile. Then `uscl.pretrain.pretrain` runs 2 epochs on a small
store with device cuda and bf16 and its losses must be finite. Prints JSON
(GPU name, images/s, ratios, target 0.8) and writes it to --out.

    python benchmarks/bench_gpu.py --out gpu.json
    python benchmarks/bench_gpu.py --device cpu --tiny       # checks the script itself, no GPU needed
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

TARGET_RATIO = 0.8


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def endless(loader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def bench_size(store_path: Path, size: int, args, device: torch.device) -> dict:
    """images/s of the model alone and of the real data path + model, at ``size`` px."""
    from uscl.augment import AugmentConfig, BatchAugment, gpu_batch_to_views
    from uscl.data import DeviceBatchLoader, DeviceFrames, PairSamplingConfig, VideoItemDataset, make_loader
    from uscl.models import build_model
    from uscl.utils.device import resolve_precision
    from uscl.store import FrameStore
    from uscl.utils.seed import make_generator, seed_everything

    seed_everything(0)
    store = FrameStore(store_path)
    classes = store.classes
    precision = resolve_precision(args.precision, device)
    model = build_model("resnet18", num_classes=len(classes)).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=1e-4)
    net = torch.compile(model) if args.compile else model
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    model.train()
    b = args.batch_size

    step = common.make_train_step(net, opt, scaler, precision, device, channels_last)

    g = torch.Generator(device=device).manual_seed(1)
    r1 = torch.randn(b, 3, size, size, device=device, generator=g)
    r2 = torch.randn(b, 3, size, size, device=device, generator=g)
    rl = torch.randint(0, len(classes), (b,), device=device, generator=g)

    def model_only(warmup: int) -> float:
        for _ in range(warmup):
            step(r1, r2, rl)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(r1, r2, rl)
        sync(device)
        return 2 * b * args.steps / (time.perf_counter() - t0)

    t_compile = time.perf_counter()
    before = model_only(args.warmup)
    t_compile = time.perf_counter() - t_compile

    ds = VideoItemDataset(store, range(len(store)), PairSamplingConfig(), {c: i for i, c in enumerate(classes)}, seed=0)
    # as `uscl pretrain` does: grey frames stay 1-channel (the backbone's conv1 takes them)
    augment = BatchAugment(AugmentConfig(size=size, out_channels=1 if ds.channels == 1 else 3))
    gen = make_generator(0)  # CPU generator: augmentation parameters drawn on the host, no sync

    def end_to_end(batches) -> tuple[float, float, float]:
        """(images/s, share of the time spent waiting for batches, last loss) of the real step."""
        wait, loss = 0.0, None
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                sync(device)
                t0, wait = time.perf_counter(), 0.0
            tw = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - tw
            v1, v2, labels = gpu_batch_to_views(batch, augment, 0.5, True, device, generator=gen)
            loss = step(v1, v2, labels)
        sync(device)
        elapsed = time.perf_counter() - t0
        return 2 * b * args.steps / elapsed, wait / elapsed, float(loss)

    # 1. loader worker processes (memory-mapped store -> shared memory -> pinned -> device)
    loader = make_loader(ds, b, shuffle=True, seed=0, drop_last=True, num_workers=args.workers,
                         pin_memory=device.type == "cuda")
    batches = endless(loader)
    for _ in range(args.warmup):  # the loader alone (+ the copy to the device): can it feed the model?
        next(batches)
    sync(device)
    t_load = time.perf_counter()
    for _ in range(args.steps):
        next(batches)["frames"].to(device, non_blocking=True)
    sync(device)
    loader_items_s = b * args.steps / (time.perf_counter() - t_load)
    e2e_workers, wait_workers, _ = end_to_end(batches)
    del batches, loader  # stops the workers
    # 2. frames held on the device (`uscl pretrain`'s default on CUDA when they fit): no workers
    t_up = time.perf_counter()
    frames = DeviceFrames(store, range(len(store)), ds.channels, device)
    sync(device)
    upload_s = time.perf_counter() - t_up
    e2e_dev, wait_dev, loss = end_to_end(endless(DeviceBatchLoader(ds, frames, b, shuffle=True, seed=0,
                                                                   drop_last=True)))
    del frames
    after = model_only(0)
    ceiling = (before + after) / 2
    result = {
        "image_size": size,
        "store_frame_size": store.videos[0].height,
        "batch_videos": b,
        "images_per_step": 2 * b,
        "steps_timed": args.steps,
        "precision": precision,
        "view_channels": augment.cfg.out_channels,
        "model_only_images_per_s": round(ceiling, 1),
        "model_only_before_after": [round(before, 1), round(after, 1)],
        "end_to_end_images_per_s": round(e2e_dev, 1),
        "ratio_end_to_end_over_model": round(e2e_dev / ceiling, 3),
        "data_wait_share": round(wait_dev, 3),
        "frames_on_device_upload_s": round(upload_s, 2),
        "workers_end_to_end_images_per_s": round(e2e_workers, 1),
        "workers_ratio_end_to_end_over_model": round(e2e_workers / ceiling, 3),
        "workers_data_wait_share": round(wait_workers, 3),
        "loader_only_items_per_s": round(loader_items_s, 1),
        "loader_only_images_per_s": round(2 * loader_items_s, 1),
        "last_loss": round(loss, 4),
        "first_model_only_pass_s": round(t_compile, 1),
    }
    if device.type == "cuda":
        result["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        torch.cuda.reset_peak_memory_stats(device)
    return result


def smoke_pretrain(store_path: Path, out: Path, args, device: torch.device) -> dict:
    """The real `uscl.pretrain.pretrain`, 2 epochs, bf16 on CUDA: the losses must be finite."""
    from uscl.pretrain import PretrainConfig, pretrain
    from uscl.pretrain.config import DatasetConfig

    cfg = PretrainConfig(store=str(store_path), out=str(out), epochs=args.smoke_epochs, batch_size=args.smoke_batch,
                         device=device.type, precision="bf16", log_every_n_steps=1000,
                         dataset=DatasetConfig(image_size=args.smoke_size, num_workers=min(2, args.workers)))
    t0 = time.perf_counter()
    res = pretrain(cfg, log_stream=sys.stderr)
    losses = [r["total_loss"] for r in res.metrics] + [r["val_loss"] for r in res.metrics if r.get("val_loss") is not None]
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    return {
        "epochs": len(res.metrics),
        "precision_asked": "bf16",
        "train_loss": [round(r["total_loss"], 4) for r in res.metrics],
        "val_loss": [None if r.get("val_loss") is None else round(r["val_loss"], 4) for r in res.metrics],
        "images_per_s": [round(r["images_per_s"], 1) for r in res.metrics],
        "backbone_written": res.backbone_path.is_file(),
        "finite": finite,
        "seconds": round(time.perf_counter() - t0, 1),
        "warnings": res.warnings,
    }


def run(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device visible (use --device cpu --tiny to check the script)")
    t_start = time.perf_counter()
    report = {
        "benchmark": "gpu",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "machine": common.machine_info(),
        "loader_workers": args.workers,
        "compiled": bool(args.compile),
        "channels_last": device.type == "cuda",
        "target_ratio": TARGET_RATIO,
    }
    with tempfile.TemporaryDirectory(prefix="uscl_bench_gpu_") as tmp:
        tmp = Path(tmp)
        videos = max(2 * args.batch_size, args.batch_size * args.epoch_batches)
        report["store"] = {"videos": videos, "frames_per_video": args.frames, "channels": 1,
                           "size": args.store_size or "the training size (as `uscl prepare --size`)"}
        report["results"] = []
        for size in args.sizes:
            store = common.make_random_store(tmp / f"store{size}", videos, args.frames, args.store_size or size)
            r = bench_size(store, size, args, device)
            report["results"].append(r)
            print(f"bench_gpu: {size} px: model only {r['model_only_images_per_s']:.0f} img/s, end to end "
                  f"{r['end_to_end_images_per_s']:.0f} img/s (frames on the device), ratio "
                  f"{r['ratio_end_to_end_over_model']:.2f}; with {args.workers} workers "
                  f"{r['workers_end_to_end_images_per_s']:.0f} img/s, ratio {r['workers_ratio_end_to_end_over_model']:.2f}, "
                  f"loader alone {r['loader_only_images_per_s']:.0f} img/s",
                  file=sys.stderr, flush=True)
        if not args.skip_smoke:
            small = common.make_random_store(tmp / "small_store", args.smoke_videos, 6, args.smoke_size)
            report["pretrain_smoke"] = smoke_pretrain(small, tmp / "run", args, device)
    ratios = [r["ratio_end_to_end_over_model"] for r in report["results"]]
    report["meets_target"] = bool(ratios) and min(ratios) >= TARGET_RATIO
    report["smoke_ok"] = report.get("pretrain_smoke", {}).get("finite", None)
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 112])
    p.add_argument("--batch-size", type=int, default=256, help="videos per step (2 images each)")
    p.add_argument("--steps", type=int, default=15, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=4, help="loader workers (the target is met with at most 4)")
    p.add_argument("--precision", default="bf16", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model (adds about a minute)")
    p.add_argument("--frames", type=int, default=4, help="frames per video of the benchmark store")
    p.add_argument("--store-size", type=int, default=0, help="px of the store's frames (default: the training size)")
    p.add_argument("--epoch-batches", type=int, default=8, help="store videos = batch size x this")
    p.add_argument("--smoke-epochs", type=int, default=2)
    p.add_argument("--smoke-videos", type=int, default=80)
    p.add_argument("--smoke-batch", type=int, default=16)
    p.add_argument("--smoke-size", type=int, default=64)
    p.add_argument("--skip-smoke", action="store_true")
    p.add_argument("--tiny", action="store_true", help="seconds on a CPU: checks the script, figures meaningless")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.workers > 4:
        p.error("--workers: the GPU target is about at most 4 loader workers")
    if args.tiny:
        args.sizes, args.batch_size, args.steps, args.warmup = [32], 4, 2, 1
        args.store_size, args.frames, args.epoch_batches, args.workers = 0, 4, 2, min(args.workers, 2)
        args.smoke_videos, args.smoke_batch, args.smoke_size = 12, 4, 32
    return args


def main(argv=None) -> int:
    os.environ.setdefault("USCL_NO_PROGRESS", "1")
    args = parse_args(argv)
    report = run(args)
    common.emit(report, args.out)
    if report["smoke_ok"] is False:
        print("bench_gpu: the pretraining smoke run gave a non-finite loss", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
