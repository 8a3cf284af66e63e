"""CPU training-step time of every backbone, against resnet18 in the same run.

One step = forward + backward + SGD step of backbone + linear head on a batch of
grey (1-channel) random images, cross-entropy on random labels, train mode, so
what fine-tuning ``mode=full`` and pretraining pay per batch in the network
(no data path). The architectures are timed INTERLEAVED, one step each per
round, and compared by their median step times (a shared machine's load moves
between minutes); rates are given with both clocks, wall and this process's CPU
time, and the ratios to resnet18 use CPU time (steadier under load).

    python benchmarks/bench_backbones.py --out benchmarks/results/backbones.json
    python benchmarks/bench_backbones.py --size 112 --batch-size 16 --repeats 5 --threads 1
    python benchmarks/bench_backbones.py --tiny        # seconds: 32 px, batch 2, two archs
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

REFERENCE = "resnet18"


def make_step(arch: str, size: int, batch: int, seed: int = 0):
    """A closure running one training step of ``arch`` (its model, optimiser and batch built once)."""
    import torch

    from uscl.models import build_classifier

    torch.manual_seed(seed)
    model = build_classifier(arch, 3).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 1, size, size)
    y = torch.randint(0, 3, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    params = sum(p.numel() for p in model.parameters())
    return step, params


def run(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    archs = [REFERENCE] + [a for a in args.archs if a != REFERENCE]
    steps, params = {}, {}
    for a in archs:
        steps[a], params[a] = make_step(a, args.size, args.batch_size)
        for _ in range(args.warmup):
            steps[a]()
    wall = {a: [] for a in archs}
    cpu = {a: [] for a in archs}
    for _ in range(args.repeats):
        for a in archs:  # interleaved: each round times every arch under the same load
            w0, c0 = time.perf_counter(), time.process_time()
            steps[a]()
            wall[a].append(time.perf_counter() - w0)
            cpu[a].append(time.process_time() - c0)
    ref_cpu = statistics.median(cpu[REFERENCE])
    results = {}
    for a in archs:
        w, c = statistics.median(wall[a]), statistics.median(cpu[a])
        results[a] = {"params_m": round(params[a] / 1e6, 2), "step_s_wall": round(w, 4), "step_s_cpu": round(c, 4),
                      "images_per_s_cpu": round(args.batch_size / c, 2), "ratio_to_resnet18": round(c / ref_cpu, 3),
                      "step_s_cpu_all": [round(v, 4) for v in cpu[a]]}
    return {"benchmark": "backbones", "image_size": args.size, "batch": args.batch_size, "input": "grey (1 channel)",
            "step": "forward + backward + SGD (momentum) of backbone + linear head, train mode",
            "torch_threads": args.threads, "repeats": args.repeats, "warmup": args.warmup, "reference": REFERENCE,
            "ratio_of": "median CPU-time step / resnet18's median CPU-time step", "results": results,
            "machine": common.machine_info()}


def parse(argv=None):
    from uscl.models import ARCHITECTURES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: per-core figures)")
    p.add_argument("--tiny", action="store_true", help="32 px, batch 2, resnet18 + mobilenet_v3_large, 1 repeat")
    p.add_argument("--out", help="write the JSON here too")
    args = p.parse_args(argv)
    if args.tiny:
        args.size, args.batch_size, args.repeats, args.warmup = 32, 2, 1, 0
        args.archs = ["resnet18", "mobilenet_v3_large"]
    return args


def main(argv=None) -> int:
    args = parse(argv)
    common.emit(run(args), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
