"""Recurrent layers on the way to Loihi 2 (issue 22), without Lava: quantization, the
quantized file format, the hash, delays and resources, and the bit-accurate simulator's
recurrent path against a synapse-by-synapse integer loop. Lava itself: test_lava_recurrent.py.
"""
import h5py
import numpy as np
import pytest
from test_recurrent_core import recurrent_net

from neurodelay.core.network import QLayer, QNetwork
from neurodelay.core.network_io import load_network, save_network
from neurodelay.deploy.manifest import qnet_hash
from neurodelay.errors import DelayRangeError, NetworkError
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.resources import resource_report
from neurodelay.hw.target import arith
from neurodelay.passes import check_delays
from neurodelay.passes.quantize import quantize
from neurodelay.sim import bitsim, floatsim


def calib(seed=0, B=64, T=40, n=6):
    rng = np.random.default_rng(seed)
    return ((rng.random((B, T, n)) < 0.3) * rng.integers(1, 3, (B, T, n))).astype(np.float32)


def rec_qnet(seed, sizes=(6, 10, 4), rec_exp=-1, rec_nwb=8, max_rec=4):
    """Random integer network whose hidden layer is recurrent: mixed-sign recurrent
    weights (Lava truncates their LSB at 8 bits), its own exponent (negative: floor)."""
    rng = np.random.default_rng(seed)
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        w = rng.integers(-128, 128, (b, a)) * (rng.random((b, a)) < 0.7)
        rec = {}
        if not last:
            rec = dict(rec_weight=rng.integers(-100, 100, (b, b)) * (rng.random((b, b)) < 0.5),
                       rec_delay=rng.integers(1, max_rec + 1, (b, b)),
                       rec_weight_exp=rec_exp, rec_num_weight_bits=rec_nwb)
        layers.append(QLayer(weight=w, weight_exp=0, num_weight_bits=9,
                             delay=rng.integers(0, 4, (b, a)),
                             bias_mant=rng.integers(-20, 21, b), bias_exp=6,
                             du=int(rng.integers(0, 4096)), dv=int(rng.integers(0, 600)),
                             vth=None if last else int(rng.integers(40, 200)), scale=1 / 64,
                             kind="li" if last else "lif", name=f"fc{k}", **rec))
    return QNetwork(layers, target="loihi2")


def graded(seed, B=3, T=30, n=6):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, (B, T, n)) * (rng.random((B, T, n)) < 0.4)


# ----------------------------------------------------------------------------- quantize

def test_quantize_recurrent_network_own_exponent_and_float_agreement():
    net, x = recurrent_net(), calib()
    q, rep = quantize(net, data=(x, None))
    hid, a = q.layers[0], arith(q)
    assert q.recurrent and hid.recurrent and not q.layers[1].recurrent
    np.testing.assert_array_equal(hid.rec_delay, net.layers[0].rec_delay)
    # the recurrent process: its own exponent, the finest one whose 8-bit grid holds R,
    # mantissas on the layer's scale; Lava's truncation leaves them unchanged
    mult = fp.mantissa_multiplier(8, a)
    unit = fp.weight_unit(hid.rec_weight_exp, a) * mult * hid.scale
    q_r = hid.rec_weight // mult
    assert np.abs(q_r).max() <= 127
    np.testing.assert_array_equal(q_r, np.rint(net.layers[0].rec_weight / unit))
    finer = fp.weight_unit(hid.rec_weight_exp - 1, a) * mult * hid.scale
    assert np.rint(np.abs(net.layers[0].rec_weight).max() / finer) > 127
    np.testing.assert_array_equal(
        fp.effective_weights(hid.rec_weight, hid.rec_num_weight_bits, a), hid.rec_weight)
    row = rep.layers[0]
    assert row["rec_weight_exp"] == hid.rec_weight_exp and row["rec_weights_clipped"] == 0
    # calibrated on the data; the bit-accurate recurrent network computes the float one
    assert rep.agreement == 1.0 and not rep.warnings
    r = bitsim.run(q, bitsim.quantize_input(q, x), n_steps=x.shape[1] + 2, record=True)
    fs = floatsim.simulate(net, x, record=True)
    s_bit = r.spikes[0][:, 1:1 + x.shape[1]]                 # float step t = row t + 1
    assert (s_bit != fs.spikes[0]).mean() < 0.01 and fs.spikes[0].sum() > 1000


def test_recurrent_qlayer_fields_go_together_and_spiking_only():
    q = rec_qnet(0).layers[0]
    kw = dict(weight=q.weight, weight_exp=0, num_weight_bits=9, delay=q.delay,
              bias_mant=q.bias_mant, bias_exp=6, du=0, dv=0, vth=10, scale=1.0)
    with pytest.raises(NetworkError, match="rec_weight_exp, rec_num_weight_bits missing"):
        QLayer(**kw, rec_weight=q.rec_weight, rec_delay=q.rec_delay)
    with pytest.raises(NetworkError, match="delays < 1 step"):
        QLayer(**kw, rec_weight=q.rec_weight, rec_delay=q.rec_delay * 0,
               rec_weight_exp=0, rec_num_weight_bits=8)
    with pytest.raises(NetworkError, match="only a spiking"):
        QLayer(**{**kw, "vth": None}, kind="li", rec_weight=q.rec_weight,
               rec_delay=q.rec_delay, rec_weight_exp=0, rec_num_weight_bits=8)


# ----------------------------------------------------------------------------- file, hash

def test_quantized_recurrent_file_round_trip_and_version(tmp_path):
    q = rec_qnet(1)
    save_network(q, tmp_path / "q.h5")
    back = load_network(tmp_path / "q.h5", kind="quantized")
    with h5py.File(tmp_path / "q.h5") as f:
        assert f.attrs["format_version"] == 2
    for a, b in zip(q.layers, back.layers):
        assert a.recurrent == b.recurrent
        if a.recurrent:
            np.testing.assert_array_equal(a.rec_weight, b.rec_weight)
            np.testing.assert_array_equal(a.rec_delay, b.rec_delay)
            assert (a.rec_weight_exp, a.rec_num_weight_bits) == (b.rec_weight_exp,
                                                                 b.rec_num_weight_bits)
    assert qnet_hash(back) == qnet_hash(q)
    # a feed-forward quantized network stays version 1
    ff = rec_qnet(1)
    for lay in ff.layers:
        lay.rec_weight = lay.rec_delay = lay.rec_weight_exp = lay.rec_num_weight_bits = None
    save_network(ff, tmp_path / "ff.h5")
    with h5py.File(tmp_path / "ff.h5") as f:
        assert f.attrs["format_version"] == 1 and "rec_weight" not in f["layers/0"]
    # a file missing one recurrent field is refused, naming it
    with h5py.File(tmp_path / "q.h5", "a") as f:
        del f["layers/0"].attrs["rec_weight_exp"]
    with pytest.raises(NetworkError, match="'rec_weight_exp'"):
        load_network(tmp_path / "q.h5")


def test_hash_covers_the_recurrent_synapses():
    q = rec_qnet(2)
    h = qnet_hash(q)
    for change in ("rec_weight", "rec_delay", "rec_weight_exp"):
        q2 = rec_qnet(2)
        lay = q2.layers[0]
        if change == "rec_weight_exp":
            lay.rec_weight_exp += 1
        else:
            getattr(lay, change)[0, 0] += 1
        assert qnet_hash(q2) != h, change


# ----------------------------------------------------------------------------- limits

def test_recurrent_delays_and_fan_in_against_the_target():
    q = rec_qnet(3)
    a = arith(q)
    lay = q.layers[0]
    lay.rec_weight[0, 1] = 50
    lay.rec_delay[0, 1] = a.max_delay + 1               # Lava delay max_delay: fits
    assert not fp.check_qnet(q, a)
    lay.rec_delay[0, 1] = a.max_delay + 2
    problems = fp.check_qnet(q, a)
    assert len(problems) == 1 and "(recurrent): rec_delay" in problems[0]
    with pytest.raises(DelayRangeError, match="recurrent synapse"):
        check_delays(q, a.max_delay)
    clipped, rep = check_delays(q, a.max_delay, clip=True)
    assert clipped.layers[0].rec_delay[0, 1] == a.max_delay + 1
    assert rep.changes["clipped"] == 1
    st = resource_report(clipped, "loihi2").layers[0]
    ff_in = (lay.weight != 0).sum(axis=1)
    rec_in = (lay.rec_weight != 0).sum(axis=1)
    assert st["max_fan_in"] == int((ff_in + rec_in).max())
    assert st["recurrent_synapses"] == int(np.count_nonzero(lay.rec_weight))
    assert st["synapses"] == int(np.count_nonzero(lay.weight)) + st["recurrent_synapses"]
    used = clipped.layers[0].rec_weight != 0
    assert st["rec_delay_max"] == a.max_delay + 1 == int(clipped.layers[0].rec_delay[used].max())
    assert st["rec_delay_min"] == int(clipped.layers[0].rec_delay[used].min())
    assert resource_report(clipped, "loihi2").layers[1]["rec_delay_min"] is None  # readout
    from neurodelay.hw.resources import format_resource_report
    table = format_resource_report(resource_report(clipped, "loihi2"))
    assert f"rec {st['rec_delay_min']}..{a.max_delay + 1}" in table
    # sweep-bits' memory column counts the recurrent synapses like the resource report
    from neurodelay.research.sweep import memory_bytes
    assert memory_bytes(clipped, 8, 6) == \
        resource_report(clipped, "loihi2").totals["synaptic_memory_bytes"]


# ----------------------------------------------------------------------------- bitsim

def direct_integer_loop(q, x, R):
    """Lava's arithmetic written synapse by synapse (int64, Python loops): every synapse
    process sends at row r what it received at row r - 1 - d (its group sums floored by
    its exponent), the LIF's a_in is the sum of its processes; the recurrent process
    receives the layer's spikes of the same row."""
    a = arith(q)
    B = x.shape[0]
    s_in = np.zeros((B, R, x.shape[2]), np.int64)
    s_in[:, :x.shape[1]] = x
    outs = []
    for layer in q.layers:
        n = layer.n_out
        wf = fp.effective_weights(layer.weight, layer.num_weight_bits, a)
        wr = fp.effective_weights(layer.rec_weight, layer.rec_num_weight_bits, a) \
            if layer.recurrent else None
        spikes = np.zeros((B, R, n), np.int64)
        vs = np.zeros((B, R, n), np.int64)
        for b in range(B):
            u = np.zeros(n, np.int64)
            v = np.zeros(n, np.int64)
            for r in range(R):
                a_in = np.zeros(n, np.int64)
                for (w, dly, src, exp) in [(wf, layer.delay, s_in[b], layer.weight_exp)] + (
                        [(wr, layer.rec_delay - 1, spikes[b], layer.rec_weight_exp)]
                        if layer.recurrent else []):
                    for i in range(n):
                        for d in np.unique(dly[i]):
                            rr = r - 1 - int(d)
                            if rr < 0:
                                continue
                            m = dly[i] == d
                            grp = int(np.dot(w[i][m], src[rr][m]))
                            a_in[i] += fp.shift_sum(grp, exp)
                u = fp.current_step(u, fp.current_input(a_in, a), fp.current_keep(layer.du, a), a)
                v = fp.decay(v, fp.voltage_keep(layer.dv, a), a.dv_bits) + u + \
                    fp.effective_bias(layer.bias_mant, layer.bias_exp)
                v = fp.clip_voltage(v, a)
                s = v > fp.threshold(fp.layer_vth(layer, a), a)
                v[s] = 0
                spikes[b, r] = s
                vs[b, r] = v
        outs.append((spikes, vs))
        s_in = spikes
    return outs


@pytest.mark.parametrize("seed,rec_exp,nwb", [(0, -1, 8), (1, 0, 8), (2, -3, 7), (3, 2, 8)])
def test_bitsim_recurrent_equals_a_synapse_by_synapse_integer_loop(seed, rec_exp, nwb):
    q = rec_qnet(seed, rec_exp=rec_exp, rec_nwb=nwb)
    x = graded(seed)
    R = 36
    res = bitsim.run(q, x, n_steps=R, record=True)
    ref = direct_integer_loop(q, x, R)
    for k, (spk, v) in enumerate(ref):
        np.testing.assert_array_equal(res.spikes[k], spk.astype(bool), err_msg=f"layer {k}")
    np.testing.assert_array_equal(res.v, ref[-1][1])
    assert ref[0][0].sum() > 50                     # the recurrent layer is active


# ----------------------------------------------------------------------------- hw-exact

def test_hardware_exact_model_of_a_recurrent_network_equals_bitsim():
    import torch

    from neurodelay.train.hwmodel import HwSNN

    net, x = recurrent_net(), calib(B=16)
    q, _ = quantize(net, data=(x, None))
    lat = [(lay.weight, lay.bias) + ((lay.rec_weight,) if lay.recurrent else ())
           for lay in net.layers]
    model = HwSNN(q, 8, latent=lat)
    start = model.to_qnetwork().layers[0]                 # the start IS the given network
    for f in ("weight", "bias_mant", "rec_weight", "rec_delay", "rec_weight_exp",
              "rec_num_weight_bits"):
        np.testing.assert_array_equal(getattr(start, f), getattr(q.layers[0], f))
    u, hidden = model(torch.from_numpy(x), record=True)
    T, L = x.shape[1], len(q.layers)
    res = bitsim.run(q, bitsim.quantize_input(q, x), n_steps=T + L, record=True)
    np.testing.assert_array_equal(
        u.detach().numpy(), bitsim.align_to_float(res, T).astype(np.float64) * q.layers[-1].scale)
    np.testing.assert_array_equal(hidden[0].detach().numpy().astype(bool),
                                  res.spikes[0][:, 1:1 + T])
    assert res.spikes[0].sum() > 500
    # a training step reaches the recurrent weights; the integers it leads to are
    # what bitsim runs (the fine-tuned network stays exact by construction)
    loss = u.pow(2).mean()
    loss.backward()
    g = model.layers[0].rec_weight.grad
    assert g is not None and torch.count_nonzero(g) > 0
    with torch.no_grad():
        model.layers[0].rec_weight.add_(torch.sign(g) * model.layers[0].rec_step * 3)
    q2 = model.to_qnetwork()
    assert not np.array_equal(q2.layers[0].rec_weight, q.layers[0].rec_weight)
    u2, _ = model(torch.from_numpy(x), record=True)
    res2 = bitsim.run(q2, bitsim.quantize_input(q2, x), n_steps=T + L)
    np.testing.assert_array_equal(
        u2.detach().numpy(),
        bitsim.align_to_float(res2, T).astype(np.float64) * q2.layers[-1].scale)
