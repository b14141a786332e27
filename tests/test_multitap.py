"""The multi-tap direct path of dcls_conv.delay_conv (C kernels of neurodelay.train.native).

Against the plain-autograd truth (gauss_kernel_reference + F.conv1d) in float64 on odd
small shapes and several sigmas (forward, input, weight and position gradients), float32
against that truth next to the spectral path's own error, thread-count independence
(bit-equal), strided inputs, zero weights, each path forced, the cost model's choice,
and the errors for arguments the direct path cannot take.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from compiled_checks import require_compiled

from neurodelay.errors import KernelError
from neurodelay.train import dcls_conv, native
from neurodelay.train.dcls_conv import delay_conv, gauss_kernel_reference, tap_plan


@pytest.fixture(autouse=True)
def kernels():
    require_compiled(native.status(), "the compiled kernels")
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def problem(B, n_in, n_out, T, window, SIG, dtype=torch.float64, density=0.3, seed=0,
            counts=False):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(B, n_in, T, generator=g) < density).to(dtype)
    if counts:
        x = x * torch.randint(1, 4, (B, n_in, T), generator=g).to(dtype)
    w = torch.randn(n_out, n_in, 1, generator=g, dtype=dtype)
    P = (torch.rand(1, n_out, n_in, 1, generator=g, dtype=dtype) - 0.5) * (window - 1)
    S = torch.full((1, n_out, n_in, 1), float(SIG), dtype=dtype)
    gy = torch.randn(B, n_out, T, generator=g, dtype=dtype)
    return x, w, P, S, gy


def grads(fn, x, w, P, gy):
    x, w, P = (t.detach().clone().requires_grad_(True) for t in (x, w, P))
    y = fn(x, w, P)
    return (y.detach(), *torch.autograd.grad(y, (x, w, P), gy))


def truth(x, w, P, S, window):
    """Plain autograd: dcls' Gaussian written out, F.conv1d on the left-padded input."""
    return lambda x, w, P: F.conv1d(F.pad(x, (window - 1, 0)),
                                    gauss_kernel_reference(w, P, S, window))


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


SHAPES = [(1, 1, 1, 1, 5), (3, 7, 5, 13, 9), (2, 17, 33, 40, 25), (4, 9, 3, 7, 25)]


@pytest.mark.parametrize("SIG", [0.23, 1.0, 4.0])
@pytest.mark.parametrize("shape", SHAPES)
def test_direct_equals_conv1d_truth_in_float64(shape, SIG):
    B, n_in, n_out, T, window = shape
    x, w, P, S, gy = problem(B, n_in, n_out, T, window, SIG, counts=True)
    want = grads(truth(x, w, P, S, window), x, w, P, gy)
    got = grads(lambda x, w, P: delay_conv(x, w, P, S, window, method="direct"), x, w, P, gy)
    for name, a, b in zip(("y", "dx", "dw", "dP"), got, want):
        assert rel(a, b) < 1e-12, (name, rel(a, b))


@pytest.mark.parametrize("SIG", [0.23, 2.0])
def test_float32_direct_is_as_close_to_the_truth_as_the_spectral_path(SIG):
    B, n_in, n_out, T, window = 6, 40, 30, 60, 25
    x, w, P, S, gy = problem(B, n_in, n_out, T, window, SIG, density=0.2)
    want = grads(truth(x, w, P, S, window), x, w, P, gy)
    f32 = [t.float() for t in (x, w, P, S, gy)]
    for method in ("direct", "spectral"):
        got = grads(lambda x, w, P: delay_conv(x, w, P, f32[3], window, method=method),
                    f32[0], f32[1], f32[2], f32[4])
        errs = [rel(a.double(), b) for a, b in zip(got, want)]
        assert max(errs) < 5e-6, (method, errs)
        if method == "direct":
            direct_errs = errs
    # the direct sums are no worse than a few times the spectral path's rounding
    assert all(d < 4 * s + 1e-7 for d, s in zip(direct_errs, errs)), (direct_errs, errs)


def test_float32_leaves_out_taps_below_the_floor_and_float64_keeps_them():
    x, w, P, S, _ = problem(2, 11, 13, 20, 25, 0.23)
    g64 = dcls_conv._gauss_kernel_and_taps(w, P, S, 25)
    g32 = dcls_conv._gauss_kernel_and_taps(w.float(), P.float(), S.float(), 25)
    p64, p32 = tap_plan(g64[1], g64[0]), tap_plan(g32[1], g32[0])
    assert p32.width == 8 and int(p32.span.max()) <= 8
    assert p64.width == 16 and int(p64.span.max()) >= 9          # sigma 0.5: 9-10 taps
    # every tap the float32 plan leaves out is below the floor
    n = torch.arange(25)
    last = 24 - p32.base.long()
    used = (n <= last.unsqueeze(-1)) & (n > (last - p32.span.long()).unsqueeze(-1))
    assert float(g32[1][~used].max()) < dcls_conv.DIRECT_TAP_FLOOR_F32


def test_thread_count_does_not_change_a_bit():
    x, w, P, S, gy = problem(9, 23, 37, 50, 25, 0.23, dtype=torch.float32, counts=True)
    outs = []
    for n in (1, 2, 3):
        torch.set_num_threads(n)
        outs.append(grads(lambda x, w, P: delay_conv(x, w, P, S, 25, method="direct"),
                          x, w, P, gy))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a, b)


def test_strided_inputs_give_the_same_bits():
    """The model passes time-major views (T, B, C).permute(1, 2, 0); the result must not
    depend on the layout."""
    x, w, P, S, gy = problem(4, 19, 21, 33, 25, 0.23, dtype=torch.float32)
    xt = x.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    gyt = gy.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    f = lambda x, w, P: delay_conv(x, w, P, S, 25, method="direct")  # noqa: E731
    for a, b in zip(grads(f, x, w, P, gy), grads(f, xt, w, P, gyt)):
        assert torch.equal(a, b)


def test_a_zero_weight_still_gets_its_gradient():
    """The taps come from the Gaussian, not from the kernel (0 where the weight is)."""
    x, w, P, S, gy = problem(3, 6, 4, 30, 25, 0.23)
    w[1, 2] = 0.0
    w[3, :] = 0.0
    want = grads(truth(x, w, P, S, 25), x, w, P, gy)
    got = grads(lambda x, w, P: delay_conv(x, w, P, S, 25, method="direct"), x, w, P, gy)
    assert float(want[2][1, 2].abs().max()) > 0
    for a, b in zip(got, want):
        assert rel(a, b) < 1e-12


def test_each_path_can_be_forced_and_auto_follows_the_cost_model(monkeypatch):
    x, w, P, S, gy = problem(2, 5, 6, 20, 25, 0.23, dtype=torch.float32)
    x.requires_grad_(True)
    assert type(delay_conv(x, w, P, S, 25, method="direct").grad_fn).__name__ == \
        "_MultiTapConvBackward"
    assert type(delay_conv(x, w, P, S, 25, method="spectral").grad_fn).__name__ == \
        "_SpectralConvBackward"
    monkeypatch.setattr(dcls_conv, "LEARNED_METHOD", "direct")
    assert type(delay_conv(x, w, P, S, 25).grad_fn).__name__ == "_MultiTapConvBackward"
    monkeypatch.setattr(dcls_conv, "LEARNED_METHOD", "auto")
    for choice, name in (("direct", "_MultiTapConvBackward"),
                         ("spectral", "_SpectralConvBackward")):
        monkeypatch.setattr(dcls_conv, "choose_method", lambda *a, c=choice: c)
        assert type(delay_conv(x, w, P, S, 25).grad_fn).__name__ == name


def test_cost_model_prefers_direct_for_sparse_narrow_and_spectral_for_dense_wide():
    choose = dcls_conv.choose_method
    B, n_in, n_out, T, window = 64, 256, 256, 100, 25
    dense = B * n_in * T
    assert choose(B, n_in, n_out, T, window, dense // 1000, 8, False, True) == "direct"
    assert choose(B, n_in, n_out, T, window, dense, 32, True, True) == "spectral"


def test_cost_model_needs_the_margin_before_it_leaves_the_spectral_path(monkeypatch):
    """The SHD readout at sigma 0.5 (256 -> 20, batch 64, 16 % input density): the
    kernels-only model says direct is a little cheaper (within DIRECT_MARGIN); measured
    in a training step it is about 2x slower, so auto keeps it spectral. Without the
    margin the same call would go direct."""
    args = (64, 256, 20, 100, 25, 144631, 8, True, True)
    assert dcls_conv.DIRECT_MARGIN > 1
    assert dcls_conv.choose_method(*args) == "spectral"
    monkeypatch.setattr(dcls_conv, "DIRECT_MARGIN", 1.0)
    assert dcls_conv.choose_method(*args) == "direct"


def test_auto_without_the_kernels_uses_the_spectral_path(monkeypatch):
    x, w, P, S, gy = problem(2, 5, 6, 20, 25, 0.23, dtype=torch.float32)
    want = grads(lambda x, w, P: delay_conv(x, w, P, S, 25, method="spectral"), x, w, P, gy)
    monkeypatch.setattr(native, "available", lambda: False)
    monkeypatch.setattr(dcls_conv, "choose_method", lambda *a: "direct")
    got = grads(lambda x, w, P: delay_conv(x, w, P, S, 25, method="auto"), x, w, P, gy)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    with pytest.raises(KernelError, match="compiled kernels"):
        delay_conv(x, w, P, S, 25, method="direct")


def test_arguments_the_direct_path_cannot_take_are_refused_with_the_fix():
    x, w, P, S, _ = problem(2, 5, 6, 20, 41, 20.0, dtype=torch.float32)
    with pytest.raises(KernelError, match="at most 32 taps"):
        delay_conv(x, w, P, S, 41, method="direct")
    assert delay_conv(x, w, P, S, 41, method="auto").shape == (2, 6, 20)   # spectral
    with pytest.raises(KernelError, match="method must be one of"):
        delay_conv(x, w, P, S, 41, method="fft")
    with pytest.raises(KernelError, match="SIG without a gradient"):
        delay_conv(x, w, P, S.clone().requires_grad_(True), 41, method="direct")
    with pytest.raises(KernelError, match="window > 4"):
        delay_conv(x, w, P, S, 3, method="direct")
    g = dcls_conv._gauss_kernel_and_taps(w, P, torch.full_like(S, 0.23), 41)
    plan = tap_plan(g[1], g[0])
    kr, base_io = dcls_conv.plan_taps(g[0], plan)
    with pytest.raises(KernelError, match="width must be one of"):
        native.multitap_forward(native.spikes(x), kr[..., :4].contiguous(), base_io,
                                plan.max_base)


def test_count_nonzero_of_strided_inputs():
    x, *_ = problem(5, 13, 2, 31, 9, 0.23, dtype=torch.float32, density=0.2)
    for t in (x, x.permute(2, 0, 1).contiguous().permute(1, 2, 0), x[:, ::2, 3:]):
        assert native.count_nonzero(t) == int(torch.count_nonzero(t))
