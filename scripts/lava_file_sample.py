"""One test sample of a run through its exported Lava process network file, in a fresh
Python process that imports nothing but numpy, Lava and the documented call
(``neurodelay.sim.lava_procs.build_from_file``, the README's snippet), compared with the
bit-accurate simulator's readout at every step.

    python scripts/lava_file_sample.py ARTIFACT/network.lava.h5 RUN [SAMPLE_INDEX]

This process prepares the graded input (the run's test split, sample SAMPLE_INDEX,
round(count * input_scale)) and the simulator's readout; the child process only runs Lava.
Exit status 1 when the two readouts differ.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import sys
import numpy as np
from neurodelay.sim.lava_procs import build_from_file
net = build_from_file(sys.argv[1])      # first: it makes Lava importable on Python 3.11
from lava.proc.io.source import RingBuffer
from lava.proc.io.sink import Read
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
x = np.load(sys.argv[2])                # (steps, n_in) graded ints
steps = x.shape[0]
src = RingBuffer(data=x.T.astype(np.int32))
src.s_out.connect(net.inp)
rd = Read(buffer=steps)
rd.connect_var(net.neurons[-1].v)       # the readout's membrane
src.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
v = np.asarray(rd.data.get()).reshape(-1, steps).T
src.stop()
np.save(sys.argv[3], v)
print("child modules: torch loaded:", "torch" in sys.modules,
      "| neurodelay loaded:", sorted(m for m in sys.modules if m.startswith("neurodelay")))
"""


def main(lava_file: str, run: str, index: int = 0) -> int:
    from neurodelay.data import pad_batch
    from neurodelay.data.rundata import run_test_data
    from neurodelay.sim import bitsim

    qnet = _qnet_for(lava_file)
    ds = run_test_data(run)
    counts = pad_batch([ds.samples[index]])                       # (1, T, n_in)
    steps = bitsim.steps_needed(qnet, counts.shape[1])           # T + the layers' latency
    graded = np.zeros((steps, counts.shape[2]), np.int64)
    graded[:counts.shape[1]] = bitsim.quantize_input(qnet, counts)[0]
    sim = bitsim.run(qnet, graded[None], n_steps=steps)
    pred, _ = bitsim.predict(qnet, counts)
    with tempfile.TemporaryDirectory() as tmp:
        xp, vp = Path(tmp) / "x.npy", Path(tmp) / "v.npy"
        np.save(xp, graded)
        r = subprocess.run([sys.executable, "-c", CHILD, lava_file, str(xp), str(vp)],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            return 1
        print(r.stdout.strip())
        v = np.load(vp)
    same = bool(np.array_equal(v, sim.v[0]))
    print(f"sample {index} of the test split: label {int(ds.labels[index])}, {steps} steps "
          f"({counts.shape[1]} of input), {counts.shape[2]} inputs; predicted class "
          f"{int(pred[0])} from the readout")
    print(f"Lava in a fresh process, from the exported file only: readout v at all {steps} "
          f"steps equal to the bit-accurate simulator's: {same} "
          f"(max |v| {int(np.abs(v).max())})")
    return 0 if same else 1


def _qnet_for(lava_file: str):
    """The artifact's quantized network (its qnet file, next to the Lava file)."""
    from neurodelay.deploy.artifact import load_artifact

    return load_artifact(Path(lava_file).parent).qnet


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0))
