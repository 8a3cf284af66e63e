"""Frozen-feature evaluation (linear probe over k folds, several inits): features extracted once
per init and frame, versus once per fold (the reference: what every fold did before).

    python benchmarks/bench_linear_eval.py --out benchmarks/results/linear_eval.json
    python benchmarks/bench_linear_eval.py --tiny

The inits are pretrained backbones (a random init is drawn anew per fold, so nothing can be
reused for it). Both runs fine-tune the same inits on the same folds of the same store in this process, one
after the other; the report gives each wall time, the ratio, and checks that the two produce
the same fold metrics (the cache changes the cost, not the answer).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402


def run(store: Path, out: Path, cache: bool, inits: list[str], size: int, folds: int) -> tuple[float, dict]:
    import uscl.finetune.engine as engine
    from uscl.finetune import FinetuneConfig
    from uscl.finetune.compare import finetune_inits

    engine.Runner.__init__.__kwdefaults__["cache_features"] = cache  # the reference: no cache
    cfg = FinetuneConfig(store=str(store), mode="linear", folds=folds, image_size=size, device="cpu")
    t0 = time.perf_counter()
    finetune_inits(cfg, inits, out, log=lambda *a: None)
    elapsed = time.perf_counter() - t0
    engine.Runner.__init__.__kwdefaults__["cache_features"] = True
    folds_metrics = {name: [f["video"]["accuracy"] for f in json.loads((out / name / "metrics.json").read_text())["folds"]]
                     for name in (i.split("=")[0] for i in inits)}
    return elapsed, folds_metrics


def backbone_file(path: Path, seed: int) -> Path:
    """A pretrained-looking init: a seeded ResNet-18 backbone exported as uscl writes one."""
    import torch
    from torchvision.models import resnet18

    from uscl.checkpoint import export_backbone

    torch.manual_seed(seed)
    export_backbone(resnet18(), path, {"arch": "resnet18", "method": "bench"})
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the JSON report here too")
    ap.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    args = ap.parse_args()
    videos, frames, size, folds = (12, 4, 32, 2) if args.tiny else (60, 12, 112, 5)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = common.make_random_store(root / "store", videos, frames, size)
        inits = [f"{name}=checkpoint:{backbone_file(root / f'{name}.safetensors', seed)}"
                 for seed, name in enumerate(("a", "b", "c"))]
        t_ref, m_ref = run(store, root / "ref", False, inits, size, folds)
        t_new, m_new = run(store, root / "new", True, inits, size, folds)
    report = {
        "benchmark": "linear_eval", "machine": common.machine_info(), "threads": os.environ.get("OMP_NUM_THREADS"),
        "store": {"videos": videos, "frames_per_video": frames, "size": size}, "folds": folds, "inits": len(inits),
        "reference_once_per_fold_s": round(t_ref, 2), "ours_once_per_init_s": round(t_new, 2),
        "speedup": round(t_ref / t_new, 2), "same_fold_metrics": m_ref == m_new,
    }
    common.emit(report, args.out)


if __name__ == "__main__":
    main()
