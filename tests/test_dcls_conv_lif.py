"""neurodelay.train.dcls_conv and neurodelay.train.lif equal the paper's formulation (dcls Dcls1d 'gauss' + spikingjelly LIF).

Outputs and gradients (weight, P, input) of delay_conv against the dcls path for odd and
even windows, wide and minimum sigmas, binary spikes and counts, in float64 (same math:
tight tolerance) and float32 (rounding-level tolerance, and no worse than dcls' own
float32 error against float64). lif_multistep against spikingjelly's LIFNode: bit-equal
spikes and membranes, equal surrogate gradients. A small DelaySNN through the
benchmark's fast forward gives the reference's loss and gradients.
"""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from neurodelay.errors import KernelError
from neurodelay.train import dcls_conv as fc
from neurodelay.train.dcls_conv import causal_conv, delay_conv, gauss_kernel, gauss_kernel_reference
from neurodelay.train.lif import lif_multistep

torch.set_num_threads(1)

SIG_MIN = 0.23


def make_dcls(n_in, n_out, window, sig, seed, dtype=torch.float32, sig_random=False):
    from DCLS.construct.modules import Dcls1d

    torch.manual_seed(seed)
    conv = Dcls1d(n_in, n_out, kernel_count=1, dilated_kernel_size=window, bias=False,
                  version="gauss")
    h = window // 2
    with torch.no_grad():
        conv.P.uniform_(-h, window - 1 - h)
        if sig_random:
            conv.SIG.uniform_(SIG_MIN, sig)
        else:
            conv.SIG.fill_(sig)
    conv.SIG.requires_grad_(False)
    return conv.to(dtype)


def make_input(b, n_in, t, kind, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    if kind == "spikes":
        x = (torch.rand(b, n_in, t, generator=g) < 0.2).to(dtype)
    else:  # binned counts
        x = torch.poisson(torch.full((b, n_in, t), 0.7), generator=g).to(dtype)
    return x


def run_both(conv, x, window, x_grad=True, seed=0):
    """(y, dW, dP, dx) of the dcls path and of delay_conv for the loss sum(y * r)."""
    outs = []
    for fast in (False, True):
        xi = x.clone().requires_grad_(x_grad)
        conv.weight.grad = None
        conv.P.grad = None
        if fast:
            y = delay_conv(xi, conv.weight, conv.P, conv.SIG, window)
        else:
            y = conv(F.pad(xi, (window - 1, 0)))
        r = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 99),
                        dtype=y.dtype)
        (y * r).sum().backward()
        outs.append((y.detach(), conv.weight.grad.clone(), conv.P.grad.clone(),
                     xi.grad.clone() if x_grad else None))
    return outs


def rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


CASES = [  # (batch, n_in, n_out, T, window, SIG, input kind)
    (2, 7, 5, 30, 25, 12.5, "spikes"),
    (3, 6, 4, 40, 25, SIG_MIN, "counts"),
    (2, 5, 9, 17, 10, 5.0, "counts"),      # even window
    (2, 8, 3, 33, 10, SIG_MIN, "spikes"),
    (1, 4, 4, 12, 31, 0.9, "spikes"),      # window longer than T
    (2, 3, 5, 20, 5, SIG_MIN, "counts"),   # small odd window: DFT path
    (2, 3, 5, 20, 4, 2.0, "spikes"),       # window <= DIRECT_MAX_WINDOW: conv1d path
    (2, 3, 2, 9, 1, SIG_MIN, "counts"),    # window 1
]


@pytest.fixture(params=["gauss", "pairs"])
def scheme(request, monkeypatch):
    """Both bin-product schemes of dense kernel spectra: Gauss's three real products
    (forced by GAUSS_MIN_BATCH = 1) and the four-product pairs (forced by a huge one)."""
    monkeypatch.setattr(fc, "GAUSS_MIN_BATCH", 1 if request.param == "gauss" else 10**9)
    return request.param


def test_schemes_pick_their_spectrum_layout(monkeypatch):
    """The batch size selects the scheme: a (3F, ...) Gauss spectrum from GAUSS_MIN_BATCH
    on, a (2F, ...) pairs spectrum below (both tested for equality everywhere here)."""
    seen = []
    real = fc.spectral_conv
    monkeypatch.setattr(fc, "spectral_conv", lambda x, spec, mats, **kw: (
        seen.append(spec.shape[0]), real(x, spec, mats, **kw))[1])
    k = torch.randn(4, 3, 25, dtype=torch.float64)
    n_bins = (30 + 25 - 1) // 2 + 1
    for b in (fc.GAUSS_MIN_BATCH - 1, fc.GAUSS_MIN_BATCH):
        x = torch.randn(b, 3, 30, dtype=torch.float64)
        assert rel(causal_conv(x, k), F.conv1d(F.pad(x, (24, 0)), k)) < 1e-11
    assert seen == [2 * n_bins, 3 * n_bins]


@pytest.mark.parametrize("case", CASES, ids=[f"w{c[4]}-sig{c[5]}-{c[6]}" for c in CASES])
def test_delay_conv_equals_dcls_in_float64(case, scheme):
    b, n_in, n_out, t, window, sig, kind = case
    conv = make_dcls(n_in, n_out, window, sig, seed=t, dtype=torch.float64)
    x = make_input(b, n_in, t, kind, seed=window, dtype=torch.float64)
    ref, fast = run_both(conv, x, window)
    for name, a, r in zip(("y", "dW", "dP", "dx"), fast, ref):
        assert a.shape == r.shape, name
        assert rel(a, r) < 1e-10, f"{name}: relative difference {rel(a, r):.2e}"


@pytest.mark.parametrize("case", CASES, ids=[f"w{c[4]}-sig{c[5]}-{c[6]}" for c in CASES])
def test_delay_conv_equals_dcls_in_float32(case, scheme):
    """float32: within rounding of dcls and no further from float64 truth than dcls is."""
    b, n_in, n_out, t, window, sig, kind = case
    conv = make_dcls(n_in, n_out, window, sig, seed=t)
    x = make_input(b, n_in, t, kind, seed=window, dtype=torch.float32)
    ref, fast = run_both(conv, x, window)
    conv64 = copy.deepcopy(conv).double()
    truth, _ = run_both(conv64, x.double(), window)
    for name, a, r, tr in zip(("y", "dW", "dP", "dx"), fast, ref, truth):
        assert rel(a, r) < 2e-5, f"{name}: relative difference {rel(a, r):.2e}"
        err_fast, err_dcls = rel(a.double(), tr), rel(r.double(), tr)
        assert err_fast < max(10 * err_dcls, 2e-6), (name, err_fast, err_dcls)


def test_delay_conv_first_layer_without_input_grad_and_random_sigmas():
    conv = make_dcls(9, 6, 25, 8.0, seed=3, dtype=torch.float64, sig_random=True)
    x = make_input(4, 9, 50, "counts", seed=3, dtype=torch.float64)
    ref, fast = run_both(conv, x, 25, x_grad=False)
    for name, a, r in zip(("y", "dW", "dP"), fast[:3], ref[:3]):
        assert rel(a, r) < 1e-10, name


def test_positions_at_window_edges_and_on_integer_taps():
    """P at both bounds and exactly on taps (z = 0: the |.| of dcls' norm has a kink)."""
    window = 10
    conv = make_dcls(4, 3, window, SIG_MIN, seed=5, dtype=torch.float64)
    h = window // 2
    with torch.no_grad():
        vals = torch.tensor([-h, window - 1 - h, 0.0, 2.0, -3.0, 1.5])
        conv.P.copy_(vals[torch.arange(conv.P.numel()) % len(vals)].reshape(conv.P.shape))
    x = make_input(2, 4, 25, "spikes", seed=1, dtype=torch.float64)
    ref, fast = run_both(conv, x, window)
    for name, a, r in zip(("y", "dW", "dP", "dx"), fast, ref):
        assert torch.isfinite(a).all(), name
        assert rel(a, r) < 1e-10, name


def test_gauss_kernel_equals_dcls_kernel_and_gradients():
    conv = make_dcls(6, 5, 25, 3.0, seed=2, dtype=torch.float64, sig_random=True)
    k_ref = conv.DCK(conv.weight, conv.P, conv.SIG)
    k = gauss_kernel(conv.weight, conv.P, conv.SIG, 25)
    assert k.shape == (5, 6, 25)
    assert rel(k, k_ref) < 1e-12
    r = torch.randn(k.shape, generator=torch.Generator().manual_seed(0), dtype=k.dtype)
    gw, gp = torch.autograd.grad((k * r).sum(), (conv.weight, conv.P))
    gw_ref, gp_ref = torch.autograd.grad((k_ref * r).sum(), (conv.weight, conv.P))
    assert rel(gw, gw_ref) < 1e-12 and rel(gp, gp_ref) < 1e-11


def test_gauss_kernel_backward_passes_gradcheck():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(3, 4, 1, generator=g, dtype=torch.float64, requires_grad=True)
    p = (torch.rand(1, 3, 4, 1, generator=g, dtype=torch.float64) * 8 - 4).requires_grad_()
    sig = torch.full((1, 3, 4, 1), 1.3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: gauss_kernel(a, b, sig, 9), (w, p))


def test_tap_floor_removes_only_negligible_taps_and_no_subnormals():
    """Taps below TAP_FLOOR are zeroed: far below float32 resolution, and the kernel then
    holds no subnormal numbers (they slow CPU arithmetic 10-50x)."""
    conv = make_dcls(16, 16, 25, SIG_MIN, seed=7)
    k = gauss_kernel(conv.weight, conv.P, conv.SIG, 25).detach()
    # the unfloored kernel, computed in float64 from the same parameters
    conv64 = copy.deepcopy(conv).double()
    k_full = conv64.DCK(conv64.weight, conv64.P, conv64.SIG).detach()
    w_max = float(conv.weight.detach().abs().max())
    assert float((k.double() - k_full).abs().max()) <= 1e-6 * w_max
    dropped = (k == 0) & (k_full != 0)
    assert dropped.any()                                  # the floor did act at sigma 0.5
    assert float(k_full[dropped].abs().max()) <= fc.TAP_FLOOR * w_max * 1.0001
    tiny = torch.finfo(torch.float32).tiny
    assert not ((k != 0) & (k.abs() < tiny)).any()
    # the reference (dcls) float32 kernel does contain subnormals at this sigma
    k_dcls = conv.DCK(conv.weight, conv.P, conv.SIG).detach()
    assert ((k_dcls != 0) & (k_dcls.abs() < tiny)).any()


@pytest.mark.parametrize("window,t", [(25, 40), (6, 30), (31, 8), (3, 10)])
def test_causal_conv_equals_conv1d_for_any_kernel(window, t, scheme):
    g = torch.Generator().manual_seed(window)
    x = torch.randn(3, 5, t, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, 5, window, generator=g, dtype=torch.float64, requires_grad=True)
    y = causal_conv(x, k)
    y_ref = F.conv1d(F.pad(x, (window - 1, 0)), k)
    assert rel(y, y_ref) < 1e-11
    r = torch.randn(y.shape, generator=g, dtype=y.dtype)
    gx, gk = torch.autograd.grad((y * r).sum(), (x, k))
    gx_ref, gk_ref = torch.autograd.grad((y_ref * r).sum(), (x, k))
    assert rel(gx, gx_ref) < 1e-11 and rel(gk, gk_ref) < 1e-11


def test_causal_conv_one_tap_kernel_is_a_pure_delay():
    """The discrete model: one tap per synapse shifts the input by its delay exactly."""
    window, t = 25, 60
    x = torch.zeros(1, 2, t)
    x[0, 0, 3] = 1.0
    x[0, 1, 10] = 2.0
    k = torch.zeros(2, 2, window)
    k[0, 0, window - 1 - 7] = 0.5     # delay 7 from input 0 to output 0
    k[1, 1, window - 1 - 24] = -1.0   # delay 24 from input 1 to output 1
    y = causal_conv(x, k)
    expect = torch.zeros(1, 2, t)
    expect[0, 0, 10] = 0.5
    expect[0, 1, 34] = -2.0
    assert float((y - expect).abs().max()) < 1e-5


def test_conv_output_is_a_view_of_time_major_memory():
    x = make_input(2, 6, 30, "spikes", seed=0, dtype=torch.float32)
    y = causal_conv(x, torch.randn(4, 6, 25))
    assert y.shape == (2, 4, 30) and y.permute(2, 0, 1).is_contiguous()


def test_bad_arguments_raise_kernel_error():
    x = torch.zeros(2, 3, 10)
    with pytest.raises(KernelError, match="kernel"):
        causal_conv(x, torch.zeros(4, 5, 7))
    with pytest.raises(KernelError, match="batch, in, time"):
        causal_conv(torch.zeros(3, 10), torch.zeros(4, 3, 7))
    with pytest.raises(KernelError, match="dtype"):
        causal_conv(x.double(), torch.zeros(4, 3, 7))
    with pytest.raises(KernelError, match="P"):
        gauss_kernel(torch.zeros(4, 3, 1), torch.zeros(1, 4, 2, 1), torch.zeros(1, 4, 3, 1), 7)
    with pytest.raises(KernelError, match="window"):
        gauss_kernel(torch.zeros(4, 3, 1), torch.zeros(12), torch.zeros(12), 0)
    with pytest.raises(KernelError, match="tau"):
        lif_multistep(torch.zeros(5, 2, 3), 1.0, 1.0)


def test_gauss_kernel_with_learned_sigma_falls_back_to_autograd():
    conv = make_dcls(3, 2, 9, 2.0, seed=1, dtype=torch.float64)
    sig = conv.SIG.detach().clone().requires_grad_(True)
    k = gauss_kernel(conv.weight, conv.P, sig, 9)
    (g,) = torch.autograd.grad(k.sum() + (k * k).sum(), sig)
    k_ref = gauss_kernel_reference(conv.weight, conv.P, sig, 9)
    (g_ref,) = torch.autograd.grad(k_ref.sum() + (k_ref * k_ref).sum(), sig)
    assert torch.equal(k, k_ref) and torch.allclose(g, g_ref)


# ----------------------------------------------------------------------------- LIF
def sj_lif(tau, threshold, alpha=5.0):
    from spikingjelly.activation_based import neuron, surrogate

    return neuron.LIFNode(tau=tau, decay_input=False, v_threshold=threshold, v_reset=0.0,
                          surrogate_function=surrogate.ATan(alpha=alpha), detach_reset=True,
                          step_mode="m", store_v_seq=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threshold,tau", [(1.0, 1.005), (0.7, 2.0), (1e9, 1.005)])
def test_lif_equals_spikingjelly(dtype, threshold, tau):
    g = torch.Generator().manual_seed(int(tau * 10))
    x = (torch.randn(60, 3, 17, generator=g) * 0.8 + 0.35).to(dtype)
    gs = torch.randn(x.shape, generator=g).to(dtype)
    gv = torch.randn(x.shape, generator=g).to(dtype)
    node = sj_lif(tau, threshold)
    x_ref = x.clone().requires_grad_()
    s_ref = node(x_ref)
    ((s_ref * gs).sum() + (node.v_seq * gv).sum()).backward()
    x_f = x.clone().requires_grad_()
    s, v = lif_multistep(x_f, tau, threshold, 5.0, return_v=True)
    ((s * gs).sum() + (v * gv).sum()).backward()
    assert torch.equal(s, s_ref.detach()) and torch.equal(v, node.v_seq.detach())
    if threshold < 1e6:
        assert 0 < int(s.sum()) < s.numel()          # the test does exercise resets
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert rel(x_f.grad, x_ref.grad) < tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threshold,tau", [(1.0, 1.005), (0.7, 2.0), (1e9, 1.005)])
def test_lif_inference_path_equals_the_training_path(dtype, threshold, tau):
    """Without a gradient (evaluation) lif_multistep takes its no-backward path: spikes and
    membranes must be bit-equal to the autograd node's (and so to spikingjelly's)."""
    g = torch.Generator().manual_seed(int(tau * 100))
    x = (torch.randn(80, 5, 2, 7, generator=g) * 0.8 + 0.35).to(dtype)
    s_grad, v_grad = lif_multistep(x.clone().requires_grad_(), tau, threshold, 5.0,
                                   return_v=True)
    with torch.no_grad():
        s_inf, v_inf = lif_multistep(x, tau, threshold, 5.0, return_v=True)
        s_only = lif_multistep(x, tau, threshold)
    s_nograd_input = lif_multistep(x, tau, threshold)        # grad on, x needs none
    assert s_inf.grad_fn is None and s_grad.grad_fn is not None
    assert torch.equal(s_inf, s_grad.detach()) and torch.equal(v_inf, v_grad.detach())
    assert torch.equal(s_only, s_inf) and torch.equal(s_nograd_input, s_inf)
    # +0.0, never -0.0, where it fired (as the training path and spikingjelly give)
    assert not torch.signbit(v_inf[s_inf > 0]).any()
    if threshold < 1e6:
        assert 0 < int(s_inf.sum()) < s_inf.numel()
    with torch.no_grad():
        s0, v0 = lif_multistep(x[:0], tau, threshold, return_v=True)
    assert s0.shape == v0.shape == x[:0].shape


def test_lif_loops_run_serially_and_restore_the_thread_count():
    """The per-time-step loops run in one thread for small slices (thread wake-ups cost
    more than such ops) and leave torch's thread count as they found it, also when the
    loop raises; large slices keep the threads."""
    from neurodelay.train import lif

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with lif._serial_steps(256 * 256):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with lif._serial_steps(lif.SERIAL_STEP_MAX_NUMEL + 1):
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="boom"):
            with lif._serial_steps(10):
                raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
        x = (torch.randn(30, 4, 9) + 0.4).requires_grad_()
        s = lif_multistep(x, 1.3, 1.0)
        s.sum().backward()
        with torch.no_grad():
            lif_multistep(x, 1.3, 1.0, return_v=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_lif_spikes_only_gradient_and_shapes():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(25, 4, 2, 3, generator=g) + 0.4          # (T, B, ...) any trailing shape
    gs = torch.randn(x.shape, generator=g)
    node = sj_lif(1.3, 1.0)
    x_ref = x.clone().requires_grad_()
    (node(x_ref) * gs).sum().backward()
    x_f = x.clone().requires_grad_()
    s = lif_multistep(x_f, 1.3, 1.0)
    (s * gs).sum().backward()
    assert s.shape == x.shape
    assert rel(x_f.grad, x_ref.grad) < 1e-6


# ----------------------------------------------------------------------------- model
def _load_bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    spec = importlib.util.spec_from_file_location("neurodelay_bench_run", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("sig", [3.5, SIG_MIN])
def test_small_model_fast_forward_gives_reference_loss_and_gradients(sig):
    bench = _load_bench()
    spec = dict(n_inputs=12, hidden=[16, 16], n_outputs=4, window=7, T=30, batch=5)
    base = bench.build_model(spec, seed=2)
    base.set_sigma(sig)
    x, y = bench.make_batch(spec, seed=4)
    x = x * 2.0                                    # enough input for hidden spikes
    res = bench.check_equal(base, x, y, fp64=False)["neurodelay_vs_reference"]
    assert res["loss_rel_diff"] < 1e-6, res
    assert res["grad_max_rel_diff"] < 1e-4, res
    # and the discrete (evaluation) path
    base.eval()
    with torch.no_grad():
        u_ref = bench.ReferenceForward(base)(base, x, discrete=True)
        u_fast = bench.fast_forward(base, x, discrete=True)
    assert rel(u_fast, u_ref) < 1e-5
