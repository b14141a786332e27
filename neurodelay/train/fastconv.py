"""Fast, exact replacements for the two hot spots of DelaySNN training on CPU.

1. :func:`delay_conv` -- the dcls ``Dcls1d(version="gauss")`` causal delay convolution,
   ``DelaySynapses.conv(F.pad(x, (window - 1, 0)))``, computed as

       y = iDFT_T( DFT(K)[f] @ DFT(x)[f] )      for every frequency bin f,

   i.e. a linear (not circular) convolution in the frequency domain, with
   N = T + window - 1 points so nothing wraps around. Every transform is a plain
   real matrix product with a cached DFT matrix (faster than torch.fft at these
   sizes), and the per-bin complex products of all bins are one batched real matmul
   that computes the four real products at once. A direct convolution does
   2 * T * window multiply-adds per (batch, in, out) triple; this does about
   8 * (N // 2 + 1) plus the transforms: ~6x fewer at T = 100, window = 25.
   The Gaussian kernel itself is built by :func:`gauss_kernel`, the same math as
   dcls' ``ConstructKernel1d.forward_vgauss`` with a hand-written backward (a few
   passes over the (out, in, window) kernel instead of ~15 autograd nodes). Taps of
   the normalised Gaussian below ``TAP_FLOOR`` (1e-20) are set to 0: invisible in
   float32, but at sigma 0.5 dcls' kernel holds subnormal numbers, which make CPU
   arithmetic 10-50x slower (most of the reference's cost late in training).

   Results equal the dcls path to float32 rounding (the sums run in another order;
   in float64 the two agree to ~1e-14). Because of that order, a membrane within
   rounding of the threshold can occasionally spike in one and not the other: fine
   for training; the discrete (one tap per synapse) model is evaluated through
   :mod:`neurodelay.train.intdelay` with float64 sums instead (see its docstring).

2. :func:`lif_multistep` -- spikingjelly's multi-step LIFNode (decay_input=False,
   hard reset to 0, ATan surrogate, detach_reset=True): the same forward arithmetic
   (bit-equal spikes and membranes), the same surrogate gradient, in one autograd
   node whose forward and backward loops touch one (B, C) slice per step with a few
   fused ops and no boolean-mask ops (slow on CPU). ~2x faster than spikingjelly's.

Shapes follow model.py: the convolution takes and returns (B, C, T); the result is a
permuted view of a (T, B, C) tensor, so ``y.permute(2, 0, 1)`` (what DelaySNN does
next) is free. ``lif_multistep`` is time-major (T, B, ...) like spikingjelly.
"""
from __future__ import annotations

from neurodelay.errors import NeurodelayError

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

DCLS_SIG_OFFSET = 0.27      # dcls: sigma = |SIG| + 0.27
DCLS_NORM_EPS = 1e-7        # dcls: kernel / (sum + 1e-7)
DIRECT_MAX_WINDOW = 4       # windows up to this size use F.conv1d (cheaper than the DFT)
# Normalised Gaussian taps (they sum to 1) below this are set to 0. Far below float32
# resolution (6e-8 relative), so results do not change beyond rounding, but it keeps
# subnormal numbers (< 1.2e-38; they appear at sigma 0.5 seven taps from the centre)
# out of the matrix products, where they make the CPU 10-50x slower.
TAP_FLOOR = 1e-20


class FastConvError(NeurodelayError, ValueError):
    """Bad argument to a fastconv function (shape, window or dtype)."""


# ----------------------------------------------------------------------------- kernel
def _as_matrix(t: torch.Tensor, n_out: int, n_in: int, name: str) -> torch.Tensor:
    if t.numel() != n_out * n_in:
        raise FastConvError(f"{name}: expected {n_out * n_in} elements ({n_out} out x {n_in} "
                            f"in, any of the dcls shapes), got shape {tuple(t.shape)}")
    return t.reshape(n_out, n_in)


def _kernel_shapes(weight, P, SIG, window):
    if weight.dim() not in (2, 3) or (weight.dim() == 3 and weight.shape[2] != 1):
        raise FastConvError(f"weight: expected (out, in) or dcls' (out, in, 1), got shape "
                            f"{tuple(weight.shape)}")
    if int(window) < 1:
        raise FastConvError(f"window must be >= 1, got {window}")
    n_out, n_in = int(weight.shape[0]), int(weight.shape[1])
    return (weight.reshape(n_out, n_in), _as_matrix(P, n_out, n_in, "P"),
            _as_matrix(SIG, n_out, n_in, "SIG"), int(window))


def gauss_kernel_reference(weight, P, SIG, window: int) -> torch.Tensor:
    """dcls' forward_vgauss written with plain autograd ops -> (out, in, window)."""
    w, p, sig, window = _kernel_shapes(weight, P, SIG, window)
    idx = torch.arange(window, dtype=w.dtype, device=w.device)
    z = (idx - (p + window // 2).unsqueeze(-1)) / (sig.abs() + DCLS_SIG_OFFSET).unsqueeze(-1)
    g = torch.exp(-0.5 * (z * z))
    g = g / (g.sum(-1, keepdim=True) + DCLS_NORM_EPS)
    g = torch.where(g < TAP_FLOOR, 0.0, g)
    return g * w.unsqueeze(-1)


class _GaussKernel(torch.autograd.Function):
    """K[o,i,n] = w * g_n / (sum_n g_n + eps), g_n = exp(-z_n^2 / 2), z_n = (n - c) / s.

    Backward (a = sum_n dK_n Xn_n with Xn = g / (sum + eps)):
        dw = a ;  dc = (w / s) * (sum_n dK_n Xn_n z_n - a * sum_n Xn_n z_n)
    """

    @staticmethod
    def forward(ctx, w, p, sig, window):
        idx = torch.arange(window, dtype=w.dtype, device=w.device)
        s = (sig.abs() + DCLS_SIG_OFFSET).unsqueeze(-1)
        z = (idx - (p + window // 2).unsqueeze(-1)).div_(s)          # (o, i, n)
        # exp(-80) = 2e-35: such taps are floored to 0 below anyway; the clamp keeps exp
        # off its slow subnormal path
        g = torch.mul(z, z).mul_(0.5).clamp_(max=80.0).neg_().exp_()
        xn = g.div_(g.sum(-1, keepdim=True).add_(DCLS_NORM_EPS))     # normalised, in place
        xn.masked_fill_(xn < TAP_FLOOR, 0.0)
        ctx.save_for_backward(w, xn, z, s)
        return xn * w.unsqueeze(-1)

    @staticmethod
    def backward(ctx, gk):
        w, xn, z, s = ctx.saved_tensors
        gx = gk * xn                                                   # (o, i, n)
        a = gx.sum(-1)                                                 # dL/dw
        gp = None
        if ctx.needs_input_grad[1]:
            b = (gx * z).sum(-1)
            m = (xn * z).sum(-1)
            gp = (w / s.squeeze(-1)) * (b - a * m)
        return (a if ctx.needs_input_grad[0] else None), gp, None, None


def gauss_kernel(weight, P, SIG, window: int) -> torch.Tensor:
    """(out, in, window) dense Gaussian delay kernel exactly as dcls builds it.

    weight (out, in[, 1]); P, SIG any shape with out*in elements (dcls: (1, out, in, 1)).
    Tap n of the kernel multiplies x[t - (window - 1) + n]; the Gaussian is centred on
    P + window // 2 with std |SIG| + 0.27 and normalised by its sum + 1e-7.
    Taps of the normalised Gaussian below TAP_FLOOR are 0 (see the module docstring).
    Differentiable w.r.t. weight and P; SIG gets no gradient (it is scheduled, not
    learned; pass a SIG with requires_grad to fall back to plain autograd).
    """
    w, p, sig, window = _kernel_shapes(weight, P, SIG, window)
    if sig.requires_grad and torch.is_grad_enabled():
        return gauss_kernel_reference(weight, P, SIG, window)
    return _GaussKernel.apply(w, p, sig.detach(), window)


# ----------------------------------------------------------------------------- DFT conv
@lru_cache(maxsize=64)
def _dft_matrices(T: int, window: int, dtype: torch.dtype, device: str):
    """Real DFT matrices for a linear convolution of T steps with a `window`-tap kernel.

    Returns (AX (2F, T), AK (2F, window), G (T, 2F)) with F = N//2 + 1, N = T + window - 1;
    rows 2f / 2f+1 of AX, AK are the real / imaginary parts of bin f; G is the inverse
    (real part) for the first T output steps, columns matching that interleaving.
    """
    n_fft = T + window - 1
    n_bins = n_fft // 2 + 1
    f = torch.arange(n_bins, dtype=torch.float64)
    t = torch.arange(T, dtype=torch.float64)
    lag = (window - 1) - torch.arange(window, dtype=torch.float64)  # tap n is delay window-1-n
    theta = 2.0 * math.pi / n_fft

    def interleave(re, im, dim):
        return torch.stack([re, im], dim=dim + 1).flatten(dim, dim + 1)

    ax = interleave(torch.cos(theta * torch.outer(f, t)), -torch.sin(theta * torch.outer(f, t)), 0)
    ak = interleave(torch.cos(theta * torch.outer(f, lag)),
                    -torch.sin(theta * torch.outer(f, lag)), 0)
    c = torch.full((n_bins,), 2.0, dtype=torch.float64)
    c[0] = 1.0
    if n_fft % 2 == 0:
        c[-1] = 1.0
    ang = theta * torch.outer(t, f)
    g = interleave(torch.cos(ang) * c / n_fft, -torch.sin(ang) * c / n_fft, 1)
    return tuple(m.to(dtype=dtype, device=device).contiguous() for m in (ax, ak, g))


class _BinProduct(torch.autograd.Function):
    """Complex products of all frequency bins as one real batched matmul.

    xs (F, 2B, in) = [X_re; X_im], hs (F, 2out, in) = [H_re; H_im] ->
    (F, 2, B, out) = [Y_re, Y_im] with Y = X H^T (complex). The four real products come
    from P = xs @ hs^T (F, 2B, 2out); the backward builds dL/dP in one allocation
    (autograd through slices would zero-fill and copy P-sized buffers four times).
    """

    @staticmethod
    def forward(ctx, xs, hs):
        n_b, n_out = xs.shape[1] // 2, hs.shape[1] // 2
        p = torch.bmm(xs, hs.transpose(1, 2))
        ys = torch.empty(p.shape[0], 2, n_b, n_out, dtype=p.dtype, device=p.device)
        torch.sub(p[:, :n_b, :n_out], p[:, n_b:, n_out:], out=ys[:, 0])
        torch.add(p[:, :n_b, n_out:], p[:, n_b:, :n_out], out=ys[:, 1])
        ctx.save_for_backward(xs, hs)
        return ys

    @staticmethod
    def backward(ctx, gy):
        xs, hs = ctx.saved_tensors
        n_b, n_out = xs.shape[1] // 2, hs.shape[1] // 2
        g_re, g_im = gy[:, 0], gy[:, 1]
        gp = torch.empty(gy.shape[0], 2 * n_b, 2 * n_out, dtype=gy.dtype, device=gy.device)
        gp[:, :n_b, :n_out] = g_re
        gp[:, :n_b, n_out:] = g_im
        gp[:, n_b:, :n_out] = g_im
        torch.neg(g_re, out=gp[:, n_b:, n_out:])
        gx = torch.bmm(gp, hs) if ctx.needs_input_grad[0] else None
        gh = torch.bmm(gp.transpose(1, 2), xs) if ctx.needs_input_grad[1] else None
        return gx, gh


def _check_conv_args(x: torch.Tensor, kernel: torch.Tensor):
    if x.dim() != 3:
        raise FastConvError(f"x: expected (batch, in, time), got shape {tuple(x.shape)}")
    if kernel.dim() != 3 or kernel.shape[1] != x.shape[1]:
        raise FastConvError(f"kernel: expected (out, {x.shape[1]}, window), got shape "
                            f"{tuple(kernel.shape)} for x of shape {tuple(x.shape)}")
    if not x.is_floating_point() or x.dtype != kernel.dtype:
        raise FastConvError(f"x ({x.dtype}) and kernel ({kernel.dtype}) must share one "
                            f"floating dtype; convert x with x.to(kernel.dtype)")


def causal_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y[b, o, t] = sum_{i, n} kernel[o, i, n] * x[b, i, t - (window - 1) + n] (x = 0 before 0).

    Equal to ``F.conv1d(F.pad(x, (window - 1, 0)), kernel)`` up to float rounding.
    x (B, in, T), kernel (out, in, window) -> (B, out, T), a view of a (T, B, out) tensor.
    """
    _check_conv_args(x, kernel)
    n_b, n_in, T = x.shape
    n_out, _, window = kernel.shape
    if window <= DIRECT_MAX_WINDOW or T == 0:
        return F.conv1d(F.pad(x, (window - 1, 0)), kernel)
    ax, ak, g = _dft_matrices(T, window, kernel.dtype, str(kernel.device))
    n_bins = ax.shape[0] // 2
    # kernel spectrum: (2F, window) @ (window, out*in) -> (F, [re; im] x out, in)
    hs = (ak @ kernel.reshape(n_out * n_in, window).t()).view(n_bins, 2 * n_out, n_in)
    return spectral_conv(x, hs, ax, g)


def spectral_conv(x: torch.Tensor, hs: torch.Tensor, ax: torch.Tensor,
                  g: torch.Tensor) -> torch.Tensor:
    """Linear convolution of x (B, in, T) with a kernel given by its spectrum.

    hs (F, 2 out, in): rows [:out] / [out:] of bin f are the real / imaginary parts of
    the kernel's DFT at bin f; ax, g: the first and last matrices of
    :func:`_dft_matrices` for these T and N. Returns (B, out, T), a view of a
    (T, B, out) tensor. Shared by :func:`causal_conv` (dense kernels) and
    :mod:`neurodelay.train.intdelay` (kernel spectra straight from integer delays).
    """
    n_b, n_in, T = x.shape
    n_bins, n_out = ax.shape[0] // 2, hs.shape[1] // 2
    # input spectrum: (2F, T) @ (T, B*in) -> (F, [re; im] x B, in)
    xt = x.permute(2, 0, 1).reshape(T, n_b * n_in)
    xs = (ax @ xt).view(n_bins, 2 * n_b, n_in)
    ys = _BinProduct.apply(xs, hs).view(2 * n_bins, n_b * n_out)
    y = (g @ ys).view(T, n_b, n_out)
    return y.permute(1, 2, 0)


def delay_conv(x: torch.Tensor, weight, P, SIG, window: int) -> torch.Tensor:
    """What ``DelaySynapses.conv(F.pad(x, (window - 1, 0)))`` computes, faster.

    x (B, in, T); weight (out, in, 1); P, SIG (1, out, in, 1) (dcls' parameters) ->
    (B, out, T). Differentiable w.r.t. x, weight and P (not SIG).
    """
    return causal_conv(x, gauss_kernel(weight, P, SIG, window))


# ----------------------------------------------------------------------------- LIF
def lif_multistep(x: torch.Tensor, tau: float, threshold: float, alpha: float = 5.0,
                  return_v: bool = False):
    """spikingjelly LIFNode(decay_input=False, v_reset=0, ATan(alpha), detach_reset=True).

    x (T, B, ...) input currents -> spikes (T, B, ...) [, membrane after reset, what
    LIFNode stores as ``v_seq``]. The forward arithmetic is spikingjelly's (spikes and
    membranes bit-equal); the gradient is its surrogate rule
    dS/dH = (alpha/2) / (1 + (pi/2 * alpha * (H - threshold))^2), reset detached.
    """
    if x.dim() < 2:
        raise FastConvError(f"x: expected time-major (T, batch, ...), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise FastConvError(f"x: expected a floating tensor, got {x.dtype}")
    if not (math.isfinite(tau) and tau > 1.0):
        raise FastConvError(f"tau must be finite and > 1 (spikingjelly's rule), got {tau}")
    out = _LIFFn.apply(x, float(tau), float(threshold), float(alpha), bool(return_v))
    return out


class _LIFFn(torch.autograd.Function):
    """Spikes (surrogate gradient) [and membrane sequence] of a LIF layer, one autograd node.

    The state is kept negated, n = -v, so the reset is one ``F.threshold`` (keep n where
    n > -threshold, i.e. h < threshold, else 0) instead of slow boolean-mask ops; negation
    is exact, so n - n/tau - x = -(v - v/tau + x) bit for bit. Every step works on one
    (B, C) slice that stays in cache; the backward also runs step by step:
        dh[t] = dS[t] * sg(h[t] - th) + (dV[t] + carry) * (1 - S[t]),  carry = dh - dh/tau.
    """

    @staticmethod
    def forward(ctx, x, tau, threshold, alpha, want_v):
        nh = torch.empty_like(x, memory_format=torch.contiguous_format)   # -h
        n = torch.zeros_like(nh[0])                                       # -v
        tau_t = torch.tensor(tau, dtype=x.dtype, device=x.device)
        for t in range(x.shape[0]):
            torch.addcdiv(n, n, tau_t, value=-1.0, out=nh[t])            # n - n / tau
            nh[t].sub_(x[t])
            n = F.threshold(nh[t], -threshold, 0.0)
        spikes = (nh <= -threshold).to(x.dtype)
        ctx.save_for_backward(nh, spikes)
        ctx.tau, ctx.threshold, ctx.alpha, ctx.want_v = tau, threshold, alpha, want_v
        if not want_v:
            return spikes
        # v = h where it did not fire, +0 where it did (-0 + 0 = +0)
        return spikes, torch.neg(F.threshold(nh, -threshold, 0.0)).add_(0.0)

    @staticmethod
    def backward(ctx, g_s, g_v=None):
        nh, spikes = ctx.saved_tensors
        th = ctx.threshold
        tau_t = torch.tensor(ctx.tau, dtype=nh.dtype, device=nh.device)
        one = torch.ones((), dtype=nh.dtype, device=nh.device)
        c, half_alpha = math.pi / 2 * ctx.alpha, ctx.alpha / 2
        gx = torch.empty_like(nh)
        z = torch.empty_like(nh[0])
        den = torch.empty_like(nh[0])
        carry = None
        for t in range(nh.shape[0] - 1, -1, -1):
            cin = carry
            if g_v is not None:
                cin = g_v[t] if cin is None else cin + g_v[t]
            gt = gx[t]
            masked = None if cin is None else torch.addcmul(cin, cin, spikes[t], value=-1.0)
            if g_s is not None:
                torch.add(nh[t], th, out=z).mul_(c)                      # -(h - th) * c
                torch.addcmul(one, z, z, out=den)                         # 1 + z^2
                if masked is None:
                    torch.div(g_s[t], den, out=gt).mul_(half_alpha)
                else:
                    torch.addcdiv(masked, g_s[t], den, value=half_alpha, out=gt)
            elif masked is None:
                gt.zero_()
            else:
                gt.copy_(masked)
            carry = torch.addcdiv(gt, gt, tau_t, value=-1.0)              # dh - dh / tau
        return gx, None, None, None, None
