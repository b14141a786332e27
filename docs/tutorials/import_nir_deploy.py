"""Tutorial 2: import a NIR graph with delays made by another tool, and deploy it.

The graph is built here with nir's own API, as any NIR-writing tool would: a delay-line
"order detector" for the two-class timing task of docs/tutorials/updown.py, designed by
hand, no training. Run it with
``./.venv/bin/python docs/tutorials/import_nir_deploy.py [WORK_DIR]`` (a few seconds);
tests/test_tutorials.py runs this file as it is.
"""
import sys
from pathlib import Path

import nir
import numpy as np
from updown import GAP_S, make_file  # the tutorials' data (docs/tutorials/updown.py)

from neurodelay.deploy.artifact import DeployOptions, build_artifact
from neurodelay.deploy.verify import format_verify, verify_run
from neurodelay.nir import import_to_run, run_test_file

work = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tutorial2")
work.mkdir(parents=True, exist_ok=True)
calib_file = make_file(work / "calib.h5", 64, seed=3)    # the deployment calibrates on it
test_file = make_file(work / "test.h5", 40, seed=4)

# --8<-- [start:graph]
# 1. The graph, with nir's API. Inputs: 700 channels summed in groups of 5 -> 140, one
#    step = 10 ms. Hidden neuron 0 ("up") sees the low channels delayed by 80 ms and the
#    high ones at once: both bursts of an `up` sample reach it together. Neuron 1 is the
#    mirror image. Each branch is Delay (one delay per input channel) -> Linear; NIR sums
#    the two branches where they meet the LIF node.
dt, n_in, half = 0.01, 140, 70
lag = np.r_[np.full(half, GAP_S), np.zeros(half)]          # seconds, per input channel
w = 0.035                                                  # one burst alone stays subthreshold
W_up, W_down = np.zeros((2, n_in)), np.zeros((2, n_in))
W_up[0] = w                    # neuron 0 through the branch that delays the low channels
W_down[1] = w                  # neuron 1 through the branch that delays the high channels
graph = nir.NIRGraph(
    nodes={
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "delay_low": nir.Delay(delay=lag),
        "delay_high": nir.Delay(delay=lag[::-1].copy()),
        "w_up": nir.Linear(weight=W_up),
        "w_down": nir.Linear(weight=W_down),
        "lif": nir.LIF(tau=np.full(2, 0.02), r=np.ones(2), v_leak=np.zeros(2),
                       v_threshold=np.ones(2), v_reset=np.zeros(2)),
        "w_out": nir.Linear(weight=2.0 * np.eye(2)),
        "li": nir.LI(tau=np.full(2, 0.05), r=np.ones(2), v_leak=np.zeros(2)),
        "output": nir.Output(output_type={"output": np.array([2])}),
    },
    edges=[("input", "delay_low"), ("delay_low", "w_up"), ("w_up", "lif"),
           ("input", "delay_high"), ("delay_high", "w_down"), ("w_down", "lif"),
           ("lif", "w_out"), ("w_out", "li"), ("li", "output")])
nir.write(work / "order_detector.nir", graph)
# --8<-- [end:graph]

# --8<-- [start:import]
# 2. Import: the graph becomes an `imported` run folder (config.json + network.h5) that
#    inspect, export, verify and finetune take like a trained run. Same as
#    `neurodelay import-nir order_detector.nir --dt 0.01 --n-channels 700 --channel-bin 5`.
run = work / "imported"
imported = import_to_run(work / "order_detector.nir", run, dt=dt, n_channels=700,
                         channel_bin=5, overwrite=True, log=lambda m: None)
print(imported["summary"])
# The reference executor steps the NIR nodes themselves (`neurodelay nir-run`):
ref = run_test_file(work / "order_detector.nir", test_file, dt=dt, n_channels=700,
                    channel_bin=5)
print(f"NIR reference executor: accuracy {ref['accuracy']:.3f} on {ref['n']} samples")
# --8<-- [end:import]

# --8<-- [start:deploy]
# 3. Deploy: an imported graph has no training data, so calibration reads a file you name
#    (never the test file). Then verify the artifact on the test file, Lava on 2 samples.
art = build_artifact(run, DeployOptions(target="loihi2", calib_file=str(calib_file)))
v = verify_run(run, "loihi2", test_file=str(test_file), calib_file=str(calib_file),
               lava=2, progress=False, log=lambda m: None)
print(format_verify(v))
assert v.artifact_hash == art.hash
assert v.float_accuracy == ref["accuracy"]          # importer == the NIR graph's own steps
assert v.lava["lava_mismatches"] == 0 and v.passed
# --8<-- [end:deploy]
