"""`uscl prepare --workers 1 / 2` against PyAV's own decode rate on the same files, in one run.

Generates H.264 clips (bench_ingest.make_clip: a speckled sector, default
320×240, 300 frames each), then times, round by round in this order:

* decode: PyAV alone in this process, one decoder thread (as prepare's
  workers decode), every frame to a numpy grey frame at the store size (one
  swscale reformatter per video, as prepare does): the per-core ceiling;
  ``decode_bare`` decodes without converting; ``decode_default_threads`` with
  FFmpeg's default threads (one per core: slice threading);
* workers_1: ``prepare(..., workers=1)`` into a fresh store (in this process:
  decode, grey + resize, array written atomically, sha256 of source and array,
  sidecar);
* workers_2: the same with 2 worker processes (the fork server already
  running: started once per process, ``pool_start_s``).

Best of ``--repeat`` rounds. Ratios: workers_1 / decode (target >= 0.9 per
worker) and workers_2 / workers_1 (target >= 1.8 on 2 cores). Prints JSON
(and writes it to --out). Not pinned: the 2-worker run needs both cores.

    python benchmarks/bench_ingest_workers.py --out benchmarks/results/ingest_workers.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("USCL_NO_PROGRESS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import av  # noqa: E402
from av.video.reformatter import VideoReformatter  # noqa: E402
from bench_ingest import make_clip  # noqa: E402


def decode_to_numpy(paths: list[Path], size: int | None, threads: int | None = 1, pix_fmt: str = "gray") -> int:
    """PyAV alone: every frame to numpy (grey, at ``size``), as prepare's decoder does (one decoder
    thread; ``threads=None``: FFmpeg's default, a thread per core); frames decoded."""
    n = 0
    for p in paths:
        reformatter = VideoReformatter()
        with av.open(str(p)) as container:
            stream = container.streams.video[0]
            if threads:
                stream.codec_context.thread_count = threads
            for frame in container.decode(stream):
                kw = {"width": size, "height": size, "interpolation": "BILINEAR"} if size else {}
                reformatter.reformat(frame, format=pix_fmt, **kw).to_ndarray()
                n += 1
    return n


def decode_bare(paths: list[Path]) -> int:
    """PyAV decoding alone, one thread, no conversion."""
    n = 0
    for p in paths:
        with av.open(str(p)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            for _ in container.decode(stream):
                n += 1
    return n


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=300, help="frames per video")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--size", type=int, default=224, help="prepare --size")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best of each is reported")
    ap.add_argument("--tiny", action="store_true", help="2 videos of 20 frames, 1 round (figures meaningless)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.tiny:
        args.videos, args.frames, args.repeat = 2, 20, 1

    from uscl.store.prepare import PrepareOptions, prepare

    work = Path(tempfile.mkdtemp(prefix="uscl-bench-ingest-workers-"))
    load_before = load()
    try:
        src = work / "src"
        src.mkdir()
        paths = []
        for i in range(args.videos):
            paths.append(src / f"clip_{i:03d}.mp4")
            make_clip(paths[-1], args.frames, args.width, args.height, fps=30, seed=i)
        options = PrepareOptions(size=args.size)
        decode_to_numpy(paths, args.size)  # warm the page cache and the codec
        t = time.perf_counter()
        prepare(src, work / "warm", options, show_progress=False, workers=2)  # starts the fork server
        pool_start_s = time.perf_counter() - t
        times: dict[str, list[float]] = {"decode_bare": [], "decode": [], "decode_default_threads": [],
                                         "workers_1": [], "workers_2": []}
        n_frames = 0
        for r in range(args.repeat):
            t = time.perf_counter()
            decode_bare(paths)
            times["decode_bare"].append(time.perf_counter() - t)
            t = time.perf_counter()
            n_frames = decode_to_numpy(paths, args.size)
            times["decode"].append(time.perf_counter() - t)
            t = time.perf_counter()
            decode_to_numpy(paths, args.size, threads=None)
            times["decode_default_threads"].append(time.perf_counter() - t)
            for w in (1, 2):
                out = work / f"store_{r}_{w}"
                t = time.perf_counter()
                summary = prepare(src, out, options, show_progress=False, workers=w)
                times[f"workers_{w}"].append(time.perf_counter() - t)
                assert summary.frames == n_frames and not summary.skipped and summary.workers == w, summary.format()
                shutil.rmtree(out)
        fps = {k: n_frames / min(v) for k, v in times.items()}
        result = {
            "benchmark": "ingest_workers",
            "videos": args.videos,
            "frames": n_frames,
            "source": f"{args.width}x{args.height} h264 yuv420p, {args.frames} frames per clip",
            "options": options.to_dict(),
            "frames_per_s": {k: round(v, 1) for k, v in fps.items()},
            "ratio_workers_1_over_decode": round(fps["workers_1"] / fps["decode"], 3),
            "ratio_workers_2_over_workers_1": round(fps["workers_2"] / fps["workers_1"], 3),
            "ratio_workers_2_over_decode": round(fps["workers_2"] / fps["decode"], 3),
            "ratio_workers_1_over_decode_bare": round(fps["workers_1"] / fps["decode_bare"], 3),
            "ratio_workers_2_over_decode_default_threads": round(fps["workers_2"] / fps["decode_default_threads"], 3),
            "targets": {"workers_1_over_decode": 0.9, "workers_2_over_workers_1": 1.8},
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "pool_start_s": round(pool_start_s, 3),
            "load_average_before": load_before,
            "load_average_after": load(),
            "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                        "cpus": len(os.sched_getaffinity(0)), "pyav": av.__version__},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    common.emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
