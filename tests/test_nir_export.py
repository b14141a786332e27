"""NIR exporter: file round trip, type inference, and EXECUTION of the written graph.

The written NIR file is run by nirtorch's ``nir_to_torch`` with neurodelay's node map
(:func:`neurodelay.nir.node_map`: forward-Euler step of each ODE with the graph's ``dt``,
strict ``v > v_threshold``, a ring buffer per Delay channel; itself checked against a
direct loop of the NIR equations in tests/test_nir_import.py) and compared with a direct
per-synapse loop of neurodelay's discrete semantics (neurodelay.core.network docstring).
"""
from __future__ import annotations

import json
import os

import nir
import nirtorch
import numpy as np
import pytest
import torch

from neurodelay.core.network import Layer, Network, QLayer, QNetwork
from neurodelay.exporters.nir import NirExportError, export, nir_node_counts, to_nir
from neurodelay.nir import node_map

torch.set_num_threads(1)


# --------------------------------------------------------------------------- reference

def _reference(weights, delays, biases, decays, thresholds, resets, x, strict=False,
               current_decays=None):
    """Direct float64 loop of the float semantics; returns (readout membrane, hidden spikes).

    thresholds[k] None marks the non-spiking readout. ``strict`` uses u > thr (Loihi)
    instead of neurodelay's u >= thr. current_decays[k] > 0 filters the synaptic current
    (J = c*J + W x) before the bias is added to u.
    """
    h = np.asarray(x, dtype=np.float64)
    B, T, _ = h.shape
    spikes = []
    current_decays = current_decays or [0.0] * len(weights)
    for W, D, b, dec, thr, rst, cd in zip(weights, delays, biases, decays, thresholds, resets,
                                          current_decays):
        W = np.asarray(W, np.float64)
        D = np.asarray(D, np.int64)
        pad = int(D.max()) if D.size else 0
        hp = np.concatenate([np.zeros((B, pad, h.shape[2])), h], axis=1)
        tt = np.arange(T)[:, None, None] + pad - D[None]            # (T, n_out, n_in)
        jj = np.broadcast_to(np.arange(W.shape[1])[None, None], tt.shape)
        cur = (hp[:, tt, jj] * W[None, None]).sum(-1)
        for t in range(1, T):
            cur[:, t] += cd * cur[:, t - 1]
        cur = cur + np.asarray(b, np.float64)
        u = np.zeros((B, W.shape[0]))
        out = np.zeros((B, T, W.shape[0]))
        for t in range(T):
            u = dec * u + cur[:, t]
            if thr is None:
                out[:, t] = u
            else:
                s = (u > thr) if strict else (u >= thr)
                out[:, t] = s
                u = np.where(s, rst, u)
        if thr is not None:
            spikes.append(out)
        h = out
    return h, spikes


def _reference_net(net: Network, x):
    L = net.layers
    return _reference([l.weight for l in L], [l.delay for l in L], [l.bias for l in L],
                      [l.decay for l in L],
                      [float(np.float32(l.threshold)) if l.kind == "lif" else None for l in L],
                      [l.reset for l in L], x, current_decays=[l.current_decay for l in L])


# --------------------------------------------------------------------------- NIR execution

def _run_nir(path, x, dtype=torch.float64):
    """Execute the NIR file step by step; returns (readout per step, hidden spikes)."""
    graph = nir.read(path)
    dt = float(graph.metadata["dt"])
    hidden = [l["neuron_node"] for l in json.loads(graph.metadata["layers_json"])
              if l["kind"] == "lif"]
    gm = nirtorch.nir_to_torch(graph, node_map(dt), dtype=dtype)
    xt = torch.as_tensor(np.asarray(x), dtype=dtype)
    state, outs, spikes = None, [], [[] for _ in hidden]
    with torch.no_grad():
        for t in range(xt.shape[1]):
            out, state = gm(xt[:, t], state) if state is not None else gm(xt[:, t])
            outs.append(out)
            for k, name in enumerate(hidden):
                spikes[k].append(state[name].z)
    return (torch.stack(outs, 1).double().numpy(),
            [torch.stack(s, 1).double().numpy() for s in spikes])


# --------------------------------------------------------------------------- networks

def _random_net(seed, sizes, max_delay, density, decays, reset=0.0, dt=0.01,
                current_decays=None):
    rng = np.random.default_rng(seed)
    layers = []
    for k in range(len(sizes) - 1):
        n_in, n_out = sizes[k], sizes[k + 1]
        w = rng.normal(0.0, 1.6 / np.sqrt(n_in * density), (n_out, n_in))
        w *= rng.random((n_out, n_in)) < density
        last = k == len(sizes) - 2
        layers.append(Layer(weight=w, delay=rng.integers(0, max_delay + 1, (n_out, n_in)),
                            bias=rng.normal(0.0, 0.1, n_out), decay=decays[k],
                            threshold=float("inf") if last else 1.0, reset=reset,
                            kind="li" if last else "lif", name=f"fc{k}",
                            current_decay=(current_decays or [0.0] * len(decays))[k]))
    return Network(layers=layers, dt=dt, class_names=[f"c{i}" for i in range(sizes[-1])])


def _counts(seed, shape):
    return np.random.default_rng(seed + 1000).poisson(0.6, shape).astype(np.float32)


CASES = {
    "dense-3layer": dict(sizes=[16, 20, 12, 5], max_delay=6, density=1.0,
                         decays=[0.9, 0.8, 0.95]),
    "sparse": dict(sizes=[24, 18, 6], max_delay=9, density=0.25, decays=[0.7, 0.9]),
    "tiny-decay-reset": dict(sizes=[10, 14, 4], max_delay=4, density=0.6,
                             decays=[0.005, 0.5], reset=-0.25, dt=0.001),
    "no-leak-IF-I": dict(sizes=[12, 10, 3], max_delay=5, density=0.5, decays=[1.0, 1.0]),
    "cuba": dict(sizes=[14, 16, 10, 4], max_delay=5, density=0.7, decays=[0.85, 0.9, 0.8],
                 current_decays=[0.6, 0.3, 0.5]),
}


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("case", sorted(CASES))
def test_nirtorch_execution_matches_float_network(tmp_path, case):
    net = _random_net(seed=len(case), **CASES[case])
    x = _counts(len(case), (3, 30, net.n_in))
    path = tmp_path / "net.nir"
    export(net, path)

    got, got_spikes = _run_nir(path, x)
    ref, ref_spikes = _reference_net(net, x)
    assert got.shape == ref.shape == (3, 30, net.layers[-1].n_out)
    assert np.max(np.abs(got - ref)) <= 1e-5
    assert len(got_spikes) == len(ref_spikes) == len(net.layers) - 1
    for g, r in zip(got_spikes, ref_spikes):
        assert 0.01 < r.mean() < 0.9, "test network should spike sometimes, not always"
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_nirtorch_execution_matches_floatsim(tmp_path, case, dtype):
    """Same check against the project's own simulator, in its float32 and float64 modes."""
    from neurodelay.sim.floatsim import simulate

    net = _random_net(seed=len(case) + 10, **CASES[case])
    x = _counts(len(case) + 10, (2, 30, net.n_in))
    export(net, tmp_path / "net.nir")
    got, got_spikes = _run_nir(tmp_path / "net.nir", x,
                               dtype=torch.float32 if dtype == np.float32 else torch.float64)
    ref = simulate(net, x, record=True, dtype=dtype)
    assert np.max(np.abs(got - ref.u)) <= 1e-5
    for g, r in zip(got_spikes, ref.spikes, strict=True):
        assert r.any()
        np.testing.assert_array_equal(g, r)


def test_readout_depends_on_delays(tmp_path):
    """Guards the comparison above: wrong delays must change the output."""
    net = _random_net(seed=3, **CASES["sparse"])
    x = _counts(3, (2, 25, net.n_in))
    export(net, tmp_path / "a.nir")
    got, _ = _run_nir(tmp_path / "a.nir", x)
    for layer in net.layers:
        layer.delay = np.zeros_like(layer.delay)
    ref0, _ = _reference_net(net, x)
    assert np.max(np.abs(got - ref0)) > 1e-2


def test_round_trip_keys_arrays_metadata(tmp_path):
    net = _random_net(seed=1, **CASES["dense-3layer"])
    graph = to_nir(net)
    export(net, tmp_path / "g.nir")
    back = nir.read(tmp_path / "g.nir")
    assert sorted(back.nodes) == sorted(graph.nodes)    # HDF5 stores groups by name
    assert sorted(back.edges) == sorted(graph.edges)
    for key, node in graph.nodes.items():
        other = back.nodes[key]
        assert type(other) is type(node), key
        for field, value in node.to_dict().items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(np.asarray(other.to_dict()[field]), value,
                                              err_msg=f"{key}.{field}")
    for k, v in graph.metadata.items():
        assert back.metadata[k] == v, k
    assert float(back.metadata["dt"]) == net.dt
    assert back.metadata["variant"] == "float"
    assert back.metadata["neurodelay_version"]
    back.infer_types()
    graph.infer_types()


def test_delays_0_3_7_give_two_delay_nodes_per_layer(tmp_path):
    rng = np.random.default_rng(7)
    layers = []
    for k, (n_in, n_out) in enumerate([(9, 8), (8, 5)]):
        d = rng.choice([0, 3, 7], size=(n_out, n_in))
        d[0, :3] = [0, 3, 7]                   # every delay is used
        w = rng.normal(size=(n_out, n_in))
        w[0, :3] = 1.0
        w[-1, -1], d[-1, -1] = 0.0, 9          # a pruned synapse's delay creates nothing
        layers.append(Layer(w, d, np.ones(n_out), decay=0.9, threshold=1.0,
                            kind="lif" if k == 0 else "li"))
    graph = to_nir(Network(layers, dt=0.01))
    assert nir_node_counts(graph) == {"Affine": 2, "Delay": 4, "Input": 1, "LI": 1,
                                      "LIF": 1, "Linear": 4, "Output": 1}
    for k, layer in enumerate(layers):
        assert f"L{k}_delay_d0" not in graph.nodes
        for d in (3, 7):
            node = graph.nodes[f"L{k}_delay_d{d}"]
            np.testing.assert_allclose(node.delay, np.full(layer.n_in, d * 0.01))
        # r == 1: the Euler input gain dt/tau multiplies the graph's weights and bias back
        # to the network's (exactly, after rounding to float32); bias once, in the smallest
        # delay's Affine; the branches add up to W
        neuron = graph.nodes[f"L{k}_{layer.kind}"]
        np.testing.assert_array_equal(neuron.r, 1.0)
        a = 0.01 / neuron.tau
        np.testing.assert_allclose(a, 1 - 0.9, rtol=1e-12)
        assert isinstance(graph.nodes[f"L{k}_syn_d0"], nir.Affine)
        assert graph.nodes[f"L{k}_syn_d0"].weight.dtype == np.float64
        np.testing.assert_array_equal(np.float32(graph.nodes[f"L{k}_syn_d0"].bias * a),
                                      layer.bias)
        total = sum(graph.nodes[f"L{k}_syn_d{d}"].weight for d in (0, 3, 7))
        np.testing.assert_array_equal(np.float32(total * a[:, None]), layer.weight)
        assert f"L{k}_syn_d9" not in graph.nodes


def test_threshold_tie_spikes_like_neurodelay(tmp_path):
    """u == threshold exactly: neurodelay fires (>=); NIR's strict rule must fire too."""
    w = np.full((2, 2), 0.5, np.float32)
    l0 = Layer(w, np.zeros((2, 2), int), np.zeros(2), decay=0.0, threshold=1.0)
    l1 = Layer(np.eye(2), np.zeros((2, 2), int), np.zeros(2), decay=0.0, kind="li")
    net = Network([l0, l1])
    x = np.array([[[1, 1], [1, 0], [0, 0]]], np.float32)     # u = 1.0, 0.5, 0.0
    export(net, tmp_path / "tie.nir")
    for dtype in (torch.float32, torch.float64):
        got, spikes = _run_nir(tmp_path / "tie.nir", x, dtype=dtype)
        np.testing.assert_array_equal(spikes[0][0, :, 0], [1, 0, 0])
    lif = to_nir(net).nodes["L0_lif"]
    assert np.all(lif.v_threshold < 1.0) and np.all(np.float32(lif.v_threshold) > 0.9999999)


def _qnet(seed=5):
    rng = np.random.default_rng(seed)
    w0 = rng.integers(-300, 300, (10, 8))                   # clipped to 8 bits, mixed sign
    w0[0, :3] = [101, -3, 0]                                # LSB dropped: 100, -4
    q0 = QLayer(weight=w0, weight_exp=-2, num_weight_bits=8,
                delay=rng.integers(0, 5, (10, 8)), bias_mant=rng.integers(-40, 40, 10),
                bias_exp=6, du=4095, dv=410, vth=400, scale=1.0 / 25600, name="h")
    w1 = rng.integers(0, 200, (3, 10))                      # excitatory: no LSB dropped
    q1 = QLayer(weight=w1, weight_exp=0, num_weight_bits=7,
                delay=rng.integers(0, 3, (3, 10)), bias_mant=np.zeros(3, int), bias_exp=0,
                du=4095, dv=205, vth=None, scale=1.0 / 4096, kind="li", name="out")
    return QNetwork([q0, q1], target="loihi2", dt=0.01, input_scale=2.0)


def test_quantized_float_equivalent_executes(tmp_path):
    from neurodelay._compat import ensure_lava
    ensure_lava()
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    qnet = _qnet()
    graph = to_nir(qnet)
    assert graph.metadata["variant"] == "quantized" and graph.metadata["target"] == "loihi2"
    rep = export(qnet, tmp_path / "q.nir")                  # a QNetwork exports as is
    assert rep["variant"] == "quantized" and rep["target"] == "loihi2"

    ws, bs, decs, thrs = [], [], [], []
    for k, ql in enumerate(qnet.layers):
        mode = determine_sign_mode(ql.weight)
        w_eff = truncate_weights(clip_weights(ql.weight, mode, num_bits=8), mode,
                                 ql.num_weight_bits)
        gain = 2.0 ** (ql.weight_exp + 6) * ql.scale * (qnet.input_scale if k == 0 else 1)
        ws.append(np.float32(w_eff * gain))
        if k == 0:                                          # Lava dropped the LSB: 101 -> 100
            assert w_eff[0, 0] == 100 and w_eff[0, 1] == -4
        bs.append(np.float32(ql.bias_mant * 2.0 ** ql.bias_exp * ql.scale))
        decs.append(1 - ql.dv / 4096)
        thrs.append(None if ql.vth is None else (ql.vth << 6) * ql.scale)
    x = _counts(9, (3, 30, 8))
    ref, ref_spikes = _reference(ws, [ql.delay for ql in qnet.layers], bs, decs, thrs,
                                 [0.0, 0.0], x, strict=True)
    got, got_spikes = _run_nir(tmp_path / "q.nir", x)
    assert np.max(np.abs(got - ref)) <= 1e-5
    assert 0.01 < ref_spikes[0].mean() < 0.9
    np.testing.assert_array_equal(got_spikes[0], ref_spikes[0])


def test_export_quantized_variant(tmp_path):
    net = _random_net(seed=2, **CASES["sparse"])
    from neurodelay.passes import quantize
    # a float network is never quantized by the exporter (one artifact flows)
    with pytest.raises(NirExportError, match="not quantized here"):
        export(net, tmp_path / "q.nir", variant="quantized")
    assert not (tmp_path / "q.nir").exists()
    qnet, _ = quantize(net, "loihi2", data=None, weight_bits=8)
    rep = export(qnet, tmp_path / "q.nir")
    expected = to_nir(qnet)
    back = nir.read(tmp_path / "q.nir")
    assert back.metadata["variant"] == "quantized" and rep["variant"] == "quantized"
    assert rep["node_counts"] == nir_node_counts(expected)
    for key, node in expected.nodes.items():
        if hasattr(node, "weight"):
            np.testing.assert_array_equal(back.nodes[key].weight, node.weight)


def test_export_report_and_atomic_overwrite(tmp_path):
    net = _random_net(seed=4, **CASES["dense-3layer"])
    out = tmp_path / "sub" / "model.nir"
    rep1 = export(net, out)
    rep2 = export(net, out)                                  # overwrite in place
    assert rep1 == rep2
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.nir"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask, "a normal file mode, not mkstemp's 0600"
    back = nir.read(out)
    assert rep1["path"] == str(out) and rep1["variant"] == "float"
    assert rep1["node_counts"] == nir_node_counts(back)
    assert rep1["n_delay_nodes"] == rep1["node_counts"]["Delay"] == sum(
        sum(1 for d in ds if d > 0) for ds in rep1["delays_per_layer"])
    assert rep1["n_edges"] == len(back.edges)
    assert rep1["n_nodes"] == len(back.nodes)
    assert rep1["delays_per_layer"][0] == sorted(
        set(net.layers[0].delay[net.layers[0].weight != 0].tolist()))


def test_bad_input_errors(tmp_path):
    net = _random_net(seed=4, **CASES["sparse"])
    with pytest.raises(NirExportError, match="variant"):
        export(net, tmp_path / "x.nir", variant="int8")
    with pytest.raises(NirExportError, match="Network"):
        to_nir({"layers": []})
    with pytest.raises(NirExportError, match="no float"):
        export(_qnet(), tmp_path / "x.nir", variant="float")
    with pytest.raises(TypeError):
        export(net, tmp_path / "x.nir", clip=True)
    with pytest.raises(NirExportError, match="nir_schema"):
        export(net, tmp_path / "x.nir", nir_schema="1.0.3")
    assert not (tmp_path / "x.nir").exists()


def test_quantized_current_decay_becomes_cubalif(tmp_path):
    """A quantized layer with du < 4095 keeps a synaptic current: CubaLIF with
    current_decay = (4095 - du)/4096, and execution still matches the direct loop."""
    qnet = _qnet()
    qnet.layers[0].du = 1023
    graph = to_nir(qnet)
    node = graph.nodes["L0_lif"]
    assert isinstance(node, nir.CubaLIF)
    np.testing.assert_allclose(1 - 0.01 / node.tau_syn, (4095 - 1023) / 4096, rtol=1e-12)
    export(qnet, tmp_path / "q.nir")
    from neurodelay._compat import ensure_lava
    ensure_lava()
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    ws, bs, decs, thrs = [], [], [], []
    for k, ql in enumerate(qnet.layers):
        mode = determine_sign_mode(ql.weight)
        w_eff = truncate_weights(clip_weights(ql.weight, mode, num_bits=8), mode,
                                 ql.num_weight_bits)
        gain = 2.0 ** (ql.weight_exp + 6) * ql.scale * (qnet.input_scale if k == 0 else 1)
        ws.append(np.float32(w_eff * gain))
        bs.append(np.float32(ql.bias_mant * 2.0 ** ql.bias_exp * ql.scale))
        decs.append(1 - ql.dv / 4096)
        thrs.append(None if ql.vth is None else (ql.vth << 6) * ql.scale)
    x = _counts(19, (3, 30, 8))
    ref, ref_spikes = _reference(ws, [ql.delay for ql in qnet.layers], bs, decs, thrs,
                                 [0.0, 0.0], x, strict=True,
                                 current_decays=[(4095 - 1023) / 4096, 0.0])
    got, got_spikes = _run_nir(tmp_path / "q.nir", x)
    assert np.max(np.abs(got - ref)) <= 1e-5
    assert 0.01 < ref_spikes[0].mean() < 0.9
    np.testing.assert_array_equal(got_spikes[0], ref_spikes[0])


def test_cuba_layers_write_bias_as_v_leak_and_refuse_no_leak():
    net = _random_net(seed=5, **CASES["cuba"])
    graph = to_nir(net)
    assert nir_node_counts(graph)["CubaLIF"] == 2 and nir_node_counts(graph)["CubaLI"] == 1
    for k, layer in enumerate(net.layers):
        node = graph.nodes[f"L{k}_{layer.kind}"]
        np.testing.assert_array_equal(node.r, 1.0)
        np.testing.assert_array_equal(node.w_in, 1.0)
        np.testing.assert_array_equal(graph.nodes[f"L{k}_syn_d0"].bias, 0.0)
        # the bias enters v (not the filtered current): a_mem * v_leak == b
        np.testing.assert_array_equal(np.float32(node.v_leak * (0.01 / node.tau_mem)),
                                      layer.bias)
    net.layers[0].decay = 1.0
    with pytest.raises(NirExportError, match="no node for"):
        to_nir(net)


def test_schema_104_file_has_no_v_reset_and_reads_back(tmp_path):
    import h5py

    net = _random_net(seed=6, **CASES["sparse"])
    rep = export(net, tmp_path / "old.nir", nir_schema="1.0.4")
    assert rep["nir_schema"] == "1.0.4"
    with h5py.File(tmp_path / "old.nir") as f:
        assert f["version"][()].decode() == "1.0.4"
        assert "v_reset" not in f["node/nodes/L0_lif"]
        assert "v_threshold" in f["node/nodes/L0_lif"]
    old = nir.read(tmp_path / "old.nir")                    # nir 1.0.8 reads it (v_reset 0)
    new = to_nir(net)
    assert sorted(old.nodes) == sorted(new.nodes) and sorted(old.edges) == sorted(new.edges)
    np.testing.assert_array_equal(old.nodes["L0_lif"].v_reset, 0.0)
    assert old.metadata["nir_schema"] == "1.0.4"
    x = _counts(6, (2, 25, net.n_in))
    got, got_spikes = _run_nir(tmp_path / "old.nir", x)
    ref, ref_spikes = _reference_net(net, x)
    assert np.max(np.abs(got - ref)) <= 1e-5
    for g, r in zip(got_spikes, ref_spikes, strict=True):
        np.testing.assert_array_equal(g, r)


def test_schema_104_refuses_what_it_cannot_hold(tmp_path):
    reset = _random_net(seed=7, **CASES["tiny-decay-reset"])            # reset -0.25
    with pytest.raises(NirExportError, match="no v_reset"):
        export(reset, tmp_path / "a.nir", nir_schema="1.0.4")
    cuba = _random_net(seed=7, **CASES["cuba"])                         # CubaLI readout
    with pytest.raises(NirExportError, match="CubaLI"):
        export(cuba, tmp_path / "b.nir", nir_schema="1.0.4")
    assert not list(tmp_path.iterdir())
