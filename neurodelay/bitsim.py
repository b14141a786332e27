"""Bit-accurate integer simulation of a :class:`~neurodelay.network.QNetwork`, exactly as
Lava 0.10 computes it with ``Loihi2SimCfg(select_tag='fixed_pt')`` -- batched and fast.

Process network simulated (the one :mod:`neurodelay.lavarun` builds)::

    graded input s_in -> [Dense|DelayDense]_0 -> LIF_0 -> ... -> [DelayDense]_{L-1} -> LIF_{L-1}

Time ("Lava timing"): row ``k`` of every array is Lava step ``k + 1`` (0-based rows, as
``lavarun`` records them). ``s_in[:, k]`` enters layer 0's synapse process at row k.

Integer semantics, with the Lava source they reproduce (paths relative to
``site-packages/lava``):

1. Weights (``proc/dense/models.py``, ``PyDelayDenseModelBitAcc.run_spk`` and
   ``AbstractPyDenseModelBitAcc.run_spk``, first step): ``sign_mode =
   determine_sign_mode(weights)`` (``utils/weightutils.py``: excitatory if min >= 0,
   inhibitory if max <= 0, else mixed); ``clip_weights(w, sign_mode, num_bits=8)`` (mixed
   -256..255, excitatory 0..255, inhibitory -255..0); ``truncate_weights(w, sign_mode,
   num_weight_bits)`` = ``(w >> t) << t`` with ``t = 8 - num_weight_bits + (mixed)`` (on
   the negated matrix for inhibitory). So mixed weights with num_weight_bits = 8 lose
   their LSB, rounding toward -inf: [101, -3] -> [100, -4]. See :func:`lava_weights`.
2. Synaptic accumulation (``calc_act`` + ``run_spk`` of the DelayDense model): at row r
   the synapse receives s[r] (hidden layers: binary, ``s_in.astype(bool)``; layer 0:
   graded integer payloads), computes for every delay k the group sum
   ``acc_k = sum_j W_ij [D_ij == k] s_j[r]`` (int64) and shifts it by ``weight_exp``
   (``np.left_shift`` for > 0, else ``np.right_shift``: an arithmetic shift, i.e. floor
   division, rounding toward -inf), then adds it into the int32 buffer ``a_buff[:, k]``.
   The buffer is rolled by one column per step and column 0 is sent *before* the
   accumulation, so group k of row r arrives at the LIF at row ``r + 1 + k``:
   latency 1 + d per layer (plain Dense: 1). The LIF's ``a_in`` is the int32 sum of
   everything arriving at that row.
3. CUBA LIF (``proc/lif/models.py``, ``AbstractPyLifModelFixed.subthr_dynamics`` and
   ``PyLifModelBitAcc``), every row, all layers from row 0 on::

       p  = u * (4096 - (du + 1))                       # int64
       u' = sign(p) * (|p| >> 12)                       # rounds toward zero
       c  = int32(u' + int32(a_in << 6))
       u  = c - 2**24 if c > 2**23 else (c + 2**24 if c <= -2**23 else c)   # 24-bit wrap
       q  = v * (4096 - dv)  ;  v' = sign(q) * (|q| >> 12)
       v  = clip(v' + u + (bias_mant << bias_exp), -(2**23 - 1), 2**23 - 1)
       spike = v > (vth << 6) ;  v[spike] = 0

   (``bias_exp < 0`` right-shifts, as Lava's ``scale_bias``). du = 4095 clears the
   current each step (u = a_in << 6); the bias is added to v unshifted by 6.
   A readout (``kind == "li"``) is a LIF with ``vth = 2**17 - 1`` (as ``lavarun``
   builds it): it spikes only if v exceeds 8,388,544, which quantization avoids.
   Hidden spikes carry payload 1.

Alignment with the float semantics (:mod:`neurodelay.network`): layer l's float step t
is Lava row ``t + l + 1`` (one step of latency per synapse process; the delays are the
same in both). Before that, layer l runs ``l + 1`` rows with no synaptic input
(only its bias; the float model has no such rows): with zero biases the two time axes
match exactly, with nonzero biases the first rows differ by the bias integrated there.
:func:`align_to_float` cuts the readout to the float time axis. The effect of input row
T-1 reaches the readout at row ``T - 1 + L + sum_l max_delay_l``, so the default number of
rows is ``T + L + sum_l max_delay_l`` (:func:`steps_needed`).

Fast path: the synaptic input of a layer does not depend on its own state, so it is
computed for all rows at once, before the LIF loop (layers are feedforward). When
every intermediate fits int32 (checked from bounds; otherwise Lava's int32 wrapping is
reproduced on the exact int64 path) and the weight_exp shift is exact (weight_exp >= 0,
or all weights multiples of 2**-weight_exp) the shift commutes with the sums, and the
total is one delayed convolution over time: computed either as one float matmul per
distinct delay (exact: integers below 2**24 in float32 / 2**53 in float64) or, when
many distinct delays make that slow, with a float64 FFT over time and one complex
matmul per frequency (errors < 1e-6, far below the 0.5 needed to round exactly; checked
at run time). Otherwise the per-group floor shifts are applied exactly as Lava does.
The LIF loop runs over rows, vectorised over (batch, neurons), in int64.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .network import QLayer, QNetwork

LI_VTH = 2 ** 17 - 1                 # threshold mantissa Lava gets for a readout
DECAY_SHIFT = 12                     # decays are 12-bit fractions of 4096
ACT_SHIFT = 6                        # a_in << 6 enters u
VTH_SHIFT = 6                        # v is compared with vth << 6
UV_MAX = 2 ** 23                     # u and v are 24-bit
V_LIMIT = UV_MAX - 1                 # v is clipped to +-(2**23 - 1)
MAX_DELAY_LAVA = 63                  # DelayDense refuses larger delays (6 bits)
A_IN_DECLARED_BITS = 16              # a_out / a_in precision Lava declares (not enforced)

_I32 = 2 ** 31


class BitSimError(ValueError):
    """A QNetwork or an input the bit-accurate simulator (and Lava) cannot take."""


# ----------------------------------------------------------------------------- helpers

def _wrap32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32's range (what int32 numpy ops do)."""
    return ((x + _I32) & (2 * _I32 - 1)) - _I32


def _trunc_shift12(p: np.ndarray) -> np.ndarray:
    """sign(p) * (|p| >> 12) for int64 p, i.e. division by 4096 rounding toward zero
    (Lava: ``np.sign(x) * np.right_shift(np.abs(x), self.decay_shift)``)."""
    return (p + ((p >> 63) & 4095)) >> DECAY_SHIFT


def sign_mode(weight: np.ndarray) -> str:
    """'excitatory' | 'inhibitory' | 'mixed' as Lava's ``determine_sign_mode`` decides."""
    w = np.asarray(weight)
    if w.size == 0 or w.min() >= 0:
        return "excitatory"
    if w.max() <= 0:
        return "inhibitory"
    return "mixed"


def lava_weights(weight: np.ndarray, num_weight_bits: int) -> np.ndarray:
    """The weights Lava's fixed_pt Dense/DelayDense actually use (int64).

    Reproduces ``clip_weights(w, sign_mode, num_bits=8)`` then ``truncate_weights(w,
    sign_mode, num_weight_bits)`` from ``lava/utils/weightutils.py`` with the sign mode
    of ``determine_sign_mode``.
    """
    w = np.asarray(weight).astype(np.int64)
    mode = sign_mode(w)
    mixed = int(mode == "mixed")
    nwb = int(num_weight_bits)
    if not 1 <= nwb <= 8 + mixed:
        raise BitSimError(f"num_weight_bits={nwb} is outside 1..{8 + mixed} for "
                          f"{mode} weights (Lava would shift by a negative amount); "
                          f"use num_weight_bits <= {8 + mixed}")
    if mode == "inhibitory":
        w = -w
    w = np.clip(w, -256 * mixed, 255)
    t = 8 - nwb + mixed
    w = (w >> t) << t
    if mode == "inhibitory":
        w = -w
    return w


def layer_vth(layer: QLayer) -> int:
    """Threshold mantissa Lava gets (readout / vth None: 2**17 - 1), as lavarun does."""
    return LI_VTH if layer.kind == "li" or layer.vth is None else int(layer.vth)


def effective_bias(layer: QLayer) -> np.ndarray:
    """bias_mant << bias_exp (right shift for a negative exponent), Lava's scale_bias."""
    b = layer.bias_mant.astype(np.int64)
    e = int(layer.bias_exp)
    return b << e if e >= 0 else b >> -e


def _used_delay_max(layer: QLayer) -> int:
    used = layer.weight != 0
    return int(layer.delay[used].max()) if used.any() else 0


def steps_needed(qnet: QNetwork, T: int) -> int:
    """Lava rows needed to see the effect of input row T-1 at the readout:
    ``T + L + sum_l max_delay_l`` (1 + d latency per layer)."""
    return int(T) + len(qnet.layers) + sum(_used_delay_max(l) for l in qnet.layers)


def float_row(layer_index: int, t: int) -> int:
    """Lava row holding layer ``layer_index``'s output for float step t: t + l + 1."""
    return int(t) + int(layer_index) + 1


def check_qnet(qnet: QNetwork) -> None:
    """Raise :class:`BitSimError` for what Lava's fixed_pt models cannot run."""
    if not isinstance(qnet, QNetwork):
        raise BitSimError(f"expected a QNetwork, got {type(qnet).__name__} (quantize a "
                          f"float Network first with neurodelay.passes.quantize)")
    for k, layer in enumerate(qnet.layers):
        tag = f"layer {k}" + (f" ({layer.name!r})" if layer.name else "")
        if layer.delay.size and layer.delay.max() > MAX_DELAY_LAVA:
            raise BitSimError(f"{tag}: delay {int(layer.delay.max())} > {MAX_DELAY_LAVA}, "
                              f"the 6-bit limit of Lava's DelayDense; clip the delays "
                              f"(passes.check_delays(..., clip=True))")
        if k < len(qnet.layers) - 1 and layer.kind != "lif":
            raise BitSimError(f"{tag}: hidden layers must spike (kind 'lif')")
        lava_weights(layer.weight[:1, :1], layer.num_weight_bits)  # range check only


# ----------------------------------------------------------------------------- synapses

@dataclass
class _Syn:
    """Per-layer precomputation of the synapse process."""

    w: np.ndarray                     # (n_out, n_in) int64, Lava-effective weights
    delays: np.ndarray                # distinct delays of nonzero weights (sorted)
    groups: list                      # W_k (n_out, n_in) int64 per delay in `delays`
    weight_exp: int
    linear: bool                      # the shift is exact, so it commutes with sums
    row_abs: int                      # max_i sum_j |w_ij|
    fft_cache: dict = field(default_factory=dict)


def _prepare(layer: QLayer) -> _Syn:
    w = lava_weights(layer.weight, layer.num_weight_bits)
    used = w != 0
    delays = np.unique(layer.delay[used]).astype(np.int64)
    groups = [np.where(used & (layer.delay == k), w, 0) for k in delays]
    e = int(layer.weight_exp)
    linear = e >= 0 or bool(np.all(w % (1 << -e) == 0))
    row_abs = int(np.abs(w).sum(axis=1).max()) if w.size else 0
    return _Syn(w, delays, groups, e, linear, row_abs)


def _shift(x: np.ndarray, e: int) -> np.ndarray:
    """Lava's weight_exp shift (np.left_shift if e > 0 else np.right_shift: floor)."""
    return x << e if e > 0 else x >> -e


def _synaptic_input(syn: _Syn, s: np.ndarray, smax: int, n_out: int) -> np.ndarray:
    """a_in (n_rows, B, n_out) int64 for presynaptic payloads s (n_rows, B, n_in)."""
    R, B, n_in = s.shape
    a = np.zeros((R, B, n_out), np.int64)
    if len(syn.delays) == 0 or R < 2 or smax == 0:
        return a
    bound = syn.row_abs * smax                       # |group sum| and |total| <= bound
    fits32 = bound << max(syn.weight_exp, 0) < _I32
    if syn.linear and fits32:
        total = _total_fast(syn, s, bound)
        return _shift(total, syn.weight_exp)
    # exact path: per-group int64 sums, Lava's floor shift, int32 buffer wrap
    flat = s.reshape(R * B, n_in)
    exact_float = bound < 2 ** 53
    for k, wk in zip(syn.delays, syn.groups):
        k = int(k)
        if 1 + k >= R:
            break
        if exact_float:
            acc = np.rint(flat.astype(np.float64) @ wk.T.astype(np.float64)).astype(np.int64)
        else:
            acc = flat.astype(np.int64) @ wk.T
        acc = _shift(acc.reshape(R, B, n_out), syn.weight_exp)
        a[1 + k:] += acc[:R - 1 - k]
    return _wrap32(a)


def _total_fast(syn: _Syn, s: np.ndarray, bound: int) -> np.ndarray:
    """Exact sum_k delayed(S @ W_k^T) (no shift), every intermediate below 2**31."""
    R, B, n_in = s.shape
    n_out = syn.w.shape[0]
    delays = [int(k) for k in syn.delays if 1 + k < R]
    # cost model (measured): grouped float32 matmuls ~ 1 unit per delay; FFT ~ 5 units
    if len(delays) <= 5:
        dt = np.float32 if bound < 2 ** 24 else np.float64
        flat = s.reshape(R * B, n_in).astype(dt, copy=False)
        acc = np.zeros((R, B, n_out), np.float64)
        for k in delays:
            wk = syn.groups[int(np.searchsorted(syn.delays, k))]
            y = (flat @ wk.T.astype(dt)).reshape(R, B, n_out)
            acc[1 + k:] += y[:R - 1 - k]                  # exact: integers < 2**31
        return np.rint(acc).astype(np.int64)
    kmax = max(delays)
    N = _fft_len(R + kmax + 1)
    kh = syn.fft_cache.get(N)
    if kh is None:
        F = N // 2 + 1
        lag = (1 + syn_delay_matrix(syn)) % N            # (n_out, n_in)
        ph = np.exp(-2j * np.pi * np.outer(np.arange(F), np.arange(N)) / N)
        kh = np.ascontiguousarray((syn.w[None] * ph[:, lag]).transpose(0, 2, 1))
        syn.fft_cache.clear()
        syn.fft_cache[N] = kh                            # (F, n_in, n_out)
    sh = np.fft.rfft(s.astype(np.float64, copy=False), n=N, axis=0)     # (F, B, n_in)
    y = np.fft.irfft(np.matmul(sh, kh), n=N, axis=0)[:R]                # (R, B, n_out)
    out = np.rint(y)
    err = float(np.abs(y - out).max()) if y.size else 0.0
    if err > 0.05:   # cannot happen for integers < 2**31 with float64; never round wrongly
        raise BitSimError(f"internal: FFT rounding error {err:.3g} too large")
    return out.astype(np.int64)


def syn_delay_matrix(syn: _Syn) -> np.ndarray:
    """(n_out, n_in) delay of every synapse in syn (0 where the weight is 0)."""
    d = np.zeros(syn.w.shape, np.int64)
    for k, wk in zip(syn.delays, syn.groups):
        d[wk != 0] = k
    return d


def _fft_len(n: int) -> int:
    """Smallest 2**a * 3**b * 5**c >= n (fast sizes for pocketfft)."""
    best = 1 << (int(n) - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


# ----------------------------------------------------------------------------- neurons

def _lif(layer: QLayer, a_in: np.ndarray, record: bool, want_stats: bool):
    """Run Lava's bit-accurate CUBA LIF over all rows of a_in (R, B, n) int64.

    Returns (spikes (R, B, n) bool, v_rows (R, B, n) int64 or None, u_rows or None, stats).
    v_rows is returned for the readout (or when recording).
    """
    R, B, n = a_in.shape
    du, dv = int(layer.du), int(layer.dv)
    vth6 = layer_vth(layer) << VTH_SHIFT
    bias = effective_bias(layer)
    readout = layer.kind == "li"
    keep_v = record or readout
    spikes = np.zeros((R, B, n), bool)
    v_rows = np.empty((R, B, n), np.int64) if keep_v else None
    u_rows = np.empty((R, B, n), np.int64) if record else None
    st = {"max_abs_a_in": int(np.abs(a_in).max(initial=0)), "u_wraps": 0, "v_clips": 0,
          "v_max": 0, "v_min": 0, "max_abs_u": 0}
    # u: with du = 4095 the decayed current is 0, so u depends on a_in only (vectorised)
    act = _wrap32(a_in << ACT_SHIFT)
    if du == 4095:
        c = act
        U = np.where(c > UV_MAX, c - 2 * UV_MAX, np.where(c <= -UV_MAX, c + 2 * UV_MAX, c))
        if want_stats:
            st["u_wraps"] = int(np.count_nonzero(U != c))
    else:
        U = np.empty_like(a_in)
        u = np.zeros((B, n), np.int64)
        fu = 4096 - (du + 1)
        for r in range(R):
            c = _wrap32(_trunc_shift12(u * fu) + act[r])
            u = np.where(c > UV_MAX, c - 2 * UV_MAX, np.where(c <= -UV_MAX, c + 2 * UV_MAX, c))
            if want_stats:
                st["u_wraps"] += int(np.count_nonzero(u != c))
            U[r] = u
    del act
    if record:
        u_rows[:] = U
    if want_stats:
        st["max_abs_u"] = int(np.abs(U).max(initial=0))
    fv = 4096 - dv
    v = np.zeros((B, n), np.int64)
    tmp = np.empty((B, n), np.int64)
    vmax = np.zeros((B, n), np.int64) if want_stats else None
    vmin = np.zeros((B, n), np.int64) if want_stats else None
    clips = 0
    for r in range(R):
        if fv != 4096:                                   # dv = 0: v * 4096 >> 12 == v
            np.multiply(v, fv, out=v)
            np.right_shift(v, 63, out=tmp)
            np.bitwise_and(tmp, 4095, out=tmp)
            v += tmp
            np.right_shift(v, DECAY_SHIFT, out=v)
        v += U[r]
        v += bias
        if want_stats:
            np.maximum(vmax, v, out=vmax)
            np.minimum(vmin, v, out=vmin)
            clips += int(np.count_nonzero((v > V_LIMIT) | (v < -V_LIMIT)))
        np.clip(v, -V_LIMIT, V_LIMIT, out=v)
        s = v > vth6
        spikes[r] = s
        v[s] = 0
        if keep_v:
            v_rows[r] = v
    if want_stats:
        st["v_max"] = int(vmax.max(initial=0))
        st["v_min"] = int(vmin.min(initial=0))
        st["v_clips"] = clips
    st["spikes"] = int(np.count_nonzero(spikes))
    return spikes, v_rows, u_rows, st


# ----------------------------------------------------------------------------- API

@dataclass
class BitSimResult:
    """Output of :func:`run` (all arrays at Lava timing: row k = Lava step k + 1).

    v        (B, n_steps, C) int64: readout membrane v after every step (after reset)
    n_steps  rows simulated
    latency  L = number of layers: float step t of the readout is row t + L
    spikes, u, v_all, a_in   with record=True: per layer (B, n_steps, n) arrays
             (spikes bool; u, v_all, a_in int64: the LIF's u, v and synaptic input a_in
             at every row); else None
    stats    per layer dict: max_abs_a_in (Lava declares 16 bits), max_abs_u, u_wraps
             (24-bit wraps of u), v_max, v_min, v_clips (v clipped at +-(2**23-1)),
             spikes (count; for the readout: saturations at vth 2**17-1)
    """

    v: np.ndarray
    n_steps: int
    latency: int
    spikes: list | None = None
    u: list | None = None
    v_all: list | None = None
    a_in: list | None = None
    stats: list | None = None

    def headroom(self) -> float:
        """max |v| of the readout over the run / 2**23 (1.0 = saturated)."""
        return float(np.abs(self.v).max(initial=0)) / UV_MAX


def as_payloads(qnet: QNetwork, s_in) -> np.ndarray:
    """Validate graded integer input (B, T, n_in) and return it as int64."""
    x = np.asarray(s_in)
    if x.ndim != 3:
        raise BitSimError(f"input must be (batch, time, n_in), got shape {x.shape}; "
                          f"add a batch axis with x[None] for one sample")
    if x.shape[2] != qnet.layers[0].n_in:
        raise BitSimError(f"input has {x.shape[2]} channels, the network takes "
                          f"{qnet.layers[0].n_in}")
    if x.dtype == bool:
        x = x.astype(np.int64)
    if not np.issubdtype(x.dtype, np.integer):
        if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)) \
                or not np.all(x == np.round(x)):
            raise BitSimError("input must hold integer graded spikes; convert counts "
                              "with np.round(counts * qnet.input_scale) (or use predict)")
    x = x.astype(np.int64)
    if x.size and np.abs(x).max() >= _I32:
        raise BitSimError("input payloads exceed int32, Lava's payload type")
    return x


def run(qnet: QNetwork, s_in, n_steps: int | None = None, record: bool = False, *,
        stats: bool = True, batch_size: int = 256) -> BitSimResult:
    """Simulate ``qnet`` on graded integer input ``s_in`` (B, T, n_in) for ``n_steps`` Lava
    rows (default :func:`steps_needed`: T + L + sum of per-layer max delays; the input is
    zero after row T-1, or cut to n_steps). Batched over samples in chunks.
    """
    check_qnet(qnet)
    x = as_payloads(qnet, s_in)
    B, T, _ = x.shape
    n = steps_needed(qnet, T) if n_steps is None else int(n_steps)
    if n < 1:
        raise BitSimError(f"n_steps must be >= 1, got {n}")
    if batch_size < 1:
        raise BitSimError(f"batch_size must be >= 1, got {batch_size}")
    syns = [_prepare(l) for l in qnet.layers]
    L = len(qnet.layers)
    C = qnet.layers[-1].n_out
    v_out = np.zeros((B, n, C), np.int64)
    rec = {key: [[] for _ in range(L)] for key in ("spikes", "u", "v", "a")} if record else None
    tot = [None] * L
    for b0 in range(0, max(B, 1), batch_size):
        xb = x[b0:b0 + batch_size]
        if len(xb) == 0:
            break
        s = np.zeros((n, len(xb), x.shape[2]), np.int64)
        m = min(n, T)
        s[:m] = xb[:, :m].transpose(1, 0, 2)
        smax = int(np.abs(s).max(initial=0))
        for k, (layer, syn) in enumerate(zip(qnet.layers, syns)):
            a = _synaptic_input(syn, s, smax, layer.n_out)
            spk, vr, ur, st = _lif(layer, a, record, stats)
            if record:
                rec["spikes"][k].append(spk.transpose(1, 0, 2))
                rec["u"][k].append(ur.transpose(1, 0, 2))
                rec["v"][k].append(vr.transpose(1, 0, 2))
                rec["a"][k].append(a.transpose(1, 0, 2))
            if k == L - 1:
                v_out[b0:b0 + len(xb)] = vr.transpose(1, 0, 2)
            tot[k] = st if tot[k] is None else _merge(tot[k], st)
            s = spk if k < L - 1 else None                      # binary payload 1
            smax = 1 if (s is not None and s.any()) else 0
    res = BitSimResult(v=v_out, n_steps=n, latency=L,
                       stats=tot if stats else None)
    if record:
        cat = lambda parts: [np.concatenate(p, axis=0) for p in parts]  # noqa: E731
        res.spikes, res.u = cat(rec["spikes"]), cat(rec["u"])
        res.v_all, res.a_in = cat(rec["v"]), cat(rec["a"])
    return res


def _merge(a: dict, b: dict) -> dict:
    out = {}
    for key in a:
        if key in ("max_abs_a_in", "max_abs_u", "v_max"):
            out[key] = max(a[key], b[key])
        elif key == "v_min":
            out[key] = min(a[key], b[key])
        else:
            out[key] = a[key] + b[key]
    return out


def align_to_float(result: BitSimResult, T: int | None = None) -> np.ndarray:
    """The readout v (B, T, C) on the float time axis: rows L .. L+T-1 of result.v
    (float step t of layer l is Lava row t + l + 1). T defaults to all available rows."""
    L = result.latency
    avail = result.n_steps - L
    T = avail if T is None else int(T)
    if T > avail:
        raise BitSimError(f"asked for {T} float steps but only {avail} rows after the "
                          f"{L}-step latency were simulated; run with n_steps >= {T + L}")
    return result.v[:, L:L + T]


def quantize_input(qnet: QNetwork, counts) -> np.ndarray:
    """Graded payloads round(counts * qnet.input_scale) as int64 (B, T, n_in)."""
    c = np.asarray(counts, dtype=np.float64)
    if not np.all(np.isfinite(c)):
        raise BitSimError("input counts contain NaN or infinite values")
    return np.rint(c * float(qnet.input_scale)).astype(np.int64)


def readout_scores(u: np.ndarray) -> np.ndarray:
    """sum_t softmax(u[:, t]) in float64 (the rule of floatsim / the PyTorch model)."""
    z = np.asarray(u, np.float64)
    if z.shape[1] == 0:
        return np.zeros((z.shape[0], z.shape[2]))
    z = z - z.max(axis=2, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=2, keepdims=True)).sum(axis=1)


def readout_membrane(qnet: QNetwork, counts, *, batch_size: int = 256) -> np.ndarray:
    """Descaled readout membrane (B, T, C) float64 on the float time axis:
    v[row t + L] * scale for input counts (B, T, n_in)."""
    x = quantize_input(qnet, counts)
    T = x.shape[1]
    L = len(qnet.layers)
    res = run(qnet, x, n_steps=T + L, stats=False, batch_size=batch_size)
    return align_to_float(res, T).astype(np.float64) * qnet.layers[-1].scale


def predict(qnet: QNetwork, counts, *, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(predictions (B,), scores (B, C)) for input counts (B, T, n_in).

    Graded input = round(counts * qnet.input_scale); the readout v is read every row,
    aligned to the float time axis (exactly T steps: rows L..L+T-1), descaled by the
    readout layer's ``scale``; score = sum_t softmax; prediction = argmax.
    """
    u = readout_membrane(qnet, counts, batch_size=batch_size)
    scores = readout_scores(u)
    return scores.argmax(axis=1), scores


def accuracy(qnet: QNetwork, counts, labels, *, batch_size: int = 256) -> float:
    """Fraction of samples (B, T, n_in) whose bit-accurate prediction equals labels."""
    labels = np.asarray(labels)
    if labels.shape != (len(counts),) or len(labels) == 0:
        raise BitSimError(f"labels must have shape ({len(counts)},) and not be empty, "
                          f"got {labels.shape}")
    pred, _ = predict(qnet, counts, batch_size=batch_size)
    return float(np.mean(pred == labels))
