"""The recurrent Gaussians' tap floor (REC_TAP_FLOOR, recurrent.py's module docstring) and
the taps the time loops use: the kernel equals the plain-autograd Gaussian with that floor,
at sigma 0.5 a synapse keeps 5-6 taps, the taps it drops are below the floor, the
feed-forward kernel keeps dcls_conv.TAP_FLOOR, and ``used_taps`` covers every nonzero tap;
the compiled loop's kernel gradient within the synapses' bands (``grad_taps``).
"""
from __future__ import annotations

import pytest
import torch
from test_recurrent_fast import compiled_loop  # noqa: F401  (autouse: the compiled loop built)

from neurodelay.errors import KernelError
from neurodelay.train import dcls_conv
from neurodelay.train.recurrent import (
    REC_TAP_FLOOR,
    RecurrentSynapses,
    recurrent_gauss_kernel,
    recurrent_lif,
)


def layer(n=24, window=25, sig=0.23, seed=0, dtype=torch.float64):
    rec = RecurrentSynapses(n, window, "learned", torch.Generator().manual_seed(seed)).to(dtype)
    rec.set_sigma(sig)
    return rec


def test_recurrent_kernel_uses_its_own_floor_and_keeps_5_to_6_taps_at_sigma_min():
    rec = layer()
    k = rec.kernel(False).detach()
    sig = rec.SIG.expand(rec.n, rec.n)
    ref = dcls_conv.gauss_kernel_reference(rec.weight, rec.P, sig, rec.window,
                                           floor=REC_TAP_FLOOR).detach()
    assert torch.allclose(k, ref, rtol=1e-12, atol=0)
    assert torch.equal(k != 0, ref != 0)
    nz = (k != 0).sum(-1)
    centre = rec.P.detach() + rec.window // 2
    inside = (centre >= 5) & (centre <= rec.window - 6)      # the Gaussian within the window
    assert int(nz.max()) <= 6 and int(nz[inside].min()) >= 5
    full = dcls_conv.gauss_kernel_reference(rec.weight, rec.P, sig, rec.window).detach()
    assert int((full != 0).sum(-1)[inside].min()) >= 9        # dcls' floor: 9-10 taps
    dropped = (k == 0) & (full != 0)
    assert bool(dropped.any())
    ratio = full[dropped].abs() / rec.weight.detach().abs().unsqueeze(-1).expand_as(full)[dropped]
    assert float(ratio.max()) < REC_TAP_FLOOR
    # the same floor when the sigma offset is not dcls' (recurrent_gauss_kernel)
    k2 = recurrent_gauss_kernel(rec.weight, rec.P, rec.sigma, rec.window).detach()
    assert torch.equal(k2 != 0, k != 0)


def test_feed_forward_gauss_kernel_keeps_tap_floor():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 5, generator=g, dtype=torch.float64)
    p = (torch.rand(6, 5, generator=g, dtype=torch.float64) - 0.5) * 20
    sig = torch.full((6, 5), 0.23, dtype=torch.float64)
    k = dcls_conv.gauss_kernel(w, p, sig, 25).detach()
    ref = dcls_conv.gauss_kernel_reference(w, p, sig, 25, floor=dcls_conv.TAP_FLOOR).detach()
    centre = p + 12
    inside = (centre >= 5) & (centre <= 19)
    assert torch.equal(k != 0, ref != 0) and int((k != 0).sum(-1)[inside].min()) >= 9


@pytest.mark.parametrize("sig", [0.0, 0.23, 0.6, 1.5, 4.0, 12.5])
def test_used_taps_cover_every_nonzero_tap(sig):
    """Positions at both bounds, on taps and half-way between: the taps the loops use
    hold every nonzero tap of the kernel, and no more than one tap of slack per side."""
    for window in (25, 8):
        rec = layer(n=12, window=window, sig=sig, seed=2)
        lo_p, hi_p = rec.position_bounds
        with torch.no_grad():
            rec.P.uniform_(lo_p, hi_p, generator=torch.Generator().manual_seed(3))
            rec.P[0, :6] = torch.tensor([lo_p, hi_p, lo_p + 0.5, hi_p - 0.5, 0.0, 0.5])
        for sub in (slice(None), slice(0, 1)):          # all synapses, then near the bounds
            with torch.no_grad():
                if sub != slice(None):
                    rec.P.fill_(lo_p + 0.49)
            k = rec.kernel(False).detach()
            used = torch.nonzero((k != 0).any(0).any(0)).flatten()
            lo, hi = rec.used_taps(False)
            assert lo <= int(used[0]) and int(used[-1]) < hi, (sig, window, lo, hi, used)
            assert int(used[0]) - lo <= 1 and hi - 1 - int(used[-1]) <= 1


def banded_case(n=37, T=25, B=37, widest=6, seed=7):
    """A kernel whose synapses have bands of 1..widest taps (grad_taps: the bands, with a
    zero weight inside some of them, and one synapse without any), input and dL/ds."""
    g = torch.Generator().manual_seed(seed)
    w = widest + 6
    lo = 2                                                # taps 0, 1 unused
    start = torch.randint(lo, w - widest + 1, (n, n), generator=g)
    width = torch.randint(1, widest + 1, (n, n), generator=g)
    tap = torch.arange(w)
    mask = ((tap >= start.unsqueeze(-1)) & (tap < (start + width).unsqueeze(-1))).double()
    mask[4, 9] = 0.0                                      # a synapse without taps
    kernel = torch.randn(n, n, w, generator=g, dtype=torch.float64) * 0.3 * mask
    kernel[:, 3] *= (torch.rand(n, 1, generator=g) > 0.5)  # zero weights inside bands
    cur = torch.randn(T, B, n, generator=g, dtype=torch.float64) * 0.6 + 0.35
    gs = torch.randn(T, B, n, generator=g, dtype=torch.float64)
    return kernel, mask, cur, gs


def grads(kernel, cur, gs, method, grad_taps=None):
    k = kernel.clone().requires_grad_()
    c = cur.clone().requires_grad_()
    s = recurrent_lif(c, k, 2.0, 1.0, 5.0, method=method, grad_taps=grad_taps)
    (s * gs).sum().backward()
    return s.detach(), c.grad, k.grad


@pytest.mark.parametrize("widest", [6, 13], ids=["one-chunk", "two-chunks"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_banded_kernel_gradient_equals_every_tap_within_the_bands(widest, dtype):
    """grad_taps given: the compiled loop's kernel gradient within every synapse's band
    is the same sum, bit for bit, as without it (and the torch loop's to rounding); 0
    outside; spikes and dL/dcur unchanged; the thread count changes no bit."""
    kernel, mask, cur, gs = (t.to(dtype) for t in banded_case(widest=widest))
    full = grads(kernel, cur, gs, "native")
    band = grads(kernel, cur, gs, "native", grad_taps=mask)
    ref = grads(kernel, cur, gs, "torch", grad_taps=mask)
    inside = mask != 0
    assert 0.05 < float(full[0].mean()) < 0.6
    assert torch.equal(band[0], full[0]) and torch.equal(band[1], full[1])
    assert torch.equal(band[2][inside], full[2][inside])
    assert float(full[2][inside].abs().max()) > 0
    assert float(band[2][~inside].abs().max()) == 0.0
    used = torch.arange(kernel.shape[2]) >= 2
    assert float(full[2][~inside & used].abs().max()) > 0  # computed without grad_taps
    scale = float(ref[2].abs().max())
    rtol = 1e-12 if dtype == torch.float64 else 2e-5
    assert float((band[2] - ref[2])[inside].abs().max()) <= rtol * scale
    n0 = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            again = grads(kernel, cur, gs, "native", grad_taps=mask)
            assert all(torch.equal(a, b) for a, b in zip(again, band))
    finally:
        torch.set_num_threads(n0)


def test_grad_taps_of_the_wrong_shape_are_refused():
    kernel, mask, cur, gs = banded_case()
    with pytest.raises(KernelError, match="grad_taps: expected the kernel's shape"):
        recurrent_lif(cur, kernel, 2.0, 1.0, 5.0, grad_taps=mask[:, :, :5])
