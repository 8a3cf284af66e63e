"""Shared pieces of the benchmarks: thread pinning, timing, JSON output, synthetic stores.

Import this module before numpy/torch when a benchmark pins itself to one core:
``single_thread_env()`` must set the BLAS/OpenMP variables before those libraries
load their thread pools.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")
REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"


def single_thread_env() -> None:
    """One thread for every math library (call before importing numpy or torch)."""
    for var in THREAD_VARS:
        os.environ[var] = "1"
    os.environ.setdefault("USCL_NO_PROGRESS", "1")


def pin_one_core(cpu: int | None = None) -> int | None:
    """Run this process on one CPU with one torch thread, so rates are per core.

    Returns the CPU used (None where affinity cannot be set).
    """
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)  # fails once parallel work has started; harmless then
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1] if cpu is None else cpu  # the last core: the first is where most daemons land
    os.sched_setaffinity(0, {cpu})
    return cpu


@dataclass
class Rate:
    """A throughput measured with both clocks: wall time and this process's CPU time.

    On a shared, busy machine the wall clock counts time stolen by other
    processes; CPU time of a single-threaded, pinned process does not, so
    ``per_cpu_s`` is the steadier per-core figure.
    """

    items: int
    wall_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.items / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def per_cpu_s(self) -> float:
        return self.items / self.cpu_s if self.cpu_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {"items": self.items, "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                "items_per_s_wall": round(self.per_s, 2), "items_per_s_cpu": round(self.per_cpu_s, 2)}


def measure(step: Callable[[], int], min_seconds: float, warmup: int = 1, max_calls: int | None = None) -> Rate:
    """Call ``step`` (returns items done) until ``min_seconds`` of CPU time have passed."""
    for _ in range(warmup):
        step()
    items, calls = 0, 0
    w0, c0 = time.perf_counter(), time.process_time()
    while True:
        items += step()
        calls += 1
        if time.process_time() - c0 >= min_seconds or (max_calls is not None and calls >= max_calls):
            break
    return Rate(items, time.perf_counter() - w0, time.process_time() - c0)


def machine_info() -> dict:
    """What ran the benchmark (the figures mean little without it)."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpus_visible": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` atomically; say so when an earlier result is replaced."""
    from uscl.utils.atomic import atomic_write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        print(f"replacing {path}", file=sys.stderr)
    atomic_write_json(path, data)
    return path


def emit(report: dict, out: str | None) -> None:
    """Print the report as JSON and also write it to ``out`` when given."""
    print(json.dumps(report, indent=2), flush=True)
    if out:
        write_json(out, report)


# -- data for the benchmarks ------------------------------------------------------------------
def make_synth_store(root: Path, videos_per_class: int, frames: int, size: int, channels: str = "grey") -> Path:
    """Synthetic lung-ultrasound videos (uscl.synth, H.264) → ``uscl prepare`` store of size×size."""
    from uscl.store.prepare import PrepareOptions, prepare
    from uscl.synth import generate

    videos = root / "synth_videos"
    if not (videos / "labels.csv").is_file():
        generate(videos, videos_per_class=videos_per_class, frames=frames, size=size, seed=0)
    store = root / f"store_{channels}_{size}"
    prepare(videos, store, PrepareOptions(size=size, channels=channels), labels_csv=videos / "labels.csv",
            show_progress=False)
    return store


def make_random_store(root: Path, videos: int, frames: int, size: int, channels: int = 1, seed: int = 0,
                      classes: tuple[str, ...] = ("covid", "pneumonia", "regular"), durable: bool = False) -> Path:
    """A store written straight from arrays (fast; for memory and GPU runs, where pixels do not matter).

    Each video is a random base image plus per-frame noise, so frames differ
    the way consecutive ultrasound frames do, a little.
    """
    import numpy as np

    from uscl.store.frame_store import ARRAYS, StoreWriter, VideoRecord

    rng = np.random.default_rng(seed)
    writer = StoreWriter(root, {"size": size, "channels": "grey" if channels == 1 else "rgb"})
    for i in range(videos):
        base = rng.integers(0, 200, (1, size, size, 1), dtype=np.uint8)
        arr = base + rng.integers(0, 50, (frames, size, size, 1), dtype=np.uint8)
        if channels == 3:
            arr = np.repeat(arr, 3, axis=-1)
        vid = f"v{i:06d}"
        if durable:
            writer.add_video(vid, arr, label=classes[i % len(classes)], fps=10.0)
        else:  # a throwaway store: skip the per-file fsync (100k frames = thousands of files)
            np.save(writer.array_path(vid), arr, allow_pickle=False)
            writer.add(VideoRecord(video_id=vid, source=vid, array=f"{ARRAYS}/{vid}.npy", num_frames=frames,
                                   height=size, width=size, channels=arr.shape[-1],
                                   label=classes[i % len(classes)], fps=10.0))
    writer.write_manifest()
    return root


def export_rgb_jpegs(store, out: Path, quality: int = 95) -> list[list[Path]]:
    """Every video of ``store`` as a folder of RGB JPEGs (the original USCL data layout).

    The original frames were 3-channel JPEGs even for grey ultrasound, so grey
    frames are written as RGB (``uscl export-frames`` keeps them 1-channel).
    Returns the frame paths of each video, in store order.
    """
    import numpy as np
    from PIL import Image

    folders = []
    for i, rec in enumerate(store.videos):
        folder = out / rec.video_id
        folder.mkdir(parents=True, exist_ok=True)
        arr = store.frames(i)
        paths = []
        for t in range(arr.shape[0]):
            frame = np.asarray(arr[t])
            if frame.shape[-1] == 1:
                frame = np.repeat(frame, 3, axis=-1)
            p = folder / f"frame_{t:05d}.jpg"
            Image.fromarray(frame, "RGB").save(p, format="JPEG", quality=quality)
            paths.append(p)
        folders.append(paths)
    return folders


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """Memory lines of /proc/PID/status (VmHWM, VmRSS, RssAnon, RssFile...) in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmPeak", "VmSize"):
            out[key] = int(val.split()[0]) * 1024
    return out


def mib(n: float) -> float:
    return round(n / 2**20, 2)


def make_train_step(model, opt, scaler, precision: str, device, channels_last: bool):
    """One pretraining optimiser step on two views (USCL loss with the supervised term); returns the loss.

    The trainer's own :func:`uscl.pretrain.step.train_step`, for the model-only ceiling (random
    tensors) and the end-to-end loop alike, so the two differ only in where the views come from.
    """
    from uscl.pretrain.methods import USCL, StepInputs
    from uscl.pretrain.step import train_step

    method = USCL(supervised=True)

    def step(v1, v2, labels):
        return train_step(model, method, opt, scaler, StepInputs((v1, v2), labels), precision=precision,
                          channels_last=channels_last).total

    return step
