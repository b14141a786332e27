"""The bit-accurate simulator's neurons: Lava's CUBA LIF stepped over all rows of a layer.

Part of :mod:`neurodelay.sim.bitsim`. The integer rules (current update and state wrap of
u, voltage decay toward zero, clip of v, strict threshold, reset to 0, the bias) are
:mod:`neurodelay.hw.fixedpoint`'s; this module runs them over rows, vectorised over
(batch, neurons) in cache-sized blocks, with v held in float64, which is exact (see
:func:`_lif`).
"""
from __future__ import annotations

import numpy as np

from neurodelay.core.network import QLayer
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.fixedpoint import Arith

_LIF_CHUNK = 16384                   # neurons x samples per LIF block (cache-sized)


def _current(layer: QLayer, a_in: np.ndarray, want_stats: bool, st: dict,
             a: Arith, bound: int | None = None) -> np.ndarray:
    """u (R, B, n) int64 for a_in (R, B, n) int64 (|a_in| <= bound, when known): Lava's
    current update, state wrap."""
    act = fp.current_input(a_in, a, bound=bound)

    def wrap(c):
        w = fp.wrap_current(c, a)
        if want_stats:
            st["u_wraps"] += int(np.count_nonzero(w != c))
        return w

    keep = fp.current_keep(layer.du, a)
    if keep == 0:                                   # the current is cleared every step
        return wrap(act)
    R, B, n = a_in.shape
    U = np.empty_like(a_in)
    u = np.zeros((B, n), np.int64)
    for r in range(R):
        u = wrap(fp.current_sum(u, act[r], keep, a))       # = fp.current_step, counted
        U[r] = u
    return U


def _clip_free(drive: np.ndarray, c: float, vth6: float, R: int, limit: int) -> bool:
    """True if v provably stays within +-limit (the state clip), so it can be skipped.

    After every step v <= vth6 (else it spikes and resets), so before the clip
    v <= vth6 + max(drive) (for vth6 >= 0); from below, |v| <= |min(drive)| / (1 - c)
    (geometric decay, c < 1) or R * |min(drive)| (no decay).
    """
    if drive.size == 0:
        return True
    hi, lo = float(drive.max()), float(drive.min())
    pos = max(vth6, 0.0) + max(hi, 0.0)
    neg = -min(lo, 0.0) * (R if c >= 1.0 else min(R, 1.0 / (1.0 - c)))
    return pos <= limit and neg <= limit


def _new_stats() -> dict:
    return {"max_abs_a_in": 0, "u_wraps": 0, "v_clips": 0, "v_max": 0, "v_min": 0,
            "max_abs_u": 0}


def _lif(layer: QLayer, a_in: np.ndarray, a_bound: int, record: bool, want_stats: bool,
         a: Arith):
    """Run Lava's bit-accurate CUBA LIF over all rows of a_in (R, B, n), integer-valued
    float64 with |a_in| <= a_bound.

    Returns (spikes (R, B, n) bool, v_rows, u_rows, stats); v_rows (R, B, n) int64 for
    the readout or when recording, u_rows (int64) when recording, else None.

    v is kept in float64, which is exact here (:func:`neurodelay.hw.fixedpoint.decay`):
    |v| < 2**(S-1), v * keep < 2**53 and the division by 2**dv_bits is a power-of-two
    scaling, so trunc(v * keep / 2**dv_bits) equals Lava's sign(p) * (|p| >> dv_bits).
    """
    R, B, n = a_in.shape
    st = _new_stats()
    if want_stats:
        st["max_abs_a_in"] = int(np.abs(a_in).max(initial=0))
    drive, u_rows = _drive(layer, a_in, a_bound, record, want_stats, st, a)
    keep = fp.voltage_keep(layer.dv, a)
    c = keep / float(1 << a.dv_bits)
    vth6 = float(fp.threshold(fp.layer_vth(layer, a), a))
    need_clip = want_stats or not _clip_free(drive, c, vth6, R, a.v_limit)
    keep_v = record or layer.kind == "li"
    spikes, v_rows, vmax, vmin, clips = _voltage_loop(drive, keep, vth6, need_clip, keep_v,
                                                      want_stats, a)
    if want_stats and R and B:
        st["v_max"] = int(max(vmax.max(initial=0), 0))
        st["v_min"] = int(min(vmin.min(initial=0), 0))
        st["v_clips"] = clips
    st["spikes"] = int(np.count_nonzero(spikes))
    if keep_v:
        v_rows = v_rows.astype(np.int64)
    return spikes, v_rows, u_rows, st


def _drive(layer: QLayer, a_in: np.ndarray, a_bound: int, record: bool, want_stats: bool,
           st: dict, a: Arith):
    """(drive, u_rows): what v gains every row, u + bias (R, B, n) float64, and u (int64)
    when recording, else None; counts u's wraps and max |u| into st."""
    bias = fp.effective_bias(layer.bias_mant, layer.bias_exp).astype(np.float64)
    if fp.current_keep(layer.du, a) == 0 and (a_bound << a.current_shift) < a.state_max:
        # the current is cleared every step and a_in << shift can neither wrap the
        # accumulator nor the state: u = a_in << shift exactly (float64)
        drive = fp.current_input(a_in, a, bound=a_bound)
        if want_stats:
            st["max_abs_u"] = st["max_abs_a_in"] << a.current_shift
        u_rows = drive.astype(np.int64) if record else None
    else:
        U = _current(layer, a_in.astype(np.int64), want_stats, st, a, a_bound)
        if want_stats:
            st["max_abs_u"] = int(np.abs(U).max(initial=0))
        u_rows = U if record else None
        drive = U.astype(np.float64)
        del U
    drive += bias
    return drive, u_rows


def _voltage_loop(drive: np.ndarray, keep: int, vth6: float, need_clip: bool, keep_v: bool,
                  want_stats: bool, a: Arith):
    """Step v over the rows of drive (R, B, n), in blocks of samples that fit the cache:
    decay, add the drive, clip (need_clip), spike on v > vth6, reset to 0.

    Returns (spikes (R, B, n) bool, v_rows (R, B, n) float64 after the reset if keep_v
    else None, per-neuron max and min of v before the clip and the number of clipped
    values (want_stats; else None, None, 0))."""
    R, B, n = drive.shape
    limit = a.v_limit
    spikes = np.zeros((R, B, n), bool)
    v_rows = np.empty((R, B, n), np.float64) if keep_v else None
    vmax = np.full(n, -np.inf) if want_stats else None
    vmin = np.full(n, np.inf) if want_stats else None
    clips = 0
    chunk = max(1, _LIF_CHUNK // max(n, 1))             # keep (chunk, n) in cache
    for b0 in range(0, B, chunk):
        b1 = min(B, b0 + chunk)
        v = np.zeros((b1 - b0, n), np.float64)
        for r in range(R):
            fp.decay_inplace(v, keep, a.dv_bits)
            v += drive[r, b0:b1]
            if want_stats:
                np.maximum(vmax, v.max(axis=0), out=vmax)
                np.minimum(vmin, v.min(axis=0), out=vmin)
                clips += int(np.count_nonzero(np.abs(v) > limit))
            if need_clip:
                fp.clip_voltage(v, a, out=v)
            s = spikes[r, b0:b1]
            np.greater(v, vth6, out=s)
            np.copyto(v, 0.0, where=s)
            if keep_v:
                v_rows[r, b0:b1] = v
    return spikes, v_rows, vmax, vmin, clips


# ----------------------------------------------------------------------------- recurrent

# rows from a spike to the recurrent process's output for Lava delay 0: its one step of
# latency (measured against Lava; tests set it to 2 to see the cross-checks fail)
_REC_LATENCY = 1

def _rec_groups(layer: QLayer, a: Arith) -> list:
    """The recurrent synapse process of ``layer`` as Lava computes it: per Lava delay
    d = rec_delay - 1 of the used synapses, the effective weights (Lava's clip and
    truncation for the recurrent weights' own sign mode) transposed, (d, W_d^T)."""
    w = fp.effective_weights(layer.rec_weight, layer.rec_num_weight_bits, a)
    d_lava = fp.lava_rec_delay(layer.rec_delay)
    used = w != 0
    return [(int(d), np.where(used & (d_lava == d), w, 0).T.copy())
            for d in np.unique(d_lava[used])]


def _lif_recurrent(layer: QLayer, a_ff: np.ndarray, record: bool, want_stats: bool,
                   a: Arith):
    """A recurrent layer's LIF, stepped row by row in int64 with its recurrent synapse
    process (the event order of :mod:`neurodelay.hw.fixedpoint`, measured against Lava):

    at row r the LIF receives ``a_in = wrap_A(a_ff[r] + rec[r])`` (the two synapse
    processes' outputs, summed in its a_in port), updates u and v and spikes; the
    recurrent process receives those spikes in the same row and adds
    ``shift(W_d @ s, rec_weight_exp)`` (floor per delay group) to its buffer slot for row
    ``r + 1 + d`` (d = rec_delay - 1).

    a_ff: the feed-forward input (R, B, n), integer-valued. Returns (a_in, spikes,
    v_rows, u_rows, stats) like :func:`_lif` (a_in (R, B, n) int64: the total input)."""
    R, B, n = a_ff.shape
    groups = _rec_groups(layer, a)
    wcat = np.concatenate([wt for _, wt in groups], axis=1).astype(np.float64) \
        if groups else None                               # (n, groups * n)
    slots = (max((d for d, _ in groups), default=0)) + _REC_LATENCY + 1
    pending = np.zeros((slots, B, n), np.int64)
    a_tot = np.empty((R, B, n), np.int64)
    spikes = np.zeros((R, B, n), bool)
    keep_v = record or layer.kind == "li"
    v_rows = np.empty((R, B, n), np.int64) if keep_v else None
    u_rows = np.empty((R, B, n), np.int64) if record else None
    st = _new_stats()
    keep_u = fp.current_keep(layer.du, a)
    keep_vv = fp.voltage_keep(layer.dv, a)
    bias = fp.effective_bias(layer.bias_mant, layer.bias_exp)
    vth = fp.threshold(fp.layer_vth(layer, a), a)
    u = np.zeros((B, n), np.int64)
    v = np.zeros((B, n), np.int64)
    vmax, vmin = 0, 0
    ff = np.rint(a_ff).astype(np.int64) if a_ff.dtype != np.int64 else a_ff
    for r in range(R):
        slot = r % slots
        a_in = fp.wrap_bits(ff[r] + pending[slot], a.accumulator_bits)
        pending[slot] = 0
        a_tot[r] = a_in
        c = fp.current_sum(u, fp.current_input(a_in, a), keep_u, a)
        u = fp.wrap_current(c, a)
        v = fp.decay(v, keep_vv, a.dv_bits) + u + bias
        if want_stats:
            st["u_wraps"] += int(np.count_nonzero(u != c))
            st["v_clips"] += int(np.count_nonzero(np.abs(v) > a.v_limit))
            vmax, vmin = max(vmax, int(v.max(initial=0))), min(vmin, int(v.min(initial=0)))
            st["max_abs_u"] = max(st["max_abs_u"], int(np.abs(u).max(initial=0)))
        v = fp.clip_voltage(v, a)
        s = v > vth
        v[s] = 0
        spikes[r] = s
        if keep_v:
            v_rows[r] = v
        if record:
            u_rows[r] = u
        if s.any() and groups:
            # every delay group's sum in one float64 product (exact: |sums| < 2**53)
            sums = np.rint(s.astype(np.float64) @ wcat).astype(np.int64).reshape(B, -1, n)
            for g, (d, _) in enumerate(groups):
                if r + _REC_LATENCY + d < R:
                    t = (r + _REC_LATENCY + d) % slots
                    pending[t] = fp.wrap_bits(
                        pending[t] + fp.shift_sum(sums[:, g], layer.rec_weight_exp),
                        a.accumulator_bits)
    if want_stats:
        st["max_abs_a_in"] = int(np.abs(a_tot).max(initial=0))
        st["v_max"], st["v_min"] = vmax, vmin
    st["spikes"] = int(np.count_nonzero(spikes))
    return a_tot, spikes, v_rows, u_rows, st
