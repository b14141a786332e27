"""Recurrent networks in Lava (issue 22): the event order within a step, bitsim == Lava
spike for spike, the Lava process network file (exporter -> build_from_file), and the
cross-checks failing when bitsim breaks a rounding rule or the recurrent event order.

Lava runs take ~1 s to compile plus a few ms per step, so the networks are tiny.
"""
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from test_recurrent_deploy import graded, rec_qnet

from neurodelay.core.network import QLayer, QNetwork
from neurodelay.errors import ExportError, LavaRunError
from neurodelay.exporters.lava_procs import export as export_lava
from neurodelay.sim import bitsim, bitsim_neurons, lava_procs
from neurodelay.sim.lavarun import cross_check, run_lava, run_lava_file


def timing_net(E: int) -> QNetwork:
    """1 input -> neuron 0 (feed-forward delay 1); neuron 0 -> neuron 1 only through a
    recurrent synapse of delay E. du = dv = 4095: v holds one step's input only."""
    rw = np.zeros((2, 2), int)
    rw[1, 0] = 7
    rd = np.ones((2, 2), int)
    rd[1, 0] = E
    lay = QLayer(weight=[[20], [0]], delay=[[1], [1]], weight_exp=0, num_weight_bits=8,
                 bias_mant=[0, 0], bias_exp=0, du=4095, dv=4095, vth=1, scale=1.0,
                 rec_weight=rw, rec_delay=rd, rec_weight_exp=0, rec_num_weight_bits=8)
    return QNetwork([lay], target="loihi2")


@pytest.mark.parametrize("E", [1, 3])
def test_recurrent_spike_reaches_its_layer_E_steps_later(E):
    x = np.zeros((1, 14, 1), np.int64)
    x[0, 2, 0] = 1                        # sent at row 2 -> neuron 0 at row 2 + 1 + 1
    q = timing_net(E)
    lava = run_lava(q, x, 14)
    sim = bitsim.run(q, x, n_steps=14, record=True)
    for s in (lava["spikes"][0][0].astype(bool), sim.spikes[0][0]):
        assert np.flatnonzero(s[:, 0]).tolist() == [4]
        assert np.flatnonzero(s[:, 1]).tolist() == [4 + E]


@pytest.mark.parametrize("seed,rec_exp,nwb", [(0, -1, 8), (2, -3, 7), (3, 1, 8)])
def test_lava_process_network_equals_bitsim_on_recurrent_networks(seed, rec_exp, nwb):
    """Mixed-sign recurrent weights with Lava's LSB truncation, negative exponents (floor
    per delay group), biases, decays, graded input: 0 mismatches in every layer's spikes
    and the readout v at every step."""
    q = rec_qnet(seed, rec_exp=rec_exp, rec_nwb=nwb)
    cc = cross_check(q, graded(seed), n_steps=40)
    assert cc.lava_mismatches == 0, cc.first_mismatch
    assert cc.lava_spike_counts[0] > 100          # the recurrent layer is busy


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    q = rec_qnet(0, rec_exp=-1)
    path = tmp_path_factory.mktemp("lava") / "network.lava.h5"
    rep = export_lava(q, path, input_message_bits=4)
    return q, path, rep


def test_lava_file_layout_and_built_processes(exported):
    q, path, rep = exported
    assert rep["recurrent_layers"] == [0]
    assert rep["processes"] == [{"ff": "DelayDense", "rec": "DelayDense"},
                                {"ff": "DelayDense", "rec": None}]
    with h5py.File(path) as f:
        assert f.attrs["format"] == "neurodelay-lava-processes"
        g = f["layers/0"]
        np.testing.assert_array_equal(g["rec/delays"][()], q.layers[0].rec_delay - 1)
        np.testing.assert_array_equal(g["rec/weights"][()], q.layers[0].rec_weight)
        assert g["rec"].attrs["weight_exp"] == -1 and "rec" not in f["layers/1"]
        assert json.loads(f.attrs["class_names"]) == []
    net = lava_procs.build_from_file(path)
    assert net.rec_synapses[1] is None
    assert type(net.rec_synapses[0]).__name__ == "DelayDense"
    assert net.neurons[-1].vth.init == 2 ** 17 - 1           # the readout never spikes


def test_cross_check_runs_the_lava_file(exported):
    q, path, _ = exported
    cc = cross_check(q, graded(5), n_steps=40, lava_path=path)
    assert cc.lava_source == f"Lava process network file {path}"
    assert cc.lava_mismatches == 0, cc.first_mismatch
    with pytest.raises(LavaRunError, match="declares 4"):
        run_lava_file(path, graded(5) * 10, 10)


def test_break_bitsim_recurrent_order_or_rounding_and_lava_sees_it(exported, monkeypatch):
    q, path, _ = exported
    x = graded(5)
    # the recurrent input one step late
    monkeypatch.setattr(bitsim_neurons, "_REC_LATENCY", 2)
    late = cross_check(q, x, n_steps=40, lava_path=path)
    assert late.lava_mismatches > 0 and late.spike_mismatches[0] > 0
    monkeypatch.undo()
    # the recurrent weights without Lava's LSB truncation (8-bit mixed signs)
    orig = bitsim_neurons.fp.effective_weights

    def untruncated(w, nwb, a):
        return np.asarray(w, np.int64) if w.shape[0] == w.shape[1] else orig(w, nwb, a)

    q2 = rec_qnet(0, rec_exp=-1)
    q2.layers[0].rec_weight |= 1                      # odd weights: truncation changes them
    cc_ok = cross_check(q2, x, n_steps=40)
    assert cc_ok.lava_mismatches == 0
    monkeypatch.setattr(bitsim_neurons.fp, "effective_weights", untruncated)
    bad = cross_check(q2, x, n_steps=40)
    assert bad.lava_mismatches > 0


def test_tampered_or_foreign_lava_files_are_refused(exported, tmp_path):
    q, path, _ = exported
    with pytest.raises(LavaRunError, match="not a neurodelay Lava process network"):
        h5py.File(tmp_path / "x.h5", "w").close()
        lava_procs.read_params(tmp_path / "x.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(path.read_bytes())
    with h5py.File(bad, "a") as f:
        del f["layers/0/rec/delays"]
        f["layers/0/rec/delays"] = np.zeros((3, 3), np.int32)
    with pytest.raises(LavaRunError, match=r"rec/delays: shape \(3, 3\), expected \(10, 10\)"):
        lava_procs.read_params(bad)
    with pytest.raises(ExportError, match="QNetwork"):
        export_lava(object(), tmp_path / "n.h5")
    # the netx writer refuses a recurrent network (it would drop the recurrent synapses)
    from neurodelay.exporters.loihi2 import write_netx
    with pytest.raises(ExportError, match="fc0 are recurrent: lava-dl netx cannot"):
        write_netx(q, tmp_path / "n.netx.h5")
    assert not (tmp_path / "n.netx.h5").exists()


def test_lava_file_runs_in_a_fresh_process_with_the_documented_call(exported, tmp_path):
    q, path, _ = exported
    x = np.zeros((40, 6), np.int64)        # (steps, n_in): a RingBuffer repeats its data
    x[:30] = graded(7, B=1)[0]
    np.save(tmp_path / "x.npy", x)
    code = f"""
import numpy as np
from neurodelay.sim.lava_procs import build_from_file
net = build_from_file({str(path)!r})   # first: it makes Lava importable on Python 3.11
from lava.proc.io.source import RingBuffer
from lava.proc.io.sink import Read
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
x = np.load({str(tmp_path / 'x.npy')!r})
src = RingBuffer(data=x.T.astype(np.int32))
src.s_out.connect(net.inp)
rd = Read(buffer=40)
rd.connect_var(net.neurons[-1].v)
src.run(condition=RunSteps(num_steps=40), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
v = np.asarray(rd.data.get()).reshape(-1, 40).T
src.stop()
np.save({str(tmp_path / 'v.npy')!r}, v)
import sys
# only Lava, numpy, h5py and the reader: no torch, no simulator, no quantizer
assert "torch" not in sys.modules and "neurodelay.sim.bitsim" not in sys.modules
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    v = np.load(tmp_path / "v.npy")
    sim = bitsim.run(q, x[None], n_steps=40)
    np.testing.assert_array_equal(v, sim.v[0])
    assert np.abs(v).max() > 0
