#!/usr/bin/env bash
# `make gpu-check-rehearse`: `make gpu-check` as the lent GPU machine would run it, here, first.
# A GPU is lent rarely and the check must work on its first try there. This builds a throwaway
# Python 3.12 environment shaped like that machine's image (../shared/NOTES.md: torch 2.11,
# transformers 5.17, accelerate, onnxruntime, numpy 2, pandas, pyarrow, matplotlib,
# scikit-learn; no kserve, boto3, onnx, mlflow, pyspark), checks that it lacks what the image
# lacks, fetches the wheels `make gpu-wheels` carries, and runs tools/gpu/check.sh with that
# interpreter and only those wheels: without CUDA it is the CPU dry run (tiny models), so both
# halves (training vs the HF Trainer; our predictor, int8 included, vs the HF pipeline server)
# start their servers from the carried wheels exactly as there.
# The environment is kept in build/gpu-rehearse/venv and reused (REHEARSE_FRESH=1 rebuilds it);
# PyPI's torch for Linux is its CUDA build (the CPU build is not on PyPI), so the first build
# downloads its CUDA libraries too. Timings per phase are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=build/gpu-rehearse
VENV=$WORK/venv
IMAGE_PACKAGES=("torch==2.11.*" "transformers==5.17.*" "accelerate==1.15.*" "onnxruntime==1.30.*"
                "numpy>=2,<3" pandas pyarrow matplotlib scikit-learn psutil)
ABSENT=(kserve boto3 onnx mlflow pyspark deepchecks)
if [ -z "${PY312:-}" ]; then  # a pyenv shim may exist yet not run: ask each candidate
  for candidate in $(command -v python3.12 2>/dev/null) "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 \
                   /usr/bin/python3.12 /usr/local/bin/python3.12; do
    if "$candidate" --version >/dev/null 2>&1; then PY312=$candidate; break; fi
  done
fi
[ -n "${PY312:-}" ] || { echo "gpu-check-rehearse: no Python 3.12 here (the image's); set PY312=/path/to/python3.12"; exit 2; }
t0=$(date +%s)
if [ -n "${REHEARSE_FRESH:-}" ] || [ ! -x "$VENV/bin/python" ]; then
  rm -rf "$VENV" && mkdir -p "$WORK"
  echo "gpu-check-rehearse: building the image-shaped environment with $("$PY312" --version) in $VENV"
  "$PY312" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${IMAGE_PACKAGES[@]}"
fi
for module in "${ABSENT[@]}"; do
  if "$VENV/bin/python" -c "import $module" 2>/dev/null; then
    echo "gpu-check-rehearse: $module is importable in $VENV, unlike the lent image: REHEARSE_FRESH=1"; exit 2
  fi
done
t1=$(date +%s)
[ -n "$(ls build/gpu-wheels/*.whl 2>/dev/null)" ] && [ -z "${REHEARSE_FRESH:-}" ] || make gpu-wheels
t2=$(date +%s)
rm -rf "$WORK/site" "$WORK/results"
status=0
env -u PYTHONPATH PYTHON="$VENV/bin/python" GPU_SITE_DIR="$WORK/site" RESULTS_DIR="$WORK/results" \
  bash tools/gpu/check.sh || status=$?
t3=$(date +%s)
echo "gpu-check-rehearse: environment $((t1 - t0)) s, wheels $((t2 - t1)) s ($(du -sh build/gpu-wheels | cut -f1)), dry run $((t3 - t2)) s; exit $status; results and log in $WORK/results"
exit "$status"
