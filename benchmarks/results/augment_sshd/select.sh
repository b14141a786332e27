#!/usr/bin/env bash
# Selection of the augmentation setting on VALIDATION speakers (18-19), learned delays,
# seed 0; test speakers 20-23 are held out and not looked at for the choice.
# Code: the worktree /work/wt-exp (a fixed commit), so merges into main cannot change it.
set -u
cd /work/wt-exp
ND="/work/main/.venv/bin/python -m neurodelay"
COMMON="--train-file /work/shared/data/sshd_train.h5 --preset shd --test-speakers 20-23 --valid-speakers 18-19 --max-time 1.0 --batch-size 64 --epochs 20 --threads 1 --no-progress"
mkdir -p /work/runs/aug/select
for s in none reference shift blend shift,blend noise; do
  d=/work/runs/aug/select/$(echo $s | tr ',:=' '+__')
  [ -f $d/result.json ] && continue
  nice -n 5 $ND train --out $d --augment $s --seed 0 $COMMON > $d.log 2>&1 || echo "FAILED $s" >> /work/runs/aug/select.failed
done
echo done > /work/runs/aug/select.done
