"""The integer-delay synaptic operator: every synapse is one weight at one integer delay.

    y[b, o, t] = sum_i weight[o, i] * x[b, i, t - delay[o, i]]      (x = 0 for t < 0)

This is the paper's Eq. 6: what a DelaySNN computes with fixed delays (``--delays
fixed-random`` / ``none``), what every discrete evaluation computes (positions rounded,
one tap per synapse), and what hardware-exact fine-tuning needs, with gradients.

How :func:`integer_delay_conv` computes it
------------------------------------------
* **Frequency domain** (the general case). A linear convolution over N = T + D points,
  D = the largest delay that still reaches the output (delays >= T contribute nothing),
  exactly like :func:`neurodelay.train.fastconv.causal_conv`, except that the kernel
  spectrum comes straight from the delays: H[f] = W * exp(-2 pi i f d / N). No dense
  (out, in, window) kernel is built and no kernel DFT is taken. The phase factors depend
  only on (delays, T): they are computed once per dtype, in float64 from the exact
  integer angle (f * d) mod N, and cached (LRU keyed by the delays' bytes, at most
  ``PHASE_CACHE_BYTES``). A call then costs one elementwise product W * phase plus
  fastconv's cached real DFT matrices and its batched bin product
  (:func:`~neurodelay.train.fastconv.spectral_conv`, ``_BinProduct``): about
  4 * (N // 2 + 1) multiply-adds per (batch, in, out) triple against conv1d's T * window
  over the whole delay window (~10x fewer at T = 100, window 25), plus the transforms.
* **Direct** when at most ``DIRECT_MAX_DELAYS`` distinct delays reach the output
  (``--delays none`` has one): one matmul per delay, shifted and summed.

Gradients flow to x and weight through plain autograd and ``_BinProduct``'s hand-written
backward; delays are integers and get none. Everything runs in x's dtype.

Precision (measured; tests/test_intdelay.py and tests/test_model.py check it)
-----------------------------------------------------------------------------
The transforms spread rounding over all outputs: an output's error scales with the
magnitudes of the whole transform, not with its own terms as in a direct sum. With
S = max over outputs of sum_i |w_oi| |x_i(t - d_oi)|, measured over six shapes (T 100-200,
in 64-512, inputs spikes / counts up to 2**12, weights up to 16 bits):

* float32: |y - exact| <= ~2 * eps32 * S (eps32 = 1.2e-7). At the SHD shape (140-256-256-20
  layers, T = 100, Td = 25, counts / 10 % spikes, kaiming weights) that is a max error of
  1-3e-6 and an rms of 1.2-2.6e-7 against float64 truth: 3-4x conv1d's own float32
  rounding (max 3-7e-7, rms 3-6e-8). Used for training with fixed delays. Not used for
  evaluation by default: on a trained SHD-shape model (SSHD, 400 test samples, 1.9 M
  hidden spikes) it flipped 1 hidden spike (readout moved by 0.14) where conv1d, this
  operator in float64 and floatsim all agreed with a float64 model.
* float64: |y - exact| <= ~30 * eps64 * S (eps64 = 2.2e-16; worst measured at T = 200),
  i.e. < 2e-5 at S = 2**31. With integer-valued x and weights and S < 2**31 (so also
  |y| < 2**31), ``torch.round(y)`` is the exact integer sum, with a margin of more than
  four orders of magnitude: what hardware-exact fine-tuning relies on.

Decision for the discrete (evaluation) model: ``DelaySynapses.forward(discrete=True)``
computes the sums in float64 and casts them to float32 (``DelaySynapses.discrete_dtype``,
default float64). The cast result is the float32 rounding of a sum exact to ~1e-15, so it
is never further from the true sum than conv1d's float32 sum (readout error against a
float64 model on the SSHD model above: 2.5e-7, conv1d 4.7e-7, floatsim 4.4e-7; 0 hidden
spike flips). ``neurodelay verify`` calls the model's discrete forward, so it uses this
path, and the hidden spike flips it counts against floatsim keep measuring floatsim's
own float32 rounding (BN folded into W, sums grouped by delay). Float64 costs ~2.5x
float32, so the discrete forward is ~1.5x faster than conv1d where float32 would be
~3x (benchmarks/run.py, ``discrete_forward_speedup`` / ``_float32``); set
``discrete_dtype = torch.float32`` on the synapses of a model whose caller only needs
predictions. ``reference=True`` keeps the old float32 conv1d over the whole window.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F

from neurodelay.train.fastconv import FastConvError, _dft_matrices, spectral_conv

DIRECT_MAX_DELAYS = 2             # at most this many distinct delays: one matmul per delay
PHASE_CACHE_BYTES = 512 * 2**20   # phase tables kept (least recently used dropped first)

_PLANS: OrderedDict = OrderedDict()   # (delays, T) -> (span, used delays); small
_PHASES: OrderedDict = OrderedDict()  # (delays, T, dtype) -> (F, 2, out, in) phase table


def _shape(t) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _check_args(x, weight, delay) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise FastConvError(f"x: expected a (batch, in, time) tensor, got {_shape(x)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise FastConvError(f"x: expected float32 or float64, got {x.dtype}")
    n_in = x.shape[1]
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != n_in:
        raise FastConvError(f"weight: expected (out, {n_in}) for x of shape "
                            f"{tuple(x.shape)}, got {_shape(weight)}")
    if weight.dtype != x.dtype:
        raise FastConvError(f"weight ({weight.dtype}) must have x's dtype ({x.dtype}); "
                            f"convert one of them with .to()")
    if not isinstance(delay, torch.Tensor) or tuple(delay.shape) != tuple(weight.shape):
        raise FastConvError(f"delay: expected one per synapse, shape {tuple(weight.shape)}, "
                            f"got {_shape(delay)}")
    if delay.is_floating_point() or delay.is_complex() or delay.dtype == torch.bool:
        raise FastConvError(f"delay: expected an integer tensor, got {delay.dtype}; round "
                            f"it and convert it with .to(torch.int64)")
    if delay.numel() and int(delay.min()) < 0:
        raise FastConvError(f"delay: delays must be >= 0, got {int(delay.min())}")
    if not (x.device == weight.device == delay.device):
        raise FastConvError(f"x ({x.device}), weight ({weight.device}) and delay "
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
    """(F, 2, out, in): [cos; -sin](2 pi f d / N), N = T + span; 0 where d >= T. Cached."""
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
    small = torch.zeros(n_bins, 2, span + 2, dtype=torch.float64, device=dev)
    small[:, 0, :-1] = torch.cos(ang)
    small[:, 1, :-1] = -torch.sin(ang)
    d = delay.detach().to(torch.int64)
    col = torch.where(d < T, d, span + 1).reshape(-1)
    ph = torch.index_select(small.to(dtype).view(2 * n_bins, span + 2), 1, col)
    ph = ph.view(n_bins, 2, *d.shape)
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


def integer_delay_conv(x: torch.Tensor, weight: torch.Tensor, delay: torch.Tensor, *,
                       method: str = "auto") -> torch.Tensor:
    """y[b, o, t] = sum_i weight[o, i] * x[b, i, t - delay[o, i]]  (x = 0 before t = 0).

    x (B, in, T) float32 or float64; weight (out, in) of x's dtype; delay (out, in)
    integer tensor >= 0 (delays >= T reach no output and contribute nothing).
    Returns (B, out, T) in x's dtype, a permuted view of a contiguous (T, B, out)
    tensor. Differentiable w.r.t. x and weight.

    ``method``: "auto" (direct when at most DIRECT_MAX_DELAYS distinct delays reach the
    output, else the frequency domain), "fft" or "direct" (either one forced, for tests
    and benchmarks). Precision: see the module docstring; in float64 with integer-valued
    x and weights ``torch.round(y)`` is the exact integer sum while every output's
    sum_i |w_oi| * |x_i(t - d_oi)| < 2**31. Bad arguments raise FastConvError (a
    NeurodelayError and ValueError) saying which argument and what was expected.
    """
    _check_args(x, weight, delay)
    if method not in ("auto", "fft", "direct"):
        raise FastConvError(f"method must be 'auto', 'fft' or 'direct', got {method!r}")
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
    ph = _phase(delay, T, span, x.dtype, key)                   # (F, 2, out, in)
    ax, _, g = _dft_matrices(T, span + 1, x.dtype, str(x.device))
    hs = (ph * weight).view(ph.shape[0], 2 * n_out, n_in)       # kernel spectrum
    return spectral_conv(x, hs, ax, g)
