"""Deployment passes: prune, check_delays, quantize (checked with floatsim and bitsim)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neurodelay import passes
from neurodelay.core.network import Layer, Network
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.target import arith
from neurodelay.sim import bitsim, floatsim

A = arith("loihi2")


def random_net(rng, sizes, *, decay=0.9, max_delay=10, bias=0.05, threshold=1.0) -> Network:
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        layers.append(Layer(weight=rng.normal(0, 1.5 / np.sqrt(a), (b, a)),
                            delay=rng.integers(0, max_delay + 1, (b, a)),
                            bias=rng.normal(0, bias, b) if bias else np.zeros(b),
                            decay=decay, threshold=threshold if not last else float("inf"),
                            kind="li" if last else "lif", name=f"fc{k}"))
    return Network(layers)


def counts(rng, n, T, n_in, p=0.15, cmax=3):
    return (rng.random((n, T, n_in)) < p) * rng.integers(1, cmax + 1, (n, T, n_in))


# ----------------------------------------------------------------------------- prune

def test_prune_keeps_exactly_k_largest_per_neuron():
    rng = np.random.default_rng(0)
    net = random_net(rng, (30, 20, 5))
    net.layers[0].weight[3, 5:] = 0                  # a neuron with only 5 synapses
    out, rep = passes.prune(net, k_per_neuron=8)
    for before, after in zip(net.layers, out.layers):
        w0, w1 = before.weight, after.weight
        for i in range(w0.shape[0]):
            kept = w1[i] != 0
            assert kept.sum() == min(8, np.count_nonzero(w0[i]))
            assert np.array_equal(w1[i][kept], w0[i][kept])          # values untouched
            removed = (w0[i] != 0) & ~kept
            if removed.any():
                assert np.abs(w0[i][kept]).min() >= np.abs(w0[i][removed]).max()
        assert np.array_equal(after.delay, before.delay)
    assert rep.changes["synapses_before"] == 600 - 25 + 100
    assert rep.changes["synapses_after"] == 19 * 8 + 5 + 5 * 8
    assert rep.layers[0]["synapses_after"] == 157
    assert np.count_nonzero(net.layers[0].weight) == 575         # input not modified


def test_prune_to_sparsity_per_layer_and_global():
    rng = np.random.default_rng(1)
    net = random_net(rng, (40, 30, 10))
    out, rep = passes.prune(net, sparsity=0.75)
    assert [l.n_synapses for l in out.layers] == [300, 75]
    thr = np.sort(np.abs(net.layers[0].weight).ravel())[-300]
    assert np.all(np.abs(out.layers[0].weight[out.layers[0].weight != 0]) >= thr)
    out, rep = passes.prune(net, sparsity=0.75, scope="global")
    assert sum(l.n_synapses for l in out.layers) == 375 == rep.changes["synapses_after"]
    with pytest.raises(passes.PassError, match="exactly one"):
        passes.prune(net)
    with pytest.raises(passes.PassError, match="sparsity"):
        passes.prune(net, sparsity=1.0)


def test_prune_reports_accuracy_with_data():
    rng = np.random.default_rng(2)
    net = random_net(rng, (12, 16, 4))
    x, y = counts(rng, 20, 15, 12), rng.integers(0, 4, 20)
    _, rep = passes.prune(net, k_per_neuron=3, data=(x, y))
    assert rep.accuracy_before == floatsim.accuracy(net, x, y)
    assert 0.0 <= rep.accuracy_after <= 1.0


# ----------------------------------------------------------------------------- delays

def test_delay_error_names_layer_count_largest_and_fix():
    rng = np.random.default_rng(3)
    net = random_net(rng, (10, 8, 3), max_delay=5)
    net.layers[1].delay[0, :3] = [70, 63, 80]
    net.layers[1].delay[1, 0] = 99
    net.layers[1].weight[1, 0] = 0.0                     # unused synapse: does not count
    with pytest.raises(passes.DelayRangeError) as e:
        passes.check_delays(net, 62)
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert "layer 1 ('fc1')" in msg and "3 synapse(s)" in msg and "largest 80" in msg
    assert "--clip-delays" in msg and "retrain" in msg and "layer 0" not in msg


def test_clip_delays_reports_count_and_accuracy_cost():
    rng = np.random.default_rng(4)
    net = random_net(rng, (10, 8, 3), max_delay=5)
    net.layers[0].delay[:2, :2] = 9
    net.layers[1].weight[0, 0] = 0.0
    net.layers[1].delay[0, 0] = 50
    x, y = counts(rng, 16, 20, 10), rng.integers(0, 3, 16)
    out, rep = passes.check_delays(net, 6, clip=True, data=(x, y))
    assert rep.changes["clipped"] == 4 and rep.layers[0]["clipped"] == 4
    assert rep.changes["unused_delays_zeroed"] == 1
    assert out.layers[0].delay.max() == 6 and out.layers[1].delay[0, 0] == 0
    assert net.layers[0].delay.max() == 9                          # input untouched
    assert rep.accuracy_before == floatsim.accuracy(net, x, y)
    assert rep.accuracy_after == floatsim.accuracy(out, x, y)
    assert "clipped 4" in rep.notes[0]
    # nothing to clip: no accuracy run, network returned equal
    out2, rep2 = passes.check_delays(out, 6)
    assert rep2.changes["clipped"] == 0 and rep2.accuracy_before is None


# ----------------------------------------------------------------------------- quantize

def exact_net(rng, sizes, T_decay, thetas):
    """A float network whose weights are exact multiples of what quantize will choose:
    weight = q * 128 * scale with max |q| = 127 per layer and scale = theta / (64 vth + 1),
    zero biases. Returns (net, list of (q, vth))."""
    layers, ints = [], []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        q = rng.integers(-127, 128, (b, a)) * (rng.random((b, a)) < 0.8)
        q.flat[rng.integers(q.size)] = 127 * rng.choice([-1, 1])
        if last:
            vth, scale, theta = None, 2.0 ** -12, float("inf")
        else:
            vth = int(rng.integers(16, 160))
            theta = thetas[k]
            scale = theta / (64 * vth + 1)
        layers.append(Layer(weight=q * 128 * scale, delay=rng.integers(0, 4, (b, a)),
                            bias=np.zeros(b), decay=T_decay, threshold=theta,
                            kind="li" if last else "lif"))
        ints.append((q, vth))
    return Network(layers), ints


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2 ** 31), n_hidden=st.integers(1, 2),
       decay=st.sampled_from([1.0, 0.5]), T=st.integers(1, 7),
       theta=st.sampled_from([1.0, 0.3, 2.5]))
def test_exactly_representable_networks_quantize_without_error(seed, n_hidden, decay, T,
                                                               theta):
    """Fine quantization: float and bit-accurate runs agree exactly (spikes, membrane,
    predictions). v stays a multiple of 2 (<= 6 halvings of multiples of 128) and the
    integer threshold 64 vth + 1 is odd, so no float rounding can flip a spike."""
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(2, 7))] + [int(rng.integers(2, 8))] * n_hidden \
        + [int(rng.integers(2, 5))]
    net, ints = exact_net(rng, sizes, decay, [theta] * n_hidden)
    qnet, rep = passes.quantize(net)
    for ql, (q, vth), row in zip(qnet.layers, ints, rep.layers):
        assert np.array_equal(ql.weight, q * 2) and ql.weight_exp == 0
        assert vth is None or ql.vth == vth
        assert ql.dv == (0 if decay == 1.0 else 2048) and ql.du == 4095
        assert row["weights_clipped"] == 0
    x = counts(rng, 6, T, sizes[0], p=0.5)
    ref = floatsim.simulate(net, x, record=True, dtype=np.float64)
    res = bitsim.run(qnet, x, n_steps=T + len(sizes) - 1, record=True)
    for k, s in enumerate(ref.spikes):
        assert np.array_equal(res.spikes[k][:, k + 1:k + 1 + T], s)
    u_q = bitsim.readout_membrane(qnet, x)
    assert np.allclose(u_q, ref.u, rtol=1e-6, atol=1e-9)
    pred, scores = bitsim.predict(qnet, x)
    top2 = np.sort(ref.scores, axis=1)[:, -2:] if ref.scores.shape[1] > 1 else None
    clear = (top2[:, 1] - top2[:, 0] > 1e-6) if top2 is not None else np.ones(6, bool)
    assert np.array_equal(pred[clear], ref.predictions[clear])


def test_8bit_quantization_keeps_the_readout_membrane_close():
    rng = np.random.default_rng(5)
    net = random_net(rng, (40, 10), decay=0.9)                 # input -> readout only
    x = counts(rng, 40, 50, 40)
    qnet, rep = passes.quantize(net)
    ref = floatsim.simulate(net, x, dtype=np.float64).u
    u_q = bitsim.readout_membrane(qnet, x)
    rel = np.linalg.norm(u_q - ref) / np.linalg.norm(ref)
    assert rel < 0.02, rel
    # with a hidden layer: spikes mostly agree (random networks sit near threshold)
    net = random_net(rng, (40, 64, 10), decay=0.9, bias=0.0)
    qnet, _ = passes.quantize(net)
    ref = floatsim.simulate(net, x, record=True, dtype=np.float64)
    res = bitsim.run(qnet, x, n_steps=50 + 2, record=True)
    agree = (res.spikes[0][:, 1:51] == ref.spikes[0]).mean()
    assert agree > 0.98 and ref.spikes[0].mean() > 0.01
    pred, _ = bitsim.predict(qnet, x)
    assert (pred == ref.predictions).mean() >= 0.85


def test_quantize_with_data_fits_every_field_and_reports_headroom():
    from neurodelay.hw.resources import resource_report
    from neurodelay.hw.target import load_target
    rng = np.random.default_rng(6)
    net = random_net(rng, (30, 40, 40, 6), decay=0.8, bias=0.1)
    x, y = counts(rng, 30, 40, 30), rng.integers(0, 6, 30)
    qnet, rep = passes.quantize(net, "loihi2", data=(x, y))
    assert resource_report(qnet, load_target("loihi2")).violations == []
    for row, ql in zip(rep.layers, qnet.layers):
        assert 0 < row["headroom"] < 0.5
        assert row["u_wraps"] == 0 and row["v_clips"] == 0
        assert row["max_abs_a_in"] <= A.input_limit
        assert np.array_equal(fp.effective_weights(ql.weight, ql.num_weight_bits, A),
                              ql.weight)
        assert np.all(ql.weight % 2 == 0) and np.abs(ql.weight).max() <= 254
    assert qnet.layers[-1].vth == A.readout_vth
    assert rep.accuracy_float == floatsim.accuracy(net, x, y)
    assert rep.accuracy_quant == bitsim.accuracy(qnet, x, y)
    assert rep.agreement >= 0.8 and not rep.warnings
    assert "headroom" in str(rep)
    # inputs without labels: statistics and agreement, no accuracy
    _, rep2 = passes.quantize(net, data=x)
    assert rep2.accuracy_float is None and rep2.agreement == rep.agreement
    with pytest.raises(passes.PassError, match="labels"):
        passes.quantize(net, data=(x, y[:3]))


def test_readout_exponent_follows_the_data():
    """A perfect-integrator readout driven for many steps gets a lower exponent / coarser
    scale so its membrane stays within half of the 24-bit range."""
    rng = np.random.default_rng(7)
    net = random_net(rng, (20, 4), decay=1.0, bias=0.0)
    net.layers[0].weight[:] = np.abs(net.layers[0].weight)
    x = np.ones((3, 200, 20), int) * 3
    with pytest.warns(UserWarning, match="coarsened"):
        qnet, rep = passes.quantize(net, data=(x, np.zeros(3, int)))
    assert rep.layers[0]["headroom"] <= 0.5 and rep.layers[0]["weight_exp"] == -1
    ref = floatsim.simulate(net, x, dtype=np.float64).u
    assert np.abs(ref).max() / qnet.layers[0].scale <= A.state_max / 2 * 1.001
    u_q = bitsim.readout_membrane(qnet, x)
    assert np.allclose(u_q, ref, rtol=0.05)


def test_weight_bits_input_scale_and_bias_fields():
    rng = np.random.default_rng(8)
    net = random_net(rng, (16, 12, 3), bias=0.3)
    qnet, rep = passes.quantize(net, weight_bits=4, input_scale=0.5)
    l0 = qnet.layers[0]
    assert l0.num_weight_bits == 4 and np.all(l0.weight % 32 == 0)
    assert np.abs(l0.weight).max() == 7 * 32 and l0.weight_exp <= 0
    # layer 0's float weight per payload unit is w / input_scale
    unit = 64 * 2.0 ** l0.weight_exp * l0.scale
    assert np.allclose(l0.weight * unit, np.round(net.layers[0].weight / 0.5 / (unit * 32))
                       * 32 * unit)
    # bias: v += bias_mant << bias_exp approximates bias / scale within one LSB
    b_v = net.layers[0].bias / l0.scale
    assert np.all(np.abs((l0.bias_mant << l0.bias_exp) - b_v) <= 2 ** l0.bias_exp / 2 + 1e-6)
    assert np.abs(l0.bias_mant).max() <= 4095 and 6 <= l0.bias_exp <= 7     # netx: x64
    # finer bias when not going through a netx file
    q2, _ = passes.quantize(net, weight_bits=4, input_scale=0.5, bias_exp_min=0)
    l2 = q2.layers[0]
    assert l2.bias_exp < 6 and l2.scale == l0.scale
    assert np.all(np.abs((l2.bias_mant << l2.bias_exp) - b_v) <= 2 ** l2.bias_exp / 2 + 1e-6)


def test_quantize_refuses_what_lava_cannot_run():
    rng = np.random.default_rng(9)
    net = random_net(rng, (6, 5, 2))
    net.layers[0].delay[0, 0] = 63
    with pytest.raises(passes.DelayRangeError):
        passes.quantize(net)
    net.layers[0].delay[0, 0] = 0
    net.layers[0].reset = 0.2
    with pytest.raises(passes.QuantizationError, match="reset"):
        passes.quantize(net)
    with pytest.raises(passes.PassError, match="not a dict of parameters"):
        passes.quantize(random_net(rng, (6, 5, 2)), {"weight_bits": 8})
    # the target is the truth: a weight-bits request may narrow it, never exceed it
    with pytest.raises(passes.QuantizationError, match="weight bits 10 is outside what "
                                                       "target 'loihi2' holds: 2..9"):
        passes.quantize(random_net(rng, (6, 5, 2)), weight_bits=10)


def test_all_positive_layer_with_9_bits_survives_lava_truncation():
    rng = np.random.default_rng(10)
    net = random_net(rng, (8, 6, 2))
    for layer in net.layers:
        layer.weight[:] = np.abs(layer.weight)
    qnet, rep = passes.quantize(net, weight_bits=9)
    for ql in qnet.layers:
        assert ql.num_weight_bits == 8
        assert np.array_equal(fp.effective_weights(ql.weight, ql.num_weight_bits, A),
                              ql.weight)
        assert ql.weight.max() > 128                                # 9-bit resolution


def test_run_passes_collects_reports_in_order():
    rng = np.random.default_rng(11)
    net = random_net(rng, (10, 12, 3), max_delay=70)
    with pytest.raises(passes.DelayRangeError):
        passes.run_passes(net, "loihi2")
    qnet, reps = passes.run_passes(net, "loihi2", clip_delays=True, k_per_neuron=4)
    assert [r.name if hasattr(r, "name") else "quantize" for r in reps] == \
        ["check_delays", "prune", "quantize"]
    assert isinstance(reps[2], passes.QuantReport)
    assert max(int(l.delay.max()) for l in qnet.layers) <= 62
    assert all(np.count_nonzero(l.weight, axis=1).max() <= 4 for l in qnet.layers)


def test_mse_weight_range_clips_outliers_for_fewer_errors():
    rng = np.random.default_rng(12)
    w = rng.normal(0, 1, 5000)
    for qmax in (1, 3, 7):
        c = passes.mse_range(w, qmax)
        assert 0 < c < np.abs(w).max()
        err = lambda cc: np.sum((np.minimum(np.rint(np.abs(w) / (cc / qmax)), qmax)
                                 * (cc / qmax) - np.abs(w)) ** 2)
        assert err(c) < err(np.abs(w).max())
    net = random_net(rng, (20, 16, 4))
    q_max, _ = passes.quantize(net, weight_bits=2)
    q_mse, rep = passes.quantize(net, weight_bits=2, weight_range="mse")
    assert q_mse.meta["weight_range"] == "mse"
    # ternary with the max range zeroes most weights; the mse range keeps far more
    nz = lambda q: sum(int(np.count_nonzero(L.weight)) for L in q.layers)
    assert nz(q_mse) > 2 * nz(q_max)
    assert sum(r["weights_clipped"] for r in rep.layers) > 0
    with pytest.raises(passes.PassError, match="weight_range"):
        passes.quantize(net, weight_range="p99")


def test_calibration_measures_a_in_before_the_current_filter():
    """a_in (what the accumulator and the input width hold) is W x each step; a CUBA
    layer's filtered current J grows to W x / (1 - current_decay) and must not be taken
    for it (that would lower the exponent for nothing)."""
    from neurodelay.core.network import Layer, Network
    lay = Layer(weight=np.ones((1, 1)), delay=np.zeros((1, 1), int), bias=np.zeros(1),
                decay=1.0, threshold=1e9, kind="lif", name="cuba", current_decay=0.9)
    ro = Layer(weight=np.ones((1, 1)), delay=np.zeros((1, 1), int), bias=np.zeros(1),
               decay=0.5, threshold=1.0, kind="li", name="ro")
    act = passes._float_activity(Network([lay, ro]), np.ones((1, 60, 1)))
    assert act.max_syn[0] == 1.0
    assert act.max_u[0] > 5.0           # the filtered current did integrate
