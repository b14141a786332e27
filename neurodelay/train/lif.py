"""The LIF neuron's hot spot on CPU.

:func:`lif_multistep` -- spikingjelly's multi-step LIFNode (decay_input=False,
   hard reset to 0, ATan surrogate, detach_reset=True): the same forward arithmetic
   (bit-equal spikes and membranes), the same surrogate gradient, in one autograd
   node whose forward and backward loops touch one (B, C) slice per step with a few
   fused ops and no boolean-mask ops (slow on CPU). ~2x faster than spikingjelly's.
   Without a gradient to compute (evaluation) the same operations run without keeping
   the (T, B, ...) state for a backward pass.

``lif_multistep`` is time-major (T, B, ...) like spikingjelly.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from neurodelay.errors import KernelError

# ----------------------------------------------------------------------------- LIF
# The LIF loops run one small op per time step on a (B, ...) slice. Split over threads,
# each op wakes the other threads and waits for them: with OMP_WAIT_POLICY=PASSIVE (what
# benchmarks/bench.py sets, advised on shared machines) or a busy machine that costs more
# than the op itself. Measured, 2 threads, PASSIVE, T = 100, slices of 256 x 256: the
# inference loop 31 -> 5.9 ms in one thread, training forward + backward 71 -> 31 ms;
# with libgomp's default spinning one thread is ~10 % slower at that size. From slices
# of 256 x 1024 on, threads win: such loops keep them.
SERIAL_STEP_MAX_NUMEL = 1 << 17


@contextlib.contextmanager
def _serial_steps(step_numel: int):
    """Run the enclosed per-time-step loop in this thread alone when its slices have at
    most SERIAL_STEP_MAX_NUMEL elements; torch's thread count is restored afterwards.
    (OpenMP's thread count is per calling thread, so other threads are not affected.)"""
    n = torch.get_num_threads()
    if n == 1 or step_numel > SERIAL_STEP_MAX_NUMEL:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def lif_multistep(x: torch.Tensor, tau: float, threshold: float, alpha: float = 5.0,
                  return_v: bool = False):
    """spikingjelly LIFNode(decay_input=False, v_reset=0, ATan(alpha), detach_reset=True).

    x (T, B, ...) input currents -> spikes (T, B, ...) [, membrane after reset, what
    LIFNode stores as ``v_seq``]. The forward arithmetic is spikingjelly's (spikes and
    membranes bit-equal); the gradient is its surrogate rule
    dS/dH = (alpha/2) / (1 + (pi/2 * alpha * (H - threshold))^2), reset detached.
    """
    if x.dim() < 2:
        raise KernelError(f"x: expected time-major (T, batch, ...), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise KernelError(f"x: expected a floating tensor, got {x.dtype}")
    if not (math.isfinite(tau) and tau > 1.0):
        raise KernelError(f"tau must be finite and > 1 (spikingjelly's rule), got {tau}")
    if not (torch.is_grad_enabled() and x.requires_grad):
        return _lif_inference(x, float(tau), float(threshold), bool(return_v))
    out = _LIFFn.apply(x, float(tau), float(threshold), float(alpha), bool(return_v))
    return out


def _lif_steps(x: torch.Tensor, tau: float, threshold: float, want_v: bool, keep: bool):
    """The LIF forward, one (B, ...) slice per step: (spikes, membranes or None, pre-reset
    state -h or None). The one home of the forward arithmetic, for training and evaluation.

    ``keep`` (training): the pre-reset state of every step is kept, (T, B, ...), for the
    backward pass. Without it (evaluation) it lives in two slice-sized buffers that stay
    in cache and the reset runs in place; the same operations on the same values, so
    spikes and membranes are bit-equal either way. Spikes are written straight as floats
    (a bool tensor + ``.to()`` costs ~3x such a pass); v = h where it did not fire, +0
    where it did (-0 + 0 = +0)."""
    spikes = torch.empty_like(x, memory_format=torch.contiguous_format)
    v = torch.empty_like(spikes) if want_v else None
    tau_t = torch.tensor(tau, dtype=x.dtype, device=x.device)
    step = dict(dtype=x.dtype, device=x.device)
    states = torch.empty_like(spikes) if keep else None
    bufs = None if keep else (torch.empty(x.shape[1:], **step), torch.empty(x.shape[1:], **step))
    n = torch.zeros(x.shape[1:], **step)                               # -v
    with _serial_steps(n.numel()):
        for t in range(x.shape[0]):
            nh = states[t] if keep else bufs[t % 2]                    # never n's buffer
            torch.addcdiv(n, n, tau_t, value=-1.0, out=nh)             # n - n / tau
            nh.sub_(x[t])                                              # -h
            torch.le(nh, -threshold, out=spikes[t])
            # reset: a new tensor where the state is kept, else in place
            n = F.threshold(nh, -threshold, 0.0) if keep else F.threshold_(nh, -threshold, 0.0)
            if want_v:
                torch.neg(n, out=v[t]).add_(0.0)
    return spikes, v, states


def _lif_inference(x: torch.Tensor, tau: float, threshold: float, want_v: bool):
    """The forward of :class:`_LIFFn` when no gradient is needed (evaluation): nothing kept
    for a backward pass (see :func:`_lif_steps`)."""
    spikes, v, _ = _lif_steps(x, tau, threshold, want_v, keep=False)
    return (spikes, v) if want_v else spikes


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
        spikes, v, nh = _lif_steps(x, tau, threshold, want_v, keep=True)
        ctx.save_for_backward(nh, spikes)
        ctx.tau, ctx.threshold, ctx.alpha, ctx.want_v = tau, threshold, alpha, want_v
        return (spikes, v) if want_v else spikes

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
        with _serial_steps(z.numel()):
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
