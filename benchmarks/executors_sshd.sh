#!/usr/bin/env bash
# The SSHD ablation (5 models x 2 seeds, preset shd, 3 epochs) run twice: sequentially in
# one process, and through `--executor local --jobs 2` (two worker processes, 1 thread
# each). Same numbers? Wall time of each? Results: benchmarks/results/executors_sshd/.
# Usage: bash benchmarks/executors_sshd.sh [WORK_DIR]   (needs ../shared/data/sshd_train.h5)
set -euo pipefail
cd "$(dirname "$0")/.."
N=./.venv/bin/neurodelay
DATA=${SSHD:-../shared/data/sshd_train.h5}
W=${1:-/tmp/neurodelay-executors-sshd}
R=benchmarks/results/executors_sshd
mkdir -p "$W" "$R"
OPTS=(--seeds 2 --preset shd --train-file "$DATA" --test-speakers 20-23 --valid-speakers 18-19
      --epochs 3 --max-time 1.0 --batch-size 64 --threads 1 --no-progress
      --cache-dir "$W/cache")
# fill the binned-data cache first, so neither timed run pays for binning
$N train --out "$W/warm" --preset shd --train-file "$DATA" --test-speakers 20-23 \
    --valid-speakers 18-19 --epochs 1 --hidden 8 --max-time 1.0 --threads 1 --no-progress \
    --cache-dir "$W/cache" --overwrite > /dev/null 2>&1
t0=$(date +%s.%N)
$N ablate --out "$W/parallel" "${OPTS[@]}" --executor local --jobs 2 > "$R/parallel.log" 2>&1
t1=$(date +%s.%N)
$N ablate --out "$W/sequential" "${OPTS[@]}" > "$R/sequential.log" 2>&1
t2=$(date +%s.%N)
./.venv/bin/python - "$W" "$R" "$t0" "$t1" "$t2" <<'EOF'
import json, sys
from pathlib import Path
w, r, t0, t1, t2 = Path(sys.argv[1]), Path(sys.argv[2]), *map(float, sys.argv[3:])
cells = sorted(str(p.parent.relative_to(w / "sequential"))
               for p in (w / "sequential").glob("*/seed*/result.json"))
def numbers(study, cell):
    run = w / study / cell
    metrics = [{k: v for k, v in json.loads(l).items() if k != "seconds"}
               for l in (run / "metrics.jsonl").read_text().splitlines()]
    return json.loads((run / "result.json").read_text())["test_accuracy"], metrics
rows = {c: {"sequential_test_accuracy": numbers("sequential", c)[0],
            "parallel_test_accuracy": numbers("parallel", c)[0],
            "identical_metrics_and_result": numbers("sequential", c) == numbers("parallel", c)}
        for c in cells}
out = {"what": "neurodelay ablate, SSHD, 5 models x 2 seeds, preset shd, 3 epochs, "
               "--max-time 1.0 --batch-size 64 --threads 1; once sequentially (one "
               "process), once with --executor local --jobs 2; binned-data cache warm",
       "commands": "benchmarks/executors_sshd.sh",
       "wall_seconds": {"parallel_jobs2": round(t1 - t0, 1), "sequential": round(t2 - t1, 1)},
       "speedup": round((t2 - t1) / (t1 - t0), 2),
       "all_identical": all(v["identical_metrics_and_result"] for v in rows.values()),
       "cells": rows}
(r / "comparison.json").write_text(json.dumps(out, indent=2) + "\n")
for study in ("sequential", "parallel"):
    (r / f"report_{study}.md").write_text((w / study / "report.md").read_text())
(r / "jobs_parallel.json").write_text((w / "parallel" / "jobs.json").read_text())
print(json.dumps({k: out[k] for k in ("wall_seconds", "speedup", "all_identical")}))
EOF
