"""Tutorial 1: train on an SHD-layout file and deploy to Loihi 2, verified.

Run it with ``./.venv/bin/python docs/tutorials/train_deploy_loihi2.py [WORK_DIR]``
(default ``runs/tutorial1``); about half a minute on one CPU core. tests/test_tutorials.py
runs this file as it is, so the page and the code cannot drift apart.
"""
import sys
from pathlib import Path

from updown import make_file  # the tutorials' data (docs/tutorials/updown.py)

from neurodelay import api
from neurodelay.deploy.artifact import DeployOptions, build_artifact
from neurodelay.deploy.verify import format_verify, verify_run

work = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tutorial1")
work.mkdir(parents=True, exist_ok=True)

# --8<-- [start:data]
# 1. Data in the SHD layout (docs/tutorials/updown.py): per sample, spike times in
#    seconds, units 0..699, a label and a speaker; two classes that differ only in the
#    order of two bursts. Any file in this layout works the same way (the official SHD
#    files, SSHD, your own).
train_file = make_file(work / "train.h5", 160, seed=1)
test_file = make_file(work / "test.h5", 40, seed=2)
# --8<-- [end:data]

# --8<-- [start:train]
# 2. Train: learned per-synapse delays (DCLS), the `tiny` preset, one hidden layer of 16.
#    Same as `neurodelay train --train-file train.h5 --test-file test.h5 --hidden 16 ...`
run = work / "run"
result = api.train_run(run, overwrite=True, preset="tiny", hidden=[16], epochs=3,
                       batch_size=32, max_delay_ms=100.0, seed=0,
                       train_file=str(train_file), test_file=str(test_file),
                       cache_dir=str(work / "cache"), threads=1, progress=False,
                       log=lambda m: None)
print(f"discrete test accuracy: {result['test_accuracy']:.3f} on {result['n_test']} samples")
# --8<-- [end:train]

# --8<-- [start:export]
# 3. Export: the deployment artifact for Loihi 2, quantized once (calibrated on training
#    data only). Same as `neurodelay export RUN --target loihi2`.
art = build_artifact(run, DeployOptions(target="loihi2"))
print("artifact folder:", art.folder, sorted(p.name for p in art.folder.iterdir()))
print("artifact hash:", art.hash)
print("synaptic memory:", art.report.resources["totals"]["synaptic_memory_bytes"], "bytes")
# --8<-- [end:export]

# --8<-- [start:verify]
# 4. Verify exactly that artifact: PyTorch, the float network and the bit-accurate
#    simulator on every test sample, and Lava running the netx file on 2 of them, spike
#    for spike. Same as `neurodelay verify RUN --target loihi2 --lava 2`.
v = verify_run(run, "loihi2", lava=2, progress=False, log=lambda m: None)
print(format_verify(v))
assert v.lava["lava_mismatches"] == 0, "Lava and the bit-accurate simulator disagree"
assert v.artifact_hash == art.hash      # verify checked the exported files
# --8<-- [end:verify]
