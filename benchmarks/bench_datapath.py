"""Data path alone, on ONE core: uscl's frame store + batched augmentation vs the original PIL path.

Same videos, same run, same core (torch/BLAS threads 1, CPU affinity 1 core):

* reference: the original USCL path (benchmarks/reference_pil.py): per item,
  PIL-decode 3 RGB JPEG frames from the video's folder, the PIL/torchvision
  transform chain on each, mixup; collated by a DataLoader;
* ours, loader only: SPG frames read from the memory-mapped store + collate
  (what the CPU does when augmentation runs on the GPU);
* ours, all on the CPU: the loader + BatchAugment + mixup (gpu_batch_to_views
  with device cpu).

Rates are items/s (one item = one video = the 2 mixed views of 3 frames), per
CPU-second of this single-threaded, pinned process (steady on a shared box),
and per wall-second. Each measurement runs ``--repeats`` times, interleaved;
the best of each is reported (the least disturbed by other processes).

    python benchmarks/bench_datapath.py --out benchmarks/results/datapath.json
    python benchmarks/bench_datapath.py --pocus pocus_store          # a store of real POCUS videos
    python benchmarks/bench_datapath.py --tiny                       # seconds; for the smoke test

Data: synthetic lung-ultrasound videos (uscl.synth, 3 classes × N videos × F
frames) prepared at --store-size px twice, grey (the `uscl prepare` default)
and RGB (grey saved as RGB, like real POCUS frames), and once more, grey, at
the training size (`uscl prepare --size 224`: the resize is done once at
ingest instead of every step). The reference reads the same frames as folders
of RGB JPEGs (quality 95) at the same frame size: the headline compares ours
on the training-size store with the reference on 224 px JPEGs, and the
--store-size rows compare both on 256 px frames.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

common.single_thread_env()

import argparse  # noqa: E402
import tempfile  # noqa: E402

import torch  # noqa: E402

TARGET_RATIO = 10.0


def endless(loader):
    """Batches of ``loader`` forever, epoch after epoch."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def reference_step(videos, batch_size: int, size: int):
    from reference_pil import reference_loader

    it = endless(reference_loader(videos, batch_size, size=size))

    def step() -> int:
        v1, _ = next(it)
        return int(v1.shape[0])

    return step


def ours_steps(store, batch_size: int, size: int):
    """(loader-only step, loader+augment+mixup step) over the whole store."""
    from uscl.augment import AugmentConfig, BatchAugment
    from uscl.augment import gpu_batch_to_views
    from uscl.data import PairSamplingConfig, VideoItemDataset, make_loader
    from uscl.utils.seed import make_generator

    c2i = {c: i for i, c in enumerate(store.classes)}
    ds = VideoItemDataset(store, range(len(store)), PairSamplingConfig(), class_to_index=c2i or None, seed=0)
    # as `uscl pretrain` does: grey frames stay 1-channel (the backbone's conv1 takes them)
    aug = BatchAugment(AugmentConfig(size=size, out_channels=1 if ds.channels == 1 else 3))
    gen = make_generator(0)
    it_load = endless(make_loader(ds, batch_size, shuffle=True, seed=0, drop_last=True))
    it_full = endless(make_loader(ds, batch_size, shuffle=True, seed=1, drop_last=True))

    def load_only() -> int:
        return int(next(it_load)["frames"].shape[0])

    checked = []

    def full() -> int:
        batch = next(it_full)
        v1, v2, _ = gpu_batch_to_views(batch, aug, 0.5, True, "cpu", gen)
        if not checked:  # once (the warm-up call), outside the timed calls
            assert v1.shape[-1] == size and torch.isfinite(v1).all() and torch.isfinite(v2).all()
            checked.append(True)
        return int(v1.shape[0])

    return load_only, full


def run(args) -> dict:
    from uscl.store import FrameStore

    cpu = common.pin_one_core()
    with tempfile.TemporaryDirectory(prefix="uscl_bench_datapath_") as tmp:
        tmp = Path(tmp)
        if args.pocus:
            stores = {"pocus": FrameStore(args.pocus)}
            source = f"frame store {args.pocus}"
            refs = {"pocus": stores["pocus"]}
        else:
            def synth(size, channels):
                return FrameStore(common.make_synth_store(tmp, args.videos_per_class, args.frames, size, channels))

            stores = {"grey": synth(args.store_size, "grey"), "rgb": synth(args.store_size, "rgb")}
            refs = {"grey": stores["rgb"]}  # the reference reads the same frames as RGB JPEGs
            if args.image_size != args.store_size:
                # the store as `uscl prepare --size <training size>` makes it: no resize per step
                stores["grey_train_size"] = synth(args.image_size, "grey")
                refs["grey_train_size"] = stores["grey_train_size"]
            source = (f"uscl.synth: 3 classes x {args.videos_per_class} videos x {args.frames} frames, "
                      f"prepared at {args.store_size} px (and at the training size, {args.image_size} px)")
        first = next(iter(stores.values()))
        batch = min(args.batch_size, len(first))
        steps = {}
        for name, ref_store in refs.items():
            jpegs = common.export_rgb_jpegs(ref_store, tmp / f"jpeg_{name}")
            steps["reference" if name in ("grey", "pocus") else f"reference_{name}"] = \
                reference_step(jpegs, batch, args.image_size)
        for name, store in stores.items():
            steps[f"ours_loader_only_{name}"], steps[f"ours_cpu_augment_{name}"] = ours_steps(store, batch, args.image_size)
        runs: dict[str, list] = {k: [] for k in steps}
        for _ in range(args.repeats):  # interleaved, so a busy spell hits every path alike
            for name, step in steps.items():
                runs[name].append(common.measure(step, args.seconds, warmup=1))
    best = {k: max(v, key=lambda r: r.per_cpu_s) for k, v in runs.items()}

    def ref_for(name: str) -> str:
        return "reference_grey_train_size" if name.endswith("grey_train_size") else "reference"

    results = {}
    for k, r in best.items():
        ref = best[ref_for(k)].per_cpu_s if k.startswith("ours") else best["reference"].per_cpu_s
        results[k] = {**r.to_dict(), "ratio_over_reference": round(r.per_cpu_s / ref, 2) if ref else None,
                      "reference": ref_for(k) if k.startswith("ours") else None,
                      "repeats_items_per_s_cpu": [round(x.per_cpu_s, 2) for x in runs[k]]}
    main = "pocus" if args.pocus else ("grey_train_size" if "grey_train_size" in stores else "grey")
    headline = results[f"ours_cpu_augment_{main}"]["ratio_over_reference"]
    report = {
        "benchmark": "datapath",
        "what": "items/s on one CPU core; item = one video -> 2 mixed views of 3 frames",
        "machine": common.machine_info(),
        "pinned_cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "image_size": args.image_size,
        "batch_size": batch,
        "data": source,
        "videos": len(first),
        "frames": first.num_frames,
        "reference_input": "RGB JPEG folders (quality 95) of the same frames, at the store's frame size",
        "headline": f"ours_cpu_augment_{main} vs {ref_for(main) if not args.pocus else 'reference'}",
        "results": results,
        "ratio_ours_cpu_augment_over_reference": headline,
        "ratio_ours_loader_only_over_reference": results[f"ours_loader_only_{main}"]["ratio_over_reference"],
        "target_ratio": TARGET_RATIO,
        "meets_target": bool(headline is not None and headline >= TARGET_RATIO),
    }
    if "grey_train_size" in stores:
        report["ratio_ours_cpu_augment_over_reference_store_size"] = results["ours_cpu_augment_grey"]["ratio_over_reference"]
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pocus", metavar="STORE", help="use this frame store (e.g. prepared from real POCUS videos)")
    p.add_argument("--videos-per-class", type=int, default=8)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--store-size", type=int, default=256, help="px of the prepared synthetic store")
    p.add_argument("--image-size", type=int, default=224, help="training resolution")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=4.0, help="CPU seconds per measurement")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="a few seconds in all (smoke test); figures meaningless")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.tiny:
        args.videos_per_class, args.frames, args.store_size, args.image_size = 2, 4, 64, 32
        args.batch_size, args.seconds, args.repeats = 4, 0.05, 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    common.emit(run(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
