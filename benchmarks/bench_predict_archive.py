"""`uscl predict` over an archive of short clips: clips/s and peak memory, streaming vs the old loop.

Writes N copies of a few synthetic clips (uscl.synth, H.264, 128 px, 20 frames at 10 fps), fine-tunes a
tiny linear-probe model on them (64 px), then runs, each in its own process so that its peak RSS is its own:

* ``reference``: the loop before issue 14: decoding in the main process, every result held in memory,
  the CSVs and JSON written at the end (``predict_items(workers=1)`` then ``write_outputs``);
* ``stream_wK``: ``uscl predict --out DIR --workers K``: decoding in the main process (K = 1) or in K
  processes ahead of the model (K = 2), rows streamed to the CSVs, predictions.json streamed from the journal.

Each at N and at N/5 clips, so "peak RSS flat in the number of inputs" can be read off. Peak RSS is the
process's own high-water mark (VmHWM, from its exec) and, separately, the largest decoding worker's
(VmRSS polled every 50 ms). Times start after torch and uscl are imported.

    python benchmarks/bench_predict_archive.py --clips 500 --out benchmarks/results/predict_archive.json
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

RUNNER = r"""
import json, os, sys, threading, time
import torch, uscl.infer, uscl.cli  # imported before the clock starts: not what is measured


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS")) / 1024


def children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return kids


peak = {"main": 0.0, "worker": 0.0}
stop = threading.Event()


def sample():  # the decoding workers' memory: each one's RSS, polled (they exit before we could ask)
    while not stop.wait(0.05):
        for k in children(os.getpid()):
            try:
                peak["worker"] = max(peak["worker"], rss_mb(k))
            except (OSError, StopIteration):
                pass


threading.Thread(target=sample, daemon=True).start()
argv, mode = json.loads(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
if mode == "reference":
    from uscl.infer import load_model, predict_items, write_outputs, gather_inputs
    model = load_model(argv["model"])
    run = predict_items(model, gather_inputs([argv["clips"]]), device="cpu", workers=1, show_progress=False)
    write_outputs(run, argv["out"])
else:
    rc = uscl.cli.main(["predict", argv["model"], argv["clips"], "--out", argv["out"], "--device", "cpu",
                        "--quiet", "--workers", mode])
    assert rc == 0, rc
wall = time.perf_counter() - t0
stop.set()
with open("/proc/self/status") as fh:  # VmHWM: this process's peak since its exec (ru_maxrss counts the fork)
    hwm = next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024
print(json.dumps({"wall_s": wall, "peak_rss_mb": hwm, "worker_peak_rss_mb": peak["worker"]}))
"""


def make_model(root: Path, clip_size: int = 128, clip_frames: int = 20, fps: float = 5) -> Path:
    """A linear-probe run folder fine-tuned on 12 synthetic clips (their copies are the archive): clips of
    ``clip_frames`` frames at 10 fps, ``clip_size`` px; the model sees ``fps`` frames a second at 64 px."""
    from uscl.finetune.config import FinetuneConfig
    from uscl.finetune.train import finetune
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth import generate

    generate(root / "synth", videos_per_class=4, frames=clip_frames, size=clip_size, fps=10)
    prepare(root / "synth", root / "store", PrepareOptions(size=64, fps=fps), labels_csv=root / "synth" / "labels.csv",
            show_progress=False)
    finetune(FinetuneConfig(out=str(root / "ft"), store=str(root / "store"), mode="linear", folds=2, image_size=64,
                            device="cpu", seed=0), log=lambda *a: None)
    return root / "ft"


def run_one(model: Path, clips: Path, out: Path, mode: str) -> dict:
    args = json.dumps({"model": str(model), "clips": str(clips), "out": str(out)})
    env = {**os.environ, "USCL_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, args, mode], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    n = sum(1 for _ in open(out / "videos.csv")) - 1
    res.update(clips=n, clips_per_s=round(n / res["wall_s"], 2))
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=500)
    p.add_argument("--workers", default="1,2", help="streaming runs' --workers values (1: decode in the main process)")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--clip-size", type=int, default=128, help="pixels of the synthetic clips (default 128)")
    p.add_argument("--clip-frames", type=int, default=20, help="frames per clip, at 10 fps (default 20)")
    p.add_argument("--fps", type=float, default=5, help="frames a second the model sees (default 5)")
    p.add_argument("--quick", action="store_true", help="12 clips, --workers 2 (the smoke test)")
    a = p.parse_args()
    clips, workers = (12, ["2"]) if a.quick else (a.clips, a.workers.split(","))
    sizes = [clips] if a.quick else sorted({max(10, clips // 5), clips})
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        model = make_model(root, a.clip_size, a.clip_frames, a.fps)
        folders = {n: make_archive_copies(root, n) for n in sizes}
        setup_s = time.perf_counter() - t0
        for n, folder in folders.items():
            for mode in ["reference", *workers]:
                name = f"{'reference' if mode == 'reference' else 'stream_w' + mode}_{n}"
                results[name] = run_one(model, folder, root / f"out_{name}", mode)
                print(name, results[name], file=sys.stderr, flush=True)
    ref = results[f"reference_{clips}"]
    ratios = {name: round(r["clips_per_s"] / ref["clips_per_s"], 3) for name, r in results.items()
              if name.endswith(f"_{clips}") and not name.startswith("reference")}
    common.emit({"benchmark": "predict_archive", "machine": common.machine_info(), "setup_s": round(setup_s, 1),
                 "clips": clips, "clip": {"size": a.clip_size, "frames": a.clip_frames, "source_fps": 10,
                                          "model_fps": a.fps, "model_size": 64}, "results": results, "clips_per_s_vs_reference": ratios}, a.out)


def make_archive_copies(root: Path, n: int) -> Path:
    """A folder of ``n`` copies of the synthetic clips made by :func:`make_model`."""
    sources = sorted((root / "synth").rglob("*.mp4"))
    folder = root / f"archive{n}"
    folder.mkdir()
    for i in range(n):
        shutil.copyfile(sources[i % len(sources)], folder / f"clip_{i:05d}.mp4")
    return folder


if __name__ == "__main__":
    main()
