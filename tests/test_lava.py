"""Lava fixed_pt process network, netx export and the Lava <-> bitsim cross-check.

Lava runs take ~1 s to compile plus ~5-10 ms per step, so the networks are tiny.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from neurodelay.core.network import Layer, Network, QLayer, QNetwork
from neurodelay.exporters.loihi2 import ExportError, export, netx_layer
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.target import arith
from neurodelay.sim.lavarun import LavaRunError, run_lava, run_netx


def chain(d0: int, d1: int = 0, w0: int = 10, w1: int = 10, vth: int = 1) -> QNetwork:
    """1 input -> 1 LIF (delay d0) -> 1 readout (delay d1): a single-synapse path."""
    common = dict(weight_exp=0, num_weight_bits=8, bias_mant=[0], bias_exp=0,
                  du=4095, dv=4095, scale=1.0)
    return QNetwork([QLayer(weight=[[w0]], delay=[[d0]], vth=vth, **common),
                     QLayer(weight=[[w1]], delay=[[d1]], vth=None, kind="li", **common)],
                    target="loihi2")


def random_qnet(seed: int, sizes=(12, 16, 8, 4), max_delay: int = 6, density: float = 0.6,
                weight_exp: int = 0, num_weight_bits: int = 9) -> QNetwork:
    """Random integer network: mixed-sign weights, sparse masks, delays, biases, decays."""
    rng = np.random.default_rng(seed)
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        w = rng.integers(-128, 128, (b, a)) * (rng.random((b, a)) < density)
        layers.append(QLayer(
            weight=w, weight_exp=weight_exp, num_weight_bits=num_weight_bits,
            delay=rng.integers(0, max_delay + 1, (b, a)),
            bias_mant=rng.integers(-40, 41, b), bias_exp=6,
            du=int(rng.integers(0, 4096)), dv=int(rng.integers(0, 4096)),
            vth=None if last else int(rng.integers(60, 300)), scale=1.0 / 64,
            kind="li" if last else "lif", name=f"fc{k}"))
    return QNetwork(layers, target="loihi2")


def graded_input(seed: int, B: int = 3, T: int = 24, n: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 5, (B, T, n)) * (rng.random((B, T, n)) < 0.35)


def same(a: dict, b: dict) -> bool:
    return (all(np.array_equal(x, y) for x, y in zip(a["spikes"], b["spikes"]))
            and np.array_equal(a["v"], b["v"]))


# ----------------------------------------------------------------------------- timing

@pytest.mark.parametrize("d0,d1", [(0, 0), (3, 2)])
def test_latency_is_one_plus_delay_per_layer(d0, d1):
    x = np.zeros((1, 16, 1), np.int64)
    x[0, 2, 0] = 3                                   # graded spike of 3 sent at step 3
    r = run_lava(chain(d0, d1), x, 16)
    s0 = r["spikes"][0][0, :, 0]
    assert np.flatnonzero(s0).tolist() == [2 + 1 + d0]
    v = r["v"][0, :, 0]
    t1 = 2 + 1 + d0 + 1 + d1
    assert np.flatnonzero(v).tolist() == [t1]       # du = dv = 4095: v lasts one step
    assert v[t1] == 10 << 6                          # binary spike x weight, << 6
    assert r["spikes"][1].sum() == 0                 # readout never spikes


def test_graded_input_is_weighted_by_its_value():
    x = np.zeros((2, 8, 1), np.int64)
    x[0, 0, 0], x[1, 0, 0] = 1, 7
    # vth so high that layer 0 never spikes; read its v through record_v="all"
    r = run_lava(chain(0, w0=5, vth=2 ** 17 - 1), x, 8, record_v="all")
    assert r["v_all"][0][0, 1, 0] == 5 << 6
    assert r["v_all"][0][1, 1, 0] == 35 << 6


# ----------------------------------------------------------------------------- runner

def test_state_reset_equals_fresh_network_and_sparse_equals_dense():
    q = random_qnet(3)
    x = graded_input(4, B=3)
    a = run_lava(q, x, 26)
    assert sum(int(s.sum()) for s in a["spikes"][:-1]) > 20   # the net is active
    assert np.abs(a["v"]).max() > 0
    assert same(a, run_lava(q, x, 26, fresh_each_sample=True))
    assert same(a, run_lava(q, x, 26, synapse="sparse"))
    # an all-zero sample after active ones stays silent: nothing leaks between samples
    z = run_lava(q, np.concatenate([x[:1], np.zeros_like(x[:1])]), 26)
    ref = run_lava(q, np.zeros_like(x[:1]), 26)
    assert same({"spikes": [s[1:] for s in z["spikes"]], "v": z["v"][1:]}, ref)


def test_runner_rejects_bad_input():
    q = chain(0)
    with pytest.raises(LavaRunError, match=r"shape \(B, T, 1\)"):
        run_lava(q, np.zeros((1, 5, 2), int))
    with pytest.raises(LavaRunError, match="integer"):
        run_lava(q, np.full((1, 5, 1), 0.5))
    nine = chain(0)
    nine.layers[0].num_weight_bits = 9          # one-sign weights: 8 bits at most
    with pytest.raises(LavaRunError, match=r"num_weight_bits \(excitatory weights\): "
                                           r"values 9..9 outside the allowed 1..8"):
        run_lava(nine, np.zeros((1, 5, 1), int))
    q_far = chain(63)
    with pytest.raises(LavaRunError, match="max_delay: 63 > allowed 62"):
        run_lava(q_far, np.zeros((1, 5, 1), int))


# ----------------------------------------------------------------------------- export

def test_netx_export_loads_and_matches_process_network(tmp_path):
    q = random_qnet(5)
    x = graded_input(6, B=2)
    rep = export(q, tmp_path / "net.h5", input_message_bits=8)
    assert rep["netx_exact"] and rep["netx_layers"] == 3 and rep["delays_max"] <= 6
    assert [L["process"] for L in rep["netx"]["layers"]] == ["DelayDense"] * 3
    assert rep["synapses"] == sum(int((L.weight != 0).sum()) for L in q.layers)
    with h5py.File(rep["path"]) as f:
        assert f["layer/0/type"][()] == b"input"
        assert f["layer/3/neuron/vThMant"][()] == 2 ** 17 - 1
        assert f["layer/1/neuron/iDecay"][()] == q.layers[0].du + 1
    from neurodelay.core.network_io import load_network
    q2 = load_network(rep["qnet_path"])
    assert np.array_equal(q2.layers[1].weight, q.layers[1].weight)
    a = run_lava(q, x, 28)
    b = run_netx(rep["path"], x, 28, message_bits=8)
    assert same(a, b)


def test_netx_weight_mapping_replays_lava_rules():
    a = arith("loihi2")
    q = random_qnet(7, weight_exp=1, num_weight_bits=8)
    arrays, issues = netx_layer(q.layers[0], a)
    assert issues == []
    assert np.array_equal(arrays["weight"],
                          fp.effective_weights(q.layers[0].weight, 8, a) << 1)
    assert np.array_equal(arrays["bias"], q.layers[0].bias_mant)  # bias_exp 6 -> as is


def test_export_refuses_what_netx_cannot_express(tmp_path):
    q = random_qnet(8, weight_exp=-2)           # floor(sum >> 2): not expressible
    with pytest.raises(ExportError, match="weight_exp=-2"):
        export(q, tmp_path / "a.h5", verify=False)
    rep = export(q, tmp_path / "b.h5", strict_netx=False, verify=False)
    assert not rep["netx_exact"] and rep["netx"]["issues"]
    # all-inhibitory weights whose minimum is a power of two: netx/Lava clip -256 -> -255
    inh = chain(0, w0=-4)
    _, issues = netx_layer(inh.layers[0], arith("loihi2"))
    assert issues and "netx cannot carry" in issues[0]


def test_export_refuses_long_delays_unless_clipped(tmp_path):
    q = chain(63)
    with pytest.raises(ExportError, match=r"layer 0.*max_delay: 63 > allowed 62"):
        export(q, tmp_path / "x.h5", verify=False)
    assert not (tmp_path / "x.h5").exists()
    rep = export(q, tmp_path / "x.h5", clip_delays=True, verify=False)
    assert rep["clipped_delays"] == 1 and rep["delays_max"] == 62
    with h5py.File(rep["path"]) as f:
        assert f["layer/1/delay"][()].max() == 62


def test_export_refuses_a_float_network(tmp_path):
    rng = np.random.default_rng(0)
    net = Network([
        Layer(weight=rng.normal(0, 0.5, (10, 6)), delay=rng.integers(0, 5, (10, 6)),
              bias=rng.normal(0, 0.05, 10), decay=0.9, threshold=1.0, name="h"),
        Layer(weight=rng.normal(0, 0.5, (3, 10)), delay=rng.integers(0, 5, (3, 10)),
              bias=np.zeros(3), decay=0.95, kind="li", name="out")])
    with pytest.raises(ExportError, match="quantize it once"):
        export(net, tmp_path / "f.h5")
    assert not (tmp_path / "f.h5").exists()


# ----------------------------------------------------------------------------- bitsim

@pytest.mark.parametrize("seed,weight_exp,num_weight_bits", [(11, 0, 8), (15, -1, 7),
                                                              (16, 1, 8)])
def test_lava_and_bitsim_are_spike_exact(seed, weight_exp, num_weight_bits):
    from neurodelay.sim.lavarun import cross_check
    q = random_qnet(seed, max_delay=4 + seed % 3, weight_exp=weight_exp,
                    num_weight_bits=num_weight_bits)
    counts = graded_input(seed + 100, B=3)
    res = cross_check(q, counts)
    assert res.lava_samples == 3 and res.n_steps == 24 + 3
    assert res.lava_spike_counts[0] > 10 and res.lava_spike_counts[1] > 0
    assert res.lava_mismatches == 0, res.first_mismatch
    assert res.identical_predictions


def test_lava_and_bitsim_agree_at_the_extremes():
    """Saturating inputs (u wraps, v clips, the readout spikes at its largest threshold),
    one-sign layers, odd decays, the extreme bias exponents."""
    from neurodelay.sim.lavarun import cross_check
    rng = np.random.default_rng(7)
    sizes, layers = (10, 12, 6, 3), []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == 2
        lo, hi = [(-256, 256), (0, 256), (-255, 1)][k]           # mixed, exc, inh
        w = rng.integers(lo, hi, (b, a)) * (rng.random((b, a)) < 0.7)
        w[0, 0] = [5, 7, -3][k]
        bias = rng.integers(-4000, 4000, b)
        bias[0] = 4000                      # readout neuron 0: 4000 << 7 per step
        layers.append(QLayer(
            weight=w, weight_exp=[1, -1, 2][k], num_weight_bits=[8, 6, 5][k],
            delay=rng.integers(0, 8, (b, a)), bias_mant=bias,
            bias_exp=[0, 3, 7][k], du=[0, 4095, 1234][k], dv=[4095, 0, 17][k],
            vth=None if last else int(rng.integers(0, 400)), scale=1.0,
            kind="li" if last else "lif"))
    q = QNetwork(layers, target="loihi2")
    x = rng.integers(-50, 2000, (2, 20, 10)) * (rng.random((2, 20, 10)) < 0.4)
    res = cross_check(q, x)
    assert res.lava_spike_counts[2] > 0          # the readout saturated and spiked
    assert res.lava_mismatches == 0, res.first_mismatch


def test_lava_and_bitsim_agree_with_nine_bit_mixed_weights():
    """Mixed-sign weights with num_weight_bits = 9 are exact in Lava (no LSB dropped);
    the hardware config allows them, so bitsim must run them too."""
    from neurodelay.sim.lavarun import cross_check
    q = random_qnet(21, num_weight_bits=9)
    res = cross_check(q, graded_input(22, B=2))
    assert res.lava_mismatches == 0, res.first_mismatch
