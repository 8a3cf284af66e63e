#!/usr/bin/env bash
# One-command GPU check: throughput benchmark + bf16 smoke run + a 1-GPU torchrun pretraining
# + the dense-task step benchmark (segmentation 224 px, detection 512 px).
#
#   benchmarks/gpu_check.sh                # on the GPU machine; all output under $OUT (or a temp folder)
#   benchmarks/gpu_check.sh --cpu-tiny     # the same steps on a CPU, tiny: checks the script itself
#
# Installs nothing but uscl itself (`pip install -e . --no-deps`, only when neither an
# installed uscl nor PYTHONPATH=src makes it importable). Each step has a time limit
# (BENCH_TIMEOUT, TORCHRUN_TIMEOUT, DENSE_TIMEOUT seconds) so the whole check stays under
# 7.5 minutes (150 + 60 + 210 s, plus imports); a failing step does not stop the next one; the
# exit status says whether all passed. The dense benchmark's JSON goes to
# benchmarks/results/dense_step_gpu.json (and a copy under $OUT).
set -uo pipefail

cd "$(dirname "$0")/.."
REPO="$PWD"
MODE="gpu"
[ "${1:-}" = "--cpu-tiny" ] && MODE="cpu-tiny"
# the first python that has torch (PYTHON=... to choose)
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python python3; do
    if command -v "$cand" >/dev/null && "$cand" -c "import torch" 2>/dev/null; then PY="$(command -v "$cand")"; break; fi
  done
  PY="${PY:-python3}"
fi
OUT="${OUT:-$(mktemp -d -t uscl_gpu_check.XXXXXX)}"
mkdir -p "$OUT"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-150}"
TORCHRUN_TIMEOUT="${TORCHRUN_TIMEOUT:-60}"
DENSE_TIMEOUT="${DENSE_TIMEOUT:-210}"
export USCL_NO_PROGRESS=1
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

note "gpu_check mode=$MODE python=$PY out=$OUT $(date -u +%FT%TZ)"

# -- uscl importable? -----------------------------------------------------------------------
if ! "$PY" -c "import uscl" 2>/dev/null; then
  export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
  if ! "$PY" -c "import uscl" 2>/dev/null; then
    "$PY" -m pip install -e . --no-deps -q >"$OUT/pip.log" 2>&1 || note "pip install -e . failed (see pip.log)"
  fi
fi
# what the GPU path needs (nothing is installed here: missing ones are reported)
"$PY" - <<'EOF' 2>&1 | tee -a "$SUMMARY"
import importlib
missing = []
for name in ("torch", "torchvision", "numpy", "PIL", "safetensors", "yaml", "tqdm", "uscl"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
print("missing modules:", ", ".join(missing) if missing else "none")
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except ImportError:
    pass
EOF
command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1

status=0

# -- 1. throughput + bf16 smoke pretraining -------------------------------------------------
if [ "$MODE" = "gpu" ]; then
  BENCH_ARGS=(--device cuda)
  DEVICE=cuda; RUN_ARGS=(--batch-size 64 --image-size 64 --workers 2)
else
  BENCH_ARGS=(--device cpu --tiny)
  DEVICE=cpu; RUN_ARGS=(--batch-size 8 --image-size 32 --workers 0)
fi
t0=$SECONDS
timeout "$BENCH_TIMEOUT" "$PY" benchmarks/bench_gpu.py "${BENCH_ARGS[@]}" --out "$OUT/bench_gpu.json" \
  >"$OUT/bench_gpu.stdout" 2>"$OUT/bench_gpu.log"
rc=$?
note "bench_gpu.py: exit $rc in $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (timed out)')"
[ $rc = 0 ] || { status=1; tail -n 30 "$OUT/bench_gpu.log" | tee -a "$SUMMARY"; }
[ -f "$OUT/bench_gpu.json" ] && "$PY" - "$OUT/bench_gpu.json" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import json, sys
r = json.load(open(sys.argv[1]))
print("device:", r["device"])
for x in r["results"]:
    print(f"  {x['image_size']} px, batch {x['batch_videos']} videos: model only {x['model_only_images_per_s']} img/s; "
          f"frames on the device: end to end {x['end_to_end_images_per_s']} img/s, ratio {x['ratio_end_to_end_over_model']} "
          f"(target {r['target_ratio']}), data wait {x['data_wait_share']}; {r['loader_workers']} workers: "
          f"{x['workers_end_to_end_images_per_s']} img/s, ratio {x['workers_ratio_end_to_end_over_model']}, "
          f"data wait {x['workers_data_wait_share']}, loader alone {x['loader_only_images_per_s']} img/s")
print("  smoke pretrain finite:", r.get("smoke_ok"), r.get("pretrain_smoke", {}).get("train_loss"))
EOF

# -- 2. torchrun, 1 process, 2 epochs on a tiny store, fp16 + GradScaler (bf16 ran above) ------
STORE="$OUT/torchrun_store"
rm -rf "$STORE" "$OUT/torchrun_run"
"$PY" - "$STORE" "$MODE" <<'EOF' >>"$OUT/torchrun.log" 2>&1
import sys
sys.path.insert(0, "benchmarks")
from pathlib import Path
import common
videos, size = (96, 64) if sys.argv[2] == "gpu" else (16, 32)
common.make_random_store(Path(sys.argv[1]), videos, 6, size)
print("store written", sys.argv[1])
EOF
t0=$SECONDS
timeout "$TORCHRUN_TIMEOUT" "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m uscl pretrain \
  --store "$STORE" --out "$OUT/torchrun_run" --epochs 2 --device "$DEVICE" --precision fp16 "${RUN_ARGS[@]}" \
  >>"$OUT/torchrun.log" 2>&1
rc=$?
note "torchrun pretrain: exit $rc in $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (timed out)')"
if [ $rc = 0 ] && [ -f "$OUT/torchrun_run/metrics.csv" ] && [ -f "$OUT/torchrun_run/backbone.safetensors" ]; then
  cat "$OUT/torchrun_run/metrics.csv" | tee -a "$SUMMARY"
  "$PY" - "$OUT/torchrun_run/metrics.csv" <<'EOF' 2>&1 | tee -a "$SUMMARY" || status=1
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ok = len(rows) == 2 and all(math.isfinite(float(r["total_loss"])) for r in rows)
print("torchrun losses finite over 2 epochs:", ok)
sys.exit(0 if ok else 1)
EOF
else
  status=1
  tail -n 30 "$OUT/torchrun.log" | tee -a "$SUMMARY"
fi
rm -rf "$STORE" "$OUT/torchrun_run"/*.safetensors "$OUT/torchrun_run"/train_state.pt  # keep $OUT small

# -- 3. dense tasks: segmentation (224 px, batch 64) and detection (512 px, 8 images) training steps --
if [ "$MODE" = "gpu" ]; then
  DENSE_JSON="$REPO/benchmarks/results/dense_step_gpu.json"
  DENSE_ARGS=(--device cuda --steps 10 --det-steps 5 --warmup 3)
else
  DENSE_JSON="$OUT/dense_step.json"
  DENSE_ARGS=(--device cpu --quick)
fi
t0=$SECONDS
timeout "$DENSE_TIMEOUT" "$PY" benchmarks/bench_dense_step.py "${DENSE_ARGS[@]}" --out "$DENSE_JSON" \
  >"$OUT/dense_step.stdout" 2>"$OUT/dense_step.log"
rc=$?
note "bench_dense_step.py: exit $rc in $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (timed out)')"
if [ $rc = 0 ] && [ -f "$DENSE_JSON" ]; then
  [ "$DENSE_JSON" = "$OUT/dense_step.json" ] || cp "$DENSE_JSON" "$OUT/dense_step.json"
  "$PY" - "$DENSE_JSON" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import json, sys
sys.path.insert(0, "benchmarks")
import run_all
r = json.load(open(sys.argv[1]))
print("dense steps on", r["device"], f"({r['seconds']} s) ->", sys.argv[1])
for line in run_all.summarise_dense(r):
    print("  " + line)
EOF
else
  status=1
  tail -n 30 "$OUT/dense_step.log" | tee -a "$SUMMARY"
fi

note "gpu_check: $([ $status = 0 ] && echo PASSED || echo FAILED)"
exit $status
