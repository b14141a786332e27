"""Recurrent layers in the core data types: validation, the file format, floatsim."""
import h5py
import numpy as np
import pytest

from neurodelay.core.network import Layer, Network
from neurodelay.core.network_io import load_network, save_network
from neurodelay.errors import NetworkError
from neurodelay.sim import floatsim


def recurrent_net(seed=0, n_in=6, n_hid=5, n_out=3, max_rec=4, cdecay=0.0):
    rng = np.random.default_rng(seed)
    R = rng.normal(0, 0.8, (n_hid, n_hid)).astype(np.float32)
    R[rng.random(R.shape) < 0.3] = 0
    hid = Layer(weight=rng.normal(0.4, 0.6, (n_hid, n_in)),
                delay=rng.integers(0, 4, (n_hid, n_in)), bias=rng.normal(0, 0.1, n_hid),
                decay=0.8, threshold=1.0, current_decay=cdecay, name="h",
                rec_weight=R, rec_delay=rng.integers(1, max_rec + 1, (n_hid, n_hid)))
    out = Layer(weight=rng.normal(0, 1, (n_out, n_hid)), delay=rng.integers(0, 3, (n_out, n_hid)),
                bias=np.zeros(n_out), decay=0.9, kind="li", name="o")
    return Network(layers=[hid, out], dt=0.01, n_channels=n_in, channel_bin=1,
                   class_names=["a", "b", "c"])


def direct_loop(net, x):
    """The float semantics, written out synapse by synapse in float64."""
    B, T, _ = x.shape
    h = x.astype(np.float64)
    for layer in net.layers:
        n = layer.n_out
        W, D = layer.weight.astype(np.float64), layer.delay
        u = np.zeros((B, n)); J = np.zeros((B, n))
        s_all = np.zeros((B, T, n)); u_all = np.zeros((B, T, n))
        for t in range(T):
            S = np.zeros((B, n))
            for i in range(n):
                for j in range(layer.n_in):
                    if t - D[i, j] >= 0:
                        S[:, i] += W[i, j] * h[:, t - D[i, j], j]
                for j in range(n if layer.recurrent else 0):     # recurrent: i <- j
                    e = layer.rec_delay[i, j]
                    if t - e >= 0:
                        S[:, i] += layer.rec_weight[i, j] * s_all[:, t - e, j]
            J = layer.current_decay * J + S
            u = layer.decay * u + J + layer.bias
            if layer.kind == "lif":
                s = u >= layer.threshold
                u[s] = layer.reset
                s_all[:, t] = s
            u_all[:, t] = u
        h = s_all
    return u_all, s_all


@pytest.mark.parametrize("cdecay", [0.0, 0.5])
def test_floatsim_recurrent_equals_direct_loop(cdecay):
    net = recurrent_net(seed=1, cdecay=cdecay)
    x = (np.random.default_rng(2).random((4, 30, 6)) < 0.3).astype(np.float32)
    res = floatsim.simulate(net, x, record=True, dtype=np.float64)
    u_ref, _ = direct_loop(net, x)
    # the hidden layer spikes, and its recurrent synapses matter for this input
    assert res.spikes[0].sum() > 10
    ff = Network(layers=[Layer(**{**net.layers[0].__dict__, "rec_weight": None,
                                   "rec_delay": None}), net.layers[1]], n_channels=6,
                 channel_bin=1)
    assert not np.array_equal(floatsim.simulate(ff, x, record=True).spikes[0],
                              res.spikes[0])
    np.testing.assert_allclose(res.u, u_ref, rtol=0, atol=1e-9)


def test_recurrent_file_round_trip_and_version(tmp_path):
    net = recurrent_net(seed=3)
    path = save_network(net, tmp_path / "r.h5")
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == 2
        assert f["layers/0/rec_delay"].dtype == np.int32 and "rec_weight" not in f["layers/1"]
    back = load_network(path)
    assert back.recurrent and not back.layers[1].recurrent
    np.testing.assert_array_equal(back.layers[0].rec_weight, net.layers[0].rec_weight)
    np.testing.assert_array_equal(back.layers[0].rec_delay, net.layers[0].rec_delay)
    assert back.n_synapses == net.n_synapses > int(np.count_nonzero(net.layers[0].weight)
                                                   + np.count_nonzero(net.layers[1].weight))
    assert "recurrent:" in back.summary()


def test_recurrent_file_inconsistent_refused(tmp_path):
    path = save_network(recurrent_net(), tmp_path / "r.h5")
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 1
    with pytest.raises(NetworkError, match="recurrent layers need version 2"):
        load_network(path)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 2
        del f["layers/0/rec_delay"]
    with pytest.raises(NetworkError, match="layers/0.*'rec_weight' but not 'rec_delay'"):
        load_network(path)


def test_recurrent_layer_validation():
    lay = recurrent_net().layers[0]
    kw = {k: getattr(lay, k) for k in ("weight", "delay", "bias", "decay", "threshold")}
    with pytest.raises(NetworkError, match="delays < 1 step"):
        Layer(**kw, rec_weight=lay.rec_weight, rec_delay=np.zeros_like(lay.rec_delay))
    with pytest.raises(NetworkError, match="go together"):
        Layer(**kw, rec_weight=lay.rec_weight)
    with pytest.raises(NetworkError, match=r"rec_weight shape \(4, 5\)"):
        Layer(**kw, rec_weight=lay.rec_weight[:4], rec_delay=lay.rec_delay)
    with pytest.raises(NetworkError, match="only a spiking"):
        Layer(**{**kw, "threshold": float("inf")}, kind="li", rec_weight=lay.rec_weight,
              rec_delay=lay.rec_delay)


