#!/usr/bin/env bash
# Issue 21's SSHD comparison (small): the feed-forward learned-delay model against
# recurrent models with learned, fixed random and one-step recurrent delays, each
# recurrent model narrowed to the feed-forward model's parameter count
# (`ablate --recurrent`), 2 seeds, the same epochs. SSHD = ../shared/data/sshd_train.h5;
# test = speakers 20-23, validation = 18-19 (as the feed-forward ablation); shd preset,
# 1 s per sample, batch 64 (as benchmarks/results/sshd_ablation.md).
# Runs go to $OUT (default runs/recurrent_sshd); the report (neurodelay report) and the
# per-epoch times are copied to $RES (default benchmarks/results/recurrent_sshd/).
# Clean per-epoch times, one run at a time: SEEDS=1 EPOCHS=2 THREADS=2
# OUT=runs/recurrent_times RES=benchmarks/results/recurrent_epoch_times (epoch 1 at
# sigma max, epoch 2 at sigma min).
set -euo pipefail
cd "$(dirname "$0")/.."
N=./.venv/bin/neurodelay
DATA=${DATA:-../shared/data/sshd_train.h5}
OUT=${OUT:-runs/recurrent_sshd}
EPOCHS=${EPOCHS:-15}
SEEDS=${SEEDS:-2}
THREADS=${THREADS:-1}
RES=${RES:-benchmarks/results/recurrent_sshd}
mkdir -p "$OUT" "$RES"
$N ablate --recurrent --out "$OUT" --seeds "$SEEDS" --preset shd --train-file "$DATA" \
    --test-speakers 20-23 --valid-speakers 18-19 --max-time 1.0 --batch-size 64 \
    --epochs "$EPOCHS" --threads "$THREADS" --no-progress
$N report "$OUT" > "$RES/report.txt"
cp "$OUT"/report.md "$OUT"/report.csv "$OUT"/report.png "$OUT"/ablation.json "$RES/"
./.venv/bin/python - "$OUT" "$RES/times.json" "$THREADS" <<'PY'
import json, os, statistics, sys
from pathlib import Path
out, dest, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
runs = {}
for m in sorted(out.glob("*/seed*/metrics.jsonl")):
    secs = [json.loads(l)["seconds"] for l in m.read_text().splitlines() if l.strip()]
    cfg = json.loads((m.parent / "config.json").read_text())
    res = json.loads((m.parent / "result.json").read_text())
    runs[f"{m.parent.parent.name}/{m.parent.name}"] = {
        "epochs": len(secs), "seconds_per_epoch": secs,
        "seconds_per_epoch_median": statistics.median(secs),
        "seconds_total": sum(secs), "hidden": cfg["model"]["hidden"],
        "parameters": cfg["parameters"]["total"], "test_accuracy": res["test_accuracy"]}
dest.write_text(json.dumps({"what": "per-epoch seconds (training + validation, "
                            "metrics.jsonl), shared 2-core machine",
                            "torch_threads_per_run": threads,
                            "load_average_at_end": list(os.getloadavg()),
                            "runs": runs}, indent=2) + "\n")
print(json.dumps(runs, indent=1))
PY
echo "done: $RES"
