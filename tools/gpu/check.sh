#!/usr/bin/env bash
# `make gpu-check`: the GPU check on the machine it runs on, in one call:
#  1. training (benchmarks/gpu_check.py): our loop vs the HF Trainer at bert-base shape, bf16 parity;
#  2. serving (benchmarks/serve.py --size bert-base): our predictor (bf16, with and without CUDA
#     graphs) and the HF pipeline server over HTTP, p50 at concurrency 1 and req/s at 64, seq 64.
# On a lent GPU machine (its own Python with torch, transformers and onnxruntime, no network)
# it first installs the wheels `make gpu-wheels` put in build/gpu-wheels (boto3 for the
# trainer's imports, accelerate for the HF Trainer baseline, KServe and its dependencies for the
# predictor) into a private directory; without a CUDA GPU it runs the CPU dry run instead (tiny
# models). Results: train-<gpu>.json and serve-<gpu>.json in benchmarks/results, and a copy
# under $OUT when the device tool runs it. Log: gpu-check.log beside them.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
RESULTS=${RESULTS_DIR:-benchmarks/results}
SITE=${GPU_SITE_DIR:-/tmp/review-classifier-gpu-site}
if ! "$PYTHON" -c 'import accelerate, boto3, kserve' 2>/dev/null; then
  ls build/gpu-wheels/*.whl >/dev/null 2>&1 \
    || { echo "gpu-check: no wheels in build/gpu-wheels: run \`make gpu-wheels\` first (needs PyPI)"; exit 2; }
  # a wheel is a zip of the package directories: unpacking installs it (no pip needed)
  for wheel in build/gpu-wheels/*.whl; do "$PYTHON" -m zipfile -e "$wheel" "$SITE"; done
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
train=(--output-dir "$RESULTS")
serve=(--size bert-base --concurrency 1 64 --requests 1000 --reps 1 --overload 0 --no-grpc
       --output-dir "$RESULTS")
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu-check: no CUDA GPU here: running the CPU dry run (tiny models, seconds)"
  RESULTS=${RESULTS_DIR:-build/gpu-check}
  train=(--dry-run --output-dir "$RESULTS")
  serve=(--size tiny --concurrency 1 4 --requests 20 --reps 1 --overload 0 --no-grpc
         --servers "ours, onnx-int8" "HF pipeline in kserve.Model" --output serve-cpu-dry-run
         --output-dir "$RESULTS")
fi
mkdir -p "$RESULTS"
{
  train_status=0 serve_status=0
  "$PYTHON" -m benchmarks.gpu_check "${train[@]}" || train_status=$?
  "$PYTHON" -m benchmarks.serve "${serve[@]}" || serve_status=$?
  exit $(( train_status || serve_status ))
} 2>&1 | tee "$RESULTS/gpu-check.log"
status=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then cp "$RESULTS"/train-*.json "$RESULTS"/serve-*.json "$RESULTS/gpu-check.log" "$OUT"/ || true; fi
exit "$status"
