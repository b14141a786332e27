"""Tutorial 3: fine-tune to 4-bit weights and choose a point on the accuracy / memory plot.

Trains a small model on the timing task of docs/tutorials/updown.py, sweeps weight and
delay bit widths (post-training quantization, bit-accurate), picks the smallest memory
within one test sample of the best accuracy among 4-bit-weight cells, fine-tunes that
point hardware-exactly and verifies the result. Run it with
``./.venv/bin/python docs/tutorials/finetune_4bit.py [WORK_DIR]`` (under a minute on one
core); tests/test_tutorials.py runs this file as it is.
"""
import sys
from pathlib import Path

from updown import make_file  # the tutorials' data (docs/tutorials/updown.py)

from neurodelay import api
from neurodelay.deploy.verify import verify_run
from neurodelay.research.sweep import sweep_bits
from neurodelay.train.finetune import FinetuneConfig, finetune

work = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tutorial3")
work.mkdir(parents=True, exist_ok=True)
train_file = make_file(work / "train.h5", 160, seed=1)
test_file = make_file(work / "test.h5", 40, seed=2)
run = work / "run"
api.train_run(run, overwrite=True, preset="tiny", hidden=[24], epochs=3, batch_size=32,
              max_delay_ms=100.0, seed=0, train_file=str(train_file),
              test_file=str(test_file), cache_dir=str(work / "cache"), threads=1,
              progress=False, log=lambda m: None)

# --8<-- [start:sweep]
# 1. The accuracy / memory plane: every (weight bits, delay bits) cell quantized
#    (calibrated on training data) and classified by the bit-accurate simulator.
#    Same as `neurodelay sweep-bits RUN --weight-bits 8,4,3,2 --delay-bits 6,4,2 --delay-mode both`.
sweep = sweep_bits(run, weight_bits="8,4,3,2", delay_bits="6,4,2", delay_mode="both",
                   out_dir=work / "sweep", progress=False, threads=1)
print(sweep["markdown"])                       # the tables; work/sweep/sweep.png: heatmaps
cells = [c for c in sweep["cells"] if c.get("error") is None]
for c in sorted(cells, key=lambda c: c["memory_bytes"]):
    print(f"{c['mode']:6s} w{c['weight_bits']} d{c['delay_bits']}: "
          f"{c['accuracy']:.3f} at {c['memory_bytes']:,} B")
# --8<-- [end:sweep]

# --8<-- [start:choose]
# 2. Choose: among 4-bit-weight cells, the smallest memory whose accuracy is within one
#    test sample of the best 4-bit cell.
four = [c for c in cells if c["weight_bits"] == 4]
best = max(c["accuracy"] for c in four)
point = min((c for c in four if c["accuracy"] >= best - 1 / sweep["n"]),
            key=lambda c: c["memory_bytes"])
print(f"chosen: {point['mode']} w{point['weight_bits']} d{point['delay_bits']} "
      f"({point['accuracy']:.3f}, {point['memory_bytes']:,} B)")
# --8<-- [end:choose]

# --8<-- [start:finetune]
# 3. Fine-tune that point: the forward pass IS the chip's 4-bit integer arithmetic.
#    Same as `neurodelay finetune RUN --weight-bits 4 --delay-bits D --delay-mode M --out RUN4`.
run4 = work / "run4"
res = finetune(run, run4, FinetuneConfig(weight_bits=4, delay_bits=point["delay_bits"],
                                         delay_mode=point["mode"], epochs=2, batch_size=32),
               overwrite=True, progress=False, threads=1, log=lambda m: None)
print(f"fine-tuned: test accuracy {res['test_accuracy']:.3f} (post-training validation "
      f"{res['post_training_valid_accuracy']:.3f} -> best {res['best_valid_accuracy']:.3f})")
# PyTorch and the chip agree by construction: verify finds every spike equal.
v = verify_run(run4, "loihi2", progress=False, log=lambda m: None)
print(f"verify: {'PASS' if v.passed else 'FAIL'}, agreement {v.agreement:.4f}, "
      f"spikes equal {v.reference_exact['spikes_equal']}, {v.synaptic_memory_bytes:,} B")
assert v.passed and v.reference_exact == {"readout_equal": True, "spikes_equal": True}
# --8<-- [end:finetune]
