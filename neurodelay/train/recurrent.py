"""Recurrent synapses with learned delays inside a hidden LIF layer (issue 21).

Every hidden neuron i of a recurrent layer receives synapses i <- j from every neuron j of
its own layer (self-connections included), each with its own weight R_ij and its own delay
E_ij >= 1 step: a spike of j fired at step t reaches i at t + E_ij, never in the step that
fired it. The recurrent sum adds into the same synaptic sum as the feed-forward input,
AFTER the feed-forward BatchNorm (the recurrent current is not normalised):

    x_i[t] = BN(W * S_in)_i[t] + sum_j sum_{e=1..Td} K_ij[e] s_j[t - e]
    u[t]   = (1 - 1/tau) u[t-1] + x[t] ;  spike where u >= threshold, then u = 0

Delays are learned the DCLS way: during training K_ij[e] = R_ij g_ij(e) / (eps + sum g),
a Gaussian over the window of Td taps (delays 1..Td) centred on a learnable position,
whose width is the feed-forward synapses' scheduled sigma (|SIG| + 0.27); at evaluation
(the discrete model) each synapse is one weight at one integer delay (the position
rounded), exactly what :func:`neurodelay.train.freeze.freeze` writes as ``rec_weight`` /
``rec_delay`` and :func:`neurodelay.sim.floatsim.recurrent_dynamics` runs.

Tap floor: the recurrent Gaussians zero their normalised taps below REC_TAP_FLOOR = 2**-24,
not the feed-forward synapses' dcls_conv.TAP_FLOOR = 1e-20 (which matches dcls' kernel to
float32 rounding; the recurrent synapses have no reference implementation to match). Such
a tap times the weight is about one float32 ulp of the same synapse's peak term (weight
times its largest tap, >= 0.49 at sigma 0.5): it cannot change the float32 current in a
meaningful way, and its share of the position gradient is of the same order. At sigma 0.5
a synapse then has 5-6 nonzero taps instead of 9-10; every loop (forward, input gradient,
kernel gradient) works on fewer of them. From sigma ~4 on the floor removes no tap of a
25-step window. The discrete model (one tap per synapse) is unaffected.

Position convention (as the feed-forward synapses'): tap n = 0..Td-1 of the kernel is delay
Td - n; the position P is centred, the Gaussian's centre is tap P + Td//2, so
delay = Td - (P + Td//2), P in [-(Td//2), Td-1-Td//2] (delays Td..1).

The time loop (:func:`recurrent_lif`, one autograd node): the feed-forward current of all T
steps is computed first (the fast path of :mod:`neurodelay.train.dcls_conv`); the loop only
adds the recurrent part. Only the kernel taps that can be nonzero for some synapse are used
(``used_taps``: the Gaussians' reach, normalised taps below REC_TAP_FLOOR being exactly 0,
or the integer delays). Two implementations, the same model:

* the compiled loop (``recurrent_kernels.c``, built, cached and loaded as
  :mod:`neurodelay.train.native` builds its kernels; ``method="native"``, the default on
  the CPU in float32). It works on the events: spikes are binary and sparse, and the
  kernel is zero outside each synapse's few taps at small sigma.
  Forward: batch items in groups of 32, their spikes kept as bit masks; the current of
  item g at t is the sum of the kernel rows (tap, j) (taps, then j ascending) of the
  spikes of j at t - delay, a row read once serving every item of the group that fired.
  Input gradient (backward in time, batch items in lanes of 16 / 32 / 64): the LIF
  surrogate step, then the gradient reaching the spikes of earlier steps through the
  recurrent synapses as a sparse product over the kernel's nonzero entries only (rows of
  4 taps sharing one neuron index, in column blocks of 64 neurons).
  Kernel gradient: for every spike of j at t', dK[i, j, tap] += dL/dx[t' + delay, i],
  batch items and steps ascending, only at the taps of each synapse's band (from its
  first to its last tap where the Gaussian is nonzero, ``grad_taps``: the kernel's
  backward multiplies by the Gaussian, so no other tap's gradient is used; the band's
  taps 8 at a time, 8 neurons at a time, in registers), or, for bands wider than
  KGRAD_BAND_MAX_CHUNKS x 8 taps or without ``grad_taps``, at every tap (8 taps x 16
  neurons at a time).
  Each batch item (forward, input gradient) or neuron tile (kernel gradient) is one
  thread's, summed in a fixed order with fma / plain adds: the results do not depend on
  the thread count or the vector width.
* the torch loop (``method="torch"``: other devices, float64 and the discrete model's
  exact path under ``auto``, machines without a C compiler or with NEURODELAY_NATIVE=0;
  the reference the compiled loop is tested against). The layer's spikes are kept
  batch-major in a buffer (B, Td + T, n) that starts with Td zero steps, so the last Td
  spike vectors before step t are the contiguous view buffer[:, t:t+Td] and the recurrent
  current is ONE matrix product per step, (B, m*n) @ (m*n, n), with the m used taps of
  the kernel flattened tap-major. The backward pass runs the LIF surrogate gradient step
  by step backwards (the same rule as :func:`neurodelay.train.lif.lif_multistep`), sends
  each step's current gradient to the earlier spike vectors with one product per step,
  and forms the kernel gradient afterwards from m large products over all steps.

The two agree to float32 rounding (the sums run in another order; in float64 to ~1e-16);
a membrane within rounding of the threshold can therefore spike in one and not the
other, as between dcls_conv and dcls.
"""
from __future__ import annotations

import ctypes
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from neurodelay import cbuild
from neurodelay.errors import KernelError
from neurodelay.train import native
from neurodelay.train.dcls_conv import DCLS_NORM_EPS, DCLS_SIG_OFFSET, _gauss_kernel_and_taps

MODES = ("learned", "fixed-random", "one-step")
METHODS = ("auto", "native", "torch")   # the time loop: compiled, or torch's ops (module doc)
KERNEL_SOURCE = Path(__file__).with_name("recurrent_kernels.c")
KERNEL_ABI = 2
LANE_BLOCKS = (16, 32, 64)              # batch items per lane block of the compiled backward
KGRAD_TILE = 16                         # kernel-gradient neurons per work item (IT in the C)
# the kernel gradient within the synapses' bands (nr_kgrad_band: 8 taps per chunk) when
# the widest band has at most this many chunks; beyond, every tap (nr_kgrad)
KGRAD_BAND_MAX_CHUNKS = 2
MAX_NATIVE_NEURONS = 65535              # the compiled backward's 16-bit column indices
CSR_BLOCK = 64                          # neurons i per column block of that CSR (CB in the C)
ROW_GROUP = 4                           # kernel taps per row group of that CSR (RG in the C)
# The recurrent Gaussians' tap floor: normalised taps below it are 0 (module docstring).
# A tap below 2**-24 times a weight is about one float32 ulp of the same weight times the
# synapse's peak tap (>= 0.49 at sigma 0.5): see the module docstring.
REC_TAP_FLOOR = 2.0 ** -24


def recurrent_gauss_kernel(weight: torch.Tensor, P: torch.Tensor, sigma: float,
                           window: int) -> torch.Tensor:
    """(n, n, window) kernel K[i, j, tap] = w_ij g / (sum g + 1e-7), g the Gaussian over
    the taps centred on P + window // 2 with std ``sigma`` (the effective sigma); taps of
    the normalised Gaussian below REC_TAP_FLOOR are 0. Differentiable w.r.t. weight and P."""
    idx = torch.arange(window, dtype=weight.dtype, device=weight.device)
    z = (idx - (P + window // 2).unsqueeze(-1)) / float(sigma)
    g = torch.exp(-0.5 * (z * z).clamp(max=160.0))
    g = g / (g.sum(-1, keepdim=True) + DCLS_NORM_EPS)
    g = torch.where(g < REC_TAP_FLOOR, torch.zeros((), dtype=g.dtype, device=g.device), g)
    return g * weight.unsqueeze(-1)


class RecurrentSynapses(nn.Module):
    """The recurrent synapses of one hidden layer: weight R (n, n) and a delay position P
    (n, n) per synapse (module docstring). ``mode``: learned (positions trained),
    fixed-random (random integer delays 1..Td, not trained) or one-step (every delay 1:
    a plain recurrent SNN; its window is 1)."""

    discrete_dtype: torch.dtype = torch.float32
    method: str = "auto"                    # the time loop (recurrent_lif's ``method``)
    sigma_offset: float = DCLS_SIG_OFFSET   # effective sigma = |SIG| + this (dcls' rule)

    def __init__(self, n: int, window: int, mode: str, generator: torch.Generator | None = None):
        super().__init__()
        if mode not in MODES:
            raise KernelError(f"recurrent delays must be one of {', '.join(MODES)}, got "
                              f"{mode!r}")
        self.n, self.mode = int(n), mode
        self.window = 1 if mode == "one-step" else int(window)
        self.weight = nn.Parameter(torch.empty(n, n))
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu", generator=generator)
        lo, hi = self.position_bounds
        self.P = nn.Parameter(torch.empty(n, n))
        with torch.no_grad():
            if self.window == 1:
                self.P.fill_(0.0)
            else:
                self.P.uniform_(lo, hi, generator=generator)
                if mode == "fixed-random":
                    self.P.round_()
        self.register_buffer("SIG", torch.tensor(0.23))
        if mode != "learned":
            self.P.requires_grad_(False)

    @property
    def position_bounds(self) -> tuple[float, float]:
        h = self.window // 2
        return -float(h), float(self.window - 1 - h)

    def set_sigma(self, sig: float) -> None:
        self.SIG.fill_(float(sig))

    @property
    def sigma(self) -> float:
        return abs(float(self.SIG)) + self.sigma_offset

    def clamp_positions(self) -> None:
        lo, hi = self.position_bounds
        with torch.no_grad():
            self.P.clamp_(lo, hi)

    def integer_delays(self) -> torch.Tensor:
        """(n, n) int64 delays 1..Td of the discrete model (positions rounded, clamped)."""
        lo, hi = self.position_bounds
        tap = torch.round(self.P.detach()).clamp(lo, hi) + self.window // 2
        return (self.window - tap).to(torch.int64)

    def weight_matrix(self) -> torch.Tensor:
        return self.weight.detach()

    def kernel(self, discrete: bool) -> torch.Tensor:
        """(n, n, window) kernel in tap order (tap n = delay window - n): the Gaussian
        (training) or one tap per synapse, the weight at its integer delay (discrete, and
        every non-learned mode)."""
        return self.kernel_and_taps(discrete)[0]

    def kernel_and_taps(self, discrete: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(kernel, grad_taps): :meth:`kernel` and an (n, n, window) tensor nonzero at the
        taps whose kernel gradient the kernel's backward uses (the Gaussian's nonzero
        taps, even where the weight is 0; the integer delay's tap), or None (every tap:
        the plain-autograd kernels)."""
        if discrete or self.mode != "learned":
            tap = (self.window - self.integer_delays()).unsqueeze(-1)
            k = torch.zeros(self.n, self.n, self.window, dtype=self.weight.dtype,
                            device=self.weight.device)
            return (k.scatter(2, tap, self.weight.unsqueeze(-1)),
                    torch.zeros_like(k).scatter_(2, tap, 1.0))
        if self.sigma_offset == DCLS_SIG_OFFSET:
            # dcls' kernel with its hand-written backward (neurodelay.train.dcls_conv)
            sig = self.SIG.to(self.weight.dtype).expand(self.n, self.n)
            return _gauss_kernel_and_taps(self.weight, self.P, sig, self.window,
                                          floor=REC_TAP_FLOOR)
        return recurrent_gauss_kernel(self.weight, self.P, self.sigma, self.window), None

    def used_taps(self, discrete: bool) -> tuple[int, int]:
        """(lo, hi): the kernel taps lo..hi-1 that can be nonzero (the rest are 0 for
        every synapse and stay out of the time loop's products): the taps of the integer
        delays, or of the Gaussians (normalised taps below REC_TAP_FLOOR are 0: the
        Gaussian's sum is at least its largest tap, >= exp(-1 / (8 sigma^2)), so a tap r
        from the centre with r^2 > 2 sigma^2 ln(1 / REC_TAP_FLOOR) + 1/4 is below the
        floor: beyond 2.93 taps at sigma 0.5)."""
        w = self.window
        if discrete or self.mode != "learned":
            d = self.integer_delays()
            return w - int(d.max()), w - int(d.min()) + 1
        lo_p, hi_p = float(self.P.detach().min()), float(self.P.detach().max())
        reach = math.sqrt(2.0 * self.sigma ** 2 * math.log(1.0 / REC_TAP_FLOOR) + 0.25) + 0.01
        return (max(0, int(math.floor(lo_p + w // 2 - reach))),
                min(w, int(math.ceil(hi_p + w // 2 + reach)) + 1))

    def forward(self, cur: torch.Tensor, tau: float, threshold: float, alpha: float,
                discrete: bool = False) -> torch.Tensor:
        """cur (T, B, n) feed-forward input current (after BatchNorm) -> spikes (T, B, n)
        of the layer with its recurrent synapses (module docstring). The discrete model
        sums the recurrent current in ``discrete_dtype`` (float64: the exact path verify
        uses), cast to cur's dtype."""
        k, grad_taps = self.kernel_and_taps(discrete)
        dt = cur.dtype
        if discrete:
            dt = torch.promote_types(self.discrete_dtype, cur.dtype)
        return recurrent_lif(cur, k.to(dt), tau, threshold, alpha,
                             taps=self.used_taps(discrete), method=self.method,
                             grad_taps=grad_taps)


def _tap_range(kernel: torch.Tensor, taps=None) -> tuple[int, int]:
    """(first tap, m): the taps lo..lo+m-1 of the time loop (``taps`` (lo, hi), or those
    nonzero for some synapse); (0, 0) when there are none."""
    w = kernel.shape[2]
    if taps is None:
        used = torch.nonzero(kernel.detach().abs().amax(dim=(0, 1)) > 0).flatten()
        if used.numel() == 0:
            return 0, 0
        lo, hi = int(used[0]), int(used[-1]) + 1
    else:
        lo, hi = max(0, int(taps[0])), min(w, int(taps[1]))
        if hi <= lo:
            return 0, 0
    return lo, hi - lo


def _flat_kernel(kernel: torch.Tensor, lo: int, m: int) -> torch.Tensor:
    """K_flat (m*n, n) of taps lo..lo+m-1, K_flat[(tap - lo) * n + j, i] = kernel[i, j, tap]."""
    n = kernel.shape[0]
    return kernel[:, :, lo:lo + m].permute(2, 1, 0).reshape(m * n, n)


def recurrent_lif(cur: torch.Tensor, kernel: torch.Tensor, tau: float, threshold: float,
                  alpha: float = 5.0, taps: tuple[int, int] | None = None,
                  method: str = "auto", grad_taps: torch.Tensor | None = None) -> torch.Tensor:
    """Spikes (T, B, n) of a LIF layer (spikingjelly's LIFNode rule, as
    :func:`neurodelay.train.lif.lif_multistep`) whose input at step t is cur[t] (T, B, n)
    plus the recurrent current sum_{j, tap} kernel[i, j, tap] s_j[t - (window - tap)]
    (kernel (n, n, window), tap order: tap n is delay window - n >= 1). The recurrent
    current is computed in the kernel's dtype and added in cur's. Differentiable w.r.t.
    cur and kernel (surrogate gradient ATan(alpha), reset detached). ``taps`` (lo, hi):
    only kernel taps lo..hi-1 can be nonzero (default: found from the kernel).
    ``grad_taps`` (the kernel's shape, or None: every tap): nonzero at the taps whose
    kernel gradient the caller uses; the compiled loop may then return 0 at the other
    taps (it computes each synapse's taps from its first to its last nonzero
    ``grad_taps`` tap, when that is cheaper than all of them); the torch loop ignores it.

    ``method``: ``"native"`` the compiled loop (CPU, cur and kernel both float32 or both
    float64), ``"torch"`` torch's ops (any device and dtypes; the reference),
    ``"auto"`` (default) the compiled loop for float32 on the CPU where it is available
    (:func:`native_status`), else torch's: the float64 path stays on torch's ops."""
    if cur.dim() != 3:
        raise KernelError(f"cur: expected (T, batch, n), got shape {tuple(cur.shape)}")
    n = cur.shape[2]
    if kernel.dim() != 3 or kernel.shape[0] != n or kernel.shape[1] != n:
        raise KernelError(f"kernel: expected ({n}, {n}, window) for a layer of {n} "
                          f"neurons, got shape {tuple(kernel.shape)}")
    if not (math.isfinite(tau) and tau > 1.0):
        raise KernelError(f"tau must be finite and > 1, got {tau}")
    if grad_taps is not None and tuple(grad_taps.shape) != tuple(kernel.shape):
        raise KernelError(f"grad_taps: expected the kernel's shape {tuple(kernel.shape)}, "
                          f"got {tuple(grad_taps.shape)}")
    lo, m = _tap_range(kernel, taps)
    if m == 0:                    # no synapse: one zero tap at delay 1, no kernel gradient
        kernel, lo, m, grad_taps = kernel.detach().new_zeros(n, n, 1), 0, 1, None
    span = kernel.shape[2] - lo   # the longest delay used: the buffer keeps that many steps
    grad = torch.is_grad_enabled() and (cur.requires_grad or kernel.requires_grad)
    if _use_native(cur, kernel, method):
        if grad:
            return _NativeRecurrentLIF.apply(cur, kernel, grad_taps, lo, m, float(tau),
                                             float(threshold), float(alpha))
        with torch.no_grad():
            return _native_forward(cur, _pack(kernel.detach(), lo, m), span, m, float(tau),
                                   float(threshold), keep=False)[0]
    kflat = _flat_kernel(kernel, lo, m)
    if grad:
        return _RecurrentLIF.apply(cur, kflat, span, m, float(tau), float(threshold),
                                   float(alpha))
    with torch.no_grad():
        return _forward(cur, kflat.detach(), span, m, float(tau), float(threshold),
                        keep=False)[0]


# ----------------------------------------------------------------------------- compiled loop
def _declare(lib) -> None:
    P, I64, I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for sfx, R in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        cbuild.bind(lib, f"nr_forward_{sfx}", I32,
                    P, P, P, I64, I64, I64, I64, I64, R, R, P, P, I64, I64)
        cbuild.bind(lib, f"nr_backward_{sfx}", I32,
                    P, P, P, P, P, P, I64, I64, I64, I64, I64, R, R, R, R, I32, P, I64,
                    I64)
        cbuild.bind(lib, f"nr_kgrad_{sfx}", I32,
                    P, P, I64, I64, I64, I64, I64, I64, I64, P, I64, I64)
        cbuild.bind(lib, f"nr_csr_{sfx}", I32, P, I64, I64, P, P, P)
        cbuild.bind(lib, f"nr_pack_{sfx}", I32, P, I64, I64, I64, I64, P, I64, I64)
        cbuild.bind(lib, f"nr_rowcount_{sfx}", I32, P, I64, P, I64, I64)
        cbuild.bind(lib, f"nr_band_{sfx}", I32, P, I64, I64, I64, P, I64, I64)
        cbuild.bind(lib, f"nr_kgrad_band_{sfx}", I32,
                    P, P, P, I64, I64, I64, I64, I64, I64, I64, I64, P, I64, I64)


def native_status() -> native.NativeStatus:
    """Whether the compiled time loop (``recurrent_kernels.c``, built and cached as
    :mod:`neurodelay.train.native` builds its kernels) is in use, and why (not)."""
    return native.load_library(KERNEL_SOURCE, "recurrent", KERNEL_ABI, _declare)[0]


def _use_native(cur: torch.Tensor, kernel: torch.Tensor, method: str) -> bool:
    if method not in METHODS:
        raise KernelError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "torch":
        return False
    fits = (cur.device.type == "cpu" and kernel.device.type == "cpu"
            and cur.dtype == kernel.dtype and cur.dtype in (torch.float32, torch.float64)
            and cur.shape[2] <= MAX_NATIVE_NEURONS and cur.numel() < 2**31)
    if method == "auto":
        return fits and cur.dtype == torch.float32 and native_status().available
    if not fits:
        raise KernelError(f"method='native' needs cur and kernel on the CPU, both float32 "
                          f"or both float64, at most {MAX_NATIVE_NEURONS} neurons and fewer "
                          f"than 2**31 steps x batch x neurons; got {cur.dtype} on "
                          f"{cur.device}, {kernel.dtype} on {kernel.device}, shape "
                          f"{tuple(cur.shape)}; use method='torch'")
    st = native_status()
    if not st.available:
        raise KernelError(f"the compiled recurrent loop is unavailable: {st.reason}; use "
                          f"method='torch'")
    return True


def _kernels(dtype: torch.dtype):
    sfx = {torch.float32: "f32", torch.float64: "f64"}[dtype]
    lib = native.load_library(KERNEL_SOURCE, "recurrent", KERNEL_ABI, _declare)[1]
    return {name: getattr(lib, f"nr_{name}_{sfx}")
            for name in ("forward", "backward", "kgrad", "csr", "pack", "rowcount", "band",
                         "kgrad_band")}


def _check(rc: int) -> None:
    if rc != 0:
        raise KernelError(f"compiled recurrent loop: refused its arguments (code {rc})")


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _pack(kernel: torch.Tensor, lo: int, m: int) -> torch.Tensor:
    """_flat_kernel's K_flat (m*n, n), contiguous, by the compiled transpose."""
    n, _, w = kernel.shape
    kernel = kernel.contiguous()
    kflat = torch.empty(m * n, n, dtype=kernel.dtype)
    native.split_run(_kernels(kernel.dtype)["pack"], n, lambda lo_i, hi_i: (
        kernel.data_ptr(), n, w, lo, m, kflat.data_ptr(), lo_i, hi_i))
    return kflat


def _row_counts(kflat: torch.Tensor) -> torch.Tensor:
    """(m*n,) int64: the nonzero entries of every row of K_flat."""
    counts = torch.empty(kflat.shape[0], dtype=torch.int64)
    native.split_run(_kernels(kflat.dtype)["rowcount"], kflat.shape[0], lambda lo, hi: (
        kflat.data_ptr(), kflat.shape[1], counts.data_ptr(), lo, hi))
    return counts


def _native_forward(cur, kflat, span, m, tau, threshold, keep, counts=None):
    """The compiled step loop over K_flat (contiguous): (spikes (T, B, n), pre-reset states
    -h (T, B, n) or None)."""
    fwd = _kernels(cur.dtype)["forward"]
    cur = cur.contiguous()
    T, B, n = cur.shape
    counts = _row_counts(kflat) if counts is None else counts
    spikes = torch.empty(T, B, n, dtype=cur.dtype)
    states = torch.empty(T, B, n, dtype=cur.dtype) if keep else None
    native.split_run(fwd, B, lambda lo, hi: (
        cur.data_ptr(), kflat.data_ptr(), counts.data_ptr(), T, B, n, m, span, tau, threshold,
        spikes.data_ptr(), _ptr(states), lo, hi))
    return spikes, states


def _bands(grad_taps: torch.Tensor, lo: int, m: int) -> tuple[torch.Tensor, int]:
    """(band (n * n) int32, chunks): every synapse's taps from its first to its last
    nonzero ``grad_taps`` tap among lo..lo+m-1 (start | width << 16, relative to lo) and
    the chunks of 8 taps of the widest (recurrent_kernels.c, nr_band)."""
    n, _, w = grad_taps.shape
    grad_taps = grad_taps.contiguous()
    band = torch.empty(n * n, dtype=torch.int32)
    native.split_run(_kernels(grad_taps.dtype)["band"], n * n, lambda r0, r1: (
        grad_taps.data_ptr(), w, lo, m, band.data_ptr(), r0, r1))
    widest = int(torch.bitwise_right_shift(band, 16).max()) if band.numel() else 0
    return band, -(-widest // 8)


def lane_block(batch: int, threads: int) -> int:
    """Batch items per lane block of the compiled backward: the smallest of LANE_BLOCKS
    that gives every thread one block (64 at most). Any choice gives the same bits."""
    per = -(-batch // max(1, threads))
    return next((lb for lb in LANE_BLOCKS if lb >= per), LANE_BLOCKS[-1])


class _NativeRecurrentLIF(torch.autograd.Function):
    """The compiled step loop, forward and backward, one autograd node: inputs cur and
    the kernel (n, n, window) itself (its taps lo..lo+m-1 are used), so that its gradient
    comes back in the kernel's own layout."""

    @staticmethod
    def forward(ctx, cur, kernel, grad_taps, lo, m, tau, threshold, alpha):
        kflat = _pack(kernel.detach(), lo, m)
        counts = _row_counts(kflat)
        span = kernel.shape[2] - lo
        spikes, states = _native_forward(cur, kflat, span, m, tau, threshold, keep=True,
                                         counts=counts)
        band = None
        if grad_taps is not None and kernel.requires_grad:
            band = _bands(grad_taps.detach().to(kernel.dtype), lo, m)
        ctx.band = band
        ctx.save_for_backward(kflat, counts, spikes, states)
        ctx.shape, ctx.lo, ctx.m, ctx.span = tuple(kernel.shape), lo, m, span
        ctx.tau, ctx.threshold, ctx.alpha = tau, threshold, alpha
        return spikes

    @staticmethod
    def backward(ctx, g_s):
        kflat, counts, spikes, states = ctx.saved_tensors
        fns = _kernels(spikes.dtype)
        T, B, n = spikes.shape
        m, span = ctx.m, ctx.span
        g_s = g_s.to(spikes.dtype).contiguous()
        # K_flat's rows (k, j) in groups of ROW_GROUP taps, their entries in column blocks
        # of CSR_BLOCK neurons i (recurrent_kernels.c, nr_csr)
        groups = -(-m // ROW_GROUP) * n
        rowptr = torch.empty(-(-n // CSR_BLOCK) * groups + 1, dtype=torch.int64)
        cols = torch.empty(groups * n, dtype=torch.int16)     # read as uint16 by the C
        vals = torch.empty(groups * n * ROW_GROUP, dtype=kflat.dtype)
        _check(fns["csr"](kflat.data_ptr(), m, n, rowptr.data_ptr(), cols.data_ptr(),
                          vals.data_ptr()))
        lb = lane_block(B, torch.get_num_threads())
        gx = torch.empty(T, B, n, dtype=spikes.dtype)
        c, half_alpha = math.pi / 2 * ctx.alpha, ctx.alpha / 2
        native.split_run(fns["backward"], -(-B // lb), lambda lo, hi: (
            g_s.data_ptr(), states.data_ptr(), spikes.data_ptr(), vals.data_ptr(),
            cols.data_ptr(), rowptr.data_ptr(), T, B, n, m, span, ctx.tau, ctx.threshold, c,
            half_alpha, lb, gx.data_ptr(), lo, hi))
        g_k = None
        if ctx.needs_input_grad[1]:
            band, nch = ctx.band if ctx.band is not None else (None, 0)
            if nch == 0 and band is not None:             # no tap whose gradient is used
                g_k = torch.zeros(ctx.shape, dtype=spikes.dtype)
            elif band is not None and nch <= KGRAD_BAND_MAX_CHUNKS:
                g_k = torch.empty(ctx.shape, dtype=spikes.dtype)    # every tap written
                native.split_run(fns["kgrad_band"], -(-n // KGRAD_TILE), lambda lo, hi: (
                    spikes.data_ptr(), gx.data_ptr(), band.data_ptr(), T, B, n, m, span,
                    ctx.shape[2], ctx.lo, nch, g_k.data_ptr(), lo, hi))
            else:
                g_k = torch.zeros(ctx.shape, dtype=spikes.dtype)  # taps outside lo..: 0
                native.split_run(fns["kgrad"], -(-n // KGRAD_TILE), lambda lo, hi: (
                    spikes.data_ptr(), gx.data_ptr(), T, B, n, m, span, ctx.shape[2],
                    ctx.lo, g_k.data_ptr(), lo, hi))
        ctx.band = None
        return gx, g_k, None, None, None, None, None, None


# ----------------------------------------------------------------------------- torch loop
def _forward(cur, kflat, span, m, tau, threshold, keep):
    """The step loop: (spikes (T, B, n), pre-reset states -h (T, B, n) or None, spike
    buffer (B, span + T, n) in kflat's dtype)."""
    T, B, n = cur.shape
    step = dict(dtype=cur.dtype, device=cur.device)
    buf = torch.zeros(B, span + T, n, dtype=kflat.dtype, device=cur.device)
    spikes = torch.empty(T, B, n, **step)
    states = torch.empty(T, B, n, **step) if keep else None
    tau_t = torch.tensor(tau, **step)
    v = torch.zeros(B, n, **step)                                     # -v (negated)
    x = torch.empty(B, n, **step)
    rec = torch.empty(B, n, dtype=kflat.dtype, device=cur.device)
    scratch = torch.empty(B, n, **step)
    same = kflat.dtype == cur.dtype
    for t in range(T):
        hist = buf[:, t:t + m].reshape(B, m * n)       # spikes of steps t-span .. t-span+m-1
        torch.mm(hist, kflat, out=rec)
        if same:
            torch.add(cur[t], rec, out=x)
        else:
            torch.add(cur[t], rec.to(cur.dtype), out=x)
        nh = states[t] if keep else scratch
        torch.addcdiv(v, v, tau_t, value=-1.0, out=nh)           # n - n / tau
        nh.sub_(x)                                              # -h
        torch.le(nh, -threshold, out=spikes[t])
        v = F.threshold(nh, -threshold, 0.0) if keep else F.threshold(nh, -threshold, 0.0)
        buf[:, span + t].copy_(spikes[t])
    return spikes, states, buf


class _RecurrentLIF(torch.autograd.Function):
    """The recurrent LIF layer's step loop, forward and backward, one autograd node."""

    @staticmethod
    def forward(ctx, cur, kflat, span, m, tau, threshold, alpha):
        spikes, states, buf = _forward(cur, kflat.detach(), span, m, tau, threshold, keep=True)
        ctx.save_for_backward(kflat, spikes, states, buf)
        ctx.span, ctx.m, ctx.tau, ctx.threshold, ctx.alpha = span, m, tau, threshold, alpha
        return spikes

    @staticmethod
    def backward(ctx, g_s):
        kflat, spikes, nh, buf = ctx.saved_tensors
        span, m, th = ctx.span, ctx.m, ctx.threshold
        T, B, n = spikes.shape
        dt = spikes.dtype
        tau_t = torch.tensor(ctx.tau, dtype=dt, device=spikes.device)
        one = torch.ones((), dtype=dt, device=spikes.device)
        c, half_alpha = math.pi / 2 * ctx.alpha, ctx.alpha / 2
        gx = torch.empty_like(nh)                         # dL/dx[t]: to cur and the kernel
        # dL/d(spike) arriving through the recurrent synapses, batch-major like buf
        g_buf = torch.zeros(B, span + T, n, dtype=kflat.dtype, device=spikes.device)
        kt = kflat.t()
        z = torch.empty(B, n, dtype=dt, device=spikes.device)
        den = torch.empty_like(z)
        gs = torch.empty_like(z)
        tmp = torch.empty(B, m * n, dtype=kflat.dtype, device=spikes.device)
        same = kflat.dtype == dt
        carry = None
        for t in range(T - 1, -1, -1):
            rec_g = g_buf[:, span + t]
            if same:
                torch.add(g_s[t], rec_g, out=gs)
            else:
                torch.add(g_s[t], rec_g.to(dt), out=gs)
            gt = gx[t]
            torch.add(nh[t], th, out=z).mul_(c)                      # -(h - th) * c
            torch.addcmul(one, z, z, out=den)                         # 1 + z^2
            if carry is None:
                torch.div(gs, den, out=gt).mul_(half_alpha)
            else:
                masked = torch.addcmul(carry, carry, spikes[t], value=-1.0)
                torch.addcdiv(masked, gs, den, value=half_alpha, out=gt)
            carry = torch.addcdiv(gt, gt, tau_t, value=-1.0)          # dh - dh / tau
            if t > 0:       # the current at t came from the spikes of t-span .. t-span+m-1
                torch.mm(gt if same else gt.to(kflat.dtype), kt, out=tmp)
                g_buf[:, t:t + m].add_(tmp.view(B, m, n))
        g_k = None
        if ctx.needs_input_grad[1]:
            # dL/dK_flat[(k, j), i] = sum_{t, b} buf[b, t + k, j] gx[t, b, i]
            sp_tm = buf.transpose(0, 1).contiguous()                     # (span + T, B, n)
            g2 = gx.reshape(T * B, n).to(kflat.dtype)
            g_k = torch.empty_like(kflat)
            for k in range(m):
                torch.mm(sp_tm[k:k + T].reshape(T * B, n).t(), g2, out=g_k[k * n:(k + 1) * n])
        return gx, g_k, None, None, None, None, None
