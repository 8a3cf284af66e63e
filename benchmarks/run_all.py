"""Run every CPU benchmark, write benchmarks/results/*.json, print a summary against the targets.

    python benchmarks/run_all.py                      # full run (about 10 minutes on 2 busy cores)
    python benchmarks/run_all.py --only datapath memory
    python benchmarks/run_all.py --only dense_step    # segmentation / detection training steps
    python benchmarks/run_all.py --only backbones     # training step of every backbone vs resnet18
    python benchmarks/run_all.py --only ingest_workers dicom_archive   # prepare --workers, a DICOM archive
    python benchmarks/run_all.py --only predict_archive   # predict over 500 clips: streaming + workers vs the old loop
    python benchmarks/run_all.py --tiny               # seconds; writes to a temp folder unless --results

Each benchmark runs in its own process (the data-path one pins itself to one
core). bench_pretrain_step.py and bench_dense_step.py are run when present. The GPU check is separate:
benchmarks/gpu_check.sh on a CUDA machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = Path(__file__).resolve().parent
TARGETS = {"datapath_ratio": 10.0, "cpu_end_to_end_ratio": 0.9, "gpu_end_to_end_ratio": 0.8}


def commands(tiny: bool, results: Path) -> dict[str, list[str]]:
    """name -> argv of each benchmark (only those whose script exists)."""
    py = sys.executable
    cmds = {
        "datapath": [py, str(HERE / "bench_datapath.py"), "--out", str(results / "datapath.json")]
        + (["--tiny"] if tiny else []),
        "memory": [py, str(HERE / "bench_memory.py"), "--out", str(results / "memory.json")]
        + (["--tiny", "--modes", "loader"] if tiny else []),
    }
    cmds["ingest_workers"] = [py, str(HERE / "bench_ingest_workers.py"), "--out", str(results / "ingest_workers.json")] + (
        ["--tiny"] if tiny else [])
    cmds["dicom_archive"] = [py, str(HERE / "bench_dicom_archive.py"), "--out", str(results / "dicom_archive.json")] + (
        ["--tiny"] if tiny else [])
    if (HERE / "bench_pretrain_step.py").is_file():
        cmds["pretrain_step"] = [py, str(HERE / "bench_pretrain_step.py"), "--out", str(results / "pretrain_step.json")] + (
            ["--sizes", "32", "--steps", "1", "--warmup", "0", "--batch-size", "4", "--workers", "0"] if tiny
            else ["--sizes", "224", "112", "--steps", "5", "--warmup", "2", "--workers", "2"])
    if (HERE / "bench_dense_step.py").is_file():
        cmds["dense_step"] = [py, str(HERE / "bench_dense_step.py"), "--out", str(results / "dense_step.json")] + (
            ["--quick"] if tiny else [])
    if (HERE / "bench_predict_archive.py").is_file():
        cmds["predict_archive"] = [py, str(HERE / "bench_predict_archive.py"), "--out",
                                   str(results / "predict_archive.json")] + (["--quick"] if tiny else [])
    if (HERE / "bench_backbones.py").is_file():
        cmds["backbones"] = [py, str(HERE / "bench_backbones.py"), "--out", str(results / "backbones.json")] + (
            ["--tiny"] if tiny else ["--size", "112", "--batch-size", "16", "--repeats", "5"])
    return cmds


def summarise(name: str, data: dict) -> list[str]:
    """Human lines for one benchmark's JSON, with the target where there is one."""
    lines = []
    if name == "datapath":
        r = data["results"]
        ref = r["reference"]["items_per_s_cpu"]
        lines.append(f"data path, 1 core, {data['image_size']} px (items/s per CPU-second): reference PIL {ref:.0f}")
        for k, v in r.items():
            if k != "reference":
                vs = f" (vs {v['reference']})" if v.get("reference") not in (None, "reference") else ""
                lines.append(f"  {k:<34} {v['items_per_s_cpu']:>8.0f}  x{v['ratio_over_reference']:.1f}{vs}")
        verdict = "meets" if data["meets_target"] else "MISSES"
        lines.append(f"  {data.get('headline', 'ours (CPU augment) / reference')} = "
                     f"x{data['ratio_ours_cpu_augment_over_reference']:.1f} ({verdict} target "
                     f"x{TARGETS['datapath_ratio']:.0f}); loader only x{data['ratio_ours_loader_only_over_reference']:.1f}")
        if "ratio_ours_cpu_augment_over_reference_store_size" in data:
            lines.append(f"  on the larger store frames (resized every step): "
                         f"x{data['ratio_ours_cpu_augment_over_reference_store_size']:.1f}")
    elif name == "memory":
        for s in data["sizes"]:
            modes = ", ".join(f"{m} peak {s[m]['peak_rss_mib']:.0f} MiB" for m in ("loader", "pretrain") if m in s)
            lines.append(f"memory, {s['frames']} frames ({s['videos']} videos, manifest {s['manifest_kib']:.0f} KiB): {modes}")
        for m, g in data["growth_small_to_large"].items():
            lines.append(f"  {m}: peak grows {g['peak_rss_growth_mib']:+.1f} MiB, of which manifest in memory "
                         f"{g['manifest_in_memory_growth_mib']:+.1f} MiB; beyond it {g['growth_beyond_manifest_mib']:+.1f} MiB")
    elif name == "pretrain_step":
        for r in data.get("results", []):
            ratio = r.get("ratio_end_to_end_over_model")
            verdict = "meets" if ratio is not None and ratio >= TARGETS["cpu_end_to_end_ratio"] else "MISSES"
            lines.append(f"pretraining step, {r['image_size']} px, batch {r['batch_videos']}: end to end "
                         f"{r['end_to_end_images_per_s']:.1f} img/s vs model only {r['model_only_images_per_s']:.1f} "
                         f"= {ratio:.2f} ({verdict} target {TARGETS['cpu_end_to_end_ratio']:.0%}); "
                         f"data wait {r.get('data_wait_share', 0):.0%}")
    elif name == "dense_step":
        lines += summarise_dense(data)
    elif name == "predict_archive":
        for k, r in data["results"].items():
            ratio = data["clips_per_s_vs_reference"].get(k)
            lines.append(f"predict {k}: {r['clips_per_s']:.1f} clips/s, peak RSS {r['peak_rss_mb']:.0f} MB "
                         f"(largest worker {r['worker_peak_rss_mb']:.0f} MB)"
                         + (f", x{ratio:.2f} the reference" if ratio else ""))
    elif name == "backbones":
        lines.append(f"training step per backbone, {data['image_size']} px, batch {data['batch']}, grey, "
                     f"{data['torch_threads']} thread(s) (CPU s per step, x resnet18):")
        for arch, r in data["results"].items():
            lines.append(f"  {arch:<20} {r['step_s_cpu']:>7.3f} s  x{r['ratio_to_resnet18']:.2f}")
    elif name == "ingest_workers":
        f, t = data["frames_per_s"], data["targets"]
        r1, r2 = data["ratio_workers_1_over_decode"], data["ratio_workers_2_over_workers_1"]
        lines.append(f"ingest, {data['frames']} frames ({data['source']}): PyAV decode {f['decode']:.0f} frames/s, "
                     f"prepare --workers 1 {f['workers_1']:.0f} ({r1:.2f} of decode; "
                     f"{'meets' if r1 >= t['workers_1_over_decode'] else 'MISSES'} target {t['workers_1_over_decode']}), "
                     f"--workers 2 {f['workers_2']:.0f} (x{r2:.2f}; "
                     f"{'meets' if r2 >= t['workers_2_over_workers_1'] else 'MISSES'} target x{t['workers_2_over_workers_1']})")
    elif name == "dicom_archive":
        for r in data["runs"]:
            lines.append(f"DICOM archive, {r['archive_files']} files, {r['workers']} workers: {r['files_per_s']:.0f} files/s; "
                         f"peak RSS parent {r['parent_peak_rss_mib']:.0f} MiB, worker {r['worker_peak_rss_mib']} MiB "
                         f"(private {r['worker_peak_private_mib']} MiB)")
        g = data["peak_rss_growth_mib"]
        lines.append(f"  peak RSS growth {data['files_per_archive'][0]} -> {data['files_per_archive'][-1]} files: "
                     f"parent {g['parent_peak_rss_mib']:+} MiB, worker {g['worker_peak_rss_mib']} MiB "
                     f"(private {g['worker_peak_private_mib']} MiB)")
    return lines


def summarise_dense(data: dict) -> list[str]:
    """bench_dense_step.py: each dense step against its same-run reference (ratios of median step times)."""
    clock = "cpu" if data.get("rates_from", "").startswith("CPU") else "wall"
    key = f"images_per_s_{clock}"
    lines = []
    for s in data.get("segmentation", []):
        lines.append(f"segmentation step, {s['image_size']} px, batch {s['batch']}, mode {s['mode']}: "
                     f"{s['segment'][key]:.1f} img/s vs classification {s['classify'][key]:.1f} img/s: "
                     f"a segmentation step takes x{s['segment_over_classify_time']:.2f} the time")
    if "augment" in data:
        a = data["augment"]
        lines.append(f"augmentation, {a['image_size']} px, batch {a['batch']}: image + mask "
                     f"{a['masked_augment_image_and_mask']['ms_per_batch']:.2f} ms vs image only (BatchAugment) "
                     f"{a['batch_augment_image_only']['ms_per_batch']:.2f} ms = x{a['mask_overhead_time_ratio']:.2f}")
    if "detection" in data:
        d = data["detection"]
        lines.append(f"detection step, {d['image_size']} px, {d['images_per_step']} images: CPU_DETECTOR "
                     f"{d['cpu_detector'][key]:.2f} img/s, torchvision defaults {d['torchvision_default'][key]:.2f} "
                     f"(x{d['speedup_cpu_detector_over_default']:.2f} faster), trunk+FPN floor "
                     f"{d['trunk_fpn_floor'][key]:.2f} img/s")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=["datapath", "memory", "ingest_workers", "dicom_archive", "pretrain_step",
                                                 "dense_step", "backbones", "predict_archive"])
    p.add_argument("--tiny", action="store_true", help="every benchmark in its smallest mode (figures meaningless)")
    p.add_argument("--results", help=f"folder for the JSON files (default {common.RESULTS_DIR}; a temp folder with --tiny)")
    args = p.parse_args(argv)
    results = Path(args.results) if args.results else (
        Path(tempfile.mkdtemp(prefix="uscl_bench_tiny_")) if args.tiny else common.RESULTS_DIR)
    results.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "USCL_NO_PROGRESS": "1"}
    summary_lines, failed, run_info = [], [], {}
    for name, cmd in commands(args.tiny, results).items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}: {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        secs = time.perf_counter() - t0
        run_info[name] = {"exit": proc.returncode, "seconds": round(secs, 1)}
        out = results / f"{name}.json"
        if proc.returncode != 0 or not out.is_file():
            failed.append(name)
            print(f"   FAILED (exit {proc.returncode}):\n{proc.stderr[-2000:]}", flush=True)
            continue
        print(f"   done in {secs:.0f} s -> {out}", flush=True)
        summary_lines += summarise(name, json.loads(out.read_text()))
    summary = {"machine": common.machine_info(), "tiny": args.tiny, "runs": run_info, "targets": TARGETS,
               "summary": summary_lines}
    common.write_json(results / "summary.json", summary)
    print("\n".join(["", "Summary"] + summary_lines))
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
