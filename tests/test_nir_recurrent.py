"""NIR with recurrent layers (issue 21): graphs with cycles.

* A recurrent graph built here with nir's own API imports, and both the imported network
  (floatsim) and the reference executor (nir-run) equal this file's own step-by-step loop
  of the NIR equations, with the cycle convention: one graph evaluation per step, a cycle
  reads its neuron's output of the previous step, a Delay of k steps on it makes k + 1.
* snnTorch's RLeaky export shape (flat, as snnTorch 1.0.0 writes it with nirtorch 2.6:
  nodes '1.lif' and '1.w_rec', an Affine from the neuron back to itself, no Delay; and the
  older nested-subgraph form) imports with recurrent delay 1.
* Our export of a recurrent Network round-trips exactly, and executing the written file
  (reference executor, and nirtorch with neurodelay's node map) equals floatsim.
* Unsupported cycles are refused with messages naming the nodes; the CLI works on a
  recurrent graph file, and the quantized NIR route refuses recurrent networks clearly.
"""
from __future__ import annotations

import json

import nir
import nirtorch
import numpy as np
import pytest
import torch
from cli_checks import cli

from neurodelay.core.network import Layer, Network
from neurodelay.exporters.nir import export, nir_node_counts
from neurodelay.nir import NirImportError, execute, import_nir, node_map, to_network
from neurodelay.runs import open_run
from neurodelay.sim.floatsim import simulate
from neurodelay.train.loaders import float_network

torch.set_num_threads(1)

DT = 0.001
N_IN, N_H, N_OUT = 5, 6, 3


def _f32(a) -> np.ndarray:
    """float64 values that float32 holds exactly (so a float32 Layer loses nothing)."""
    return np.asarray(a, np.float32).astype(np.float64)


def _full(v, n):
    return np.full(n, float(v))


# --------------------------------------------------------------------------- nir-API graph

def _params(seed=0, cuba=False):
    rng = np.random.default_rng(seed)
    R1 = _f32(rng.normal(0, 0.7, (N_H, N_H)))
    R3 = _f32(rng.normal(0, 0.7, (N_H, N_H)))
    R3[rng.random(R3.shape) < 0.4] = 0
    R1[R3 != 0] = 0        # one path per synapse (two delays would be a multi-tap synapse)
    R1[rng.random(R1.shape) < 0.2] = 0
    return dict(
        cuba=cuba,
        k_in=rng.integers(0, 3, N_IN),                       # feed-forward Delay per input
        W1=_f32(rng.normal(0.6, 0.8, (N_H, N_IN))), b1=_f32(rng.normal(0, 0.1, N_H)),
        R1=R1,            # cycle lif -> rec1 -> lif, no Delay: recurrent delay 1
        R3=R3, k_rec=2,   # cycle lif -> rdelay (2 steps) -> rec3 -> lif: recurrent delay 3
        W2=_f32(rng.normal(0, 1, (N_OUT, N_H))))


def _graph(p):
    """Input -> Delay -> Affine -> LIF|CubaLIF (+ two recurrent cycles) -> Linear -> LI.

    Time constants are chosen so every per-step factor is a power of two (dt/tau = 1/4,
    r = 4: input gain 1; CubaLIF dt/tau_syn = 1/2, w_in = 2), so the imported float32
    network holds the graph's numbers exactly."""
    if p["cuba"]:
        neuron = nir.CubaLIF(tau_syn=_full(2 * DT, N_H), tau_mem=_full(4 * DT, N_H),
                             r=_full(4, N_H), v_leak=_full(0, N_H), w_in=_full(2, N_H),
                             v_threshold=_full(1, N_H), v_reset=_full(0, N_H))
    else:
        neuron = nir.LIF(tau=_full(4 * DT, N_H), r=_full(4, N_H), v_leak=_full(0, N_H),
                         v_threshold=_full(1, N_H), v_reset=_full(0, N_H))
    nodes = {
        "in": nir.Input(input_type={"input": np.array([N_IN])}),
        "d_in": nir.Delay(delay=p["k_in"] * DT),
        "fc1": nir.Affine(weight=p["W1"], bias=p["b1"] if not p["cuba"] else 0 * p["b1"]),
        "lif": neuron,
        "rec1": nir.Linear(weight=p["R1"]),
        "rdelay": nir.Delay(delay=_full(p["k_rec"] * DT, N_H)),
        "rec3": nir.Linear(weight=p["R3"]),
        "fc2": nir.Linear(weight=p["W2"]),
        "li": nir.LI(tau=_full(8 * DT, N_OUT), r=_full(8, N_OUT), v_leak=_full(0, N_OUT)),
        "out": nir.Output(output_type={"output": np.array([N_OUT])}),
    }
    edges = [("in", "d_in"), ("d_in", "fc1"), ("fc1", "lif"),
             ("lif", "rec1"), ("rec1", "lif"),
             ("lif", "rdelay"), ("rdelay", "rec3"), ("rec3", "lif"),
             ("lif", "fc2"), ("fc2", "li"), ("li", "out")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _loop(p, x):
    """This test's own step-by-step loop of the graph's NIR equations (forward Euler,
    float64), with the cycle rule: the recurrent edges carry the neuron's output of the
    previous step, delayed further by the Delay on the cycle."""
    B, T, _ = x.shape
    b1 = p["b1"] if not p["cuba"] else 0 * p["b1"]
    v = np.zeros((B, N_H)); c = np.zeros((B, N_H)); vo = np.zeros((B, N_OUT))
    z = np.zeros((B, T, N_H)); out = np.zeros((B, T, N_OUT))
    for t in range(T):
        ff = np.zeros((B, N_H))
        for j in range(N_IN):                         # Delay per input channel, then Affine
            if t - p["k_in"][j] >= 0:
                ff += np.outer(x[:, t - p["k_in"][j], j], p["W1"][:, j])
        ff += b1
        rec = np.zeros((B, N_H))
        if t - 1 >= 0:                                # no Delay: previous step
            rec += z[:, t - 1] @ p["R1"].T
        if t - 1 - p["k_rec"] >= 0:                   # Delay k on the cycle: k + 1 steps
            rec += z[:, t - 1 - p["k_rec"]] @ p["R3"].T
        inp = ff + rec
        if p["cuba"]:                                 # I_syn += dt/tau_syn*(-I_syn + w_in*x)
            c = 0.5 * c + 0.5 * 2 * inp
            drive = c
        else:
            drive = inp
        v = 0.75 * v + 0.25 * 4 * drive               # v += dt/tau*(-v + r*I)
        s = v > 1.0
        v = np.where(s, 0.0, v)
        z[:, t] = s
        vo = 0.875 * vo + 0.125 * 8 * (z[:, t] @ p["W2"].T)
        out[:, t] = vo
    return out, z


def _x(seed=1, B=4, T=40, n=N_IN, rate=0.35):
    return (np.random.default_rng(seed).random((B, T, n)) < rate).astype(np.float64)


@pytest.mark.parametrize("cuba", [False, True])
def test_nir_api_recurrent_graph_imports_and_runs_like_the_loop(cuba):
    p = _params(seed=3, cuba=cuba)
    g = _graph(p)
    x = _x()
    ref_out, ref_z = _loop(p, x)
    # the recurrence matters for this input: without it the hidden spikes differ
    assert ref_z.sum() > 40
    no_rec = dict(p, R1=0 * p["R1"], R3=0 * p["R3"])
    assert not np.array_equal(_loop(no_rec, x)[1], ref_z)

    ex = execute(g, x, DT, record=True)                         # nir-run's executor
    np.testing.assert_array_equal(ex.spikes["lif"], ref_z > 0)
    np.testing.assert_allclose(ex.output, ref_out, rtol=0, atol=1e-9)

    res = to_network(g, DT)                                     # import-nir
    net = res.network
    hid = net.layers[0]
    assert hid.recurrent and not net.layers[1].recurrent
    np.testing.assert_array_equal(hid.rec_weight, (p["R1"] + p["R3"]).astype(np.float32))
    want_E = np.where(p["R3"] != 0, p["k_rec"] + 1, 1)
    used = hid.rec_weight != 0
    np.testing.assert_array_equal(hid.rec_delay[used], want_E[used])
    assert sorted(set(hid.rec_delay[used].tolist())) == [1, 3]
    np.testing.assert_array_equal(hid.weight, p["W1"].astype(np.float32))
    assert (hid.decay, hid.current_decay) == (0.75, 0.5 if cuba else 0.0)
    assert "previous step's output" in net.meta["recurrence"]
    assert any("recurrent synapses through 'rdelay', 'rec1', 'rec3'" in n for n in res.notes)
    sim = simulate(net, x, dtype=np.float64, record=True)
    np.testing.assert_array_equal(sim.spikes[0], ref_z > 0)
    np.testing.assert_allclose(sim.u, ref_out, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- snnTorch RLeaky

SNN_DT = 1e-4      # snnTorch's exporter fixes dt = 1e-4 s, tau = dt/(1-beta), r = tau/dt


def _snntorch_lif(n, beta):
    tau = SNN_DT / (1 - beta)
    return nir.LIF(tau=_full(tau, n), r=_full(tau / SNN_DT, n), v_leak=_full(0, n),
                   v_threshold=_full(1, n), v_reset=_full(0, n))


def _snntorch_params(seed=5):
    rng = np.random.default_rng(seed)
    return dict(W0=_f32(rng.normal(0.5, 0.8, (N_H, N_IN))), b0=_f32(rng.normal(0, .1, N_H)),
                Wr=_f32(rng.normal(0, 0.6, (N_H, N_H))), br=_f32(rng.normal(0, .1, N_H)),
                W2=_f32(rng.normal(0, 1, (N_OUT, N_H))), b2=np.zeros(N_OUT))


def _snntorch_graph(p, nested=False):
    """The shape snnTorch 1.0.0's export_to_nir gives an RLeaky layer (checked with the real
    snntorch 1.0.0 + nirtorch 2.6 in a scratch environment): Affine '0' -> LIF '1.lif',
    whose output goes to '2' and to the Affine '1.w_rec' (torch.nn.Linear with its bias),
    which feeds '1.lif' again; no Delay. snnTorch writes a Leaky output as a LIF, which
    neurodelay's readout rule refuses, so the readout here is an LI with the same tau/r.
    ``nested``: the older form, the RLeaky as a subgraph node '1' (input, lif, w_rec,
    output)."""
    cell = {"lif": _snntorch_lif(N_H, 0.75), "w_rec": nir.Affine(weight=p["Wr"], bias=p["br"])}
    tau_o = SNN_DT / (1 - 0.875)
    nodes = {"input": nir.Input(input_type={"input": np.array([N_IN])}),
             "0": nir.Affine(weight=p["W0"], bias=p["b0"]),
             "2": nir.Affine(weight=p["W2"], bias=p["b2"]),
             "3": nir.LI(tau=_full(tau_o, N_OUT), r=_full(tau_o / SNN_DT, N_OUT),
                         v_leak=_full(0, N_OUT)),
             "output": nir.Output(output_type={"output": np.array([N_OUT])})}
    if nested:
        nodes["1"] = nir.NIRGraph(
            nodes={"input": nir.Input(input_type={"input": np.array([N_H])}), **cell,
                   "output": nir.Output(output_type={"output": np.array([N_H])})},
            edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
            type_check=False)
        edges = [("input", "0"), ("0", "1"), ("1", "2"), ("2", "3"), ("3", "output")]
    else:
        nodes.update({f"1.{k}": v for k, v in cell.items()})
        edges = [("1.w_rec", "1.lif"), ("3", "output"), ("input", "0"), ("1.lif", "1.w_rec"),
                 ("2", "3"), ("0", "1.lif"), ("1.lif", "2")]     # snnTorch's edge order
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _snntorch_loop(p, x):
    """RLeaky as snnTorch defines it (mem = beta*mem + W0 x + b0 + w_rec(spk_prev)), with
    NIR's reset to 0 in the step of the spike."""
    B, T, _ = x.shape
    mem = np.zeros((B, N_H)); spk = np.zeros((B, N_H)); mo = np.zeros((B, N_OUT))
    z = np.zeros((B, T, N_H)); out = np.zeros((B, T, N_OUT))
    for t in range(T):
        mem = 0.75 * mem + x[:, t] @ p["W0"].T + p["b0"] + spk @ p["Wr"].T + p["br"]
        spk = (mem > 1.0).astype(float)
        mem = np.where(spk > 0, 0.0, mem)
        mo = 0.875 * mo + spk @ p["W2"].T + p["b2"]
        z[:, t], out[:, t] = spk, mo
    return out, z


@pytest.mark.parametrize("nested", [False, True])
def test_snntorch_rleaky_shape_imports(nested):
    p = _snntorch_params()
    g = _snntorch_graph(p, nested)
    x = _x(seed=6, rate=0.4)
    ref_out, ref_z = _snntorch_loop(p, x)
    assert ref_z.sum() > 40
    res = to_network(g, SNN_DT)
    net = res.network
    hid = net.layers[0]
    assert hid.name == "1.lif" and hid.recurrent
    np.testing.assert_allclose(hid.rec_weight, p["Wr"], rtol=1e-6, atol=0)
    assert np.all(hid.rec_delay == 1)                # no Delay: the previous step's output
    np.testing.assert_allclose(hid.bias, p["b0"] + p["br"], rtol=1e-6, atol=1e-7)
    assert "a cycle without a Delay reads the previous step's output" in net.meta["recurrence"]
    assert any("'1.lif'" in n and "'1.w_rec'" in n and "delays [1]" in n for n in res.notes)
    sim = simulate(net, x, dtype=np.float64, record=True)
    np.testing.assert_array_equal(sim.spikes[0], ref_z > 0)
    np.testing.assert_allclose(sim.u, ref_out, rtol=0, atol=1e-5)
    ex = execute(g, x, SNN_DT, record=True)          # the Affine bias of w_rec from step 0
    np.testing.assert_array_equal(ex.spikes["1.lif"], ref_z > 0)
    np.testing.assert_allclose(ex.output, ref_out, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- our export

def _recurrent_net(seed=0, cdecay=0.0, reset=0.0, zero_rec_layer=False):
    """Two recurrent hidden layers (recurrent delays 1..4) and an LI readout."""
    rng = np.random.default_rng(seed)
    sizes = [N_IN, 7, 5, N_OUT]
    layers = []
    for k in range(3):
        n_in, n = sizes[k], sizes[k + 1]
        W = rng.normal(0.35, 0.7, (n, n_in)).astype(np.float32)
        W[rng.random(W.shape) < 0.2] = 0
        kw = dict(weight=W, delay=rng.integers(0, 4, (n, n_in)), bias=rng.normal(0, .1, n),
                  name=f"layer{k}")
        if k < 2:
            R = rng.normal(0, 0.7, (n, n)).astype(np.float32)
            R[rng.random(R.shape) < 0.35] = 0
            if zero_rec_layer and k == 1:
                R[:] = 0
            layers.append(Layer(**kw, decay=0.8 - 0.1 * k, threshold=1.0, reset=reset,
                                current_decay=cdecay, rec_weight=R,
                                rec_delay=rng.integers(1, 5, (n, n))))
        else:
            layers.append(Layer(**kw, decay=0.9, kind="li"))
    return Network(layers=layers, dt=0.01, n_channels=N_IN * 2, channel_bin=2,
                   class_names=["a", "b", "c"])


def _run_nirtorch(path, x):
    graph = nir.read(path)
    gm = nirtorch.nir_to_torch(graph, node_map(float(graph.metadata["dt"])),
                               dtype=torch.float64)
    xt = torch.as_tensor(x, dtype=torch.float64)
    state, outs = None, []
    with torch.no_grad():
        for t in range(xt.shape[1]):
            out, state = gm(xt[:, t], state) if state is not None else gm(xt[:, t])
            outs.append(out)
    return torch.stack(outs, 1).numpy()


@pytest.mark.parametrize("cdecay,schema,reset", [(0.0, "1.0.8", 0.0), (0.5, "1.0.8", -0.25),
                                                 (0.0, "1.0.4", 0.0)])
def test_export_of_recurrent_network_round_trips_and_runs_like_floatsim(tmp_path, cdecay,
                                                                         schema, reset):
    net = _recurrent_net(seed=2, cdecay=cdecay, reset=reset)
    path = tmp_path / "r.nir"
    rep = export(net, path, nir_schema=schema)
    g = nir.read(path)

    # structure: per recurrent layer and distinct recurrent delay e one cycle
    # neuron -> [Delay((e-1)*dt)] -> Linear -> neuron, no Delay node for e == 1
    for k, layer in enumerate(net.layers[:2]):
        es = sorted(set(layer.rec_delay[layer.rec_weight != 0].tolist()))
        assert rep["recurrent_delays_per_layer"][k] == es == [1, 2, 3, 4]
        neuron = f"L{k}_lif"                       # a LIF, or a CubaLIF when cdecay > 0
        assert type(g.nodes[neuron]).__name__ == ("CubaLIF" if cdecay else "LIF")
        for e in es:
            syn = f"L{k}_rec_syn_d{e}"
            assert (syn, neuron) in g.edges
            if e == 1:
                assert (neuron, syn) in g.edges and f"L{k}_rec_delay_d1" not in g.nodes
            else:
                dn = f"L{k}_rec_delay_d{e}"
                assert (neuron, dn) in g.edges and (dn, syn) in g.edges
                np.testing.assert_allclose(g.nodes[dn].delay, (e - 1) * 0.01, rtol=1e-12)
    assert rep["recurrent_delays_per_layer"][2] == []
    assert "a cycle without a Delay reads the previous step's output" in \
        str(g.metadata["recurrent"])

    back = import_nir(path)[0].network
    for a, b in zip(net.layers, back.layers, strict=True):
        np.testing.assert_array_equal(b.weight, a.weight)
        used = a.weight != 0
        np.testing.assert_array_equal(b.delay[used], a.delay[used])
        np.testing.assert_array_equal(b.bias, a.bias)
        assert (b.kind, b.decay, b.current_decay, b.threshold, b.reset) == \
            (a.kind, a.decay, a.current_decay, a.threshold, a.reset)
        assert b.recurrent == a.recurrent
        if a.recurrent:
            np.testing.assert_array_equal(b.rec_weight, a.rec_weight)
            ru = a.rec_weight != 0
            np.testing.assert_array_equal(b.rec_delay[ru], a.rec_delay[ru])
    assert (back.dt, back.n_channels, back.channel_bin, back.class_names) == \
        (net.dt, net.n_channels, net.channel_bin, net.class_names)

    x = _x(seed=4, B=5, T=35)
    ref = simulate(net, x, record=True)                       # float32, as trained
    again = simulate(back, x, record=True)
    np.testing.assert_array_equal(again.u, ref.u)             # bit-identical
    ref64 = simulate(net, x, dtype=np.float64, record=True)
    assert all(s.sum() > 20 for s in ref64.spikes)
    ex = execute(path, x, record=True)                        # nir-run on the file
    for k, s in enumerate(ref64.spikes):
        np.testing.assert_array_equal(ex.spikes[f"L{k}_lif"], s)
    np.testing.assert_allclose(ex.output, ref64.u, rtol=0, atol=1e-9)
    if schema == "1.0.8":           # an independent interpreter: nirtorch + our node map
        np.testing.assert_allclose(_run_nirtorch(path, x), ref64.u, rtol=0, atol=1e-9)


def test_all_zero_recurrent_layer_stays_recurrent(tmp_path):
    net = _recurrent_net(seed=3, zero_rec_layer=True)
    rep = export(net, tmp_path / "z.nir")
    assert rep["recurrent_delays_per_layer"][1] == [1]          # one zero branch, e = 1
    g = nir.read(tmp_path / "z.nir")
    np.testing.assert_array_equal(g.nodes["L1_rec_syn_d1"].weight, 0.0)
    back = import_nir(tmp_path / "z.nir")[0].network
    assert back.layers[1].recurrent and not back.layers[1].rec_weight.any()
    np.testing.assert_array_equal(back.layers[0].rec_weight, net.layers[0].rec_weight)
    # 2 recurrent layers with 4 + 1 recurrent Linear nodes and 3 recurrent Delay nodes
    counts = nir_node_counts(g)
    ff_delays = sum(sum(1 for d in ds if d > 0) for ds in rep["delays_per_layer"])
    assert counts["Delay"] == ff_delays + 3


# --------------------------------------------------------------------------- refused cycles

def _lif(n):
    return nir.LIF(tau=_full(0.04, n), r=_full(1, n), v_leak=_full(0, n),
                   v_threshold=_full(1, n), v_reset=_full(0, n))


def _base():
    """in -> w1 -> lif -> w2 -> li -> out, 3 -> 4 -> 2 (valid, feed-forward)."""
    nodes = {"in": nir.Input(input_type={"input": np.array([3])}),
             "w1": nir.Linear(weight=np.ones((4, 3))), "lif": _lif(4),
             "w2": nir.Linear(weight=np.ones((2, 4))),
             "li": nir.LI(tau=_full(0.04, 2), r=_full(1, 2), v_leak=_full(0, 2)),
             "out": nir.Output(output_type={"output": np.array([2])})}
    return nodes, [("in", "w1"), ("w1", "lif"), ("lif", "w2"), ("w2", "li"), ("li", "out")]


def _cycle_case(name):
    nodes, edges = _base()
    if name == "two-populations":          # lif -> w2b -> lif2 -> back -> lif
        nodes.update(w2b=nir.Linear(weight=5 * np.eye(4)), lif2=_lif(4),
                     back=nir.Linear(weight=5 * np.eye(4)))
        edges += [("lif", "w2b"), ("w2b", "lif2"), ("lif2", "back"), ("back", "lif"),
                  ("lif2", "w2")]
    elif name == "no-neuron":              # w1 -> d -> loop -> w1 (synapses only)
        nodes.update(loop=nir.Linear(weight=np.ones((3, 4))), d=nir.Delay(delay=_full(0.02, 4)))
        edges += [("w1", "d"), ("d", "loop"), ("loop", "w1")]
    elif name == "no-neuron-no-delay":     # w1 -> loop -> w1
        nodes["loop"] = nir.Linear(weight=np.ones((3, 4)))
        edges += [("w1", "loop"), ("loop", "w1")]
    elif name == "recurrent-readout":      # li -> back -> li
        nodes["back"] = nir.Linear(weight=np.eye(2))
        edges += [("li", "back"), ("back", "li")]
    elif name == "loop-fed-from-outside":  # the recurrent Linear also takes w1's output
        nodes["rec"] = nir.Linear(weight=np.eye(4))
        nodes["w1b"] = nir.Linear(weight=np.ones((4, 3)))
        edges += [("lif", "rec"), ("rec", "lif"), ("in", "w1b"), ("w1b", "rec")]
    elif name == "loop-feeds-outside":     # the recurrent Linear also feeds the readout
        nodes["rec"] = nir.Linear(weight=np.eye(4))
        edges += [("lif", "rec"), ("rec", "lif"), ("rec", "w2")]
    elif name == "bias-behind-delay-in-loop":
        nodes["rec"] = nir.Affine(weight=np.eye(4), bias=_full(0.1, 4))
        nodes["rd"] = nir.Delay(delay=_full(0.02, 4))
        edges += [("lif", "rec"), ("rec", "rd"), ("rd", "lif")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


CYCLE_ERRORS = {
    "two-populations": "the cycle 'back' -> 'lif' -> 'w2b' -> 'lif2' -> 'back' goes through 2 "
                       "neuron nodes \\('lif', 'lif2'\\).*connect a layer to itself only",
    "no-neuron": "the cycle 'd' -> 'loop' -> 'w1' -> 'd' goes through no neuron node",
    "no-neuron-no-delay": "the cycle 'loop' -> 'w1' -> 'loop' goes through no neuron node",
    "recurrent-readout": "non-spiking node 'li' \\(LI\\) is on the cycle 'back' -> 'li' -> "
                         "'back'; only spiking nodes",
    "loop-fed-from-outside": "node 'rec' \\(Linear\\) is on the recurrent loop of 'lif' "
                             "\\('lif' -> 'rec' -> 'lif'\\) but also takes input from 'w1b'",
    "loop-feeds-outside": "node 'rec' \\(Linear\\) is on the recurrent loop of 'lif' .* "
                          "also feeds 'w2'",
    "bias-behind-delay-in-loop": "node 'lif' \\(LIF\\): an Affine bias reaches it through "
                                 "Delay 'rd'",
}


@pytest.mark.parametrize("case", sorted(CYCLE_ERRORS))
def test_unsupported_cycles_are_refused_naming_the_nodes(case):
    with pytest.raises(NirImportError, match=CYCLE_ERRORS[case]):
        to_network(_cycle_case(case), 0.01)


def test_executor_runs_what_it_can_and_refuses_loops_without_a_neuron():
    x = _x(seed=7, B=2, T=12, n=3, rate=0.5)
    for case in ("no-neuron", "no-neuron-no-delay"):
        with pytest.raises(NirImportError, match=CYCLE_ERRORS[case]):
            execute(_cycle_case(case), x, 0.01)
    # a loop through two layers runs (one step per neuron on the cycle): lif2 gets lif's
    # spikes of the previous step, lif gets lif2's of the previous step
    ex = execute(_cycle_case("two-populations"), x, 0.01, record=True)
    z1, z2 = ex.spikes["lif"].astype(float), ex.spikes["lif2"].astype(float)
    assert z1.sum() > 0 and z2.sum() > 0
    v1 = np.zeros((2, 4)); v2 = np.zeros((2, 4))
    for t in range(12):
        prev1 = z1[:, t - 1] if t else 0 * z1[:, 0]
        prev2 = z2[:, t - 1] if t else 0 * z2[:, 0]
        v1 = 0.75 * v1 + 0.25 * (x[:, t] @ np.ones((4, 3)).T + 5 * prev2)
        v2 = 0.75 * v2 + 0.25 * 5 * prev1
        s1, s2 = v1 > 1, v2 > 1
        np.testing.assert_array_equal(s1, z1[:, t] > 0)
        np.testing.assert_array_equal(s2, z2[:, t] > 0)
        v1, v2 = np.where(s1, 0, v1), np.where(s2, 0, v2)


# --------------------------------------------------------------------------- CLI

def test_cli_import_nir_and_nir_run_on_a_recurrent_graph(tmp_path):
    net = _recurrent_net(seed=8)
    export(net, tmp_path / "r.nir")
    r = cli("import-nir", tmp_path / "r.nir", "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    assert "recurrent: " in r.output and "previous step's output" in r.output
    run = open_run(tmp_path / "run")
    back = float_network(run)
    np.testing.assert_array_equal(back.layers[0].rec_weight, net.layers[0].rec_weight)
    assert "previous step's output" in back.meta["recurrence"]
    assert run.config["layers"][0]["recurrent"] and run.config["layers"][0]["recurrent_nodes"]
    assert not run.config["layers"][2]["recurrent"]

    x = _x(seed=9, B=6, T=30).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = cli("nir-run", tmp_path / "r.nir", "--input", tmp_path / "x.npy", "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    ref = simulate(net, x, dtype=np.float64)
    assert got["predictions"] == ref.predictions.tolist()
    np.testing.assert_allclose(got["scores"], ref.scores, rtol=0, atol=1e-9)

    # export of the imported (recurrent) run: the float route writes the cycles again ...
    r = cli("export", tmp_path / "run", "--target", "nir", "--out", tmp_path / "again.nir")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["recurrent_delays_per_layer"][0] == [1, 2, 3, 4]
    assert nir.read(tmp_path / "again.nir").metadata["recurrent"]
    # ... and so does the quantized route (the recurrent deployment of issue 22)
    r = cli("export", tmp_path / "run", "--target", "nir", "--variant", "quantized",
            "--out", tmp_path / "q.nir")
    assert r.exit_code == 0, r.output
    assert nir.read(tmp_path / "q.nir").metadata["recurrent"]
