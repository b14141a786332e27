"""The integer-delay synaptic operator: every synapse is one weight at one integer delay.

    y[b, o, t] = sum_i weight[o, i] * x[b, i, t - delay[o, i]]      (x = 0 for t < 0)

This is the paper's Eq. 6: what a DelaySNN computes with fixed delays (``--delays
fixed-random`` / ``none``), what every discrete evaluation computes (positions rounded,
one tap per synapse), and what hardware-exact fine-tuning needs, with gradients.

How :func:`integer_delay_conv` computes it
------------------------------------------
``method="auto"`` picks, in this order:

* **Direct, one matmul per delay** when at most ``DIRECT_MAX_DELAYS`` distinct delays
  reach the output (``--delays none`` has one): shifted and summed.
* **Native** (CPU, the general case wherever a C compiler is found): the compiled direct
  kernels of :mod:`neurodelay.train.native`. Each output is the ordered sum over its
  synapses, one fused multiply-add per synapse and step: the flops of one dense layer
  without delays, against conv1d's window times as many and the frequency domain's ~3x
  plus the transforms. Forward, dL/dx and dL/dweight; silent inputs and zero weights are
  skipped; results do not depend on the thread count or the machine. At the SHD shape
  (140-256-256-20, T = 100, window 25, 2 threads; benchmarks/results/benchmark.json): a
  fixed-delay training step 6.9x (batch 64) / 8.1x (batch 256) the conv1d path's speed,
  discrete inference 6.8x (the frequency domain below: 3.5x / 4.9x and 3.5x).
* **Frequency domain** (``method="fft"``; also what other devices run, ``DEVICE_METHOD``,
  and the fallback where the kernels cannot be built: :func:`neurodelay.train.native.status`
  says why). On a GPU the alternative is ``method="conv1d"``: the one-tap kernel through
  ``F.conv1d`` over the delay window (cuDNN); ``DEVICE_METHOD`` picks one of the two.
  A linear convolution over N = T + D points, D = the largest delay that still reaches
  the output (delays >= T contribute nothing), exactly like :func:`neurodelay.train.dcls_conv.causal_conv`, except that the kernel
  spectrum comes straight from the delays: H[f] = W * exp(-2 pi i f d / N). No dense
  (out, in, window) kernel is built and no kernel DFT is taken. The phase factors depend
  only on (delays, T): they are computed once per dtype, in float64 from the exact
  integer angle (f * d) mod N, and cached (LRU keyed by the delays' bytes, at most
  ``PHASE_CACHE_BYTES``) in the layout of Gauss's product, [cos; -sin; cos - sin]. A call
  then runs dcls_conv's :class:`~neurodelay.train.dcls_conv._SpectralConv`: cached real
  DFT matrices for the transforms, and per frequency bin three real matrix products
  instead of four (Gauss: Yr = P1 - P2, Yi = P3 - P1 - P2), forward and backward, with
  W * phase formed a few bins at a time next to the matmuls that use it and dL/dW
  reduced the same way. About 3 * (N // 2 + 1) multiply-adds per (batch, in, out)
  triple against conv1d's T * window over the whole delay window (~13x fewer at
  T = 100, window 25), plus the transforms.

Gradients flow to x and weight through the native kernels' or _SpectralConv's
hand-written backward (plain autograd on the one-matmul-per-delay path); delays are
integers and get none. Everything runs in x's dtype.

The frequency-domain path, measured at the SHD shape (the three layers of 140-256-256-20, T = 100, window 25, sums
of their times, 1 thread, one process, variants alternating; benchmarks/bench.py has the
end-to-end figures), each change on top of the previous one, against the previous
version of this operator (four real products per bin from one batched matmul, the whole
W * phase spectrum and its gradient materialised):

==========================================  ===============  ===============  ==============
change                                      train B=64 f32   no grad B=256    no grad B=256
                                            fwd + bwd        float32          float64
==========================================  ===============  ===============  ==============
W * phase formed / dL/dW reduced in chunks  1.26x            1.00x            1.03x
Gauss: 3 real products instead of 4         1.12x            1.11x            1.16x
scratch buffers reused (dcls_conv._scratch)  1.00x            1.12x            1.39x
all together                                1.39x            1.24x            1.67x
==========================================  ===============  ===============  ==============

(238 -> 172 ms, 352 -> 283 ms, 842 -> 504 ms.) The Gauss layout also puts Yr, Yi next to
each other, so the inverse transform is one matmul (was two). Measured and not used:
torch.fft.rfft / irfft instead of the DFT matmuls (1.7-2.4x slower per transform in
float32, about equal in float64); sparse (CSR) input transforms for the spike inputs of
hidden layers (no faster at 3-10 % density once the conversion is counted).

Precision (measured; tests/test_native.py, test_intdelay.py and test_model.py check it)
-----------------------------------------------------------------------------------
Native path: each output is an ordered sum of fused multiply-adds. float32: the error of
a plain float32 sum; at the SHD shape (16 x 256 inputs, spikes / counts, T = 100, window
25, kaiming weights) a max error of 0.5-1.6e-6 and an rms of 0.4-1.2e-7 against float64
truth, 1.5-2.1x (rms 1.2-1.7x) conv1d's float32 error (which sums in blocks), half the
frequency domain's. float64: exact for integer-valued x and weights while the sums stay
below 2**53 (tests compare bit for bit).

Frequency-domain path: the transforms spread rounding over all outputs: an output's
error scales with the magnitudes of the whole transform, not with its own terms as in a
direct sum. With
S = max over outputs of sum_i |w_oi| |x_i(t - d_oi)|, measured over six shapes (T 100-200,
in 64-512, inputs spikes / counts up to 2**12, weights up to 16 bits):

* float32: |y - exact| <= ~2.2 * eps32 * S (eps32 = 1.2e-7; Gauss's product measured no
  worse than the four-product one, 2.5). At the SHD shape (counts / 10 % spikes, kaiming
  weights) that is a max error of 0.7-2e-6 and an rms of 1.3-2.7e-7 against float64 truth:
  2-4x conv1d's own float32 rounding (max 4-7e-7, rms 3-6e-8).
* float64: |y - exact| <= ~30 * eps64 * S (eps64 = 2.2e-16; worst measured at T = 200),
  i.e. < 2e-5 at S = 2**31. With integer-valued x and weights and S < 2**31 (so also
  |y| < 2**31), ``torch.round(y)`` is the exact integer sum, with a margin of more than
  four orders of magnitude: what hardware-exact fine-tuning relies on.

Precision policy of the discrete (evaluation) model (``DelaySynapses.discrete_dtype``):

* FAST path, float32 (the default): training with fixed delays, and the discrete
  evaluation of ``trainer.predict`` (per-epoch validation, ``neurodelay eval``). On a
  trained SHD-shape model (140-256-256-20, learned delays, 20 epochs on sshd_train.h5;
  the 400 test samples of speakers 20-23, 1.69 M hidden spikes) the native path flipped 2
  hidden spikes against an all-float64 model (conv1d in float32: 0; the frequency-domain
  path: the same 2) and no prediction; tests/test_model.py checks that eval's
  predictions equal the exact path's and conv1d's on a trained tiny model and on SSHD.
* EXACT path, float64 sums cast to float32 (``DelaySNN.set_discrete_dtype(torch.float64)``):
  the float32 rounding of a sum exact to ~1e-15, never further from the true sum than
  conv1d's float32 sum (on the model above: 0 hidden spike flips against floatsim, the
  1 flip against the all-float64 model that floatsim has too).
  ``neurodelay verify`` evaluates its PyTorch reference this way and says so
  (``pytorch_path``), so the hidden spike flips it counts against floatsim keep measuring
  floatsim's own float32 rounding (BN folded into W, sums grouped by delay). It costs
  ~2x the fast path (SHD shape, batch 256). ``reference=True`` keeps the old float32
  conv1d over the whole window.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F

from neurodelay.errors import KernelError
from neurodelay.train import native
from neurodelay.train.dcls_conv import _dft_matrices, spectral_conv

METHODS = ("auto", "native", "fft", "direct", "conv1d")
# The general case on devices other than the CPU (the C kernels are CPU-only): "fft" (the
# frequency domain below: batched matmuls, cuBLAS on a GPU) or "conv1d" (the one-tap
# kernel through F.conv1d over the delay window, cuDNN on a GPU). Not yet measured on a
# GPU (none was available when this was written): benchmarks/gpu_check.sh times both;
# this is the one switch. CI runs the same torch paths on the CPU (method="fft" /
# "conv1d" forced) and compares them with the C kernels.
DEVICE_METHOD = "fft"
DIRECT_MAX_DELAYS = 2             # at most this many distinct delays: one matmul per delay
PHASE_CACHE_BYTES = 512 * 2**20   # phase tables kept (least recently used dropped first)

_PLANS: OrderedDict = OrderedDict()   # (delays, T) -> (span, used delays); small
_PHASES: OrderedDict = OrderedDict()  # (delays, T, dtype) -> (F, 2, out, in) phase table


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _check_args(x, weight, delay) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise KernelError(f"x: expected a (batch, in, time) tensor, got {_shape(x)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise KernelError(f"x: expected float32 or float64, got {x.dtype}")
    n_in = x.shape[1]
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != n_in:
        raise KernelError(f"weight: expected (out, {n_in}) for x of shape "
                            f"{tuple(x.shape)}, got {_shape(weight)}")
    if weight.dtype != x.dtype:
        raise KernelError(f"weight ({weight.dtype}) must have x's dtype ({x.dtype}); "
                            f"convert one of them with .to()")
    if not isinstance(delay, torch.Tensor) or tuple(delay.shape) != tuple(weight.shape):
        raise KernelError(f"delay: expected one per synapse, shape {tuple(weight.shape)}, "
                            f"got {_shape(delay)}")
    if delay.is_floating_point() or delay.is_complex() or delay.dtype == torch.bool:
        raise KernelError(f"delay: expected an integer tensor, got {delay.dtype}; round "
                            f"it and convert it with .to(torch.int64)")
    if delay.numel() and int(delay.min()) < 0:
        raise KernelError(f"delay: delays must be >= 0, got {int(delay.min())}")
    if not (x.device == weight.device == delay.device):
        raise KernelError(f"x ({x.device}), weight ({weight.device}) and delay "
                            f"({delay.device}) must be on one device")


def _key(delay: torch.Tensor, T: int) -> tuple:
    d = delay.detach().to(torch.int64).contiguous()
    digest = hashlib.blake2b(d.cpu().numpy().tobytes(), digest_size=16).hexdigest()
    return digest, tuple(d.shape), int(T), str(d.device)


def _plan(delay: torch.Tensor, T: int, key: tuple) -> tuple[int, list[int]]:
    """(span, used): the largest delay < T (0 if none) and the sorted distinct delays < T."""
    hit = _PLANS.get(key)
    if hit is None:
        d = delay.detach().reshape(-1).to(torch.int64)
        d = d[d < T]
        used = torch.nonzero(torch.bincount(d)).flatten().tolist() if d.numel() else []
        hit = (max(used) if used else 0, used)
        _PLANS[key] = hit
        while len(_PLANS) > 64:
            _PLANS.popitem(last=False)
    else:
        _PLANS.move_to_end(key)
    return hit


def _phase(delay: torch.Tensor, T: int, span: int, dtype: torch.dtype,
           key: tuple) -> torch.Tensor:
    """(3F, out, in): blocks [cos; -sin; cos - sin](2 pi f d / N) over the F bins,
    N = T + span; 0 where d >= T. Cached."""
    pkey = (*key, span, dtype)
    hit = _PHASES.get(pkey)
    if hit is not None:
        _PHASES.move_to_end(pkey)
        return hit
    n_fft = T + span
    n_bins = n_fft // 2 + 1
    dev = delay.device
    # the phase of delay k at bin f, from the exact integer angle index (f * k) mod N, for
    # the few distinct delays 0..span; column span + 1 (all zeros) serves delays >= T
    f = torch.arange(n_bins, dtype=torch.int64, device=dev).unsqueeze(1)
    k = torch.arange(span + 1, dtype=torch.int64, device=dev).unsqueeze(0)
    ang = ((f * k) % n_fft).to(torch.float64) * (2.0 * math.pi / n_fft)
    small = torch.zeros(3, n_bins, span + 2, dtype=torch.float64, device=dev)
    small[0, :, :-1] = torch.cos(ang)
    small[1, :, :-1] = -torch.sin(ang)
    small[2] = small[0] + small[1]
    d = delay.detach().to(torch.int64)
    col = torch.where(d < T, d, span + 1).reshape(-1)
    ph = torch.index_select(small.to(dtype).view(3 * n_bins, span + 2), 1, col)
    ph = ph.view(3 * n_bins, *d.shape)
    _PHASES[pkey] = ph
    total = sum(p.numel() * p.element_size() for p in _PHASES.values())
    while len(_PHASES) > 1 and total > PHASE_CACHE_BYTES:
        _, old = _PHASES.popitem(last=False)
        total -= old.numel() * old.element_size()
    return ph


def clear_cache() -> None:
    """Drop every cached phase table and plan (they are rebuilt when needed)."""
    _PLANS.clear()
    _PHASES.clear()


def _direct(x: torch.Tensor, weight: torch.Tensor, delay: torch.Tensor, used: list[int],
            all_reach: bool) -> torch.Tensor:
    """One matmul per distinct delay, shifted and summed -> (B, out, T) view of (T, B, out)."""
    n_b, n_in, T = x.shape
    n_out = weight.shape[0]
    xt = x.permute(2, 0, 1).reshape(T * n_b, n_in)
    y = None
    for d in used:
        w_d = weight
        if len(used) > 1 or not all_reach:
            w_d = weight * (delay == d).to(weight.dtype)
        yd = (xt @ w_d.t()).view(T, n_b, n_out)
        if d:
            yd = F.pad(yd[:T - d], (0, 0, 0, 0, d, 0))
        y = yd if y is None else y + yd
    return y.permute(1, 2, 0)


def general_method(device) -> str:
    """The method "auto" takes on ``device`` when more than DIRECT_MAX_DELAYS delays
    reach the output: the C kernels on the CPU where they are built ("native", else
    "fft"), ``DEVICE_METHOD`` on every other device."""
    if torch.device(device).type != "cpu":
        return DEVICE_METHOD
    return "native" if native.available() else "fft"


def _conv1d(x: torch.Tensor, weight: torch.Tensor, delay: torch.Tensor,
            span: int) -> torch.Tensor:
    """The one-tap kernel (out, in, span + 1) through F.conv1d over the delay window
    (cuDNN on a GPU): tap span - d holds the weight; delays beyond span (>= T) reach no
    output. Plain autograd (scatter, conv1d) gives the gradients of x and weight."""
    reach = delay <= span
    tap = (span - torch.where(reach, delay, span)).unsqueeze(-1)
    w = torch.where(reach, weight, weight.new_zeros(()))
    k = weight.new_zeros(*weight.shape, span + 1).scatter(2, tap, w.unsqueeze(-1))
    return F.conv1d(F.pad(x, (span, 0)), k)


class _NativeConv(torch.autograd.Function):
    """The direct sum through the compiled kernels (:mod:`neurodelay.train.native`):
    forward, dL/dx and dL/dweight; one autograd node, delays get no gradient."""

    @staticmethod
    def forward(ctx, x, weight, delay, span):
        ctx.save_for_backward(x, weight, delay)
        ctx.span = span
        return native.forward(x, weight, delay, span).permute(1, 2, 0)

    @staticmethod
    def backward(ctx, gy):
        x, weight, delay = ctx.saved_tensors
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = native.input_grad(gy, weight, delay, ctx.span).permute(1, 2, 0)
        if ctx.needs_input_grad[1]:
            gw = native.weight_grad(gy, x, delay, ctx.span)
        return gx, gw, None, None


def integer_delay_conv(x: torch.Tensor, weight: torch.Tensor, delay: torch.Tensor, *,
                       method: str = "auto") -> torch.Tensor:
    """y[b, o, t] = sum_i weight[o, i] * x[b, i, t - delay[o, i]]  (x = 0 before t = 0).

    x (B, in, T) float32 or float64; weight (out, in) of x's dtype; delay (out, in)
    integer tensor >= 0 (delays >= T reach no output and contribute nothing).
    Returns (B, out, T) in x's dtype, a permuted view of a contiguous (T, B, out)
    tensor. Differentiable w.r.t. x and weight.

    ``method``: "auto" (direct when at most DIRECT_MAX_DELAYS distinct delays reach the
    output, else the native kernels on the CPU and ``DEVICE_METHOD`` elsewhere),
    "native", "fft", "direct" or "conv1d" (one forced, for tests and benchmarks). Precision: see the module docstring; in float64 with integer-valued
    x and weights ``torch.round(y)`` is the exact integer sum while every output's
    sum_i |w_oi| * |x_i(t - d_oi)| < 2**31. Bad arguments raise KernelError (a
    NeurodelayError and ValueError) saying which argument and what was expected.
    """
    _check_args(x, weight, delay)
    if method not in METHODS:
        raise KernelError(f"method must be one of {', '.join(map(repr, METHODS))}, "
                            f"got {method!r}")
    n_b, n_in, T = x.shape
    n_out = weight.shape[0]
    if 0 in (n_b, n_in, n_out, T):
        # nothing to sum; keep x and weight in the graph so their gradients are zeros
        y = x.new_zeros(T, n_b, n_out) + 0.0 * (x.sum() + weight.sum())
        return y.permute(1, 2, 0)
    key = _key(delay, T)
    span, used = _plan(delay, T, key)
    if method == "direct" or (method == "auto" and len(used) <= DIRECT_MAX_DELAYS):
        if not used:                       # no delay reaches the output: y = 0
            return _direct(x, weight * 0.0, delay, [0], True)
        return _direct(x, weight, delay, used, bool((delay < T).all()))
    if method == "auto":
        method = general_method(x.device)
    if method == "conv1d":
        return _conv1d(x, weight, delay, span)
    if method == "native":
        if x.device.type != "cpu":
            raise KernelError(f"method 'native' runs on the CPU; x is on {x.device}")
        st = native.status()
        if not st.available:
            raise KernelError(f"method 'native': the compiled kernels are unavailable "
                                f"({st.reason}); use method 'auto' or 'fft'")
        return _NativeConv.apply(x, weight, delay, span)
    ph = _phase(delay, T, span, x.dtype, key)                   # (3F, out, in)
    mats = _dft_matrices(T, span + 1, x.dtype, str(x.device))
    return spectral_conv(x, ph, mats, weight=weight)            # spectrum = ph * weight
