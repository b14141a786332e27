"""Bit-accurate simulator: hand-computed Lava fixed_pt semantics and the fast paths.

Rows are Lava time steps (row k = Lava step k + 1); input row k enters layer 0's synapse
process at row k; a synapse with delay d delivers at row k + 1 + d.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neurodelay.core.network import QLayer, QNetwork
from neurodelay.hw.target import arith
from neurodelay.sim import bitsim

BIG_VTH = 2 ** 17 - 1


def qlayer(w, d=None, *, exp=0, nwb=8, bias=0, bias_exp=0, du=4095, dv=0, vth=BIG_VTH,
           kind="lif") -> QLayer:
    w = np.atleast_2d(np.asarray(w))
    d = np.zeros(w.shape, int) if d is None else np.atleast_2d(np.asarray(d))
    return QLayer(weight=w, weight_exp=exp, num_weight_bits=nwb, delay=d,
                  bias_mant=np.full(w.shape[0], bias), bias_exp=bias_exp, du=du, dv=dv,
                  vth=vth if kind == "lif" else None, scale=1.0, kind=kind)


def net(*layers) -> QNetwork:
    return QNetwork(list(layers), target="loihi2")


def impulse(n_in: int, T: int, row: int, ch: int = 0, val: int = 1) -> np.ndarray:
    x = np.zeros((1, T, n_in), np.int64)
    x[0, row, ch] = val
    return x


# ----------------------------------------------------------------------------- timing

def test_latency_is_one_plus_delay_per_layer():
    # spike at row 5, d = 2 -> first LIF at row 8; next layer d = 0 -> row 9
    q = net(qlayer([[254]], [[2]], vth=100), qlayer([[10]], [[0]], kind="li"))
    res = bitsim.run(q, impulse(1, 6, 5), n_steps=14, record=True)
    a0 = res.a_in[0][0, :, 0]
    assert np.flatnonzero(a0).tolist() == [8] and a0[8] == 254
    assert np.flatnonzero(res.spikes[0][0, :, 0]).tolist() == [8]
    assert np.flatnonzero(res.a_in[1][0, :, 0]).tolist() == [9]
    v = res.v[0, :, 0]
    assert v[:9].tolist() == [0] * 9 and v[9] == 10 * 64        # dv = 0: v keeps it
    assert bitsim.steps_needed(q, 6) == 6 + 2 + 2
    assert bitsim.float_row(0, 7) == 8 and bitsim.float_row(1, 7) == 9


def test_default_steps_flush_all_delays_and_align_to_float():
    q = net(qlayer([[254]], [[3]], vth=100), qlayer([[10]], [[4]], kind="li"))
    res = bitsim.run(q, impulse(1, 5, 4))
    assert res.n_steps == 5 + 2 + 7
    # input row 4 -> LIF0 at 4+1+3 = 8 -> readout at 8+1+4 = 13, the last row
    assert np.flatnonzero(res.v[0, :, 0]).tolist() == [13]
    aligned = bitsim.align_to_float(res)
    assert aligned.shape == (1, res.n_steps - 2, 1)
    assert np.array_equal(aligned[0, :, 0], res.v[0, 2:, 0])
    with pytest.raises(bitsim.BitSimError, match="n_steps"):
        bitsim.align_to_float(res, T=res.n_steps)


# ----------------------------------------------------------------------------- LIF

def test_current_decay_rounds_toward_zero_for_both_signs():
    # du = 0: u <- trunc(u * 4095 / 4096) + (a_in << 6)
    for sign in (1, -1):
        q = net(qlayer([[2 * sign]], du=0, dv=0), qlayer([[0]], kind="li"))
        res = bitsim.run(q, impulse(1, 2, 0), n_steps=5, record=True)
        u = res.u[0][0, :, 0]
        assert u.tolist() == [0, 128 * sign, 127 * sign, 126 * sign, 125 * sign]
        # v integrates u without decay (dv = 0)
        assert res.v_all[0][0, :, 0].tolist() == [0, 128 * sign, 255 * sign, 381 * sign,
                                                  506 * sign]


def test_voltage_decay_rounds_toward_zero_for_both_signs():
    # dv = 1: v <- trunc(v * 4095 / 4096) + u + bias ; constant bias via bias_mant
    for sign in (1, -1):
        q = net(qlayer([[0]], bias=100 * sign, dv=1, vth=BIG_VTH), qlayer([[0]], kind="li"))
        res = bitsim.run(q, np.zeros((1, 1, 1), int), n_steps=3, record=True)
        # row0: 100 ; row1: trunc(100*4095/4096)=99 +100 = 199 ; row2: 198 + 100 = 298
        assert res.v_all[0][0, :, 0].tolist() == [100 * sign, 199 * sign, 298 * sign]


def test_du_4095_clears_the_current_every_step():
    q = net(qlayer([[7]], du=4095, dv=0), qlayer([[0]], kind="li"))
    res = bitsim.run(q, impulse(1, 3, 0, val=3), n_steps=4, record=True)
    assert res.u[0][0, :, 0].tolist() == [0, 21 * 64, 0, 0]


def test_threshold_is_strict_and_reset_is_to_zero():
    # dv = 4095 keeps only v >> 12 (0 for these values): v = bias every row
    q = net(qlayer([[0]], bias=64, dv=4095, vth=1), qlayer([[0]], kind="li"))
    res = bitsim.run(q, np.zeros((1, 1, 1), int), n_steps=3, record=True)
    assert not res.spikes[0].any() and res.v_all[0][0, :, 0].tolist() == [64] * 3
    q = net(qlayer([[0]], bias=65, dv=4095, vth=1), qlayer([[0]], kind="li"))
    res = bitsim.run(q, np.zeros((1, 1, 1), int), n_steps=3, record=True)
    assert res.spikes[0][0, :, 0].all() and res.v_all[0][0, :, 0].tolist() == [0] * 3
    # a spike resets v to 0 and the decayed value does not come back
    q = net(qlayer([[254]], dv=0, vth=100), qlayer([[0]], kind="li"))
    res = bitsim.run(q, impulse(1, 2, 0), n_steps=4, record=True)
    assert res.spikes[0][0, :, 0].tolist() == [False, True, False, False]
    assert res.v_all[0][0, :, 0].tolist() == [0, 0, 0, 0]


def test_bias_is_mantissa_shifted_by_exponent_without_the_6_bit_shift():
    q = net(qlayer([[0]], bias=5, bias_exp=3, dv=0), qlayer([[0]], kind="li"))
    res = bitsim.run(q, np.zeros((1, 1, 1), int), n_steps=4, record=True)
    assert res.v_all[0][0, :, 0].tolist() == [40, 80, 120, 160]


def test_v_clips_at_24_bits_and_the_readout_saturates_at_max_vth():
    # readout (vth 2**17-1): +524160 per row; threshold (2**17-1) << 6 = 8388544
    q = net(qlayer([[0]]), qlayer([[0]], bias=4095, bias_exp=7, kind="li"))
    res = bitsim.run(q, np.zeros((1, 1, 1), int), n_steps=18, record=True)
    v = res.v[0, :, 0]
    assert v[15] == 16 * 524160 and v[16] == 0          # clipped to 2**23-1 > vth: spike
    assert res.spikes[1][0, 16, 0] and res.stats[1]["spikes"] == 1
    assert res.stats[1]["v_clips"] == 1
    # negative side: -524288 per row, clipped at -(2**23 - 1) and held there
    q = net(qlayer([[0]]), qlayer([[0]], bias=-4096, bias_exp=7, kind="li"))
    v = bitsim.run(q, np.zeros((1, 1, 1), int), n_steps=20).v[0, :, 0]
    assert v[14] == -15 * 524288 and (v[15:] == -(2 ** 23 - 1)).all()


def test_current_wraps_at_24_bits():
    # a_in = 128 * p; u = a_in << 6. 2**23 itself is kept (Lava tests c > 2**23)
    q = net(qlayer([[128]], nwb=8), qlayer([[0]], kind="li"))
    res = bitsim.run(q, impulse(1, 1, 0, val=1024), n_steps=2, record=True)
    assert res.u[0][0, 1, 0] == 2 ** 23
    res = bitsim.run(q, impulse(1, 1, 0, val=1025), n_steps=2, record=True)
    assert res.u[0][0, 1, 0] == 1025 * 128 * 64 - 2 ** 24
    assert res.stats[0]["u_wraps"] == 1
    q = net(qlayer([[-128]], nwb=8), qlayer([[0]], kind="li"))
    res = bitsim.run(q, impulse(1, 1, 0, val=1024), n_steps=2, record=True)
    assert res.u[0][0, 1, 0] == -(2 ** 23) + 2 ** 24                # c <= -2**23 wraps


# ----------------------------------------------------------------------------- synapses

def test_graded_input_and_weight_exp_left_shift():
    q = net(qlayer([[10, 3]], exp=2), qlayer([[0]], kind="li"))
    x = np.zeros((1, 1, 2), int)
    x[0, 0] = [3, 5]
    res = bitsim.run(q, x, n_steps=2, record=True)
    assert res.a_in[0][0, 1, 0] == (10 * 3 + 3 * 5) << 2


def test_negative_weight_exp_floors_each_delay_group_separately():
    # weights 3 and 3 (exact with nwb 9), delays 0 and 1, exp -1: input rows 1 and 0
    # both arrive at row 2 as separate group sums: (3 >> 1) + (3 >> 1) = 2, not 6 >> 1
    # (a third, silent input with weight -1 makes the sign mode mixed, so 9 bits are kept)
    q = net(qlayer([[3, 3, -1]], [[0, 1, 0]], exp=-1, nwb=9), qlayer([[0]], kind="li"))
    x = np.zeros((1, 2, 3), int)
    x[0, 1, 0] = 1
    x[0, 0, 1] = 1
    res = bitsim.run(q, x, n_steps=3, record=True)
    assert res.a_in[0][0, :, 0].tolist() == [0, 0, 2]
    # floor for negatives: -3 >> 1 = -2; same group: (3 + 3) >> 1 = 3
    q = net(qlayer([[-3, 3, 3]], exp=-1, nwb=9), qlayer([[0]], kind="li"))
    x = np.zeros((2, 1, 3), int)
    x[0, 0] = [1, 0, 0]
    x[1, 0] = [0, 1, 1]
    res = bitsim.run(q, x, n_steps=2, record=True)
    assert res.a_in[0][:, 1, 0].tolist() == [-2, 3]


def test_hidden_spikes_carry_payload_one():
    q = net(qlayer([[254]], vth=1), qlayer([[7]], kind="li"))
    res = bitsim.run(q, impulse(1, 1, 0, val=5), n_steps=3, record=True)
    assert res.spikes[0][0, 1, 0] and res.a_in[1][0, 2, 0] == 7


def test_rejects_bad_input_and_networks():
    q = net(qlayer([[1]]), qlayer([[1]], kind="li"))
    with pytest.raises(bitsim.BitSimError, match="integer"):
        bitsim.run(q, np.full((1, 2, 1), 0.5))
    with pytest.raises(bitsim.BitSimError, match="channels"):
        bitsim.run(q, np.zeros((1, 2, 3), int))
    with pytest.raises(bitsim.BitSimError, match="max_delay: 64 > allowed 62"):
        bitsim.run(net(qlayer([[1]], [[64]]), qlayer([[1]], kind="li")), np.zeros((1, 1, 1)))


# ----------------------------------------------------------------------------- reference

def lava_transcription(qnet: QNetwork, x: np.ndarray, n_steps: int) -> dict:
    """Step-by-step re-statement of Lava's DelayDense + LIF fixed_pt run_spk for ONE
    sample (x: (T, n_in)), with Lava's dtypes: an independent slow reference."""
    from neurodelay._compat import ensure_lava
    ensure_lava()
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights
    st = []
    for layer in qnet.layers:
        mode = determine_sign_mode(layer.weight)
        w = truncate_weights(clip_weights(layer.weight.astype(np.int32), mode, num_bits=8),
                             mode, layer.num_weight_bits).astype(np.int32)
        dmax = int(layer.delay.max())
        st.append({"w": w, "abuf": np.zeros((layer.n_out, dmax + 1), np.int32),
                   "u": np.zeros(layer.n_out, np.int32), "v": np.zeros(layer.n_out, np.int32)})
    out = {"v": [], "spikes": [[] for _ in qnet.layers]}
    for t in range(n_steps):
        s = x[t].astype(np.int32) if t < len(x) else np.zeros(x.shape[1], np.int32)
        for k, (layer, S) in enumerate(zip(qnet.layers, st)):
            a_in = S["abuf"][:, 0].copy()                    # sent before accumulating
            if k > 0:
                s = s.astype(bool)
            dmax = S["abuf"].shape[1] - 1
            acc = np.stack([(np.where(layer.delay == d, S["w"], 0) * s).sum(axis=1)
                            for d in range(dmax + 1)], axis=1)
            S["abuf"][:, 0] = 0
            S["abuf"] = np.roll(S["abuf"], -1, axis=1)
            e = layer.weight_exp
            S["abuf"] += np.left_shift(acc, e) if e > 0 else np.right_shift(acc, -e)
            # LIF
            p = np.int64(S["u"]) * (4096 - (layer.du + 1))
            c = np.int32(np.sign(p) * np.right_shift(np.abs(p), 12))
            c = c + np.left_shift(a_in.astype(np.int32), 6)
            c = np.where(c > 2 ** 23, c - 2 ** 24, np.where(c <= -2 ** 23, c + 2 ** 24, c))
            S["u"] = c.astype(np.int32)
            q = np.int64(S["v"]) * (4096 - layer.dv)
            dv = np.int32(np.sign(q) * np.right_shift(np.abs(q), 12))
            vb = layer.bias_mant.astype(np.int32) << layer.bias_exp
            v = np.clip(dv + S["u"] + vb, -(2 ** 23) + 1, 2 ** 23 - 1)
            vth = bitsim.layer_vth(layer) << 6
            spk = v > vth
            v[spk] = 0
            S["v"] = v.astype(np.int32)
            out["spikes"][k].append(spk.copy())
            s = spk.astype(np.int32)
        out["v"].append(st[-1]["v"].astype(np.int64).copy())
    return {"v": np.array(out["v"]), "spikes": [np.array(s) for s in out["spikes"]]}


def random_qnet(rng, sizes, max_delay, weight_exp, nwb, du, dv) -> QNetwork:
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        w = rng.integers(-128, 128, (b, a)) * (rng.random((b, a)) < 0.7)
        layers.append(QLayer(
            weight=w, weight_exp=weight_exp, num_weight_bits=nwb,
            delay=rng.integers(0, max_delay + 1, (b, a)),
            bias_mant=rng.integers(-40, 40, b), bias_exp=int(rng.integers(0, 3)),
            du=du, dv=dv, vth=None if last else int(rng.integers(20, 200)), scale=1.0,
            kind="li" if last else "lif"))
    return QNetwork(layers, target="loihi2")


@settings(max_examples=12, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2 ** 31), max_delay=st.integers(0, 8),
       weight_exp=st.sampled_from([-2, -1, 0, 1]), nwb=st.sampled_from([6, 8, 9]),
       du=st.sampled_from([4095, 0, 1000]), dv=st.sampled_from([0, 300, 4095]))
def test_batched_simulator_equals_step_by_step_lava_transcription(seed, max_delay,
                                                                  weight_exp, nwb, du, dv):
    rng = np.random.default_rng(seed)
    q = random_qnet(rng, (6, 9, 7, 4), max_delay, weight_exp, nwb, du, dv)
    x = (rng.random((3, 12, 6)) < 0.4) * rng.integers(1, 6, (3, 12, 6))
    res = bitsim.run(q, x, record=True, batch_size=2)
    for b in range(3):
        ref = lava_transcription(q, x[b], res.n_steps)
        assert np.array_equal(res.v[b], ref["v"])
        for k in range(3):
            assert np.array_equal(res.spikes[k][b], ref["spikes"][k])


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("n_delays,density,R", [(3, 0.3, 50), (20, 0.3, 50), (20, 0.02, 50),
                                                (20, 0.6, 50), (20, 0.3, 25), (3, 0.3, 12)])
def test_fast_synaptic_paths_are_exact(n_delays, density, R, compiled, monkeypatch):
    """The compiled direct sum (neurodelay.sim.dsum) and, without it, the grouped matmuls
    (few delays) and the dense and sparse DFT paths, float32 and float64; also with delays
    longer than the rows simulated (they must not wrap into early rows)."""
    from neurodelay.sim import bitsim_synapses, dsum

    if compiled and not dsum.available():
        pytest.skip(f"the compiled delayed sum is unavailable: {dsum.status().reason}")
    if not compiled:
        monkeypatch.setattr(bitsim_synapses.dsum, "available", lambda: False)
    calls, real = [], dsum.delayed_sum
    monkeypatch.setattr(bitsim_synapses.dsum, "delayed_sum",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(n_delays + int(100 * density))
    n_in, n_out, B = 40, 24, 8
    w = rng.integers(-127, 128, (n_out, n_in)) * 2
    d = rng.choice(rng.choice(40, n_delays, replace=False), (n_out, n_in))
    layer = qlayer(w, d)
    s = (rng.random((R, B, n_in)) < density) * rng.integers(1, 9, (R, B, n_in))
    ref = np.zeros((R, B, n_out), np.int64)
    for k in np.unique(d):
        if 1 + k < R:                           # later arrivals fall after the last row
            contrib = np.einsum("rbj,ij->rbi", s, np.where(d == k, w, 0))
            ref[1 + k:] += contrib[:R - 1 - k]
    assert (d + 1 >= R).any() or R == 50
    a = arith("loihi2")
    syn = bitsim._prepare(layer, a)
    for precision in ("auto", "float64"):
        got, bound = bitsim._synaptic_input(syn, s, int(s.max()), n_out, precision, a)
        assert np.array_equal(got, ref) and np.abs(ref).max() <= bound
    assert bool(calls) == compiled               # the path under test is the one that ran


def test_predict_aligns_descales_and_scores_like_the_float_rule():
    # 1 input -> 1 hidden (threshold crossing at once) -> 2 readout neurons, no biases
    q = QNetwork([qlayer([[254]], vth=100),
                  QLayer(weight=[[10], [-10]], weight_exp=0, num_weight_bits=8,
                         delay=[[1], [0]], bias_mant=[0, 0], bias_exp=0, du=4095, dv=0,
                         vth=None, scale=0.5, kind="li")], target="loihi2", input_scale=2.0)
    counts = np.zeros((1, 5, 1))
    counts[0, 0, 0] = 0.5                       # payload round(0.5 * 2) = 1
    u = bitsim.readout_membrane(q, counts)
    # float semantics: hidden spikes at float step 0; readout 0 (d=1) from step 1,
    # readout 1 (d=0) from step 0; v = +-640 per spike, dv = 0 keeps it; scale 0.5
    assert u.shape == (1, 5, 2)
    assert u[0, :, 0].tolist() == [0, 320, 320, 320, 320]
    assert u[0, :, 1].tolist() == [-320] * 5
    pred, scores = bitsim.predict(q, counts)
    assert pred.tolist() == [0] and scores.shape == (1, 2)
    assert np.allclose(scores.sum(axis=1), 5.0)


def test_many_samples_in_chunks_equal_one_batch():
    rng = np.random.default_rng(7)
    q = random_qnet(rng, (10, 12, 5), 5, 0, 8, 4095, 500)
    x = (rng.random((9, 15, 10)) < 0.3) * rng.integers(1, 4, (9, 15, 10))
    a = bitsim.run(q, x, batch_size=4)
    b = bitsim.run(q, x, batch_size=64)
    assert np.array_equal(a.v, b.v) and a.stats == b.stats
