#!/usr/bin/env bash
# sensitivity of the shift default (k=4) on validation: k=2 and k=8, learned, seed 0
set -u
cd /work/wt-exp
ND="/work/main/.venv/bin/python -m neurodelay"
COMMON="--train-file /work/shared/data/sshd_train.h5 --preset shd --test-speakers 20-23 --valid-speakers 18-19 --max-time 1.0 --batch-size 64 --epochs 20 --threads 1 --no-progress"
for k in 2 8; do
  d=/work/runs/aug/select/shift_k_$k
  [ -f $d/result.json ] && continue
  nice -n 5 $ND train --out $d --augment shift:k=$k --seed 0 $COMMON > $d.log 2>&1
done
echo done > /work/runs/aug/shiftk.done
