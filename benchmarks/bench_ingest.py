"""Ingestion speed of `uscl prepare` against PyAV decoding alone, on one core.

Generates 320×240 H.264 clips with PyAV (a moving, speckled ultrasound-like
sector), then times, in the same process and on the same core:

* decode: PyAV decoding every frame (nothing else): the ceiling;
* ingest: ``uscl.store.prepare.prepare`` into a fresh store (decode, grey,
  resize to --size, write arrays + manifest, sha256 of the sources).

Prints JSON to stdout (and writes it to --out FILE if given).

    python benchmarks/bench_ingest.py --videos 8 --frames 150 --out ingest.json
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

import av  # noqa: E402
import numpy as np  # noqa: E402


def pin_one_core() -> int | None:
    """Run on a single CPU (the first we may use) so the numbers are per core."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def make_clip(path: Path, frames: int, width: int, height: int, fps: int, seed: int) -> None:
    """A fan-shaped sector of drifting speckle on black, with a static text-like bar."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    cx, angle = width / 2, np.arctan2(xx - width / 2, yy + 20)
    radius = np.hypot(xx - cx, yy + 20)
    sector = (np.abs(angle) < 0.6) & (radius < height + 10) & (radius > 30)
    field = rng.gamma(1.5, 40.0, size=(height + frames * 2, width)).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for t in range(frames):
            img = field[t * 2 : t * 2 + height] * (0.6 + 0.4 * np.cos(radius / 25.0 - t / 5.0))
            img = np.where(sector, np.clip(img, 0, 255), 0).astype(np.uint8)
            img[5:15, 5:80] = 200
            frame = av.VideoFrame.from_ndarray(np.repeat(img[..., None], 3, axis=2), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_only(paths: list[Path]) -> int:
    n = 0
    for p in paths:
        with av.open(str(p)) as container:
            for _ in container.decode(container.streams.video[0]):
                n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=150, help="frames per video")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--size", type=int, default=256, help="prepare --size")
    ap.add_argument("--channels", default="grey", choices=["grey", "rgb"])
    ap.add_argument("--crop", action="store_true", help="also crop to the content")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each; the best is reported")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one core")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)

    cpu = None if args.no_pin else pin_one_core()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # torch is not needed for ingestion
        pass
    from uscl.store.prepare import PrepareOptions, prepare

    work = Path(tempfile.mkdtemp(prefix="uscl-bench-ingest-"))
    try:
        src = work / "src"
        src.mkdir()
        paths = []
        for i in range(args.videos):
            p = src / f"clip_{i:03d}.mp4"
            make_clip(p, args.frames, args.width, args.height, fps=30, seed=i)
            paths.append(p)
        decode_only(paths)  # warm the page cache and the codec

        decode_times, ingest_times = [], []
        n_frames = 0
        options = PrepareOptions(size=args.size, channels=args.channels, crop=args.crop)
        for r in range(args.repeat):
            t = time.perf_counter()
            n_frames = decode_only(paths)
            decode_times.append(time.perf_counter() - t)
            out = work / f"store_{r}"
            t = time.perf_counter()
            summary = prepare(src, out, options, show_progress=False)
            ingest_times.append(time.perf_counter() - t)
            assert summary.frames == n_frames and not summary.skipped, summary.format()
            shutil.rmtree(out)
        decode_fps = n_frames / min(decode_times)
        ingest_fps = n_frames / min(ingest_times)
        result = {
            "benchmark": "ingest",
            "videos": args.videos,
            "frames": n_frames,
            "source": f"{args.width}x{args.height} h264 yuv420p",
            "options": options.to_dict(),
            "decode_fps": round(decode_fps, 1),
            "ingest_fps": round(ingest_fps, 1),
            "ratio": round(ingest_fps / decode_fps, 3),
            "target_ingest_fps": 500,
            "decode_seconds": [round(x, 3) for x in decode_times],
            "ingest_seconds": [round(x, 3) for x in ingest_times],
            "pinned_cpu": cpu,
            "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "pyav": av.__version__},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    common.emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
