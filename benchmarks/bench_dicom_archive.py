"""A synthetic DICOM archive through `uscl prepare --workers N`: files/s, and peak RSS flat in the archive size.

Writes ``max(--sizes)`` small multi-frame DICOM files with pydicom
(uscl.video.samples.write_dicom: uncompressed US Multi-frame, default 8
frames of 64×64, in folders of 100 like a PACS export), then for each size
prepares the first N of them (hard links into a folder of their own) in a
fresh process, so each peak is that run's own. Reported per size: seconds,
files/s, frames/s, and the peak resident memory of the prepare process
(getrusage) and of every worker (VmHWM, sampled from /proc every 0.1 s; it
counts the pages a worker shares copy-on-write with the fork server, which
holds the preloaded modules, ``forkserver_rss_mib``: a worker touching more
of them over a long run looks bigger without using more memory), and the
largest private memory of a worker seen (smaps_rollup, sampled). Flat means: the peaks at
2,000 files are those at 500, give or take the manifest in memory.

    python benchmarks/bench_dicom_archive.py --out benchmarks/results/dicom_archive.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("USCL_NO_PROGRESS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MIB = 1024 * 1024


def write_archive(root: Path, n: int, frames: int, size: int) -> float:
    """``n`` DICOM cines under ``root`` (100 per folder); seconds taken."""
    import numpy as np

    from uscl.video.samples import write_dicom

    t = time.perf_counter()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, (frames, size, size), dtype=np.uint8)
    for i in range(n):
        folder = root / f"patient_{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        cine = np.roll(base, i, axis=2) + np.arange(frames, dtype=np.uint8)[:, None, None]
        write_dicom(folder / f"cine_{i:05d}.dcm", cine, frame_time_ms=33.3)
    return time.perf_counter() - t


def _private_bytes(pid: int) -> int:
    """Pages of ``pid`` no other process shares (Private_Clean + Private_Dirty of smaps_rollup); 0 if unknown."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return sum(int(line.split()[1]) * 1024 for line in fh if line.startswith(("Private_Clean", "Private_Dirty")))
    except (OSError, ValueError, IndexError):
        return 0


def _tree_hwm(pid: int) -> dict[int, tuple[str, int, int]]:
    """pid → (kind, VmHWM bytes, private bytes now) of every live descendant of ``pid`` (Linux /proc)."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    parents[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = {}, [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p:
                todo.append(child)
                try:
                    with open(f"/proc/{child}/status") as fh:
                        fields = dict(line.split(":", 1) for line in fh if ":" in line)
                    cmd = open(f"/proc/{child}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
                    # the fork server is our child; its children (same command line) are the workers
                    kind = ("tracker" if "resource_tracker" in cmd else
                            "forkserver" if p == pid and "forkserver" in cmd else "worker")
                    found[child] = (kind, int(fields["VmHWM"].split()[0]) * 1024, _private_bytes(child))
                except (OSError, KeyError, ValueError):
                    pass
    return found


def child(src: Path, out: Path, workers: int) -> dict:
    """One prepare run, in this (fresh) process; its figures."""
    from uscl.store.prepare import PrepareOptions, prepare

    peaks: dict[int, tuple[str, int, int]] = {}
    stop = threading.Event()
    has_proc = Path("/proc/self/status").is_file()

    def sample() -> None:
        while not stop.wait(0.1):
            for p, (kind, hwm, private) in _tree_hwm(os.getpid()).items():
                _, hwm0, private0 = peaks.get(p, (kind, 0, 0))
                peaks[p] = (kind, max(hwm, hwm0), max(private, private0))

    sampler = threading.Thread(target=sample, daemon=True)
    if has_proc:
        sampler.start()
    t = time.perf_counter()
    summary = prepare(src, out, PrepareOptions(size=0), show_progress=False, workers=workers)
    seconds = time.perf_counter() - t
    stop.set()
    if has_proc:
        sampler.join()
    workers_hwm = [h for kind, h, _ in peaks.values() if kind == "worker"]
    workers_private = [p for kind, _, p in peaks.values() if kind == "worker"]
    forkserver = [h for kind, h, _ in peaks.values() if kind == "forkserver"]
    # ru_maxrss is in KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return {
        "files": summary.videos, "skipped": len(summary.skipped), "frames": summary.frames,
        "workers": summary.workers, "seconds": round(seconds, 3),
        "files_per_s": round(summary.videos / seconds, 1), "frames_per_s": round(summary.frames / seconds, 1),
        "manifest_kib": round((out / "manifest.json").stat().st_size / 1024, 1),
        "parent_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB, 1),
        "worker_peak_rss_mib": round(max(workers_hwm) / MIB, 1) if workers_hwm else None,
        "worker_peak_private_mib": round(max(workers_private) / MIB, 1) if workers_private else None,
        "workers_seen": len(workers_hwm),
        "forkserver_rss_mib": round(max(forkserver) / MIB, 1) if forkserver else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000], help="archive sizes (files)")
    ap.add_argument("--frames", type=int, default=8, help="frames per DICOM file")
    ap.add_argument("--px", type=int, default=64, help="frame width and height")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="sizes 20 and 40 (figures meaningless)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--child", nargs=2, metavar=("SRC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]), args.workers)))
        return 0
    if args.tiny:
        args.sizes = [20, 40]

    work = Path(tempfile.mkdtemp(prefix="uscl-bench-dicom-"))
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        archive = work / "archive"
        write_s = write_archive(archive, max(args.sizes), args.frames, args.px)
        files = sorted(archive.rglob("*.dcm"))
        runs = []
        for n in sorted(args.sizes):
            src = work / f"src_{n}"
            for f in files[:n]:
                (src / f.parent.name).mkdir(parents=True, exist_ok=True)
                os.link(f, src / f.parent.name / f.name)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(src), str(work / f"store_{n}"),
                   "--workers", str(args.workers)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "USCL_NO_PROGRESS": "1"})
            if proc.returncode != 0:
                raise SystemExit(f"prepare of {n} files failed:\n{proc.stderr[-3000:]}")
            runs.append({"archive_files": n, **json.loads(proc.stdout.strip().splitlines()[-1])})
            shutil.rmtree(work / f"store_{n}")
        small, large = runs[0], runs[-1]
        growth = {k: (round(large[k] - small[k], 1) if large[k] is not None and small[k] is not None else None)
                  for k in ("parent_peak_rss_mib", "worker_peak_rss_mib", "worker_peak_private_mib")}
        import pydicom

        result = {
            "benchmark": "dicom_archive",
            "files_per_archive": sorted(args.sizes),
            "dicom": f"uncompressed US multi-frame, {args.frames} frames of {args.px}x{args.px} grey",
            "options": {"size": 0, "channels": "grey"},
            "workers": args.workers,
            "write_seconds": round(write_s, 2),
            "runs": runs,
            "peak_rss_growth_mib": growth,
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0)),
                        "pydicom": pydicom.__version__},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    common.emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
