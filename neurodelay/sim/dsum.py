"""The simulators' delayed sum, compiled: S[b, t, o] = sum_i w_oi x[b, t - d_oi, i].

(And :func:`recurrent_loop`, the float simulator's step loop of a recurrent layer, whose
recurrent current it adds spike by spike.)

Both simulators spend most of their time here: the float simulator's synaptic sum
(:func:`neurodelay.sim.floatsim.synaptic_sum`) and the bit-accurate simulator's exact
integer synaptic input (:mod:`neurodelay.sim.bitsim_synapses`, with latency 1 + d).
Their numpy paths do one dense product per distinct delay (or a transform over time);
``dsum_kernels.c`` does one multiply-add per synapse and step, the flops of one dense
layer, built on first use by :mod:`neurodelay.cbuild` (no compiler, or
``NEURODELAY_NATIVE=0``: :func:`status` says why, and the callers keep their numpy paths).

Arithmetic: every output element is summed over its synapses in ascending input order
with fused multiply-adds, by one thread, so the result does not depend on the thread
count or the machine. On integer-valued inputs and weights whose partial sums stay below
2**24 (float32) / 2**53 (float64) every sum is exact.

No torch: the simulators run without it.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from neurodelay import cbuild
from neurodelay.errors import SimulationError

KERNEL_SOURCE = Path(__file__).with_name("dsum_kernels.c")
KERNEL_ABI = 3
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _declare(lib) -> None:
    P, I64 = ctypes.c_void_p, ctypes.c_int64
    for sfx in ("f32", "f32d", "f64"):
        cbuild.bind(lib, f"nd_dsum_{sfx}", ctypes.c_int,
                    P, I64, I64, I64, I64, P, P, P, P, I64, I64, P, I64, I64, I64, I64)
    for sfx in ("f32", "f64"):
        R = ctypes.c_float if sfx == "f32" else ctypes.c_double
        cbuild.bind(lib, f"nd_recur_{sfx}", ctypes.c_int,
                    P, I64, I64, P, P, P, P, I64, R, R, R, R, P, P, I64, I64)


def _loaded():
    return cbuild.load(KERNEL_SOURCE, "dsum", KERNEL_ABI, _declare)


def status() -> cbuild.NativeStatus:
    """Whether the compiled delayed sum is in use (built on the first call), and why not."""
    return _loaded()[0]


def available() -> bool:
    return status().available


def delayed_sum(x: np.ndarray, weight: np.ndarray, delay: np.ndarray, dtype,
                time_axis: int = 1, wide: bool = False) -> np.ndarray:
    """S = sum_i weight[o, i] x[.., t - delay[o, i], i] over the steps of ``x``, in
    ``dtype`` (float32 or float64). ``x`` is (B, T, n_in) (``time_axis=1``) or
    (T, B, n_in) (``time_axis=0``); S has the same layout with n_out channels. Synapses
    with weight 0 or a delay >= T are left out. ``wide`` (float32): sum in float64 and
    round once (the float simulator: the float64 sum to float32 rounding, closer than a
    float32 running sum); without it the sum runs in ``dtype`` (exact anyway for the
    bit-accurate simulator's integers below 2**24, and twice the vector width). Raises
    SimulationError when the compiled kernel is unavailable (callers check
    :func:`available` first)."""
    st, lib = _loaded()
    if not st.available:
        raise SimulationError(f"the compiled delayed sum is unavailable: {st.reason}")
    dtype = np.dtype(dtype)
    if dtype not in DTYPES:
        raise SimulationError(f"delayed_sum: dtype must be float32 or float64, got {dtype}")
    if x.ndim != 3 or time_axis not in (0, 1):
        raise SimulationError(f"delayed_sum: x must be 3-d with time on axis 0 or 1, got "
                              f"shape {x.shape}, time_axis {time_axis}")
    weight, delay = np.asarray(weight), np.asarray(delay)
    n_out, n_in = weight.shape
    if x.shape[2] != n_in or delay.shape != weight.shape:
        raise SimulationError(f"delayed_sum: x has {x.shape[2]} inputs, weight "
                              f"{weight.shape}, delay {delay.shape}")
    T = x.shape[time_axis]
    B = x.shape[1 - time_axis]
    out_shape = (B, T, n_out) if time_axis == 1 else (T, B, n_out)
    if B == 0 or T == 0:
        return np.zeros(out_shape, dtype)
    keep = (weight != 0) & (delay < T)
    if np.any(delay[keep] < 0):
        raise SimulationError("delayed_sum: negative delays")
    o_idx, i_idx = np.nonzero(keep)                      # by output, then ascending input
    optr = np.zeros(n_out + 1, np.int64)
    np.cumsum(np.bincount(o_idx, minlength=n_out), out=optr[1:])
    idx = np.ascontiguousarray(i_idx, np.int32)
    dly = np.ascontiguousarray(delay[keep], np.int32)
    val = np.ascontiguousarray(weight[keep], dtype)
    span = int(dly.max()) if dly.size else 0
    x = np.ascontiguousarray(x, dtype)
    S = np.empty(out_shape, dtype)
    if time_axis == 1:
        xsb, xst, ssb, sst = T * n_in, n_in, T * n_out, n_out
    else:
        xsb, xst, ssb, sst = n_in, B * n_in, n_out, B * n_out
    fn = (lib.nd_dsum_f64 if dtype == np.float64 else
          lib.nd_dsum_f32d if wide else lib.nd_dsum_f32)
    cbuild.split_run(fn, B, lambda b0, b1: (
        x.ctypes.data, xsb, xst, T, n_in, optr.ctypes.data, idx.ctypes.data,
        dly.ctypes.data, val.ctypes.data, n_out, span, S.ctypes.data, ssb, sst, b0, b1),
        what="the compiled delayed sum")
    return S


def recurrent_loop(S: np.ndarray, rec_weight: np.ndarray, rec_delay: np.ndarray, *,
                   decay: float, current_decay: float, threshold: float, reset: float,
                   bias: np.ndarray) -> np.ndarray:
    """The membrane recursion of a recurrent "lif" layer on its feed-forward sums S
    (B, T, n) (float32 or float64, overwritten with u), compiled:
    :func:`neurodelay.sim.floatsim.recurrent_dynamics`'s rule, the recurrent current of
    every spike added to the steps it reaches (summed in float64, rounded to S's dtype
    when it is added). Returns the spikes (B, T, n) bool."""
    st, lib = _loaded()
    if not st.available:
        raise SimulationError(f"the compiled recurrent loop is unavailable: {st.reason}")
    dtype = S.dtype
    if dtype not in DTYPES or S.ndim != 3 or not S.flags.c_contiguous:
        raise SimulationError(f"recurrent_loop: S must be a C-contiguous (B, T, n) float32 "
                              f"or float64 array, got {S.dtype} {S.shape}")
    B, T, n = S.shape
    keep = (rec_weight != 0) & (rec_delay < T)
    if np.any(rec_delay[keep] < 1):
        raise SimulationError("recurrent_loop: recurrent delays must be >= 1")
    j_idx, i_idx = np.nonzero(keep.T)                 # by presynaptic j, then ascending i
    cptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(j_idx, minlength=n), out=cptr[1:])
    ridx = np.ascontiguousarray(i_idx, np.int32)
    rdel = np.ascontiguousarray(rec_delay.T[keep.T], np.int32)
    rval = np.ascontiguousarray(rec_weight.T[keep.T], dtype)
    slots = int(rdel.max()) + 1 if rdel.size else 1
    bias = np.ascontiguousarray(np.broadcast_to(bias, (n,)), dtype)
    spikes = np.empty((B, T, n), np.bool_)
    if B == 0 or T == 0:
        return spikes
    fn = lib.nd_recur_f32 if dtype == np.float32 else lib.nd_recur_f64
    t = dtype.type
    cbuild.split_run(fn, B, lambda b0, b1: (
        S.ctypes.data, T, n, cptr.ctypes.data, ridx.ctypes.data, rdel.ctypes.data,
        rval.ctypes.data, slots, t(decay), t(current_decay), t(threshold), t(reset),
        bias.ctypes.data, spikes.ctypes.data, b0, b1), what="the compiled recurrent loop")
    return spikes
