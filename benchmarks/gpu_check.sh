#!/usr/bin/env bash
# Issue 20's GPU figures in one run (~8 minutes on one H200): the cuda-marked tests, then
# benchmarks/gpu_check.py (training steps of the reference formulation and of neurodelay on
# the same GPU at the SHD b256 / SSC b128 shapes, sigma max and min, loss/gradients checked;
# fixed-delay steps; shd-preset epochs on sshd_train.h5 with discrete validation; peak GPU
# memory; CPU vs GPU discrete predictions).
#
# Recipe (../shared/notes/gpu.md): the project travels as a wheel, installed with its
# wheel-only dependencies into /tmp/site, so the machine's CUDA torch stays:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 \
#       && set -o pipefail && bash benchmarks/gpu_check.sh 2>&1 | tee $OUT/gpu_check.log
# Data: .gpudata/sshd_train.h5. Results: $OUT/gpu_check.json (and the log).
#
# On a machine without a GPU the same script runs everything but the CUDA parts on the
# CPU with small sizes:  GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=1 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
export NEURODELAY_CACHE=${NEURODELAY_CACHE:-/tmp/neurodelay_cache}
export NEURODELAY_PROGRESS=never

echo "== gpu_check: $(date -u +%FT%TZ) on $(hostname), device $DEVICE"
# -P: the checkout folder is not put on sys.path (it would shadow the installed wheel)
$PY -P - <<'PYEOF'
import os, sys
import neurodelay, torch
where = os.path.realpath(neurodelay.__file__)
site = os.environ.get("GPU_CHECK_SITE", "/tmp/site")
print(f"neurodelay from {where}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"available: {torch.cuda.is_available()}")
if (os.environ.get("GPU_CHECK_DEVICE", "cuda") != "cpu" or "GPU_CHECK_SITE" in os.environ) \
        and not where.startswith(os.path.realpath(site)):
    sys.exit(f"neurodelay is imported from {where}, not from {site}: a checkout on sys.path "
             f"shadows the installed wheel")
PYEOF

echo
echo "== cuda-marked tests"
if [ "$DEVICE" = "cpu" ]; then
  # no GPU: they must be reported as skipped with the reason "no CUDA device"
  $PY -P -m pytest -q -m cuda tests/test_device.py -p no:cacheprovider 2>&1 | tail -8
else
  $PY -P -m pytest -q -m cuda tests/test_device.py -p no:cacheprovider 2>&1 | tail -15
fi

echo
echo "== benchmarks/gpu_check.py"
ARGS=(--device "$DEVICE" --json-out "$OUT/gpu_check.json")
[ -n "${GPU_CHECK_SMALL:-}" ] && ARGS+=(--small)
[ -n "${GPU_CHECK_TRAIN_FILE:-}" ] && ARGS+=(--train-file "$GPU_CHECK_TRAIN_FILE")
[ -n "${GPU_CHECK_THREADS:-}" ] && ARGS+=(--threads "$GPU_CHECK_THREADS")
$PY -P benchmarks/gpu_check.py "${ARGS[@]}"
echo "== gpu_check done: $(date -u +%FT%TZ)"
