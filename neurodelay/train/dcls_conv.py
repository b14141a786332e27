"""The learned-delay synapses' hot spot on CPU: the Gaussian DCLS convolution.

:func:`delay_conv` -- the dcls ``Dcls1d(version="gauss")`` causal delay convolution,
   ``DelaySynapses.conv(F.pad(x, (window - 1, 0)))``, computed as

       y = iDFT_T( DFT(K)[f] @ DFT(x)[f] )      for every frequency bin f,

   i.e. a linear (not circular) convolution in the frequency domain, with
   N = T + window - 1 points so nothing wraps around. Every transform is a plain
   real matrix product with a cached DFT matrix (faster than torch.fft at these
   sizes: rfft / irfft measured 1.7-2.4x slower in float32), and the per-bin complex
   products of all bins are batched real matmuls (:class:`_SpectralConv`, forward and
   backward in one autograd node): four real products per complex one, or from
   ``GAUSS_MIN_BATCH`` samples on Gauss's three. A direct convolution does
   2 * T * window multiply-adds per (batch, in, out) triple; this does about
   8 * (N // 2 + 1) (Gauss: 6 *) plus the transforms: ~6x (~8x) fewer at T = 100,
   window = 25. Scratch buffers of that node are reused from call to call
   (``_scratch``): buffers above glibc's 32 MB mmap threshold would otherwise be mapped
   afresh, and page-faulted, on every call.
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
   :mod:`neurodelay.train.intdelay` (float32 for training and eval, float64 sums for
   verify: see its docstring for the precision policy).

:func:`delay_conv` has a second path, chosen per call (``method="auto"``) by a measured
cost model (:func:`choose_method`): the **multi-tap direct kernels** (C, through
:mod:`neurodelay.train.native`; CPU only, :class:`_MultiTapConv`). Each synapse's
Gaussian is nonzero on a few contiguous taps at small sigma (at sigma 0.5: 9-10 above
TAP_FLOOR, 6-7 above ``DIRECT_TAP_FLOOR_F32`` in float32, see there), and the inputs are
spikes, mostly zero. The forward adds, for every nonzero input x[b, i, s] and every
output o, v * K[o, i, taps] (8, 16 or 32 lanes, :class:`TapPlan`) to the output row at
s + the synapse's smallest delay; the kernel gradient is the same loop with dL/dy read
instead of y written; the input gradient (dense in dL/dy) goes through the spectral path
(:func:`_adjoint_conv`); the kernel gradient is exact at every tap the Gaussian uses, so
_GaussKernel's backward gives dweight and dP as before. Work: nonzero inputs x fan-out
x lanes, against the spectral path's ~3 (N // 2 + 1) per (batch, in, out) triple plus
the transforms. Measured (benchmarks/bench_kernels.py, results/benchmark_kernels_ae7409c.json
``kernels``): at the benchmark's densities (16-26 % nonzero) this is not cheaper: each
8-lane update (load, fma, store of an unaligned output window) costs a few cycles, so
the direct forward reaches ~4-7 % of the matmul peak in useful multiply-adds where the
spectral forward reaches 10-25 %; the cost model then keeps the spectral path, and picks
the direct one for sparse inputs (a few % nonzero) at small sigma, or without a
backward. Sum orders are fixed (one thread per batch item, per output channel for the
kernel gradient): results do not depend on the thread count.

Shapes follow model.py: the convolution takes and returns (B, C, T); the result is a
permuted view of a (T, B, C) tensor, so ``y.permute(2, 0, 1)`` (what DelaySNN does
next) is free.
"""
from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F

from neurodelay.errors import KernelError
from neurodelay.train import native

DCLS_SIG_OFFSET = 0.27      # dcls: sigma = |SIG| + 0.27
DCLS_NORM_EPS = 1e-7        # dcls: kernel / (sum + 1e-7)
DIRECT_MAX_WINDOW = 4       # windows up to this size use F.conv1d (cheaper than the DFT)
# Normalised Gaussian taps (they sum to 1) below this are set to 0. Far below float32
# resolution (6e-8 relative), so results do not change beyond rounding, but it keeps
# subnormal numbers (< 1.2e-38; they appear at sigma 0.5 seven taps from the centre)
# out of the matrix products, where they make the CPU 10-50x slower.
TAP_FLOOR = 1e-20
# The convolution on devices other than the CPU: "spectral" (this module's frequency
# domain: batched matmuls, cuBLAS on a GPU) or "conv1d" (F.conv1d over the window,
# cuDNN on a GPU, what dcls runs). Not yet measured on a GPU (no GPU was available when
# this was written): benchmarks/gpu_check.sh times both, and this is the one switch.
DEVICE_CONV = "spectral"


# ----------------------------------------------------------------------------- kernel
def _as_matrix(t: torch.Tensor, n_out: int, n_in: int, name: str) -> torch.Tensor:
    if t.numel() != n_out * n_in:
        raise KernelError(f"{name}: expected {n_out * n_in} elements ({n_out} out x {n_in} "
                            f"in, any of the dcls shapes), got shape {tuple(t.shape)}")
    return t.reshape(n_out, n_in)


def _kernel_shapes(weight, P, SIG, window):
    if weight.dim() not in (2, 3) or (weight.dim() == 3 and weight.shape[2] != 1):
        raise KernelError(f"weight: expected (out, in) or dcls' (out, in, 1), got shape "
                            f"{tuple(weight.shape)}")
    if int(window) < 1:
        raise KernelError(f"window must be >= 1, got {window}")
    n_out, n_in = int(weight.shape[0]), int(weight.shape[1])
    return (weight.reshape(n_out, n_in), _as_matrix(P, n_out, n_in, "P"),
            _as_matrix(SIG, n_out, n_in, "SIG"), int(window))


def gauss_kernel_reference(weight, P, SIG, window: int,
                           floor: float = TAP_FLOOR) -> torch.Tensor:
    """dcls' forward_vgauss written with plain autograd ops -> (out, in, window); taps of
    the normalised Gaussian below ``floor`` are 0."""
    w, p, sig, window = _kernel_shapes(weight, P, SIG, window)
    idx = torch.arange(window, dtype=w.dtype, device=w.device)
    z = (idx - (p + window // 2).unsqueeze(-1)) / (sig.abs() + DCLS_SIG_OFFSET).unsqueeze(-1)
    g = torch.exp(-0.5 * (z * z))
    g = g / (g.sum(-1, keepdim=True) + DCLS_NORM_EPS)
    g = torch.where(g < floor, 0.0, g)
    return g * w.unsqueeze(-1)


class _GaussKernel(torch.autograd.Function):
    """K[o,i,n] = w * g_n / (sum_n g_n + eps), g_n = exp(-z_n^2 / 2), z_n = (n - c) / s.

    Backward (a = sum_n dK_n Xn_n with Xn = g / (sum + eps)):
        dw = a ;  dc = (w / s) * (sum_n dK_n Xn_n z_n - a * sum_n Xn_n z_n)
    """

    @staticmethod
    def forward(ctx, w, p, sig, window, floor=TAP_FLOOR):
        idx = torch.arange(window, dtype=w.dtype, device=w.device)
        s = (sig.abs() + DCLS_SIG_OFFSET).unsqueeze(-1)
        z = (idx - (p + window // 2).unsqueeze(-1)).div_(s)          # (o, i, n)
        # exp(-80) = 2e-35: such taps are floored to 0 below anyway; the clamp keeps exp
        # off its slow subnormal path
        g = torch.mul(z, z).mul_(0.5).clamp_(max=80.0).neg_().exp_()
        xn = g.div_(g.sum(-1, keepdim=True).add_(DCLS_NORM_EPS))     # normalised, in place
        xn.masked_fill_(xn < floor, 0.0)
        ctx.save_for_backward(w, xn, z, s)
        ctx.mark_non_differentiable(xn)
        ctx.set_materialize_grads(False)
        return xn * w.unsqueeze(-1), xn

    @staticmethod
    def backward(ctx, gk, _g_xn=None):
        if gk is None:
            return None, None, None, None, None
        w, xn, z, s = ctx.saved_tensors
        gx = gk * xn                                                   # (o, i, n)
        a = gx.sum(-1)                                                 # dL/dw
        gp = None
        if ctx.needs_input_grad[1]:
            b = (gx * z).sum(-1)
            m = (xn * z).sum(-1)
            gp = (w / s.squeeze(-1)) * (b - a * m)
        return (a if ctx.needs_input_grad[0] else None), gp, None, None, None


def gauss_kernel(weight, P, SIG, window: int, floor: float = TAP_FLOOR) -> torch.Tensor:
    """(out, in, window) dense Gaussian delay kernel exactly as dcls builds it.

    weight (out, in[, 1]); P, SIG any shape with out*in elements (dcls: (1, out, in, 1)).
    Tap n of the kernel multiplies x[t - (window - 1) + n]; the Gaussian is centred on
    P + window // 2 with std |SIG| + 0.27 and normalised by its sum + 1e-7.
    Taps of the normalised Gaussian below ``floor`` (default TAP_FLOOR, what every
    feed-forward synapse uses; see the module docstring) are 0. Differentiable w.r.t.
    weight and P; SIG gets no gradient (it is scheduled, not learned; pass a SIG with
    requires_grad to fall back to plain autograd).
    """
    return _gauss_kernel_and_taps(weight, P, SIG, window, floor)[0]


def _gauss_kernel_and_taps(weight, P, SIG, window: int, floor: float = TAP_FLOOR):
    """(kernel, normalised Gaussian (out, in, window) or None): :func:`gauss_kernel` and,
    on the hand-written path, the Gaussian itself, whose nonzero taps are the taps whose
    kernel gradient the kernel's backward uses (even where the weight is 0)."""
    w, p, sig, window = _kernel_shapes(weight, P, SIG, window)
    if sig.requires_grad and torch.is_grad_enabled():
        return gauss_kernel_reference(weight, P, SIG, window, floor), None
    return _GaussKernel.apply(w, p, sig.detach(), window, float(floor))


# ----------------------------------------------------------------------------- DFT conv
BIN_CHUNK = 8   # frequency bins per step when the kernel spectrum is built from phases
# Dense kernel spectra (learned delays) use Gauss's three products from this batch size
# on; below it the four-product scheme, whose kernel side (spectrum, its gradient, the
# kernel transform) is 2/3 the size. Measured on the SHD-shape layers (forward +
# backward): four products 15 % faster at batch 64, 1-6 % at 128; Gauss 5-7 % faster at
# 256. (Spectra from phases, integer delays, always use Gauss: faster at every batch.)
GAUSS_MIN_BATCH = 192
# Scratch buffers of _SpectralConv that never leave it are reused from call to call (per
# thread, two slots, up to this many bytes each; larger requests are allocated fresh).
# Buffers over glibc's mmap threshold (32 MB) are otherwise mapped afresh on every call,
# and the page faults of a fresh 50 MB buffer cost ~4x the pass that fills it.
WORKSPACE_MAX_BYTES = 256 * 2**20
_WORKSPACE = threading.local()


def _scratch(slot: int, shape: tuple, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` (like's dtype and device) from slot 0 or 1 of
    this thread's workspace: valid until the next request for the same slot."""
    n_bytes = math.prod(shape) * like.element_size()
    if n_bytes > WORKSPACE_MAX_BYTES:
        return like.new_empty(shape)
    bufs = getattr(_WORKSPACE, "bufs", None)
    if bufs is None:
        bufs = _WORKSPACE.bufs = {}
    key = (slot, like.device)
    buf = bufs.get(key)
    if buf is None or buf.numel() < n_bytes:
        buf = bufs[key] = torch.empty(n_bytes, dtype=torch.uint8, device=like.device)
    return buf[:n_bytes].view(like.dtype).view(shape)


def clear_workspace() -> None:
    """Free this thread's scratch buffers (they are allocated again when needed)."""
    _WORKSPACE.bufs = {}


class DFTMatrices(NamedTuple):
    """Real DFT matrices of one (T, window) linear convolution, F = N//2 + 1 bins,
    N = T + window - 1, for both bin-product schemes of :class:`_SpectralConv`.

    Gauss (three products), bins in blocks: ``ax`` (2F, T) = [Re; Im] of the input's bins,
    ``ak3`` (3F, window) = [Re; Im; Re + Im] of the kernel's bins, ``g`` (T, 2F) the
    inverse (real part) for the first T output steps, its first F columns taking the real
    parts of the output bins, the last F the imaginary parts.
    Pairs (four products), re / im interleaved per bin (row 2f real, 2f + 1 imaginary):
    ``axp`` (2F, T), ``akp`` (2F, window), ``gp`` (T, 2F).
    """

    ax: torch.Tensor
    ak3: torch.Tensor
    g: torch.Tensor
    axp: torch.Tensor
    akp: torch.Tensor
    gp: torch.Tensor


@lru_cache(maxsize=64)
def _dft_matrices(T: int, window: int, dtype: torch.dtype, device: str) -> DFTMatrices:
    """The cached :class:`DFTMatrices` of a T-step convolution with a `window`-tap kernel."""
    n_fft = T + window - 1
    n_bins = n_fft // 2 + 1
    f = torch.arange(n_bins, dtype=torch.float64)
    t = torch.arange(T, dtype=torch.float64)
    lag = (window - 1) - torch.arange(window, dtype=torch.float64)  # tap n is delay window-1-n
    theta = 2.0 * math.pi / n_fft
    c = torch.full((n_bins, 1), 2.0, dtype=torch.float64)
    c[0] = 1.0
    if n_fft % 2 == 0:
        c[-1] = 1.0
    ang_x = theta * torch.outer(f, t)
    ang_k = theta * torch.outer(f, lag)
    xr, xi = torch.cos(ang_x), -torch.sin(ang_x)
    kr, ki = torch.cos(ang_k), -torch.sin(ang_k)

    def pairs(re, im):                       # (F, n) x 2 -> (2F, n), rows interleaved
        return torch.stack([re, im], dim=1).flatten(0, 1)

    mats = DFTMatrices(ax=torch.cat([xr, xi]), ak3=torch.cat([kr, ki, kr + ki]),
                       g=(torch.cat([xr, xi]) * c.repeat(2, 1)).t() / n_fft,
                       axp=pairs(xr, xi), akp=pairs(kr, ki),
                       gp=(pairs(xr, xi) * c.repeat_interleave(2, 0)).t() / n_fft)
    return DFTMatrices(*(m.to(dtype=dtype, device=device).contiguous() for m in mats))


# Gauss's products P1 (Xr Hr), P2 (Xi Hi), P3 ((Xr + Xi)(Hr + Hi)) are stored in the
# order P1, P3, P2 (slot of factor block r, i, s), so that Yr = P1 - P2 and
# Yi = P3 - P1 - P2 land in two adjacent blocks and the inverse transform is one matmul.
_P_SLOT = (0, 2, 1)


def _kernel_chunks(spec, weight, blk, n_bins, buf):
    """(bin range, kernel factor block) pieces of factor block ``blk``: the spectrum's own
    rows, or spec * weight formed BIN_CHUNK bins at a time into ``buf``."""
    base = blk * n_bins
    if weight is None:
        yield 0, n_bins, spec[base:base + n_bins]
        return
    for k0 in range(0, n_bins, BIN_CHUNK):
        k1 = min(k0 + BIN_CHUNK, n_bins)
        yield k0, k1, torch.mul(spec[base + k0:base + k1], weight, out=buf[:k1 - k0])


def _bin_products(a, spec, weight, out, slot, transpose_kernel, out_by_slot=True):
    """out[...] = a[...] @ H (^T) per factor block and bin, H the kernel factor block.

    Forward (transpose_kernel): a = xs in block order r, i, s, out[slot[blk]] = X_blk H^T.
    Backward: a = dL/dP in slot order, out[blk] = dL/dP_slot[blk] @ H_blk.
    """
    n_bins = a.shape[1]
    buf = None
    if weight is not None:
        buf = a.new_empty(min(BIN_CHUNK, n_bins), *spec.shape[1:])
    for blk in range(3):
        src = a[blk] if out_by_slot else a[slot[blk]]
        dst = out[slot[blk]] if out_by_slot else out[blk]
        for k0, k1, h in _kernel_chunks(spec, weight, blk, n_bins, buf):
            torch.bmm(src[k0:k1], h.transpose(1, 2) if transpose_kernel else h,
                      out=dst[k0:k1])


def _weight_grad(dp, xs, spec, weight):
    """dL/dweight = sum over factor blocks and bins of spec * (dL/dP^T @ X), reduced
    BIN_CHUNK bins at a time (the (3F, out, in) product is never whole)."""
    n_bins = xs.shape[1]
    g_w = torch.zeros_like(weight)
    buf = xs.new_empty(min(BIN_CHUNK, n_bins), *spec.shape[1:])
    for blk in range(3):
        base = blk * n_bins
        for k0 in range(0, n_bins, BIN_CHUNK):
            k1 = min(k0 + BIN_CHUNK, n_bins)
            gk = torch.bmm(dp[_P_SLOT[blk], k0:k1].transpose(1, 2), xs[blk, k0:k1],
                           out=buf[:k1 - k0])
            g_w.add_(gk.mul_(spec[base + k0:base + k1]).sum(0))
    return g_w


class _SpectralConv(torch.autograd.Function):
    """Linear convolution through the frequency domain, its per-bin complex products as
    batched real matmuls, with a hand-written backward; one autograd node.

    Per bin f, Y = X H^T with X (B, in), H (out, in) complex, X = Xr + i Xi, H = Hr + i Hi.

    Gauss (``spec`` (3F, out, in) = [Hr; Hi; Hr + Hi] in blocks of F bins): three real
    products P1 = Xr Hr^T, P2 = Xi Hi^T, P3 = (Xr + Xi)(Hr + Hi)^T; Yr = P1 - P2,
    Yi = P3 - P1 - P2; batched over the 3F factor pairs with xs (3F, B, in) =
    [Xr; Xi; Xr + Xi]. Backward (gRe, gIm = dL/dYr, dL/dYi from G^T): dL/dP1 = gRe - gIm,
    dL/dP2 = -(gRe + gIm), dL/dP3 = gIm; with Q_k = dL/dP_k @ H_k: dL/dXr = Q1 + Q3,
    dL/dXi = Q2 + Q3; the kernel factors get dL/dP_k^T @ X_k. Three products per bin
    for each of the two.

    Pairs (``spec`` (2F, out, in), rows [Hr_f; Hi_f] interleaved per bin): the four real
    products at once, P = [Xr; Xi] @ [Hr; Hi]^T (F, 2B, 2out) per bin; Yr = XrHr - XiHi,
    Yi = XrHi + XiHr. Fewer kernel-side values (2F instead of 3F): faster where the kernel
    spectrum and its gradient dominate, i.e. learned delays at small batches
    (:data:`GAUSS_MIN_BATCH`).

    ``weight`` None: ``spec`` is the kernel spectrum and gets the gradient.
    ``weight`` (out, in) (Gauss only): ``spec`` holds phase factors (no gradient) and the
    kernel spectrum is spec * weight; it is formed BIN_CHUNK bins at a time next to the
    matmuls that use it (never whole), and dL/dweight = sum_k spec_k * (dL/dP_k^T @ X_k)
    is reduced chunk by chunk, so neither the spectrum nor its gradient, 3F times the
    size of the weights, goes through memory.
    """

    @staticmethod
    def forward(ctx, x, spec, weight, mats, keep):
        n_b, n_in, T = x.shape
        n_bins = mats.ax.shape[0] // 2
        n_out = spec.shape[1]
        gauss = spec.shape[0] == 3 * n_bins
        # xs: saved for the kernel's gradient if one is needed (keep), else scratch
        xt = x.permute(2, 0, 1).reshape(T, n_b * n_in)
        xs_shape = ((3 if gauss else 2) * n_bins, n_b * n_in)
        xs = x.new_empty(xs_shape) if keep else _scratch(1, xs_shape, x)
        ctx.gauss = gauss
        ctx.save_for_backward(xs if keep else None, spec, weight)
        ctx.mats = mats
        if not gauss:
            torch.mm(mats.axp, xt, out=xs)
            xs = xs.view(n_bins, 2 * n_b, n_in)                            # [Xr; Xi] per bin
            p = _scratch(0, (n_bins, 2 * n_b, 2 * n_out), x)
            torch.bmm(xs, spec.view(n_bins, 2 * n_out, n_in).transpose(1, 2), out=p)
            ys = _scratch(2, (n_bins, 2, n_b, n_out), x)
            torch.sub(p[:, :n_b, :n_out], p[:, n_b:, n_out:], out=ys[:, 0])
            torch.add(p[:, :n_b, n_out:], p[:, n_b:, :n_out], out=ys[:, 1])
            y = torch.mm(mats.gp, ys.view(2 * n_bins, n_b * n_out))
            return y.view(T, n_b, n_out).permute(1, 2, 0)
        xs = xs.view(3, n_bins, n_b * n_in)
        torch.mm(mats.ax, xt, out=xs[:2].view(2 * n_bins, n_b * n_in))
        torch.add(xs[0], xs[1], out=xs[2])
        xs = xs.view(3, n_bins, n_b, n_in)
        # products stored in the order P1, P3, P2, so that Yr, Yi end up adjacent
        p = _scratch(0, (3, n_bins, n_b, n_out), x)
        _bin_products(xs, spec, weight, p, _P_SLOT, transpose_kernel=True)
        p = p.view(3, n_bins, n_b * n_out)
        p[1].sub_(p[0]).sub_(p[2])                                          # Yi
        p[0].sub_(p[2])                                                     # Yr
        y = torch.mm(mats.g, p[:2].view(2 * n_bins, n_b * n_out))
        return y.view(T, n_b, n_out).permute(1, 2, 0)

    @staticmethod
    def backward(ctx, gy):
        xs, spec, weight = ctx.saved_tensors
        mats = ctx.mats
        need_x, need_spec, need_w = ctx.needs_input_grad[:3]
        n_b, n_out, T = gy.shape
        n_bins = mats.ax.shape[0] // 2
        n_in = spec.shape[2]
        gyt = gy.permute(2, 0, 1).reshape(T, n_b * n_out)
        if not ctx.gauss:
            return _SpectralConv._backward_pairs(ctx, gyt, xs, spec, n_b, n_in, n_out, T)
        dp = _scratch(0, (3, n_bins, n_b * n_out), gy)
        torch.mm(mats.g.t(), gyt, out=dp[:2].view(2 * n_bins, n_b * n_out))  # gRe, gIm
        torch.add(dp[0], dp[1], out=dp[2]).neg_()                          # dL/dP2
        dp[0].sub_(dp[1])                                                   # dL/dP1
        dp = dp.view(3, n_bins, n_b, n_out)                                 # P1, P3, P2
        gx = g_spec = g_w = None
        if xs is not None:
            xs = xs.view(3, n_bins, n_b, n_in)
        if need_x:
            q = _scratch(1, (3, n_bins, n_b, n_in), gy)                     # Q1, Q2, Q3
            _bin_products(dp, spec, weight, q, _P_SLOT, transpose_kernel=False,
                          out_by_slot=False)
            q = q.view(3, n_bins, n_b * n_in)
            q[0].add_(q[2])                                                 # dL/dXr
            q[1].add_(q[2])                                                 # dL/dXi
            gxt = torch.mm(mats.ax.t(), q[:2].view(2 * n_bins, n_b * n_in))
            gx = gxt.view(T, n_b, n_in).permute(1, 2, 0)
        if need_spec:
            g_spec = torch.empty_like(spec)
            for blk in range(3):
                torch.bmm(dp[_P_SLOT[blk]].transpose(1, 2), xs[blk],
                          out=g_spec[blk * n_bins:(blk + 1) * n_bins])
        if need_w:
            g_w = _weight_grad(dp, xs, spec, weight)
        return gx, g_spec, g_w, None, None

    @staticmethod
    def _backward_pairs(ctx, gyt, xs, spec, n_b, n_in, n_out, T):
        """Backward of the four-product scheme: dL/dP per bin (F, 2B, 2out) =
        [[gRe, gIm], [gIm, -gRe]] built in one buffer, then [Xr; Xi] and [Hr; Hi] get
        dL/dP @ H and dL/dP^T @ X."""
        mats = ctx.mats
        need_x, need_spec = ctx.needs_input_grad[:2]
        n_bins = mats.ax.shape[0] // 2
        gys = _scratch(2, (2 * n_bins, n_b * n_out), gyt)
        torch.mm(mats.gp.t(), gyt, out=gys)
        gys = gys.view(n_bins, 2, n_b, n_out)
        g_re, g_im = gys[:, 0], gys[:, 1]
        dp = _scratch(0, (n_bins, 2 * n_b, 2 * n_out), gyt)
        dp[:, :n_b, :n_out] = g_re
        dp[:, :n_b, n_out:] = g_im
        dp[:, n_b:, :n_out] = g_im
        torch.neg(g_re, out=dp[:, n_b:, n_out:])
        spec_p = spec.view(n_bins, 2 * n_out, n_in)
        gx = g_spec = None
        if need_x:
            q = _scratch(1, (n_bins, 2 * n_b, n_in), gyt)
            torch.bmm(dp, spec_p, out=q)
            gxt = torch.mm(mats.axp.t(), q.view(2 * n_bins, n_b * n_in))
            gx = gxt.view(T, n_b, n_in).permute(1, 2, 0)
        if need_spec:
            g_spec = torch.bmm(dp.transpose(1, 2), xs.view(n_bins, 2 * n_b, n_in))
            g_spec = g_spec.view(spec.shape)
        return gx, g_spec, None, None, None


def _check_conv_args(x: torch.Tensor, kernel: torch.Tensor):
    if x.dim() != 3:
        raise KernelError(f"x: expected (batch, in, time), got shape {tuple(x.shape)}")
    if kernel.dim() != 3 or kernel.shape[1] != x.shape[1]:
        raise KernelError(f"kernel: expected (out, {x.shape[1]}, window), got shape "
                            f"{tuple(kernel.shape)} for x of shape {tuple(x.shape)}")
    if not x.is_floating_point() or x.dtype != kernel.dtype:
        raise KernelError(f"x ({x.dtype}) and kernel ({kernel.dtype}) must share one "
                            f"floating dtype; convert x with x.to(kernel.dtype)")


def causal_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y[b, o, t] = sum_{i, n} kernel[o, i, n] * x[b, i, t - (window - 1) + n] (x = 0 before 0).

    Equal to ``F.conv1d(F.pad(x, (window - 1, 0)), kernel)`` up to float rounding.
    x (B, in, T), kernel (out, in, window) -> (B, out, T), a view of a (T, B, out) tensor.
    """
    _check_conv_args(x, kernel)
    n_b, n_in, T = x.shape
    n_out, _, window = kernel.shape
    if window <= DIRECT_MAX_WINDOW or T == 0 or (
            x.device.type != "cpu" and DEVICE_CONV == "conv1d"):
        return F.conv1d(F.pad(x, (window - 1, 0)), kernel)
    mats = _dft_matrices(T, window, kernel.dtype, str(kernel.device))
    # kernel spectrum: (3F or 2F, window) @ (window, out*in) -> Gauss's [Hr; Hi; Hr + Hi]
    # blocks, or the four-product scheme's [Hr_f; Hi_f] pairs at small batches
    ak = mats.ak3 if n_b >= GAUSS_MIN_BATCH else mats.akp
    spec = (ak @ kernel.reshape(n_out * n_in, window).t()).view(ak.shape[0], n_out, n_in)
    return spectral_conv(x, spec, mats)


def spectral_conv(x: torch.Tensor, spec: torch.Tensor, mats: DFTMatrices,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Linear convolution of x (B, in, T) with a kernel given by its spectrum.

    ``spec``: (3F, out, in), blocks of F bins holding the real parts, the imaginary parts
    and their sums of the kernel's DFT ([Hr; Hi; Hr + Hi], Gauss's three products); or
    (2F, out, in), [Hr_f; Hi_f] interleaved per bin (four products); or, with ``weight``
    (out, in), phase factors in the Gauss layout whose product with ``weight`` is the
    spectrum (gradient to ``weight``, none to ``spec``). ``mats``: :func:`_dft_matrices`
    for these T and N. Returns (B, out, T), a view of a (T, B, out) tensor. Shared by
    :func:`causal_conv` (dense kernels) and :mod:`neurodelay.train.intdelay` (phase
    factors straight from integer delays).
    """
    n_bins = mats.ax.shape[0] // 2
    if spec.dim() != 3 or spec.shape[0] not in (2 * n_bins, 3 * n_bins) or (
            weight is not None and spec.shape[0] != 3 * n_bins):
        raise KernelError(f"spec: expected (3F, out, in) or, without weight, (2F, out, "
                            f"in) with F = {n_bins}, got {tuple(spec.shape)}")
    keep = torch.is_grad_enabled() and (spec.requires_grad or (
        weight is not None and weight.requires_grad))
    return _SpectralConv.apply(x, spec, weight, mats, keep)


# ----------------------------------------------------------------------- multi-tap path
LEARNED_METHODS = ("auto", "spectral", "direct")
# What delay_conv(method=None), i.e. the model, uses: one of LEARNED_METHODS (benchmarks
# and tests set it to time or check one path).
LEARNED_METHOD = "auto"
# Cost model of :func:`delay_conv` (:func:`choose_method`): seconds per unit of work of
# each path's features (:func:`spectral_features`, :func:`direct_features`), fitted by
# benchmarks/bench_kernels.py (least squares on relative error over the SHD / SSC layer
# shapes, batch 16-256, input densities 1-30 %, sigma 0.5; 1 torch thread, the kernels'
# time per thread) on the 2-core Xeon (Sapphire Rapids, AVX-512) of this project, under
# the load of a shared machine; see benchmarks/README.md "Kernels" for the run.
# Spectral forward: per (batch x in x out x frequency bin) and per value transformed.
COST_SPECTRAL = (1.39e-10, 7.42e-11)
# Multi-tap pass (forward or kernel gradient, they cost about the same): per nonzero
# input x fan-out x 8-lane chunk, and per output or kernel value written.
COST_DIRECT = (3.1e-09, 9.97e-11)
# ... and "auto" takes the direct path only where the model says it is at least this many
# times cheaper: the model is fitted on the kernels alone, which leaves out the direct
# path's set-up (the input's nonzero lists, the tap plan, the kernel values in its layout)
# and it moves between CPUs. Measured in a training step's context (forward + backward of
# the SHD readout, 256 -> 20 at sigma 0.5, batch 64) on a 2-core AMD EPYC (Zen 4 class,
# AVX-512): direct 44-47 ms, spectral 21-24 ms, where these constants predict direct
# 1.17x cheaper; the whole shd_b64 step at sigma min 5-15 % faster all-spectral.
DIRECT_MARGIN = 2.0


# float32 direct path: Gaussian taps below this (relative: the normalised Gaussian sums to
# 1) are left out of the multi-tap kernels. Their terms are below 2**-30 = 9.3e-10 of
# sum_i |w x|, i.e. 100x below the float32 rounding every path has (~eps32 = 1.2e-7 of
# that sum: conv1d's sums, the spectral transforms); they would make sigma 0.5's 6-7 taps
# 9-10 and need 16 lanes instead of 8. float64 keeps every tap above TAP_FLOOR.
DIRECT_TAP_FLOOR_F32 = 2.0 ** -30


class TapPlan(NamedTuple):
    """Where each synapse's taps are, for the multi-tap kernels: ``width`` W (8, 16 or 32)
    lanes, from delay ``base`` (the smallest delay with a used tap; -1: a synapse without
    taps) on, ``span`` used taps (first to last); base, span (out, in) int32; ``taps`` the
    mean span. The kernel values in the forward's layout come from :func:`plan_taps`."""

    width: int
    max_base: int
    base: torch.Tensor
    span: torch.Tensor
    taps: float


def tap_plan(gauss: torch.Tensor, kernel: torch.Tensor) -> TapPlan | None:
    """The :class:`TapPlan` of ``kernel`` (out, in, window), whose used taps are those of
    the normalised Gaussian ``gauss`` above TAP_FLOOR (float64) or DIRECT_TAP_FLOOR_F32
    (float32); None when a synapse spans more taps than max(native.MULTITAP_WIDTHS)."""
    floor = DIRECT_TAP_FLOOR_F32 if kernel.dtype == torch.float32 else TAP_FLOOR
    base, span, (kmax, max_base, total) = native.multitap_plan(gauss.detach(), floor)
    fit = [w for w in native.MULTITAP_WIDTHS if w >= kmax]
    if not fit:
        return None
    return TapPlan(fit[0], max_base, base, span, total / max(1, span.numel()))


def plan_taps(kernel: torch.Tensor, plan: TapPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """(kr (in, out, W), base (in, out)): the kernel values of ``plan``'s taps in the
    layout of :func:`neurodelay.train.native.multitap_forward`."""
    return native.multitap_taps(kernel, plan.base, plan.span, plan.width)


def _adjoint_conv(gy: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """dL/dx of the causal convolution: gx[b, i, s] = sum_{o, n} kernel[o, i, n] *
    gy[b, o, s + window - 1 - n], i.e. the causal convolution of gy reversed in time with
    the transposed kernel, reversed back (through :func:`causal_conv`)."""
    with torch.no_grad():
        return causal_conv(gy.flip(-1), kernel.detach().transpose(0, 1)).flip(-1)


class _MultiTapConv(torch.autograd.Function):
    """:func:`causal_conv` through the multi-tap direct kernels
    (:func:`neurodelay.train.native.multitap_forward`): forward and kernel gradient over the
    nonzero inputs only; the input gradient (dense in dL/dy) through :func:`_adjoint_conv`.
    The kernel gradient covers each synapse's W taps (:class:`TapPlan`); outside them it is
    0, which is exact for the Gaussian kernels of :func:`delay_conv` (their backward
    multiplies it by the Gaussian, 0 there)."""

    @staticmethod
    def forward(ctx, x, kernel, plan, sp):
        ctx.plan, ctx.sp = plan, sp
        ctx.save_for_backward(kernel)
        kr, base_io = plan_taps(kernel, plan)
        return native.multitap_forward(sp, kr, base_io, plan.max_base).permute(1, 2, 0)

    @staticmethod
    def backward(ctx, gy):
        (kernel,) = ctx.saved_tensors
        plan = ctx.plan
        gx = gk = None
        if ctx.needs_input_grad[0]:
            gx = _adjoint_conv(gy, kernel)
        if ctx.needs_input_grad[1]:
            gk = native.multitap_kernel_grad(gy, ctx.sp, plan.base, plan.width,
                                             plan.max_base, kernel.shape[2])
        return gx, gk, None, None


def spectral_features(B: int, n_in: int, n_out: int, T: int, window: int) -> tuple:
    """Work of one spectral :func:`causal_conv` forward: (bin products, transformed
    values: input, output and kernel sides)."""
    n_bins = (T + window - 1) // 2 + 1
    return (B * n_in * n_out * n_bins,
            (B * (n_in + n_out) * T + n_in * n_out * window) * n_bins)


def direct_features(B: int, n_in: int, n_out: int, T: int, window: int, nnz: int,
                    width: int) -> tuple:
    """Work of one multi-tap pass: (nonzero inputs x fan-out x 8-lane chunks, values
    written or scanned: outputs, kernel, inputs)."""
    return (nnz * n_out * (width // 8), B * n_out * T + n_in * n_out * window + B * n_in * T)


def _cost(coef: tuple, feats: tuple) -> float:
    return sum(c * f for c, f in zip(coef, feats))


def choose_method(B: int, n_in: int, n_out: int, T: int, window: int, nnz: int,
                  width: int, need_x: bool, need_k: bool) -> str:
    """"direct" where the cost model says it is at least DIRECT_MARGIN times cheaper than
    "spectral" for one call of :func:`delay_conv` with its backward, else "spectral":
    spectral = forward x (1 + need_x + need_k) (the backward's two products cost about
    one forward each); direct = multi-tap forward (+ kernel gradient) + the spectral input
    gradient (:func:`_adjoint_conv`)."""
    spec = _cost(COST_SPECTRAL, spectral_features(B, n_in, n_out, T, window))
    t_spec = spec * (1 + need_x + need_k)
    t_dir = _cost(COST_DIRECT, direct_features(B, n_in, n_out, T, window, nnz, width)) * (
        1 + need_k)
    if need_x:
        t_dir += _cost(COST_SPECTRAL, spectral_features(B, n_out, n_in, T, window))
    return "direct" if t_dir * DIRECT_MARGIN < t_spec else "spectral"


def _direct_possible(x: torch.Tensor, window: int) -> bool:
    return (x.device.type == "cpu" and window > DIRECT_MAX_WINDOW and x.shape[2] > 0
            and native.available())


def delay_conv(x: torch.Tensor, weight, P, SIG, window: int, *,
               method: str | None = None) -> torch.Tensor:
    """What ``DelaySynapses.conv(F.pad(x, (window - 1, 0)))`` computes, faster.

    x (B, in, T); weight (out, in, 1); P, SIG (1, out, in, 1) (dcls' parameters) ->
    (B, out, T). Differentiable w.r.t. x, weight and P (not SIG).

    ``method``: "spectral" (:func:`causal_conv`'s frequency domain), "direct" (the
    multi-tap C kernels over the nonzero inputs, :class:`_MultiTapConv`; CPU, compiled
    kernels and at most 32 taps per synapse, else a KernelError) or "auto": direct where
    possible and cheaper by the cost model (:func:`choose_method`), per call; None:
    ``LEARNED_METHOD``.
    """
    if method is None:
        method = LEARNED_METHOD
    if method not in LEARNED_METHODS:
        raise KernelError(f"delay_conv: method must be one of "
                          f"{', '.join(map(repr, LEARNED_METHODS))}, got {method!r}")
    kernel, gauss = _gauss_kernel_and_taps(weight, P, SIG, window)
    if method == "spectral" or (method == "auto" and not _direct_possible(x, int(window))):
        return causal_conv(x, kernel)
    _check_conv_args(x, kernel)
    if method == "direct" and not _direct_possible(x, int(window)):
        raise KernelError(f"delay_conv: method 'direct' needs x on the CPU ({x.device}), "
                          f"a window > {DIRECT_MAX_WINDOW} ({window}), T > 0 and the "
                          f"compiled kernels ({native.status().describe()}); use 'auto'")
    if gauss is None:                      # SIG with a gradient: plain autograd kernel
        if method == "direct":
            raise KernelError("delay_conv: method 'direct' needs SIG without a gradient "
                              "(the hand-written Gaussian kernel); use 'auto'")
        return causal_conv(x, kernel)
    if method == "auto":
        grad = torch.is_grad_enabled()
        shape = (*x.shape[:2], kernel.shape[0], x.shape[2], int(window),
                 native.count_nonzero(x.detach()))
        needs = (grad and x.requires_grad, grad and kernel.requires_grad)

        def pick(width):
            return choose_method(*shape, width, *needs)

        # the narrowest width first: if even that loses, no plan is needed
        if pick(min(native.MULTITAP_WIDTHS)) != "direct":
            return causal_conv(x, kernel)
    plan = tap_plan(gauss, kernel)
    if plan is None:
        if method == "direct":
            raise KernelError(f"delay_conv: method 'direct' handles at most "
                              f"{max(native.MULTITAP_WIDTHS)} taps per synapse; this "
                              f"kernel is wider (sigma too large); use 'auto'")
        return causal_conv(x, kernel)
    if method == "auto" and pick(plan.width) != "direct":
        return causal_conv(x, kernel)
    return _MultiTapConv.apply(x, kernel, plan, native.spikes(x.detach()))
