"""Peak memory of pretraining against the size of the frame store.

For each store size (default 10k and 100k frames of 64×64 grey, random pixels
written straight to a temp store), fresh subprocesses measure:

* ``loader``: one full epoch of the SPG loader over every video (3 frames
  read per video from the memory-mapped arrays, collated), no model;
* ``pretrain``: the real ``uscl.pretrain.pretrain`` loop (ResNet-18, 1 epoch
  at --image-size px, --steps steps, validation pass, checkpoints written).

Each child reports VmHWM (peak resident set), and at the end VmRSS split into
RssAnon (heap) and RssFile (file pages mapped, here the touched pages of the
memory-mapped arrays, reclaimable by the kernel), plus the memory taken by
opening the store (the manifest's records). Peak RSS should grow with the
store by no more than the manifest; the report gives the growth and the part
the manifest explains.

    python benchmarks/bench_memory.py --out benchmarks/results/memory.json
    python benchmarks/bench_memory.py --tiny
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

MODES = ("loader", "pretrain")


# -- child side ---------------------------------------------------------------------------
def child(args) -> dict:
    """Runs in a fresh interpreter: one mode over one store; prints its memory as JSON."""
    import torch

    from uscl.store import FrameStore

    torch.set_num_threads(args.threads)
    stages = {"imported": common.proc_status()}
    store = FrameStore(args.store)
    stages["store_open"] = common.proc_status()
    t0 = time.perf_counter()
    if args.mode == "loader":
        from uscl.data import PairSamplingConfig, VideoItemDataset, make_loader

        ds = VideoItemDataset(store, range(len(store)), PairSamplingConfig(), seed=0)
        loader = make_loader(ds, args.batch_size, shuffle=True, seed=0, drop_last=False)
        loader.set_epoch(0)
        items = sum(int(b["frames"].shape[0]) for b in loader)
        detail = {"items": items, "arrays_open": len(store._cache)}
    else:
        from uscl.pretrain import PretrainConfig, pretrain
        from uscl.pretrain.config import DatasetConfig

        del store  # pretrain opens its own
        cfg = PretrainConfig(store=args.store, out=str(Path(args.run_dir)), epochs=1, batch_size=args.batch_size,
                             device="cpu", max_steps_per_epoch=args.steps, log_every_n_steps=10_000,
                             dataset=DatasetConfig(image_size=args.image_size, num_workers=0))
        res = pretrain(cfg, log_stream=sys.stderr)
        row = res.metrics[-1]
        detail = {"steps": args.steps, "loss": row["total_loss"], "val_loss": row.get("val_loss"),
                  "images_per_s": row["images_per_s"]}
    stages["end"] = common.proc_status()
    return {"mode": args.mode, "seconds": round(time.perf_counter() - t0, 2), "stages": stages, **detail}


def run_child(mode: str, store: Path, run_dir: Path, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--store", str(store),
           "--run-dir", str(run_dir), "--image-size", str(args.image_size), "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    env = {**os.environ, "USCL_NO_PROGRESS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- parent side --------------------------------------------------------------------------
def summarise(child_out: dict) -> dict:
    st = child_out["stages"]
    end = st["end"]
    return {
        "peak_rss_mib": common.mib(end["VmHWM"]),
        "end_rss_anon_mib": common.mib(end["RssAnon"]),
        "end_rss_file_mib": common.mib(end["RssFile"]),
        "store_open_cost_mib": common.mib(st["store_open"]["VmRSS"] - st["imported"]["VmRSS"]),
        "seconds": child_out["seconds"],
        **{k: v for k, v in child_out.items() if k not in ("stages", "mode", "seconds")},
    }


def run(args) -> dict:
    tmp_root = Path(tempfile.mkdtemp(prefix="uscl_bench_memory_", dir=args.tmp))
    sizes = []
    try:
        for total in args.frames_total:
            videos = max(2, total // args.frames_per_video)
            store = tmp_root / f"store_{total}"
            t0 = time.perf_counter()
            common.make_random_store(store, videos, args.frames_per_video, args.store_size)
            write_s = time.perf_counter() - t0
            manifest = (store / "manifest.json").stat().st_size
            arrays = sum(p.stat().st_size for p in (store / "arrays").iterdir())
            entry = {"frames": videos * args.frames_per_video, "videos": videos,
                     "store_mib": common.mib(arrays), "manifest_kib": round(manifest / 1024, 1),
                     "write_s": round(write_s, 1)}
            for mode in args.modes:
                run_dir = tmp_root / f"run_{total}_{mode}"
                entry[mode] = summarise(run_child(mode, store, run_dir, args))
                shutil.rmtree(run_dir, ignore_errors=True)
            shutil.rmtree(store, ignore_errors=True)
            sizes.append(entry)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    small, large = sizes[0], sizes[-1]
    growth = {}
    for mode in args.modes:
        peak = large[mode]["peak_rss_mib"] - small[mode]["peak_rss_mib"]
        manifest = large[mode]["store_open_cost_mib"] - small[mode]["store_open_cost_mib"]
        growth[mode] = {
            "peak_rss_growth_mib": round(peak, 2),
            "manifest_in_memory_growth_mib": round(manifest, 2),
            "growth_beyond_manifest_mib": round(peak - manifest, 2),
            "file_pages_growth_mib": round(large[mode]["end_rss_file_mib"] - small[mode]["end_rss_file_mib"], 2),
        }
    return {
        "benchmark": "memory",
        "what": "peak RSS (VmHWM) of a fresh process per store size and mode",
        "machine": common.machine_info(),
        "store": f"random grey {args.store_size} px frames, {args.frames_per_video} frames per video",
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "pretrain_steps": args.steps,
        "sizes": sizes,
        "growth_small_to_large": growth,
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames-total", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--frames-per-video", type=int, default=50)
    p.add_argument("--store-size", type=int, default=64, help="px of the stored frames")
    p.add_argument("--image-size", type=int, default=64, help="training resolution")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="pretraining steps (max_steps_per_epoch)")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--tmp", help="folder for the temporary stores (default: the system temp folder)")
    p.add_argument("--tiny", action="store_true", help="seconds in all (smoke test); figures meaningless")
    p.add_argument("--out", help="also write the JSON here")
    # child side
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.frames_total, args.frames_per_video, args.store_size = [120, 480], 6, 32
        args.image_size, args.batch_size, args.steps = 32, 4, 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        args.mode = args.child
        print(json.dumps(child(args)), flush=True)
        return 0
    common.emit(run(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
