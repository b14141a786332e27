#!/usr/bin/env bash
# The SSHD experiments behind the README's "Results on SSHD" (not run by CI: ~1.5 h on
# 2 cores). SSHD = ../shared/data/sshd_train.h5 (synthetic spoken digits in the SHD
# layout); test = speakers 20-23, validation = speakers 18-19, training = the other 18.
# Results land in $OUT (default runs/sshd) and are summarised into $OUT/summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
N=./.venv/bin/neurodelay
DATA=${DATA:-../shared/data/sshd_train.h5}
OUT=${OUT:-runs/sshd}
mkdir -p "$OUT"
SPLIT=(--train-file "$DATA" --test-speakers 20-23 --valid-speakers 18-19 --max-time 1.0)

# 1. the float model (20 epochs) and a 30-epoch control
$N train --preset shd "${SPLIT[@]}" --epochs 20 --batch-size 64 --threads 2 --seed 0 \
    --no-progress --out "$OUT/learned"
$N train --preset shd "${SPLIT[@]}" --epochs 30 --batch-size 64 --threads 2 --seed 0 \
    --no-progress --out "$OUT/learned30"

# 2. one deployment artifact, verified with Lava running its netx file on 10 samples
$N export "$OUT/learned" --target loihi2
$N verify "$OUT/learned" --target loihi2 --lava 10 --json --no-progress > "$OUT/verify.json"

# 3. post-training bit-width sweep (calibrated on training data)
$N sweep-bits "$OUT/learned" --weight-bits 8,6,4,3,2 --delay-bits 6,5,4,3 --delay-mode both \
    --no-progress --out "$OUT/sweep"

# 4. hardware-exact fine-tuning cells, each verified (PyTorch == bit-accurate, Lava)
for cell in "8 6" "4 5" "4 4" "2 3"; do
  set -- $cell
  $N finetune "$OUT/learned" --out "$OUT/ft_w$1d$2" --weight-bits "$1" --delay-bits "$2" \
      --epochs 10 --threads 2 --no-progress
  $N verify "$OUT/ft_w$1d$2" --lava 2 --json --no-progress > "$OUT/ft_w$1d$2.verify.json"
done
# the same two headline cells from the 30-epoch control (is the gain only more epochs?)
for cell in "8 6" "4 5"; do
  set -- $cell
  $N finetune "$OUT/learned30" --out "$OUT/ft30_w$1d$2" --weight-bits "$1" --delay-bits "$2" \
      --epochs 10 --threads 2 --no-progress
  $N verify "$OUT/ft30_w$1d$2" --lava 2 --json --no-progress > "$OUT/ft30_w$1d$2.verify.json"
done
$N finetune "$OUT/learned" --out "$OUT/ft_w8d6_prune50" --weight-bits 8 --delay-bits 6 \
    --prune 0.5 --epochs 10 --threads 2 --no-progress
$N verify "$OUT/ft_w8d6_prune50" --lava 2 --json --no-progress > "$OUT/ft_w8d6_prune50.verify.json"

# 5. NIR round trip (both schemas)
$N export "$OUT/learned" --target nir --out "$OUT/model.nir"
$N export "$OUT/learned" --target nir --out "$OUT/model_104.nir" --nir-schema 1.0.4
$N import-nir "$OUT/model.nir" --out "$OUT/imported" --overwrite
$N import-nir "$OUT/model_104.nir" --dt 0.01 --out "$OUT/imported104" --overwrite

# 6. the ablation study (2 seeds, 20 epochs, 1 thread as in earlier measurements)
$N ablate --out "$OUT/ablation" --seeds 2 --preset shd "${SPLIT[@]}" --epochs 20 \
    --batch-size 64 --threads 1 --no-progress
