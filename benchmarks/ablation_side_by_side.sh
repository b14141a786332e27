#!/bin/bash
# The ablation study (`neurodelay ablate`) of the former code and of this code, side by
# side: the former once and this code twice back to back, started together, one process
# each with --threads 1, so on a 2-core machine every study always runs beside one other
# training process (and load from other jobs falls on both). Then
# benchmarks/ablation_times.py sums every run's epoch seconds and writes the comparison.
#
#   bash benchmarks/ablation_side_by_side.sh FORMER_CHECKOUT OUT_DIR [EPOCHS] [TRAIN_FILE]
#
# FORMER_CHECKOUT: a checkout of the former code (e.g. `git worktree add /tmp/former
# 0aed8f7`); this code is the checkout the script lives in. Defaults: 4 epochs,
# ../shared/data/sshd_train.h5 (speakers 20-23 test, 18-19 validation). Everything else
# is the shd preset's (batch 256, full-length samples), as the issue measured it.
# Writes OUT_DIR/{former,new1,new2}/ (the studies), OUT_DIR/*.log, OUT_DIR/times.txt and
# OUT_DIR/ablation_times.json.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
[ -d "$1" ] || { echo "error: former checkout $1 is not a directory" >&2; exit 2; }
FORMER=$(cd "$1" && pwd)
OUT=$(mkdir -p "$2" && cd "$2" && pwd)
EPOCHS=${3:-4}
HERE=$(cd "$(dirname "$0")/.." && pwd)
DATA=${4:-$HERE/../shared/data/sshd_train.h5}
PY=$HERE/.venv/bin/python
[ -f "$FORMER/neurodelay/__init__.py" ] || { echo "error: $FORMER has no neurodelay/ package: give a checkout of the former code" >&2; exit 2; }
[ -f "$DATA" ] || { echo "error: training file $DATA not found: give it as the 4th argument" >&2; exit 2; }
[ -x "$PY" ] || { echo "error: $PY not found: run scripts/install.sh first" >&2; exit 2; }
COMMON=(--seeds 2 --preset shd --train-file "$DATA" --test-speakers 20-23 --valid-speakers 18-19
        --threads 1 --epochs "$EPOCHS" --no-progress)
: > "$OUT/times.txt"

run() {  # name checkout
  local start end
  start=$(date +%s.%N)
  # from a neutral directory, so that PYTHONPATH alone decides which code runs
  (cd /tmp && PYTHONPATH=$2 "$PY" -m neurodelay ablate --out "$OUT/$1" "${COMMON[@]}" \
     > "$OUT/$1.log" 2>&1)
  end=$(date +%s.%N)
  echo "$1 $(echo "$end - $start" | bc)" >> "$OUT/times.txt"
}

run former "$FORMER" &
(run new1 "$HERE"; run new2 "$HERE") &
wait

wall() { awk -v k="$1" '$1 == k {print $2}' "$OUT/times.txt"; }
"$PY" "$HERE/benchmarks/ablation_times.py" "$OUT/former" "$OUT/new1" "$OUT/new2" \
  --wall "$(wall former)" "$(wall new1)" "$(wall new2)" \
  --command "neurodelay ablate ${COMMON[*]}" \
  --note "former = $FORMER ($(git -C "$FORMER" rev-parse --short HEAD 2>/dev/null || echo '?')), new = $HERE ($(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo '?')); former once, new twice back to back, started together" \
  --out "$OUT/ablation_times.json"
