#!/usr/bin/env bash
# `make gpu-check`: the GPU check (benchmarks/gpu_check.py) on the machine it runs on.
# On a lent GPU machine (its own Python with torch, transformers and onnxruntime, no network)
# it first installs the wheels `make gpu-wheels` put in build/gpu-wheels (boto3 for the
# trainer's imports, accelerate for the HF Trainer baseline) into a private directory; without
# a CUDA GPU it runs the CPU dry run instead. Results: benchmarks/results/train-<gpu>.json,
# and a copy under $OUT when the device tool runs it. Log: gpu-check.log beside it.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
RESULTS=${RESULTS_DIR:-benchmarks/results}
SITE=${GPU_SITE_DIR:-/tmp/review-classifier-gpu-site}
if ! "$PYTHON" -c 'import accelerate, boto3' 2>/dev/null; then
  ls build/gpu-wheels/*.whl >/dev/null 2>&1 \
    || { echo "gpu-check: no wheels in build/gpu-wheels: run \`make gpu-wheels\` first (needs PyPI)"; exit 2; }
  # a wheel is a zip of the package directories: unpacking installs it (no pip needed)
  for wheel in build/gpu-wheels/*.whl; do "$PYTHON" -m zipfile -e "$wheel" "$SITE"; done
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
args=(--output-dir "$RESULTS")
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu-check: no CUDA GPU here: running the CPU dry run (tiny model, seconds)"
  args=(--dry-run --output-dir "${RESULTS_DIR:-build/gpu-check}")
fi
mkdir -p "${args[-1]}"
"$PYTHON" -m benchmarks.gpu_check "${args[@]}" 2>&1 | tee "${args[-1]}/gpu-check.log"
status=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then cp "${args[-1]}"/train-*.json "${args[-1]}/gpu-check.log" "$OUT"/; fi
exit "$status"
