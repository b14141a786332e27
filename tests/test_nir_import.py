"""NIR import: graphs built with nir's own API (not our exporter) become Networks that the
float simulator runs exactly like a direct loop of the NIR equations written here; the
reference executor and nirtorch + neurodelay's node map agree with the same loop; the
imported network quantizes for Loihi 2 and the bit-accurate simulator agrees with the NIR
execution; our export -> import round trip is exact; every unsupported construct gets its
own error.
"""
from __future__ import annotations

import nir
import nirtorch
import numpy as np
import pytest
import torch

from neurodelay.exporters.nir import export
from neurodelay.nir import NirImportError, execute, import_nir, node_map, to_network
from neurodelay.sim.floatsim import readout_scores, simulate
from neurodelay.train.loaders import float_network

torch.set_num_threads(1)

DT = 0.001
N_IN, N_H, N_OUT = 6, 10, 4


# --------------------------------------------------------------------------- the graph

def _params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mask = rng.random((N_OUT, N_H)) < 0.5            # readout synapses split over 2 branches
    return dict(
        k_in=rng.integers(0, 5, N_IN),               # Delay before the Linear (per input)
        k_h=rng.integers(0, 5, N_H),                 # Delay after the Linear (per output)
        scale=rng.uniform(0.8, 1.25, N_IN),
        W1=rng.normal(0.0, 1.0, (N_H, N_IN)),
        tau_syn=0.002, tau_mem=0.004,
        r1=rng.uniform(1.0, 1.6, N_H), w_in=rng.uniform(0.8, 1.2, N_H),
        v_leak1=rng.uniform(-0.1, 0.25, N_H), v_thr=0.75,
        W2a=np.where(mask, rng.normal(0, 1.0, (N_OUT, N_H)), 0.0),
        b2=rng.normal(0.0, 0.2, N_OUT),
        W2b=np.where(~mask, rng.normal(0, 1.0, (N_OUT, N_H)), 0.0),
        k_out=rng.integers(1, 4, N_H),               # delays of the second readout branch
        tau_li=0.005, r2=rng.uniform(0.5, 1.5, N_OUT), v_leak2=rng.normal(0, 0.1, N_OUT))


def _graph(p: dict, variant: str) -> nir.NIRGraph:
    """variant "before": Input -> Delay -> Linear -> CubaLIF; "after": Input -> Scale ->
    Linear -> Delay -> CubaLIF. Readout: an Affine branch and a Delay -> Linear branch
    summing into an LI (neurodelay's decomposition, written by hand)."""
    full = lambda v, n: np.full(n, float(v))  # noqa: E731
    nodes = {
        "in": nir.Input(input_type={"input": np.array([N_IN])}),
        "w1": nir.Linear(weight=p["W1"]),
        "cuba": nir.CubaLIF(tau_syn=full(p["tau_syn"], N_H), tau_mem=full(p["tau_mem"], N_H),
                            r=p["r1"], v_leak=p["v_leak1"], v_threshold=full(p["v_thr"], N_H),
                            v_reset=full(0.0, N_H), w_in=p["w_in"]),
        "w2a": nir.Affine(weight=p["W2a"], bias=p["b2"]),
        "d2": nir.Delay(delay=p["k_out"] * DT),
        "w2b": nir.Linear(weight=p["W2b"]),
        "li": nir.LI(tau=full(p["tau_li"], N_OUT), r=p["r2"], v_leak=p["v_leak2"]),
        "out": nir.Output(output_type={"output": np.array([N_OUT])}),
    }
    edges = [("w1", "cuba") if variant == "before" else ("d1", "cuba"),
             ("cuba", "w2a"), ("cuba", "d2"), ("d2", "w2b"), ("w2a", "li"), ("w2b", "li"),
             ("li", "out")]
    if variant == "before":
        nodes["d1"] = nir.Delay(delay=p["k_in"] * DT)
        edges += [("in", "d1"), ("d1", "w1")]
    else:
        nodes["s"] = nir.Scale(scale=p["scale"])
        nodes["d1"] = nir.Delay(delay=p["k_h"] * DT)
        edges += [("in", "s"), ("s", "w1"), ("w1", "d1")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"source": "test"})


def _nir_loop(p: dict, variant: str, x, disc: str):
    """The NIR equations stepped directly (float64): returns (LI membrane, CubaLIF spikes).

    euler: v <- v + dt/tau * (v_leak - v + r*I);  exp: the same with dt/tau replaced by
    1 - exp(-dt/tau) (input held over the step). CubaLIF: the synaptic current first
    (I_syn <- I_syn + a_syn*(w_in*S - I_syn)), the new one drives v; v > v_thr spikes, v = 0.
    """
    a = (lambda tau: DT / tau) if disc == "euler" else (lambda tau: -np.expm1(-DT / tau))
    B, T, _ = x.shape

    def past(seq, t, k):                         # seq[:, t - k_c, c], 0 before the start
        out = np.zeros((B, seq.shape[2]))
        for c, kc in enumerate(k):
            if t - kc >= 0:
                out[:, c] = seq[:, t - kc, c]
        return out

    if variant == "before":
        S = np.stack([past(x, t, p["k_in"]) @ p["W1"].T for t in range(T)], 1)
    else:
        pre = (x * p["scale"]) @ p["W1"].T
        S = np.stack([past(pre, t, p["k_h"]) for t in range(T)], 1)
    I = np.zeros((B, N_H))
    v = np.zeros((B, N_H))
    z = np.zeros((B, T, N_H))
    for t in range(T):
        I = I + a(p["tau_syn"]) * (p["w_in"] * S[:, t] - I)
        v = v + a(p["tau_mem"]) * (p["v_leak1"] - v + p["r1"] * I)
        z[:, t] = v > p["v_thr"]
        v = np.where(z[:, t] > 0, 0.0, v)
    u = np.zeros((B, N_OUT))
    out = np.zeros((B, T, N_OUT))
    for t in range(T):
        R = z[:, t] @ p["W2a"].T + p["b2"] + past(z, t, p["k_out"]) @ p["W2b"].T
        u = u + a(p["tau_li"]) * (p["v_leak2"] - u + p["r2"] * R)
        out[:, t] = u
    return out, z


def _x(seed, shape):
    return np.random.default_rng(seed + 500).poisson(0.7, shape).astype(np.float32)


def _torch_run(graph, x, disc):
    gm = nirtorch.nir_to_torch(graph, node_map(DT, disc), dtype=torch.float64)
    xt = torch.as_tensor(x, dtype=torch.float64)
    outs, spikes, state = [], [], None
    with torch.no_grad():
        for t in range(xt.shape[1]):
            out, state = gm(xt[:, t]) if state is None else gm(xt[:, t], state)
            outs.append(out)
            spikes.append(state["cuba"].z)
    return torch.stack(outs, 1).numpy(), torch.stack(spikes, 1).numpy()


# --------------------------------------------------------------------------- equivalence

@pytest.mark.parametrize("disc", ["euler", "exp"])
@pytest.mark.parametrize("variant", ["before", "after"])
def test_import_executor_nirtorch_equal_direct_loop(variant, disc):
    p = _params(1 if variant == "before" else 2)
    graph = _graph(p, variant)
    x = _x(3, (5, 40, N_IN))
    ref, ref_z = _nir_loop(p, variant, x, disc)
    assert 0.05 < ref_z.mean() < 0.8, "the hidden layer should spike sometimes, not always"

    net = to_network(graph, DT, disc).network
    assert [lay.kind for lay in net.layers] == ["lif", "li"]
    hid = net.layers[0]
    a_syn = DT / p["tau_syn"] if disc == "euler" else -np.expm1(-DT / p["tau_syn"])
    assert hid.current_decay == pytest.approx(1 - a_syn, rel=1e-12)
    assert hid.threshold == float(np.nextafter(np.float32(0.75), np.float32(1)))
    # every synapse got the delay of its path (before: per input channel; after: per
    # hidden neuron; readout: 0 on the Affine branch, k_out on the other)
    want_d1 = (np.broadcast_to(p["k_in"], (N_H, N_IN)) if variant == "before"
               else np.broadcast_to(p["k_h"][:, None], (N_H, N_IN)))
    np.testing.assert_array_equal(hid.delay, want_d1)
    np.testing.assert_array_equal(net.layers[1].delay,
                                  np.where(p["W2a"] != 0, 0, p["k_out"][None, :]))
    sim = simulate(net, x, record=True, dtype=np.float64)
    assert np.max(np.abs(sim.u - ref)) < 1e-5     # weights are stored in float32
    np.testing.assert_array_equal(sim.spikes[0], ref_z > 0)

    ex = execute(graph, x, DT, disc, record=True)
    assert np.max(np.abs(ex.output - ref)) < 1e-9
    np.testing.assert_array_equal(ex.spikes["cuba"], ref_z > 0)
    np.testing.assert_array_equal(ex.predictions, readout_scores(ref).argmax(1))

    got, got_z = _torch_run(graph, x, disc)
    assert np.max(np.abs(got - ref)) < 1e-9
    np.testing.assert_array_equal(got_z, ref_z)


def test_discretizations_differ_and_delays_matter():
    """Guards the comparisons above: exp vs euler, and ignoring the delays, change the
    output."""
    p = _params(1)
    graph = _graph(p, "before")
    x = _x(4, (3, 30, N_IN))
    euler = execute(graph, x, DT, "euler").output
    assert np.max(np.abs(euler - execute(graph, x, DT, "exp").output)) > 1e-2
    p0 = dict(p, k_in=np.zeros(N_IN, int), k_out=np.ones(N_H, int))
    assert np.max(np.abs(euler - _nir_loop(p0, "before", x, "euler")[0])) > 1e-2


def test_quantized_loihi2_agrees_with_nir_execution():
    """The imported CubaLIF network quantizes for Loihi 2 (the synaptic current becomes du)
    and the bit-accurate simulator predicts what the NIR graph predicts."""
    from neurodelay.passes import quantize
    from neurodelay.sim.bitsim import predict

    p = _params(9)
    graph = _graph(p, "after")
    net = to_network(graph, DT, "euler").network
    x = _x(6, (80, 40, N_IN))
    qnet, _ = quantize(net, "loihi2", data=x[:30])
    assert qnet.layers[0].du < 4095, "the synaptic current decay must reach the chip"
    nir_pred = execute(graph, x, DT, "euler").predictions
    bit_pred, _ = predict(qnet, x)
    assert np.sort(np.bincount(nir_pred))[-2] >= 16, "two classes at least, for a real test"
    agree = float(np.mean(bit_pred == nir_pred))
    assert agree >= 0.9, f"bit-accurate Loihi 2 agrees with NIR on {agree:.0%} of samples"


# --------------------------------------------------------------------------- round trip

@pytest.mark.parametrize("schema", ["1.0.8", "1.0.4"])
def test_round_trip_of_trained_model_is_exact(trained, files, tmp_path, schema):
    from neurodelay.data import load_binned, pad_batch
    from neurodelay.runs import open_run

    run, _ = trained
    net = float_network(open_run(run))
    export(net, tmp_path / "m.nir", nir_schema=schema)
    res, source = import_nir(tmp_path / "m.nir")                 # dt from the metadata
    back = res.network
    assert source["dt"] == net.dt and source["discretization"] == "euler"
    assert source["nir_version"] == schema
    assert (back.n_channels, back.channel_bin, back.class_names) == (
        net.n_channels, net.channel_bin, net.class_names)
    for a, b in zip(net.layers, back.layers, strict=True):
        used = a.weight != 0
        np.testing.assert_array_equal(b.weight, a.weight)
        np.testing.assert_array_equal(b.delay[used], a.delay[used])
        np.testing.assert_array_equal(b.bias, a.bias)
        assert (a.kind, a.reset) == (b.kind, b.reset)
        assert abs(b.decay - a.decay) <= 2.0 ** -24 * max(a.decay, 1e-30)
        assert b.current_decay == a.current_decay == 0.0
        if a.kind == "lif":
            assert np.float32(b.threshold) == np.float32(a.threshold)
    ds = load_binned(files["test_file"], channel_bin=net.channel_bin, dt=net.dt,
                     n_channels=net.n_channels, cache_dir=files["cache_dir"], progress=False)
    x = pad_batch(ds.samples[:64])
    ref = simulate(net, x)
    np.testing.assert_array_equal(simulate(back, x).predictions, ref.predictions)
    np.testing.assert_array_equal(execute(tmp_path / "m.nir", x).predictions,
                                  ref.predictions)


def test_round_trip_cuba_network(tmp_path):
    """A network with synaptic currents exports as CubaLIF/CubaLI and comes back equal."""
    from neurodelay.core.network import Layer, Network

    rng = np.random.default_rng(9)
    layers = [Layer(rng.normal(0, 0.6, (7, 5)), rng.integers(0, 4, (7, 5)),
                    rng.normal(0, 0.1, 7), decay=0.8, threshold=1.0, current_decay=0.55),
              Layer(rng.normal(0, 0.6, (3, 7)), rng.integers(0, 4, (3, 7)),
                    rng.normal(0, 0.1, 3), decay=0.9, kind="li", current_decay=0.25)]
    net = Network(layers, dt=0.004, n_channels=5, channel_bin=1)
    export(net, tmp_path / "c.nir")
    back = import_nir(tmp_path / "c.nir")[0].network
    for a, b in zip(net.layers, back.layers):
        np.testing.assert_array_equal(b.weight, a.weight)
        np.testing.assert_array_equal(b.delay, a.delay)
        np.testing.assert_array_equal(b.bias, a.bias)
        assert b.current_decay == pytest.approx(a.current_decay, rel=1e-12)
        assert b.decay == pytest.approx(a.decay, rel=1e-12)
    x = _x(9, (4, 30, 5))
    np.testing.assert_allclose(simulate(back, x).u, simulate(net, x).u, atol=1e-5)


# --------------------------------------------------------------------------- errors

def _lif(n, **kw):
    f = lambda v: np.full(n, float(v))  # noqa: E731
    args = dict(tau=f(0.01), r=f(1.0), v_leak=f(0.0), v_threshold=f(1.0), v_reset=f(0.0))
    args.update(kw)
    return nir.LIF(**args)


def _li(n, **kw):
    args = dict(tau=np.full(n, 0.01), r=np.ones(n), v_leak=np.zeros(n))
    args.update(kw)
    return nir.LI(**args)


def _base(n_in=3, n_h=4, n_out=2):
    """Input -> Linear -> LIF -> Linear -> LI -> Output (valid)."""
    nodes = {"in": nir.Input(input_type={"input": np.array([n_in])}),
             "w1": nir.Linear(weight=np.ones((n_h, n_in))), "lif": _lif(n_h),
             "w2": nir.Linear(weight=np.ones((n_out, n_h))), "li": _li(n_out),
             "out": nir.Output(output_type={"output": np.array([n_out])})}
    edges = [("in", "w1"), ("w1", "lif"), ("lif", "w2"), ("w2", "li"), ("li", "out")]
    return nodes, edges


def _g(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _case(name):
    nodes, edges = _base()
    if name == "recurrent-between-layers":     # (a layer's loop to itself imports)
        nodes["back"] = nir.Linear(weight=np.ones((4, 2)))
        edges += [("li", "back"), ("back", "lif")]
    elif name == "unsupported-node":
        nodes["flat"] = nir.Flatten(input_type={"input": np.array([3])}, start_dim=0)
        edges = [("in", "flat"), ("flat", "w1")] + edges[1:]
    elif name == "nested-graph":
        nodes["sub"] = nir.NIRGraph(nodes={}, edges=[], type_check=False)
    elif name == "fractional-delay":
        nodes["d"] = nir.Delay(delay=np.array([0.01, 0.015, 0.0]))
        edges = [("in", "d"), ("d", "w1")] + edges[1:]
    elif name == "delay-too-long":
        nodes["d"] = nir.Delay(delay=np.array([0.0, 200.0, 0.0]))
        edges = [("in", "d"), ("d", "w1")] + edges[1:]
    elif name == "shape-mismatch":
        nodes["w2"] = nir.Linear(weight=np.ones((2, 5)))
    elif name == "two-inputs":
        nodes["in2"] = nir.Input(input_type={"input": np.array([3])})
        edges.append(("in2", "w1"))
    elif name == "two-outputs":
        nodes["out2"] = nir.Output(output_type={"output": np.array([2])})
        edges.append(("li", "out2"))
    elif name == "non-uniform-tau":
        nodes["lif"] = _lif(4, tau=np.array([0.01, 0.01, 0.02, 0.01]))
    elif name == "non-uniform-threshold":
        nodes["lif"] = _lif(4, v_threshold=np.array([1.0, 1.0, 2.0, 1.0]))
    elif name == "cuba-filters-bias":
        f = lambda v: np.full(4, float(v))  # noqa: E731
        nodes["w1"] = nir.Affine(weight=np.ones((4, 3)), bias=f(0.3))
        nodes["lif"] = nir.CubaLIF(tau_syn=f(0.02), tau_mem=f(0.01), r=f(1), v_leak=f(0),
                                   v_threshold=f(1), v_reset=f(0), w_in=f(1))
    elif name == "bias-behind-delay":
        nodes["w1"] = nir.Affine(weight=np.ones((4, 3)), bias=np.full(4, 0.3))
        nodes["d"] = nir.Delay(delay=np.full(4, 0.02))
        edges = [("in", "w1"), ("w1", "d"), ("d", "lif")] + edges[2:]
    elif name == "multi-tap":
        nodes["d"] = nir.Delay(delay=np.full(3, 0.02))
        nodes["w1b"] = nir.Linear(weight=np.ones((4, 3)))
        edges += [("in", "d"), ("d", "w1b"), ("w1b", "lif")]
    elif name == "skip-connection":
        nodes["skip"] = nir.Linear(weight=np.ones((2, 3)))
        edges += [("in", "skip"), ("skip", "li")]
    elif name == "euler-tau-below-dt":
        nodes["lif"] = _lif(4, tau=np.full(4, 0.004))
    elif name == "threshold-on-membrane":
        nodes["li_h"] = _li(4)
        nodes["thr"] = nir.Threshold(threshold=np.full(4, 1.0))
        del nodes["lif"]
        edges = [("in", "w1"), ("w1", "li_h"), ("li_h", "thr"), ("thr", "w2")] + edges[3:]
    elif name == "spiking-output":
        del nodes["li"], nodes["w2"]
        nodes["out"] = nir.Output(output_type={"output": np.array([4])})
        edges = edges[:2] + [("lif", "out")]
    elif name == "hidden-li":
        nodes["lif"] = _li(4)
    elif name == "dangling-node":
        nodes["extra"] = nir.Linear(weight=np.ones((2, 4)))
        edges.append(("lif", "extra"))
    elif name == "negative-threshold":
        nodes["lif"] = _lif(4, v_threshold=np.full(4, -0.5))
    return _g(nodes, edges)


ERRORS = {
    "recurrent-between-layers": "cycle 'back' -> 'lif' -> 'w2' -> 'li' -> 'back' goes "
                                "through 2 neuron nodes \\('li', 'lif'\\)",
    "unsupported-node": "'flat' is a Flatten, which neurodelay does not import",
    "nested-graph": "'sub' is a nested NIRGraph",
    "fractional-delay": "channel 1 delays .* not a whole number of steps",
    "delay-too-long": "20000 steps .* exceeds the limit of 10000 steps",
    "shape-mismatch": "shape mismatch on edge 'lif' -> 'w2'",
    "two-inputs": "2 Input node",
    "two-outputs": "2 Output node",
    "non-uniform-tau": "'lif' \\(LIF\\): membrane decay \\(tau\\) differs between its neurons",
    "non-uniform-threshold": "'lif' \\(LIF\\): v_threshold differs",
    "cuba-filters-bias": "'lif' \\(CubaLIF\\).*synaptic current filters.*v_leak",
    "bias-behind-delay": "through Delay 'd'",
    "multi-tap": "node 'lif'.*different delays \\(0 and 2 steps\\), a multi-tap synapse",
    "skip-connection": "'li' \\(LI\\) sums signals coming from different layers",
    "euler-tau-below-dt": "'lif': tau = 0.004 s is shorter than dt = 0.01 s.*--discretization exp",
    "threshold-on-membrane": "Threshold 'thr' after 'li_h' \\(LI\\).*never resets",
    "spiking-output": "spiking node 'lif' \\(LIF\\) feeds the Output.*add an LI readout",
    "hidden-li": "'lif' \\(LI\\) is non-spiking .* feeds 'w2'",
    "dangling-node": "'extra' \\(Linear\\) does not lead to the Output",
    "negative-threshold": "v_threshold = -0.5.*positive threshold",
}


def test_base_graph_imports():
    """The graph every error case starts from is valid (so each case fails on its own)."""
    nodes, edges = _base()
    net = to_network(_g(nodes, edges), 0.01).network
    assert [lay.kind for lay in net.layers] == ["lif", "li"]


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_unsupported_construct_has_its_error(case):
    with pytest.raises(NirImportError, match=ERRORS[case]):
        to_network(_case(case), 0.01, "euler")


def test_bad_options_and_files(tmp_path):
    nodes, edges = _base()
    g = _g(nodes, edges)
    with pytest.raises(NirImportError, match="discretization must be one of"):
        to_network(g, 0.01, "rk4")
    with pytest.raises(NirImportError, match="dt must be a positive"):
        to_network(g, -1.0)
    nir.write(tmp_path / "nodt.nir", _g(*_base()))
    with pytest.raises(NirImportError, match="does not state its time step.*--dt"):
        import_nir(tmp_path / "nodt.nir")
    (tmp_path / "junk.nir").write_bytes(b"not hdf5")
    with pytest.raises(NirImportError, match="junk.nir: cannot be read as a NIR graph"):
        import_nir(tmp_path / "junk.nir", 0.01)
    with pytest.raises(NirImportError, match="n_channels / channel_bin = 3"):
        import_nir(tmp_path / "nodt.nir", 0.01, channel_bin=2, n_channels=7)


# --------------------------------------------------------------------------- deploy via CLI

def _shd_file(path, x, labels):
    """Write counts x (N, T, n) as an SHD-layout file (one spike per count, 1 ms bins)."""
    from neurodelay.data import write_shd_file
    times, units = [], []
    for s in x:
        t_idx, u_idx = np.nonzero(s)
        reps = s[t_idx, u_idx].astype(int)
        t = np.repeat(t_idx, reps) * DT + 0.0002
        u = np.repeat(u_idx, reps)
        order = np.argsort(t, kind="stable")
        times.append(np.concatenate([[0.0], t[order]]))
        units.append(np.concatenate([[0], u[order]]))
    return write_shd_file(path, times, units, labels, [f"c{k}" for k in range(N_OUT)])


def test_graph_from_outside_imports_exports_and_verifies_with_lava(tmp_path):
    """A CubaLIF graph with per-channel delays, built with nir's API, goes through the CLI:
    import-nir -> export --target loihi2 (calibrated on a separate file) -> verify
    --test-file (the bit-accurate chip agrees with the float network, which equals the
    NIR execution) with Lava running the exported netx file spike for spike."""
    import json

    from click.testing import CliRunner

    from neurodelay.cli import main

    p = _params(9)
    nir.write(tmp_path / "g.nir", _graph(p, "after"))
    x_cal, x_test = _x(1, (60, 40, N_IN)), _x(2, (80, 40, N_IN))
    truth = execute(_graph(p, "after"), x_test, DT, "euler").predictions
    _shd_file(tmp_path / "cal.h5", x_cal, np.zeros(60, int))
    test = _shd_file(tmp_path / "test.h5", x_test, truth)       # labels = NIR predictions
    run = CliRunner()
    layout = ["--n-channels", N_IN, "--channel-bin", 1]
    r = run.invoke(main, [str(a) for a in ["import-nir", tmp_path / "g.nir", "--dt", DT,
                                           "--out", tmp_path / "run", *layout]])
    assert r.exit_code == 0, r.output
    r = run.invoke(main, ["export", str(tmp_path / "run"), "--target", "loihi2",
                          "--calib-file", str(tmp_path / "cal.h5"), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["calibration"]["source"] == "file" and rep["calibration"]["n"] == 60
    r = run.invoke(main, ["verify", str(tmp_path / "run"), "--test-file", str(test),
                          "--calib-file", str(tmp_path / "cal.h5"), "--lava", "2",
                          "--json", "--no-progress", "--tolerance", "100"])
    assert r.exit_code == 0, r.output
    v = json.loads(r.stdout)
    assert v["artifact_hash"] == rep["artifact_hash"]
    assert v["pytorch_accuracy"] is None and v["float_accuracy"] == 1.0  # == NIR execution
    assert v["agreement"] >= 0.9 and v["quantized_accuracy"] == v["agreement"]
    assert v["lava_mismatches"] == 0 and v["lava_source"].startswith("netx file")
