"""The CPU benchmarks run end to end in their tiniest modes and report what they promise.

No timing assertions: these check that the scripts work (the figures come from
benchmarks/run_all.py on a quiet machine), that their JSON has the keys the
summary and RESULTS.md rely on, and that the numbers in it are sane.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def run_bench(script: str, *args: str, tmp_path: Path, timeout: int = 120) -> dict:
    out = tmp_path / f"{Path(script).stem}.json"
    env = {**os.environ, "USCL_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args, "--out", str(out)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert json.loads(proc.stdout) == data  # printed and written alike
    return data


def load_run_all():
    sys.path.insert(0, str(BENCH))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH))
    return run_all


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_datapath_tiny(tmp_path):
    data = run_bench("bench_datapath.py", "--tiny", tmp_path=tmp_path)
    assert data["benchmark"] == "datapath" and data["torch_threads"] == 1
    expected = {"reference", "ours_loader_only_grey", "ours_cpu_augment_grey", "ours_loader_only_rgb",
                "ours_cpu_augment_rgb", "reference_grey_train_size", "ours_loader_only_grey_train_size",
                "ours_cpu_augment_grey_train_size"}
    assert set(data["results"]) == expected
    # the headline: both on frames prepared at the training size
    assert data["results"]["ours_cpu_augment_grey_train_size"]["reference"] == "reference_grey_train_size"
    assert positive(data["ratio_ours_cpu_augment_over_reference_store_size"])
    for r in data["results"].values():
        assert {"items", "wall_s", "cpu_s", "items_per_s_wall", "items_per_s_cpu", "ratio_over_reference"} <= set(r)
        assert r["items"] > 0 and positive(r["items_per_s_cpu"]) and positive(r["ratio_over_reference"])
    assert data["results"]["reference"]["ratio_over_reference"] == 1.0
    assert positive(data["ratio_ours_cpu_augment_over_reference"])
    assert data["target_ratio"] == 10.0 and isinstance(data["meets_target"], bool)
    assert data["videos"] == 6 and data["frames"] == 24  # 3 classes x 2 videos x 4 frames

    # run_all's summary reads these keys
    run_all = load_run_all()
    lines = run_all.summarise("datapath", data)
    assert any("reference PIL" in line for line in lines) and any("target x10" in line for line in lines)
    cmds = run_all.commands(True, tmp_path)
    assert {"datapath", "memory"} <= set(cmds)
    assert all(str(tmp_path) in " ".join(c) for c in cmds.values())


def test_memory_tiny_loader(tmp_path):
    data = run_bench("bench_memory.py", "--tiny", "--modes", "loader", "--tmp", str(tmp_path), tmp_path=tmp_path)
    assert data["benchmark"] == "memory"
    assert [s["videos"] for s in data["sizes"]] == [20, 80]
    for s in data["sizes"]:
        lo = s["loader"]
        assert lo["items"] == s["videos"]  # a full epoch over every video
        assert positive(lo["peak_rss_mib"]) and lo["peak_rss_mib"] >= lo["end_rss_anon_mib"]
        assert s["manifest_kib"] > 0
    g = data["growth_small_to_large"]["loader"]
    assert {"peak_rss_growth_mib", "manifest_in_memory_growth_mib", "growth_beyond_manifest_mib"} <= set(g)
    assert not any(p.name.startswith("uscl_bench_memory_") for p in tmp_path.iterdir())  # temp stores removed


def test_gpu_script_runs_on_cpu(tmp_path):
    """bench_gpu.py's code path (real loader, augmentation, losses, optimizer) on the CPU, smoke run skipped."""
    data = run_bench("bench_gpu.py", "--device", "cpu", "--tiny", "--skip-smoke", "--workers", "0",
                     tmp_path=tmp_path)
    assert data["device"] == "cpu" and data["smoke_ok"] is None
    (r,) = data["results"]
    assert r["image_size"] == 32 and r["images_per_step"] == 8
    assert positive(r["model_only_images_per_s"]) and positive(r["end_to_end_images_per_s"])
    assert positive(r["ratio_end_to_end_over_model"]) and math.isfinite(r["last_loss"])


def test_dense_step_quick(tmp_path):
    """bench_dense_step.py --quick: segmentation vs classification, the augmentation alone, detection (seconds)."""
    # (no GPU in CI: the CUDA-only variant is forced on, so its code runs here too)
    data = run_bench("bench_dense_step.py", "--quick", "--channels-last-variant", tmp_path=tmp_path)
    assert data["benchmark"] == "dense_step" and data["quick"] is True and data["torch_threads"] == 1
    (seg,) = data["segmentation"]  # --quick keeps the first mode
    assert seg["mode"] == "full" and seg["image_size"] == 32 and seg["batch"] == 2
    for name in ("classify", "segment"):
        r = seg[name]
        assert r["images_per_step"] == 2 and positive(r["images_per_s_cpu"]) and positive(r["images_per_s_wall"])
    assert positive(seg["segment_over_classify_time"])
    # the variant CUDA runs by default (channels-last segmenter), exercised here on the CPU
    assert positive(seg["segment_channels_last"]["images_per_s_cpu"])
    assert positive(seg["segment_channels_last_over_classify"]["time_ratio_cpu"])
    assert seg["parameters"]["segmenter"] > seg["parameters"]["classifier"]  # the decoder's parameters
    aug = data["augment"]
    for name in ("batch_augment_image_only", "masked_augment_image_and_mask", "mask_part_only"):
        assert positive(aug[name]["ms_per_batch"]) and positive(aug[name]["images_per_s_cpu"])
    assert positive(aug["mask_overhead_time_ratio"])
    det = data["detection"]
    assert det["image_size"] == 64 and det["images_per_step"] == 1 and det["instances_per_image"][0] >= 1
    for name in ("cpu_detector", "torchvision_default", "trunk_fpn_floor"):
        assert positive(det[name]["images_per_s_cpu"])
    # the two settings really differ where CPU_DETECTOR cuts torchvision's budget
    ours, theirs = det["cpu_detector_settings"], det["torchvision_default_settings"]
    assert ours["box_batch_size_per_image"] < theirs["box_batch_size_per_image"]
    assert positive(det["speedup_cpu_detector_over_default"])

    run_all = load_run_all()
    lines = run_all.summarise("dense_step", data)
    assert len(lines) == 3 and lines[0].startswith("segmentation step") and lines[-1].startswith("detection step")
    assert "--quick" in run_all.commands(True, tmp_path)["dense_step"]


def test_predict_archive_quick(tmp_path):
    data = run_bench("bench_predict_archive.py", "--quick", tmp_path=tmp_path, timeout=600)
    assert data["benchmark"] == "predict_archive" and data["clips"] == 12
    assert set(data["results"]) == {"reference_12", "stream_w2_12"}
    for r in data["results"].values():
        assert r["clips"] == 12 and positive(r["clips_per_s"]) and positive(r["peak_rss_mb"])
    assert positive(data["results"]["stream_w2_12"]["worker_peak_rss_mb"])  # a decoding process ran
    assert positive(data["clips_per_s_vs_reference"]["stream_w2_12"])


def test_backbones_tiny(tmp_path):
    data = run_bench("bench_backbones.py", "--tiny", tmp_path=tmp_path)
    assert data["benchmark"] == "backbones" and data["reference"] == "resnet18"
    assert list(data["results"]) == ["resnet18", "mobilenet_v3_large"]
    assert data["results"]["resnet18"]["ratio_to_resnet18"] == 1.0
    for r in data["results"].values():
        assert positive(r["step_s_cpu"]) and positive(r["step_s_wall"]) and positive(r["ratio_to_resnet18"])
    run_all = load_run_all()
    assert "backbones" in run_all.commands(True, tmp_path)
    assert any("mobilenet_v3_large" in line for line in run_all.summarise("backbones", data))


def test_ingest_workers_tiny(tmp_path):
    data = run_bench("bench_ingest_workers.py", "--tiny", tmp_path=tmp_path)
    assert data["benchmark"] == "ingest_workers" and data["videos"] == 2 and data["frames"] == 40
    assert set(data["frames_per_s"]) == {"decode_bare", "decode", "decode_default_threads", "workers_1", "workers_2"}
    assert all(positive(v) for v in data["frames_per_s"].values())
    for k in ("ratio_workers_1_over_decode", "ratio_workers_2_over_workers_1", "ratio_workers_2_over_decode"):
        assert positive(data[k])
    run_all = load_run_all()
    (line,) = run_all.summarise("ingest_workers", data)
    assert "PyAV decode" in line and "--workers 2" in line
    assert "--tiny" in run_all.commands(True, tmp_path)["ingest_workers"]


def test_dicom_archive_tiny(tmp_path):
    data = run_bench("bench_dicom_archive.py", "--tiny", tmp_path=tmp_path)
    assert data["benchmark"] == "dicom_archive" and data["files_per_archive"] == [20, 40]
    for r, n in zip(data["runs"], (20, 40)):
        assert r["files"] == n and r["skipped"] == 0 and r["frames"] == 8 * n and r["workers"] == 2
        assert positive(r["files_per_s"]) and positive(r["parent_peak_rss_mib"])
    assert set(data["peak_rss_growth_mib"]) == {"parent_peak_rss_mib", "worker_peak_rss_mib", "worker_peak_private_mib"}
    run_all = load_run_all()
    lines = run_all.summarise("dicom_archive", data)
    assert len(lines) == 3 and "files/s" in lines[0] and "growth" in lines[-1]
