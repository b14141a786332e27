"""The simulators' compiled delayed sum (neurodelay/sim/dsum.py), the float simulator's
use of it, and lava-dl's weight rule loaded without the rest of Lava."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from compiled_checks import require_compiled

from neurodelay.core.network import Layer
from neurodelay.errors import SimulationError
from neurodelay.sim import dsum, floatsim


@pytest.fixture(autouse=True)
def _compiled():
    require_compiled(dsum.status(), "the compiled delayed sum")


def loop_sum(x, w, d):
    """The definition, one synapse and step at a time: S[b, t, o] = sum_i w[o, i] *
    x[b, t - d[o, i], i] (x (B, T, n_in), zero before t = 0)."""
    B, T, _ = x.shape
    S = np.zeros((B, T, w.shape[0]))
    for o in range(w.shape[0]):
        for i in range(w.shape[1]):
            k = int(d[o, i])
            if w[o, i] != 0 and k < T:
                S[:, k:, o] += w[o, i] * x[:, :T - k, i]
    return S


def case(seed=0, B=5, T=70, n_in=23, n_out=11, max_delay=90, density=0.3):
    rng = np.random.default_rng(seed)
    x = (rng.random((B, T, n_in)) < density) * rng.integers(1, 5, (B, T, n_in))
    x[:, :, 3] = 0                                   # a silent input (skipped by the C)
    w = rng.integers(-200, 200, (n_out, n_in)) * (rng.random((n_out, n_in)) < 0.8)
    d = rng.integers(0, max_delay, (n_out, n_in))    # some delays >= T: never arrive
    return x, w, d


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_delayed_sum_equals_the_definition_exactly_on_integers(dtype):
    x, w, d = case()
    assert (d >= x.shape[1]).any() and (w == 0).any()
    ref = loop_sum(x, w, d)
    got = dsum.delayed_sum(x, w, d, dtype)
    assert got.dtype == dtype and got.shape == ref.shape
    assert np.array_equal(got, ref)          # integer partial sums < 2**24: exact
    # time-major layout, as the bit-accurate simulator holds its rows
    tm = dsum.delayed_sum(np.ascontiguousarray(x.transpose(1, 0, 2)), w, d, dtype,
                          time_axis=0)
    assert np.array_equal(tm, ref.transpose(1, 0, 2))


def test_delayed_sum_long_recordings_and_float_weights():
    """T beyond one 64-step tile, float weights: equal to the definition to rounding."""
    x, _, d = case(seed=1, B=3, T=150, max_delay=140)
    w = np.random.default_rng(2).standard_normal((11, 23))
    ref = loop_sum(x, w, d)
    got = dsum.delayed_sum(x, w, d, np.float64)
    assert np.allclose(got, ref, rtol=0, atol=1e-11 * np.abs(ref).max())


def test_delayed_sum_does_not_depend_on_the_thread_count():
    torch = pytest.importorskip("torch")
    x, _, d = case(seed=3, B=9)
    w = np.random.default_rng(4).standard_normal((11, 23)).astype(np.float32)
    before = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(dsum.delayed_sum(x, w, d, np.float32))
    finally:
        torch.set_num_threads(before)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_delayed_sum_refuses_bad_arguments():
    x, w, d = case()
    with pytest.raises(SimulationError, match="inputs"):
        dsum.delayed_sum(x[:, :, :5], w, d, np.float32)
    with pytest.raises(SimulationError, match="dtype"):
        dsum.delayed_sum(x, w, d, np.int32)
    with pytest.raises(SimulationError, match="negative"):
        dsum.delayed_sum(x, w, -d - 1, np.float32)
    with pytest.raises(SimulationError, match="time on axis"):
        dsum.delayed_sum(x[0], w, d, np.float32)
    assert dsum.delayed_sum(x[:0], w, d, np.float32).shape == (0, x.shape[1], w.shape[0])


def test_float_simulator_compiled_and_numpy_sums_agree():
    x, w, d = case(seed=5)
    wf = w * 0.013
    layer = Layer(weight=wf, delay=d, bias=np.zeros(w.shape[0]), decay=0.9,
                  threshold=1.0)
    a = floatsim.synaptic_sum(layer, x, np.float64, method="compiled")
    b = floatsim.synaptic_sum(layer, x, np.float64, method="numpy")
    assert np.allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max())
    assert np.allclose(a, loop_sum(x, layer.weight, layer.delay), rtol=0, atol=1e-12 * np.abs(b).max())
    assert np.array_equal(floatsim.synaptic_sum(layer, x, np.float64), a)   # auto: compiled
    with pytest.raises(SimulationError, match="method"):
        floatsim.synaptic_sum(layer, x, np.float64, method="fft")


def test_netx_weight_rule_is_lava_dls_own_and_loads_without_lavas_runtime():
    """The exporter's exactness check runs lava-dl's optimize_weight_bits; loaded by
    neurodelay._compat.netx_utils it equals the function of the imported package, and
    exporting needs neither Lava's runtime nor slayer (a fresh process shows it)."""
    from neurodelay._compat import ensure_lava, netx_utils

    fast = netx_utils().optimize_weight_bits
    ensure_lava()
    from lava.lib.dl.netx.utils import optimize_weight_bits

    rng = np.random.default_rng(0)
    for w in (rng.integers(-128, 128, (6, 9)), rng.integers(0, 60, (4, 4)) * 4,
              -rng.integers(1, 300, (3, 5))):
        a, b = fast(w.copy()), optimize_weight_bits(w.copy())
        assert np.array_equal(a[0], b[0]) and a[1:3] == b[1:3] and int(a[3]) == int(b[3])
    code = ("import sys, numpy as np\n"
            "from neurodelay._compat import netx_utils\n"
            "from neurodelay.hw.target import arith\n"
            "from neurodelay.exporters.loihi2 import netx_effective\n"
            "w = np.array([[3, -5], [7, 1]])\n"
            "assert np.array_equal(netx_effective(w, arith('loihi2')), w)\n"
            "heavy = [m for m in sys.modules if m.startswith(('lava.magma', "
            "'lava.lib.dl.slayer', 'lava.lib.dl.netx'))]\n"
            "print('HEAVY', heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout, proc.stdout


def recurrent_layer(seed=0, n=12, n_in=7, dyadic=True):
    rng = np.random.default_rng(seed)
    scale = 1 / 16 if dyadic else 0.137
    w = rng.integers(-8, 12, (n, n_in)) * scale
    r = rng.integers(-6, 6, (n, n)) * scale * (rng.random((n, n)) < 0.7)
    return Layer(weight=w, delay=rng.integers(0, 5, (n, n_in)), bias=np.full(n, 0.0625),
                 decay=0.875, threshold=1.0, current_decay=0.5, rec_weight=r,
                 rec_delay=rng.integers(1, 9, (n, n)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_recurrent_loop_equals_the_numpy_loop(dtype):
    """On dyadic weights every sum is exact, so the compiled loop (spike by spike) and
    numpy's (one product per delay and step) must agree bit for bit, in both precisions;
    some recurrent delays reach past the last step."""
    layer = recurrent_layer()
    x = (np.random.default_rng(1).random((6, 40, 7)) < 0.4).astype(dtype)
    S = floatsim.synaptic_sum(layer, x, dtype)
    u_n, s_n = floatsim._recurrent_numpy(layer, S.copy())
    u_c, s_c = floatsim.recurrent_dynamics(layer, S.copy())
    assert s_n.sum() > 20 and (s_n.sum(axis=(0, 1)) > 0).sum() > 6   # the layer is active
    assert np.array_equal(s_c, s_n) and np.array_equal(u_c, u_n)


def test_compiled_recurrent_loop_on_float_weights_agrees_to_rounding():
    layer = recurrent_layer(seed=2, dyadic=False)
    x = (np.random.default_rng(3).random((5, 60, 7)) < 0.4).astype(np.float64)
    S = floatsim.synaptic_sum(layer, x, np.float64)
    u_n, s_n = floatsim._recurrent_numpy(layer, S.copy())
    u_c, s_c = floatsim.recurrent_dynamics(layer, S.copy())
    assert np.array_equal(s_c, s_n)
    assert np.allclose(u_c, u_n, rtol=0, atol=1e-12)
    with pytest.raises(SimulationError, match="contiguous"):
        dsum.recurrent_loop(S[:, ::2], layer.rec_weight, layer.rec_delay, decay=0.9,
                            current_decay=0.0, threshold=1.0, reset=0.0, bias=layer.bias)


def test_a_missing_c_source_is_a_reason_not_a_crash(tmp_path):
    from neurodelay import cbuild

    st, lib = cbuild.build(tmp_path / "absent.c", "absent", 1, lambda lib: None)
    assert lib is None and not st.available and "cannot be read" in st.reason
