#!/usr/bin/env bash
# Issue 22's SSHD-scale check: the recurrent SSHD model of scripts/recurrent_sshd.sh
# (learned recurrent delays, seed 0 by default) through export, verify and Lava on Loihi 2,
# post-training and hardware-exact fine-tuned, at 8-bit weights and at 4-bit weights with
# 5-bit delays (the recurrent window of 25 steps fits 5 bits: no delay changes), then one
# sample through the exported Lava process network file in a fresh Python process that
# uses nothing but Lava and the documented call (scripts/lava_file_sample.py).
#   RUN     the trained recurrent run (default runs/recurrent_sshd/recurrent/seed0)
#   LAVA_N  samples the Lava cross-check runs (default 10)
#   FT_EPOCHS  hardware-exact fine-tuning epochs (default 3)
# Results (JSON of every verify, fine-tuning results, the fresh-process run, a summary)
# go to benchmarks/results/recurrent_deploy_sshd/.
set -euo pipefail
cd "$(dirname "$0")/.."
N=./.venv/bin/neurodelay
PY=./.venv/bin/python
RUN=${RUN:-runs/recurrent_sshd/recurrent/seed0}
LAVA_N=${LAVA_N:-10}
FT_EPOCHS=${FT_EPOCHS:-3}
FT=${FT:-$(dirname "$RUN")/../finetune}
RES=benchmarks/results/recurrent_deploy_sshd
mkdir -p "$RES" "$FT"
[ -f "$RUN/result.json" ] || { echo "no finished run at $RUN (run scripts/recurrent_sshd.sh)" >&2; exit 1; }

verify() {   # name, run, extra options... (exit status 1 = below the accuracy tolerance:
             # a result, recorded in the JSON's "passed"; anything else stops the script)
    local name=$1 run=$2 rc=0; shift 2
    $N verify "$run" --target loihi2 --lava "$LAVA_N" --no-progress --json "$@" \
        > "$RES/$name.json.tmp" || rc=$?
    if [ "$rc" -gt 1 ] || ! $PY -c "import json,sys; json.load(open(sys.argv[1]))['passed']" \
            "$RES/$name.json.tmp"; then
        echo "verify $name failed (exit status $rc)" >&2; exit 1
    fi
    mv "$RES/$name.json.tmp" "$RES/$name.json"
}
[ -f "$RES/post8.json" ] || verify post8 "$RUN"
[ -f "$RES/post4.json" ] || verify post4 "$RUN" --weight-bits 4
for cell in "8 6 ft8" "4 5 ft45"; do
    set -- $cell
    if [ ! -f "$FT/$3/result.json" ]; then
        $N finetune "$RUN" --out "$FT/$3" --weight-bits "$1" --delay-bits "$2" \
            --epochs "$FT_EPOCHS" --no-progress $( [ -d "$FT/$3" ] && echo --resume )
    fi
    cp "$FT/$3/result.json" "$RES/$3_result.json"
    cp "$FT/$3/metrics.jsonl" "$RES/$3_metrics.jsonl"
    [ -f "$RES/$3.json" ] || verify "$3" "$FT/$3"
done
$N inspect "$RUN" --target loihi2 | tee "$RES/resources.txt"
# one sample through the exported file, Lava and the documented call only
$PY scripts/lava_file_sample.py "$FT/ft8/deploy/loihi2/network.lava.h5" \
    "$FT/ft8" 0 | tee "$RES/fresh_process_sample.txt"
$PY - "$RES" <<'PY'
import json, sys
from pathlib import Path
res = Path(sys.argv[1])
rows = {}
for name in ("post8", "post4", "ft8", "ft45"):
    d = json.loads((res / f"{name}.json").read_text())
    rows[name] = {k: d.get(k) for k in (
        "weight_bits", "n", "pytorch_accuracy", "quantized_accuracy", "agreement",
        "lava_samples", "lava_mismatches", "lava_identical_predictions",
        "lava_s_per_sample", "sim_s_per_sample", "sim_s_per_sample_same_samples",
        "synaptic_memory_bytes", "artifact_hash", "passed")}
    rows[name]["pytorch_equals_bitsim"] = d.get("reference_exact")   # fine-tuned runs
    rows[name]["cores"] = d["resources"]["totals"]["cores"]
    rows[name]["synapses"] = d["resources"]["totals"]["synapses"]
    rows[name]["lava_over_bitsim_same_samples"] = (
        d["lava_s_per_sample"] / d["sim_s_per_sample_same_samples"])
    rows[name]["lava_over_bitsim_batched"] = d["lava_s_per_sample"] / d["sim_s_per_sample"]
(res / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
print(json.dumps(rows, indent=1))
PY
echo "done: $RES"
