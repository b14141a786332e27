"""neurodelay.train.intdelay.integer_delay_conv: y[b,o,t] = sum_i w[o,i] x[b,i,t-d[o,i]].

Forward against a plain loop and against F.conv1d with the one-tap kernel (the old
formulation), for every method (compiled direct kernels, frequency domain, one matmul
per delay; tests/test_native.py has the kernels' own tests), several shapes, every
delay of the window, T shorter than the largest delay, zero and empty weights;
gradients w.r.t. x and weight against autograd through conv1d, and gradcheck; float64
integer exactness (what hardware-exact fine-tuning relies on); the phase cache; errors.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurodelay.errors import KernelError, NeurodelayError
from neurodelay.train import intdelay
from neurodelay.train.intdelay import integer_delay_conv

torch.set_num_threads(1)

METHODS = ["auto", "native", "fft", "direct"]


def loop_ref(x: np.ndarray, w: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The definition, as loops (works for float64 and int64 arrays alike)."""
    b, n_in, t = x.shape
    out = np.zeros((b, w.shape[0], t), dtype=np.result_type(x, w))
    for o in range(w.shape[0]):
        for i in range(n_in):
            k = int(d[o, i])
            if k < t:
                out[:, o, k:] += w[o, i] * x[:, i, : t - k]
    return out


def conv1d_ref(x: torch.Tensor, w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The old path: F.conv1d over the whole window with a one-tap kernel per synapse."""
    window = int(d.max()) + 1
    tap = (window - 1 - d).unsqueeze(-1)
    k = torch.zeros(*w.shape, window, dtype=w.dtype).scatter(2, tap, w.unsqueeze(-1))
    return F.conv1d(F.pad(x, (window - 1, 0)), k)


def rel(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def make(b, n_in, n_out, t, window, seed, dtype=torch.float64, kind="randn"):
    g = torch.Generator().manual_seed(seed)
    if kind == "spikes":
        x = (torch.rand(b, n_in, t, generator=g) < 0.2).to(dtype)
    else:
        x = torch.randn(b, n_in, t, generator=g, dtype=dtype)
    w = torch.randn(n_out, n_in, generator=g, dtype=dtype)
    d = torch.randint(0, window, (n_out, n_in), generator=g)
    d.view(-1)[: min(window, d.numel())] = torch.arange(min(window, d.numel()))  # every delay
    return x, w, d


SHAPES = [  # (batch, in, out, T, window)
    (2, 7, 5, 30, 25),      # SHD-like window
    (3, 12, 9, 40, 10),
    (1, 4, 6, 12, 31),      # T shorter than the largest delays: those reach nothing
    (2, 5, 3, 8, 2),        # two distinct delays (direct under "auto")
    (2, 6, 4, 17, 1),       # no delays: one matmul
    (1, 1, 1, 5, 5),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"B{s[0]}-{s[1]}x{s[2]}-T{s[3]}-w{s[4]}"
                                               for s in SHAPES])
def test_forward_equals_loop_and_one_tap_conv1d_float64(shape, method):
    b, n_in, n_out, t, window = shape
    x, w, d = make(b, n_in, n_out, t, window, seed=t + window)
    y = integer_delay_conv(x, w, d, method=method)
    assert y.shape == (b, n_out, t) and y.dtype == torch.float64
    ref = loop_ref(x.numpy(), w.numpy(), d.numpy())
    assert np.abs(y.numpy() - ref).max() <= 1e-10 * max(1.0, np.abs(ref).max())
    assert rel(y, conv1d_ref(x, w, d)) < 1e-10


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES[:4], ids=[f"w{s[4]}" for s in SHAPES[:4]])
def test_forward_float32_is_rounding_close_to_float64(shape, method):
    b, n_in, n_out, t, window = shape
    x, w, d = make(b, n_in, n_out, t, window, seed=3, kind="spikes")
    y32 = integer_delay_conv(x.float(), w.float(), d, method=method)
    assert y32.dtype == torch.float32
    truth = conv1d_ref(x, w, d)
    # |error| <= c * eps32 * sum_i |w| |x|: the transforms spread rounding over all outputs
    scale = float(conv1d_ref(x.abs(), w.abs(), d).max())
    assert float((y32.double() - truth).abs().max()) < 20 * 6e-8 * scale


def test_shd_sized_layer_float32_error_is_a_few_conv1d_roundings():
    """At the SHD shape the float32 transform is within ~10x conv1d's own float32 error
    (measured ~3-4x; what the module docstring states)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 256, 100, generator=g) < 0.1).float()
    w = (torch.rand(64, 256, generator=g) - 0.5) * 0.3
    d = torch.randint(0, 25, (64, 256), generator=g)
    truth = conv1d_ref(x.double(), w.double(), d)
    err_fft = float((integer_delay_conv(x, w, d, method="fft").double() - truth).abs().max())
    err_c1d = float((conv1d_ref(x, w, d).double() - truth).abs().max())
    err_64 = float((integer_delay_conv(x.double(), w.double(), d).float().double()
                    - truth).abs().max())
    assert err_fft < 10 * err_c1d
    assert err_64 <= err_c1d + 1e-12        # float64 then cast: never worse than conv1d


def test_output_is_a_view_of_time_major_memory():
    x, w, d = make(3, 5, 4, 20, 9, seed=1)
    for method in METHODS:
        y = integer_delay_conv(x, w, d, method=method)
        assert y.permute(2, 0, 1).is_contiguous()


def test_pure_delays_shift_the_input_exactly():
    x = torch.zeros(1, 2, 40, dtype=torch.float64)
    x[0, 0, 3] = 1.0
    x[0, 1, 10] = 2.0
    w = torch.tensor([[0.5, 0.0], [0.0, -1.0]], dtype=torch.float64)
    d = torch.tensor([[7, 0], [0, 24]])
    y = integer_delay_conv(x, w, d)
    expect = torch.zeros(1, 2, 40, dtype=torch.float64)
    expect[0, 0, 10] = 0.5
    expect[0, 1, 34] = -2.0
    assert float((y - expect).abs().max()) < 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_zero_weights_and_unreachable_delays_give_zero(method):
    x, w, d = make(2, 4, 3, 10, 5, seed=2)
    assert float(integer_delay_conv(x, torch.zeros_like(w), d, method=method).abs().max()) == 0
    y = integer_delay_conv(x, w, d + 10, method=method)   # every delay >= T
    assert y.shape == (2, 3, 10) and float(y.abs().max()) == 0


@pytest.mark.parametrize("method", METHODS)
def test_one_reaching_delay_and_others_past_the_end(method):
    """Delays {3, >= T}: one matmul under "auto", and the synapses past the end stay out."""
    x, w, _ = make(2, 6, 5, 10, 2, seed=12)
    d = torch.full((5, 6), 3)
    d[:, ::2] = 10 + torch.arange(5).unsqueeze(1)
    y = integer_delay_conv(x, w, d, method=method)
    ref = loop_ref(x.numpy(), w.numpy(), d.numpy())
    assert np.abs(y.numpy() - ref).max() <= 1e-12 * np.abs(ref).max()


@pytest.mark.parametrize("b,n_in,n_out,t", [(0, 3, 2, 5), (2, 0, 2, 5), (2, 3, 0, 5),
                                            (2, 3, 2, 0)])
def test_empty_dimensions(b, n_in, n_out, t):
    x = torch.randn(b, n_in, t, dtype=torch.float64, requires_grad=True)
    w = torch.randn(n_out, n_in, dtype=torch.float64, requires_grad=True)
    y = integer_delay_conv(x, w, torch.zeros(n_out, n_in, dtype=torch.int64))
    assert y.shape == (b, n_out, t)
    y.sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape
    assert float(w.grad.abs().sum()) == 0


# ----------------------------------------------------------------------------- gradients
def grads(fn, x, w, d, seed=5):
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    y = fn(x, w, d)
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64).to(y.dtype)
    gx, gw = torch.autograd.grad((y * r).sum(), (x, w))
    return gx, gw


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES[:5], ids=[f"w{s[4]}-T{s[3]}" for s in SHAPES[:5]])
def test_gradients_equal_autograd_through_conv1d(shape, method):
    b, n_in, n_out, t, window = shape
    x, w, d = make(b, n_in, n_out, t, window, seed=11)
    gx, gw = grads(lambda a, c, e: integer_delay_conv(a, c, e, method=method), x, w, d)
    gx_ref, gw_ref = grads(conv1d_ref, x, w, d)
    assert rel(gx, gx_ref) < 1e-10 and rel(gw, gw_ref) < 1e-10
    # float32: rounding-level agreement
    gx32, gw32 = grads(lambda a, c, e: integer_delay_conv(a, c, e, method=method),
                       x.float(), w.float(), d)
    assert rel(gx32.double(), gx_ref) < 1e-5 and rel(gw32.double(), gw_ref) < 1e-5


@pytest.mark.parametrize("method", ["native", "fft", "direct"])
def test_gradcheck(method):
    x, w, d = make(2, 3, 4, 9, 6, seed=4)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, c: integer_delay_conv(a, c, d, method=method), (x, w))


def test_first_layer_without_input_gradient():
    x, w, d = make(2, 5, 3, 20, 8, seed=6)
    w.requires_grad_(True)
    y = integer_delay_conv(x, w, d)
    (gw,) = torch.autograd.grad(y.sum(), w)
    w_ref = w.detach().clone().requires_grad_(True)
    (gw_ref,) = torch.autograd.grad(conv1d_ref(x, w_ref, d).sum(), w_ref)
    assert rel(gw, gw_ref) < 1e-10


@pytest.mark.parametrize("weights_grad", [True, False])
def test_two_layers_in_sequence_keep_their_saved_spectra(weights_grad):
    """A network's pattern: layer 1, layer 2 on its output, one backward. The spectral
    node reuses scratch buffers from call to call; what layer 1 saved for its backward
    must survive layer 2's forward and backward (and frozen weights save nothing)."""
    x, w1, d1 = make(3, 6, 8, 40, 25, seed=21)
    _, w2, d2 = make(3, 8, 5, 40, 25, seed=22)
    w2 = w2 * 0.3

    def net(conv, x, w1, w2):
        h = torch.tanh(conv(x, w1, d1))
        return conv(h, w2, d2)

    def run(conv):
        xi = x.clone().requires_grad_(True)
        a = w1.clone().requires_grad_(weights_grad)
        b = w2.clone().requires_grad_(weights_grad)
        y = net(conv, xi, a, b)
        r = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
        (y * r).sum().backward()
        return [y.detach(), xi.grad] + ([a.grad, b.grad] if weights_grad else [])

    got = run(lambda a, c, e: integer_delay_conv(a, c, e, method="fft"))
    ref = run(conv1d_ref)
    for a, b in zip(got, ref):
        assert rel(a, b) < 1e-10


def test_outputs_of_successive_calls_are_independent():
    """Without grad, scratch buffers are shared by every call: an earlier output must not
    change when later calls (other shapes, other dtype) run."""
    x, w, d = make(2, 7, 5, 30, 25, seed=23)
    with torch.no_grad():
        y1 = integer_delay_conv(x, w, d, method="fft")
        keep = y1.clone()
        for b, n_in, n_out in ((4, 9, 6), (1, 3, 2)):
            xa, wa, da = make(b, n_in, n_out, 30, 25, seed=b)
            ya = integer_delay_conv(xa, wa, da, method="fft")
            assert rel(ya, conv1d_ref(xa, wa, da)) < 1e-10
            integer_delay_conv(xa.float(), wa.float(), da, method="fft")
    assert torch.equal(y1, keep)
    assert rel(y1, conv1d_ref(x, w, d)) < 1e-10


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("method", ["native", "fft", "direct"])
def test_float64_integer_sums_round_exactly(method):
    """Integer weights and inputs: torch.round(y) is the exact int64 sum while
    S = sum_i |w| |x| stays below 2**31 (here up to ~2**31)."""
    g = np.random.default_rng(7)
    b, n_in, n_out, t, window = 3, 64, 8, 60, 25
    x = g.integers(0, 2**10, (b, n_in, t))                # large counts
    w = g.integers(-2**16, 2**16, (n_out, n_in))          # 17-bit weights
    d = g.integers(0, window, (n_out, n_in))
    d[:, :8] = g.integers(t - 3, t + 5, (n_out, 8))       # some at / past the end
    exact = loop_ref(x.astype(np.int64), w.astype(np.int64), d)
    s_abs = loop_ref(np.abs(x), np.abs(w), d).max()
    assert 2**30 < s_abs < 2**31                          # the test covers large sums
    assert np.abs(exact).max() > 2**24                    # beyond float32's exact integers
    y = integer_delay_conv(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                           torch.from_numpy(d), method=method)
    err = float((y - torch.from_numpy(exact).double()).abs().max())
    assert err < 1e-4, err
    assert torch.equal(torch.round(y).to(torch.int64), torch.from_numpy(exact))


def test_float64_small_integer_weights_spikes_exact():
    """The fine-tuning case: 8-bit weights, binary spikes, SHD-sized layer."""
    g = np.random.default_rng(8)
    x = (g.random((2, 256, 100)) < 0.2).astype(np.int64)
    w = g.integers(-128, 128, (32, 256))
    d = g.integers(0, 25, (32, 256))
    y = integer_delay_conv(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                           torch.from_numpy(d))
    exact = torch.from_numpy(loop_ref(x, w, d))
    assert float((y - exact.double()).abs().max()) < 1e-8
    assert torch.equal(torch.round(y).to(torch.int64), exact)


# ----------------------------------------------------------------------------- cache, errors
def test_phase_tables_are_cached_per_delays_T_and_dtype():
    intdelay.clear_cache()
    x, w, d = make(2, 6, 5, 30, 20, seed=9)
    integer_delay_conv(x, w, d, method="fft")
    assert len(intdelay._PHASES) == 1
    integer_delay_conv(x * 2, w * 3, d.clone(), method="fft")   # same delays, new tensor
    assert len(intdelay._PHASES) == 1
    integer_delay_conv(x.float(), w.float(), d, method="fft")
    integer_delay_conv(x[..., :20], w, d, method="fft")
    d2 = d.clone()
    d2[0, 0] = (d2[0, 0] + 1) % 20
    y2 = integer_delay_conv(x, w, d2, method="fft")            # other delays: new table
    assert len(intdelay._PHASES) == 4
    assert rel(y2, conv1d_ref(x, w, d2)) < 1e-10                # and not the stale one
    intdelay.clear_cache()
    assert not intdelay._PHASES


def test_bad_arguments_raise_kernel_error():
    x = torch.zeros(2, 3, 10)
    w = torch.zeros(4, 3)
    d = torch.zeros(4, 3, dtype=torch.int64)
    cases = [
        ((torch.zeros(3, 10), w, d), "batch, in, time"),
        ((x.half(), w.half(), d), "float32 or float64"),
        ((x, torch.zeros(4, 5), d), r"weight: expected \(out, 3\)"),
        ((x, w.double(), d), "dtype"),
        ((x, w, torch.zeros(4, 2, dtype=torch.int64)), "one per synapse"),
        ((x, w, d.float()), "integer tensor"),
        ((x, w, d - 1), ">= 0"),
    ]
    for args, match in cases:
        with pytest.raises(KernelError, match=match):
            integer_delay_conv(*args)
    with pytest.raises(KernelError, match="method"):
        integer_delay_conv(x, w, d, method="loop")
    assert issubclass(KernelError, NeurodelayError)
