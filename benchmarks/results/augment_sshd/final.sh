#!/usr/bin/env bash
# The comparison of issue 25: learned vs fixed-random delays, each without augmentation and
# with the setting chosen on validation (shift), seeds 0 and 1; same epochs; speakers 20-23
# test, 18-19 validation, the other 18 train. Code: /work/wt-exp (fixed commit 532a76c).
set -u
cd /work/wt-exp
ND="/work/main/.venv/bin/python -m neurodelay"
COMMON="--train-file /work/shared/data/sshd_train.h5 --preset shd --test-speakers 20-23 --valid-speakers 18-19 --max-time 1.0 --batch-size 64 --epochs 20 --threads 1 --no-progress"
F=/work/runs/aug/final
mkdir -p $F
for seed in 0 1; do
 for delays in learned fixed-random; do
  for aug in none shift; do
   d=$F/$delays-aug-$aug/seed$seed
   [ -f $d/result.json ] && continue
   mkdir -p $(dirname $d)
   learn=weights+delays; [ $delays = fixed-random ] && learn=weights
   nice -n 5 $ND train --out $d --delays $delays --learn $learn --augment $aug --seed $seed $COMMON > $d.log 2>&1 || echo "FAILED $d" >> $F.failed
  done
 done
done
echo done > $F.done
