"""Network files (save/load), summaries, and the numpy float reference simulator."""
import json

import h5py
import numpy as np
import pytest

from neurodelay.core import network_io as nw
from neurodelay.core.network import Layer, Network, NetworkError, QLayer, QNetwork
from neurodelay.core.network_io import FORMAT_VERSION, load_network, save_network
from neurodelay.sim.floatsim import SimulationError, accuracy, predict, simulate, synaptic_current

# ----------------------------------------------------------------------------- helpers

def random_network(seed=0, sizes=(6, 5, 4, 3), max_delay=4, density=0.7, decay=0.6):
    rng = np.random.default_rng(seed)
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        w = rng.normal(0, 0.8, (b, a)) * (rng.random((b, a)) < density)
        layers.append(Layer(weight=w, delay=rng.integers(0, max_delay + 1, (b, a)),
                            bias=rng.normal(0, 0.1, b), decay=decay,
                            threshold=float("inf") if last else 1.0,
                            reset=0.0, kind="li" if last else "lif", name=f"l{k}"))
    return Network(layers=layers, dt=0.01, n_channels=sizes[0] * 2, channel_bin=2,
                   class_names=[f"c{i}" for i in range(sizes[-1])],
                   meta={"seed": seed, "arr": np.arange(3), "x": np.float32(0.5)})


def random_qnetwork(seed=0):
    rng = np.random.default_rng(seed)
    l0 = QLayer(weight=rng.integers(-256, 256, (4, 3)), weight_exp=-2, num_weight_bits=8,
                delay=rng.integers(0, 10, (4, 3)), bias_mant=rng.integers(-50, 50, 4),
                bias_exp=6, du=4095, dv=300, vth=1000, scale=0.001, kind="lif", name="h")
    l1 = QLayer(weight=rng.integers(-256, 256, (2, 4)), weight_exp=0, num_weight_bits=9,
                delay=np.zeros((2, 4)), bias_mant=np.zeros(2), bias_exp=0, du=4095,
                dv=0, vth=None, scale=0.002, kind="li", name="out")
    return QNetwork(layers=[l0, l1], target="loihi2", dt=0.01, input_scale=3.0,
                    class_names=["a", "b"], meta={"note": "q"})


def reference_simulate(net, x):
    """Direct triple loop over time, neurons and synapses (float64)."""
    B, T, _ = x.shape
    h = x.astype(np.float64)
    spikes = []
    for k, L in enumerate(net.layers):
        u_all = np.zeros((B, T, L.n_out))
        s_all = np.zeros((B, T, L.n_out), dtype=bool)
        for b in range(B):
            u = np.zeros(L.n_out)
            for t in range(T):
                for i in range(L.n_out):
                    cur = float(L.bias[i])
                    for j in range(L.n_in):
                        d = int(L.delay[i, j])
                        if t - d >= 0:
                            cur += float(L.weight[i, j]) * h[b, t - d, j]
                    u[i] = L.decay * u[i] + cur
                    if L.kind == "lif" and u[i] >= L.threshold:
                        s_all[b, t, i] = True
                        u[i] = L.reset
                u_all[b, t] = u
        if k < len(net.layers) - 1:
            spikes.append(s_all)
            h = s_all.astype(np.float64)
    return u_all, spikes


def assert_layers_equal(a, b):
    assert type(a) is type(b)
    for f in a.__dataclass_fields__:
        va, vb = getattr(a, f), getattr(b, f)
        if isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype and va.shape == vb.shape, f
            np.testing.assert_array_equal(va, vb)
        else:
            assert va == vb, f


# ----------------------------------------------------------------------------- save/load

def test_float_roundtrip(tmp_path):
    net = random_network()
    p = save_network(net, tmp_path / "net.h5")
    back = load_network(p)
    assert isinstance(back, Network)
    assert (back.dt, back.n_channels, back.channel_bin) == (0.01, 12, 2)
    assert back.class_names == ["c0", "c1", "c2"]
    assert back.meta == {"seed": 0, "arr": [0, 1, 2], "x": 0.5}
    for a, b in zip(net.layers, back.layers):
        assert_layers_equal(a, b)
    assert back.layers[-1].threshold == float("inf")
    assert load_network(p, kind="float").n_in == 6


def test_quantized_roundtrip(tmp_path):
    q = random_qnetwork()
    back = load_network(save_network(q, tmp_path / "q.h5"))
    assert isinstance(back, QNetwork)
    assert (back.target, back.input_scale, back.class_names) == ("loihi2", 3.0, ["a", "b"])
    assert back.layers[1].vth is None and back.layers[0].vth == 1000
    for a, b in zip(q.layers, back.layers):
        assert_layers_equal(a, b)


def test_file_readable_with_h5py_alone(tmp_path):
    net = random_network(seed=3)
    save_network(net, tmp_path / "n.h5")
    with h5py.File(tmp_path / "n.h5", "r") as f:
        assert f.attrs["format"] == "neurodelay-network"
        assert f.attrs["format_version"] == 1 == FORMAT_VERSION - 1  # feed-forward: version 1
        assert f.attrs["kind"] == "float" and f.attrs["n_layers"] == 3
        assert json.loads(f.attrs["class_names"]) == ["c0", "c1", "c2"]
        np.testing.assert_array_equal(f["layers/1/delay"][()], net.layers[1].delay)
        np.testing.assert_array_equal(f["layers/0/weight"][()], net.layers[0].weight)
        assert f["layers/2"].attrs["kind"] == "li"
    with h5py.File(save_network(random_qnetwork(), tmp_path / "q.h5"), "r") as f:
        assert "vth" not in f["layers/1"].attrs and f["layers/0"].attrs["vth"] == 1000


def test_save_is_atomic(tmp_path, monkeypatch):
    p = tmp_path / "net.h5"
    save_network(random_network(seed=1), p)
    before = p.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(nw, "_write_dataset", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_network(random_network(seed=2), p)
    assert p.read_bytes() == before                    # old file untouched
    assert sorted(x.name for x in tmp_path.iterdir()) == ["net.h5"]   # no temp left


def test_save_rejects_bad_input(tmp_path):
    net = random_network()
    net.meta["obj"] = object()
    with pytest.raises(NetworkError, match="meta"):
        save_network(net, tmp_path / "a.h5")
    with pytest.raises(NetworkError, match="does not exist"):
        save_network(random_network(), tmp_path / "nope" / "a.h5")
    with pytest.raises(NetworkError, match="Network or QNetwork"):
        save_network({"layers": []}, tmp_path / "a.h5")
    assert list(tmp_path.iterdir()) == []


def _saved(tmp_path, name="n.h5"):
    p = tmp_path / name
    save_network(random_network(), p)
    return p


@pytest.mark.parametrize("edit, pattern", [
    (lambda f: f.attrs.__delitem__("format"), "not a neurodelay network file"),
    (lambda f: f.attrs.__setitem__("format", "other"), "not a neurodelay network file"),
    (lambda f: f.attrs.__setitem__("format_version", 99),
     r"format_version 99 is not supported; this neurodelay reads version\(s\) 1"),
    (lambda f: f.attrs.__setitem__("kind", "analog"), "attribute 'kind'"),
    (lambda f: f["layers/1"].__delitem__("delay"), r"layers/1: missing dataset 'delay'"),
    (lambda f: f.__delitem__("layers/2"), r"missing group 'layers/2'"),
    (lambda f: f.create_group("layers/7"), "unexpected entries under 'layers'"),
    (lambda f: f["layers/0"].attrs.__delitem__("decay"), r"layers/0: missing attribute 'decay'"),
    (lambda f: f["layers/0"].attrs.__setitem__("decay", "fast"), "'decay' must be a float"),
    (lambda f: f["layers/0"].attrs.__setitem__("decay", 1.5), "decay must be in"),
    (lambda f: f.attrs.__setitem__("n_channels", 2.5), "'n_channels' must be a int"),
    (lambda f: f.attrs.__setitem__("meta", "{bad json"), "'meta' is not valid JSON"),
    (lambda f: f.attrs.__setitem__("class_names", '["a"]'), "1 class names for 3 output"),
])
def test_load_errors_name_file_and_place(tmp_path, edit, pattern):
    p = _saved(tmp_path)
    with h5py.File(p, "r+") as f:
        edit(f)
    with pytest.raises(NetworkError, match=pattern) as e:
        load_network(p)
    assert str(p) in str(e.value)


def _replace_dataset(p, name, data):
    with h5py.File(p, "r+") as f:
        del f[name]
        f[name] = data


def test_load_rejects_bad_datasets(tmp_path):
    p = _saved(tmp_path)
    _replace_dataset(p, "layers/0/bias", np.zeros(4, np.float32))      # should be 5
    with pytest.raises(NetworkError, match=r"layers/0: layer 'l0': bias shape"):
        load_network(p)
    p = _saved(tmp_path, "b.h5")
    _replace_dataset(p, "layers/1/delay", np.full((4, 5), 1.5))        # float delays
    with pytest.raises(NetworkError, match=r"layers/1: dataset 'delay' has dtype float64"):
        load_network(p)
    p = _saved(tmp_path, "c.h5")
    _replace_dataset(p, "layers/1/delay", -np.ones((4, 5), np.int32))
    with pytest.raises(NetworkError, match="negative delays") as e:
        load_network(p)
    assert str(p) in str(e.value)
    p = _saved(tmp_path, "d.h5")
    _replace_dataset(p, "layers/0/weight", np.array([b"x"] * 5))
    with pytest.raises(NetworkError, match="dataset 'weight' has dtype"):
        load_network(p)
    p = _saved(tmp_path, "e.h5")
    _replace_dataset(p, "layers/0/weight", np.zeros((5, 7), np.float32))  # 7 inputs != 6
    with pytest.raises(NetworkError, match="delay shape"):
        load_network(p)


def test_load_rejects_non_files_and_kind_mismatch(tmp_path):
    with pytest.raises(NetworkError, match="no such file"):
        load_network(tmp_path / "missing.h5")
    txt = tmp_path / "x.h5"
    txt.write_text("hello")
    with pytest.raises(NetworkError, match="not a neurodelay network file"):
        load_network(txt)
    p = save_network(random_qnetwork(), tmp_path / "q.h5")
    with pytest.raises(NetworkError, match="holds a quantized network, expected a float"):
        load_network(p, kind="float")
    with h5py.File(p, "r+") as f:
        f["layers/0"].attrs["du"] = -1
    with pytest.raises(NetworkError, match="du=-1 must be >= 0"):
        load_network(p)


def test_summary():
    net = random_network()
    s = net.summary()
    assert "6 -> 5 -> 4 -> 3" in s and f"{net.n_synapses} synapses" in s
    lo = int(net.layers[0].delay[net.layers[0].weight != 0].min())
    hi = int(net.layers[0].delay[net.layers[0].weight != 0].max())
    assert "layer 0 'l0' [lif]: 6 -> 5 neurons" in s and f"delays {lo}..{hi}" in s
    assert net.n_neurons == 12
    qs = random_qnetwork().summary()
    assert "target 'loihi2'" in qs and "vth None" in qs and len(qs.splitlines()) == 3


# ----------------------------------------------------------------------------- floatsim

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_simulate_matches_triple_loop(seed):
    rng = np.random.default_rng(100 + seed)
    net = random_network(seed=seed, max_delay=[0, 3, 6, 12][seed])
    x = rng.poisson(0.8, (3, 15, 6)).astype(np.float64)
    u_ref, s_ref = reference_simulate(net, x)
    r = simulate(net, x, record=True, dtype=np.float64)
    assert sum(s.sum() for s in s_ref) > 10          # the test exercises spiking
    for a, b in zip(r.spikes, s_ref):
        assert a.dtype == bool
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(r.u, u_ref, rtol=0, atol=1e-10)
    # scores and predictions follow the documented formula
    e = np.exp(u_ref - u_ref.max(axis=2, keepdims=True))
    scores = (e / e.sum(axis=2, keepdims=True)).sum(axis=1)
    np.testing.assert_allclose(r.scores, scores, atol=1e-10)
    np.testing.assert_array_equal(r.predictions, scores.argmax(axis=1))


@pytest.mark.parametrize("seed", [0, 1])
def test_float32_agrees_with_float64(seed):
    rng = np.random.default_rng(seed)
    net = random_network(seed=seed, sizes=(20, 16, 5), max_delay=8)
    x = rng.poisson(0.5, (8, 30, 20))
    r32 = simulate(net, x, record=True)
    r64 = simulate(net, x, record=True, dtype=np.float64)
    assert r32.u.dtype == np.float32 and r64.u.dtype == np.float64
    np.testing.assert_array_equal(r32.spikes[0], r64.spikes[0])
    assert np.abs(r32.u - r64.u).max() <= 1e-4
    np.testing.assert_array_equal(r32.predictions, r64.predictions)


def _single(delay, weight=1.0, threshold=1.0, decay=0.0, reset=0.0, bias=0.0):
    hidden = Layer(weight=[[weight]], delay=[[delay]], bias=[bias], decay=decay,
                   threshold=threshold, reset=reset, name="h")
    out = Layer(weight=[[1.0]], delay=[[0]], bias=[0.0], decay=0.0, kind="li", name="o")
    return Network(layers=[hidden, out])


@pytest.mark.parametrize("d", [0, 1, 5])
def test_single_synapse_delay(d):
    x = np.zeros((1, 12, 1))
    x[0, 3, 0] = 1.0
    r = simulate(_single(d), x, record=True)
    assert np.flatnonzero(r.spikes[0][0, :, 0]).tolist() == [3 + d]
    assert np.flatnonzero(r.u[0, :, 0]).tolist() == [3 + d]     # li readout, delay 0


def test_delay_beyond_window_never_arrives():
    x = np.ones((1, 5, 1))
    r = simulate(_single(7), x, record=True)
    assert not r.spikes[0].any()


def test_threshold_is_inclusive_and_reset():
    x = np.zeros((1, 6, 1))
    x[0, 0, 0] = 1.0
    r = simulate(_single(0, weight=1.0, threshold=1.0), x, record=True)
    assert r.spikes[0][0, 0, 0]                                   # u == threshold spikes
    r = simulate(_single(0, weight=0.999, threshold=1.0), x, record=True)
    assert not r.spikes[0].any()
    # constant drive 0.6, decay 1 (no leak): u = 0.6, 1.2 -> spike, reset to 0.25,
    # 0.85, 1.45 -> spike, reset 0.25, ...
    net = _single(0, weight=0.6, threshold=1.0, decay=1.0, reset=0.25)
    r = simulate(net, np.ones((1, 6, 1)), record=True, dtype=np.float64)
    assert r.spikes[0][0, :, 0].tolist() == [False, True, False, True, False, True]


def test_bias_and_decay_li_readout():
    out = Layer(weight=[[2.0]], delay=[[1]], bias=[0.5], decay=0.5, kind="li")
    net = Network(layers=[out])
    x = np.zeros((1, 4, 1))
    x[0, 0, 0] = 1.0
    u = simulate(net, x, dtype=np.float64).u[0, :, 0]
    # I = [0.5, 2.5, 0.5, 0.5]; u = 0.5, 2.75, 1.875, 1.4375
    np.testing.assert_allclose(u, [0.5, 2.75, 1.875, 1.4375])


def test_synaptic_current_groups_by_delay():
    L = Layer(weight=[[1.0, 2.0, 0.0]], delay=[[2, 0, 1]], bias=[0.0], decay=0.0, threshold=1.0)
    x = np.arange(12, dtype=np.float64).reshape(1, 4, 3)
    I = synaptic_current(L, x, np.float64)[0, :, 0]
    expect = [2 * x[0, t, 1] + (x[0, t - 2, 0] if t >= 2 else 0) for t in range(4)]
    np.testing.assert_allclose(I, expect)


def test_predict_and_accuracy_chunked():
    rng = np.random.default_rng(5)
    net = random_network(seed=5)
    x = rng.poisson(0.7, (10, 12, 6))
    full = simulate(net, x)
    scores, pred = predict(net, x, batch_size=3)
    np.testing.assert_allclose(scores, full.scores, rtol=1e-6)
    np.testing.assert_array_equal(pred, full.predictions)
    labels = full.predictions.copy()
    assert accuracy(net, x, labels, batch_size=4) == 1.0
    labels[:5] = (labels[:5] + 1) % 3
    assert accuracy(net, x, labels, batch_size=4) == 0.5


def test_simulate_rejects_bad_input():
    net = random_network()
    with pytest.raises(SimulationError, match="batch, time, n_in"):
        simulate(net, np.zeros((5, 6)))
    with pytest.raises(SimulationError, match="7 channels, the network takes 6"):
        simulate(net, np.zeros((1, 5, 7)))
    with pytest.raises(SimulationError, match="NaN"):
        simulate(net, np.full((1, 5, 6), np.nan))
    with pytest.raises(SimulationError, match="float32 or float64"):
        simulate(net, np.zeros((1, 5, 6)), dtype=np.int32)
    with pytest.raises(SimulationError, match="labels must have shape"):
        accuracy(net, np.zeros((3, 5, 6)), [0, 1])
