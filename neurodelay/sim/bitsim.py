"""Bit-accurate integer simulation of a :class:`~neurodelay.core.network.QNetwork`, exactly as
Lava 0.10 computes it with ``Loihi2SimCfg(select_tag='fixed_pt')`` -- batched and fast.

Process network simulated (the one :mod:`neurodelay.sim.lavarun` builds)::

    graded input s_in -> [Dense|DelayDense]_0 -> LIF_0 -> ... -> [DelayDense]_{L-1} -> LIF_{L-1}

Time ("Lava timing"): row ``k`` of every array is Lava step ``k + 1`` (0-based rows, as
``lavarun`` records them). ``s_in[:, k]`` enters layer 0's synapse process at row k.

Integer semantics: exactly those of :mod:`neurodelay.hw.fixedpoint` (the one home of the
Loihi 2 rules, with the Lava source of each), for the target the network was quantized
for: Lava's weight clip and truncation per sign mode, the floor shift by ``weight_exp``
of every delay group's sum into the wrapping synaptic buffer, the CUBA LIF with decays
rounding toward zero, the state wrap of u and clip of v, the strict threshold and reset
to 0, the bias ``bias_mant << bias_exp``, a readout that is a LIF with the largest
threshold. What the simulator adds is the timing and the batching: at row r the
synapse receives s[r] (hidden layers: binary spikes, payload 1; layer 0: graded integer
payloads); group k of row r arrives at the LIF at row ``r + 1 + k`` (latency 1 + d per
layer, measured against Lava). A network that does not fit its target's integer format
is refused (:func:`check_qnet`), as the Lava runner and the exporters refuse it.

Alignment with the float semantics (:mod:`neurodelay.core.network`): layer l's float step t
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
total is one delayed convolution over time. It is computed either as one float matmul
per distinct delay (<= 4 delays; exact: integer sums below 2**24 in float32 / 2**53 in
float64) or through the discrete Fourier transform over time written as real matmuls
(DFT of the input -- a sparse product for sparse spikes --, one complex product per
frequency via 3 real matmuls, inverse DFT), then rounded to integers. In float64 the
rounding error is < 1e-6 for sums below 2**31, far below the 0.5 that would round
wrongly; with ``precision="auto"`` float32 is tried first when all sums are below 2**20
and kept only if every result lies within 1/16 of an integer (float32 errors measured
<= 0.05; a 0.5 error in one element with all others < 1/16 does not occur for these
smooth error distributions), else the layer is recomputed in float64
(``precision="float64"`` skips float32). Otherwise the per-group floor shifts are
applied exactly as Lava does. The LIF loop runs over rows, vectorised over (batch,
neurons) in cache-sized blocks; v is held in float64, which is exact (see ``_lif``).

Speed (2-core shared CPU, 140-256-256-20 network, delays 0..24, T = 100): about 3-5 ms
per sample for ``predict`` in batches of 256, against ~2.4 s per sample for Lava's
fixed_pt run on the same machine (>= ~500x); the bit-exactness against Lava is checked
by tests/test_lava.py and tests/test_bitsim.py.
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field

import numpy as np

from neurodelay.core.network import QLayer, QNetwork
from neurodelay.errors import BitSimError
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.fixedpoint import Arith
from neurodelay.hw.target import arith
from neurodelay.sim.floatsim import readout_scores  # noqa: F401  (the one readout rule)

# Every Loihi 2 rule (weight clip/truncation, shifts, decays, widths, thresholds) comes
# from neurodelay.hw.fixedpoint, parameterised by the network's target; the constants
# below are only this simulator's own numerical strategy.
_I32 = 2 ** 31                       # float64 sums below this are exact after rint
_GROUPED_MAX = 4                     # up to this many distinct delays: grouped matmuls
_F32_BOUND = 2 ** 20                 # float32 FFT only for |sums| below this bound ...
_F32_TOL = 1 / 16                    # ... and only if every result is this close to an int
_SPARSE_DFT = 0.05                   # input density below which the DFT goes sparse
_LIF_CHUNK = 16384                   # neurons x samples per LIF block (cache-sized)


# ----------------------------------------------------------------------------- helpers

def layer_vth(layer: QLayer, a: Arith | None = None) -> int:
    """Threshold mantissa Lava gets (a readout: the largest), as lavarun builds it."""
    return fp.layer_vth(layer, a or arith())


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


def check_qnet(qnet: QNetwork) -> Arith:
    """The network's arithmetic, or :class:`BitSimError` listing every field that does
    not fit its target (:func:`neurodelay.hw.fixedpoint.check_qnet`: the same rules the
    Lava runner, the exporters and the resource report apply)."""
    if not isinstance(qnet, QNetwork):
        raise BitSimError(f"expected a QNetwork, got {type(qnet).__name__} (quantize a "
                          f"float Network first with neurodelay.passes.quantize)")
    a = arith(qnet)
    fp.ensure_fits(qnet, a, BitSimError,
                   f"the quantized network does not fit target {a.name!r}; the "
                   f"bit-accurate simulator (like Lava) refuses it")
    return a


# ----------------------------------------------------------------------------- synapses

@dataclass
class _Syn:
    """Per-layer precomputation of the synapse process."""

    w: np.ndarray                     # (n_out, n_in) int64, Lava-effective weights
    delay: np.ndarray                 # (n_out, n_in) int64 delays (0 where w == 0)
    delays: np.ndarray                # distinct delays of nonzero weights (sorted)
    weight_exp: int
    linear: bool                      # the shift is exact, so it commutes with sums
    row_abs: int                      # max_i sum_j |w_ij|
    cache: dict = field(default_factory=dict)

    def group(self, k: int) -> np.ndarray:
        """W_k: the weights of the synapses with delay k (others 0)."""
        return np.where(self.delay == k, self.w, 0)


def _prepare(layer: QLayer, a: Arith) -> _Syn:
    w = fp.effective_weights(layer.weight, layer.num_weight_bits, a)
    used = w != 0
    delay = np.where(used, layer.delay, 0).astype(np.int64)
    delays = np.unique(delay[used]).astype(np.int64)
    e = int(layer.weight_exp)
    linear = fp.shift_is_exact(w, e)
    row_abs = int(np.abs(w).sum(axis=1).max()) if w.size else 0
    return _Syn(w, delay, delays, e, linear, row_abs)


_SYN_CACHE: dict = {}                # fingerprint -> _Syn (keeps FFT kernels between calls)


def _prepared(layer: QLayer, a: Arith) -> _Syn:
    """_prepare(layer), cached by the content of the fields the synapse uses."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (layer.weight, layer.delay):
        c = np.ascontiguousarray(arr, dtype=np.int64)
        h.update(str(c.shape).encode())
        h.update(c.tobytes())
    h.update(f"{layer.weight_exp},{layer.num_weight_bits},{a}".encode())
    key = h.hexdigest()
    syn = _SYN_CACHE.get(key)
    if syn is None:
        if len(_SYN_CACHE) >= 8:
            _SYN_CACHE.pop(next(iter(_SYN_CACHE)))
        syn = _SYN_CACHE[key] = _prepare(layer, a)
    return syn


def _synaptic_input(syn: _Syn, s: np.ndarray, smax: int, n_out: int,
                    precision: str, a: Arith) -> tuple[np.ndarray, int]:
    """(a_in, bound): the input (R, B, n_out) the LIF receives for presynaptic payloads
    s (R, B, n_in) (row r of s enters the synapse process at row r), as integer-valued
    float64 (exact: |a_in| < 2**31), and a bound on |a_in|."""
    R, B, n_in = s.shape
    if len(syn.delays) == 0 or R < 2 or smax == 0:
        return np.zeros((R, B, n_out), np.float64), 0
    bound = syn.row_abs * smax                       # |group sum| and |total| <= bound
    acc_max = 1 << (a.accumulator_bits - 1)
    if syn.linear and (bound << max(syn.weight_exp, 0)) < min(_I32, acc_max):
        total = _total_fast(syn, s, bound, precision)
        if syn.weight_exp:
            total *= 2.0 ** syn.weight_exp           # exact: sums of multiples of 2**-e
        return total, bound << max(syn.weight_exp, 0)
    # exact path: per-group int64 sums, Lava's floor shift per group, buffer wrap
    out = np.zeros((R, B, n_out), np.int64)
    flat = s.reshape(R * B, n_in)
    for k in syn.delays:
        k = int(k)
        if 1 + k >= R:
            break
        wk = syn.group(k)
        if bound < 2 ** 53:
            acc = np.rint(flat.astype(np.float64) @ wk.T.astype(np.float64)).astype(np.int64)
        else:
            acc = flat.astype(np.int64) @ wk.T
        acc = fp.shift_sum(acc.reshape(R, B, n_out), syn.weight_exp)
        out[1 + k:] += acc[:R - 1 - k]
    return (fp.wrap_bits(out, a.accumulator_bits).astype(np.float64),
            1 << (a.accumulator_bits - 1))


def _total_fast(syn: _Syn, s: np.ndarray, bound: int, precision: str) -> np.ndarray:
    """Exact total sum_k (S @ W_k^T) delayed by 1 + k, integer-valued float64 (R, B, n_out)."""
    R, B, n_in = s.shape
    delays = [int(k) for k in syn.delays if 1 + k < R]
    if len(delays) <= _GROUPED_MAX:
        # one float matmul per distinct delay; exact: integer sums below 2**24 / 2**53
        dt = np.float32 if bound < 2 ** 24 else np.float64
        flat = s.reshape(R * B, n_in).astype(dt, copy=False)
        acc = np.zeros((R, B, syn.w.shape[0]), np.float64)
        for k in delays:
            y = (flat @ syn.group(k).T.astype(dt)).reshape(R, B, -1)
            acc[1 + k:] += y[:R - 1 - k]
        return acc                                    # exact integers already
    use32 = precision == "auto" and bound < _F32_BOUND
    if use32:
        out, err = _fft_conv(syn, s, R, delays, np.float32)
        if err <= _F32_TOL:
            return out
    out, err = _fft_conv(syn, s, R, delays, np.float64)
    if err > 0.01:   # impossible for |values| < 2**31 in float64; never round wrongly
        raise BitSimError(f"internal: FFT rounding error {err:.3g} too large")
    return out


def _fft_conv(syn: _Syn, s: np.ndarray, R: int, delays: list, dtype):
    """Convolution over time through the discrete Fourier transform, all as real matmuls.

    With N = R + max_delay + 2 (no circular wrap-around into rows < R) and F = N//2 + 1:
    S_hat = DFT(s) (two (F, R) @ (R, B*n_in) matmuls), A = S_hat @ K_hat per frequency
    with K_hat[f] = W * exp(-2 pi i f (1 + D) / N) (complex product by 3 real batched
    matmuls), y = inverse DFT (rows < R only). Returns (rint(y), max |y - rint(y)|).
    """
    N = R + max(delays) + 2
    F = N // 2 + 1
    key = (N, R, np.dtype(dtype).name)
    mats = syn.cache.get(key)
    if mats is None:
        if len(syn.cache) >= 4:
            syn.cache.pop(next(iter(syn.cache)))
        f = np.arange(F)
        ang = 2 * np.pi * np.outer(f, np.arange(R)) / N            # (F, R)
        fwd_c, fwd_s = np.cos(ang), -np.sin(ang)                    # S_hat = (c + i s) @ S
        wgt = np.full(F, 2.0)
        wgt[0] = 1.0
        if N % 2 == 0:
            wgt[-1] = 1.0
        inv_c = (np.cos(ang) * wgt[:, None]).T / N                  # (R, F)
        inv_s = (np.sin(ang) * wgt[:, None]).T / N
        lag = ((1 + syn.delay).T % N).astype(np.float64)            # (n_in, n_out)
        # synapses whose latency 1 + d reaches past the last row contribute nothing; left
        # in, they would wrap around the N-point transform into early rows
        wt = np.where((1 + syn.delay) < R, syn.w, 0).T.astype(np.float64)
        n_in, n_out = wt.shape
        kr = np.empty((F, n_in, n_out), dtype)
        ki = np.empty((F, n_in, n_out), dtype)
        for k in range(F):
            ph = (2 * np.pi * k / N) * lag
            kr[k] = wt * np.cos(ph)
            ki[k] = -wt * np.sin(ph)
        mats = tuple(np.ascontiguousarray(m, dtype) for m in
                     (fwd_c, fwd_s, inv_c, inv_s)) + (kr, ki, kr + ki)
        syn.cache[key] = mats
    fwd_c, fwd_s, inv_c, inv_s, kr, ki, ks = mats
    B, n_in = s.shape[1], s.shape[2]
    M = B * n_in
    flat = s.reshape(R, M)
    if np.count_nonzero(flat) < _SPARSE_DFT * flat.size:
        # sparse input (spikes): DFT as a sparse-dense product, cost ~ nonzeros * F
        from scipy.sparse import csr_matrix
        nz = np.flatnonzero(flat)                               # row-major: CSR order
        r_idx, m_idx = np.divmod(nz, M)
        indptr = np.zeros(R + 1, np.int64)
        np.cumsum(np.bincount(r_idx, minlength=R), out=indptr[1:])
        vals = flat.reshape(-1)[nz].astype(dtype)
        sp = csr_matrix((vals, m_idx, indptr), shape=(R, M))    # S; sp.T is S^T (CSC)
        both = np.ascontiguousarray((sp.T @ np.concatenate([fwd_c, fwd_s]).T).T)
        sr = both[:F].reshape(F, B, n_in)
        si = both[F:].reshape(F, B, n_in)
    else:
        flat = flat.astype(dtype, copy=False)
        sr = (fwd_c @ flat).reshape(F, B, n_in)
        si = (fwd_s @ flat).reshape(F, B, n_in)
    p1 = np.matmul(sr, kr)
    p2 = np.matmul(si, ki)
    sr += si
    p3 = np.matmul(sr, ks)
    del sr, si
    p3 -= p1
    p3 -= p2                                   # imaginary part of S_hat K_hat
    p1 -= p2                                   # real part
    del p2
    n_out = p1.shape[2]
    y = inv_c @ p1.reshape(F, B * n_out)
    y -= inv_s @ p3.reshape(F, B * n_out)      # Re(A e^{+i theta}) = Ar cos - Ai sin
    out = np.rint(y)
    y -= out
    err = float(np.abs(y).max()) if y.size else 0.0
    return out.reshape(R, B, n_out).astype(np.float64, copy=False), err


# ----------------------------------------------------------------------------- neurons

def _current(layer: QLayer, a_in: np.ndarray, want_stats: bool, st: dict,
             a: Arith) -> np.ndarray:
    """u (R, B, n) int64 for a_in (R, B, n) int64: Lava's current update, state wrap."""
    act = fp.current_input(a_in, a)

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
    st = {"max_abs_a_in": 0, "u_wraps": 0, "v_clips": 0, "v_max": 0, "v_min": 0,
          "max_abs_u": 0}
    if want_stats:
        st["max_abs_a_in"] = int(np.abs(a_in).max(initial=0))
    bias = fp.effective_bias(layer.bias_mant, layer.bias_exp).astype(np.float64)
    if fp.current_keep(layer.du, a) == 0 and (a_bound << a.current_shift) < a.state_max:
        # the current is cleared every step and a_in << shift can neither wrap the
        # accumulator nor the state: u = a_in << shift exactly (float64)
        drive = fp.current_input(a_in, a)
        if want_stats:
            st["max_abs_u"] = st["max_abs_a_in"] << a.current_shift
        u_rows = drive.astype(np.int64) if record else None
    else:
        U = _current(layer, a_in.astype(np.int64), want_stats, st, a)
        if want_stats:
            st["max_abs_u"] = int(np.abs(U).max(initial=0))
        u_rows = U if record else None
        drive = U.astype(np.float64)
        del U
    drive += bias
    keep = fp.voltage_keep(layer.dv, a)
    c = keep / float(1 << a.dv_bits)
    vth6 = float(fp.threshold(fp.layer_vth(layer, a), a))
    limit = a.v_limit
    need_clip = want_stats or not _clip_free(drive, c, vth6, R, limit)
    keep_v = record or layer.kind == "li"
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
    if want_stats and R and B:
        st["v_max"] = int(max(vmax.max(initial=0), 0))
        st["v_min"] = int(min(vmin.min(initial=0), 0))
        st["v_clips"] = clips
    st["spikes"] = int(np.count_nonzero(spikes))
    if keep_v:
        v_rows = v_rows.astype(np.int64)
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
             (state wraps of u), v_max, v_min, v_clips (v clipped at the state limit),
             spikes (count; for the readout: saturations at the largest threshold)
    """

    v: np.ndarray
    n_steps: int
    latency: int
    spikes: list | None = None
    u: list | None = None
    v_all: list | None = None
    a_in: list | None = None
    stats: list | None = None
    state_max: int = 0                # 2**(state_bits - 1) of the target: v's scale

    def headroom(self) -> float:
        """max |v| of the readout over the run / 2**(state_bits - 1) (1.0 = saturated)."""
        return float(np.abs(self.v).max(initial=0)) / self.state_max


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
        stats: bool = True, batch_size: int = 256, precision: str = "auto",
        threads: int | None = 1) -> BitSimResult:
    """Simulate ``qnet`` on graded integer input ``s_in`` (B, T, n_in) for ``n_steps`` Lava
    rows (default :func:`steps_needed`: T + L + sum of per-layer max delays; the input is
    zero after row T-1, or cut to n_steps). Batched over samples in chunks.

    stats: collect the per-layer overflow/headroom statistics (a little slower).
    precision: "auto" lets the FFT path try float32 first (used only if every result lies
    within 1/16 of an integer and all sums are below 2**20, else redone in float64);
    "float64" always uses float64 (provably exact for sums below 2**31).
    threads: BLAS threads during the run (None: leave the BLAS default). 1 by default:
    on a shared 2-core machine an oversubscribed multi-threaded BLAS ran 10x slower.
    """
    with _blas_threads(threads):
        return _run(qnet, s_in, n_steps, record, stats, batch_size, precision)


def _blas_threads(n: int | None):
    """Context limiting BLAS threads to n (threadpoolctl, if installed; else no-op)."""
    if n is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:                    # optional dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(n), user_api="blas")


def _run(qnet, s_in, n_steps, record, stats, batch_size, precision) -> BitSimResult:
    if precision not in ("auto", "float64"):
        raise BitSimError(f"precision must be 'auto' or 'float64', got {precision!r}")
    ar = check_qnet(qnet)
    x = as_payloads(qnet, s_in)
    B, T, _ = x.shape
    n = steps_needed(qnet, T) if n_steps is None else int(n_steps)
    if n < 1:
        raise BitSimError(f"n_steps must be >= 1, got {n}")
    if batch_size < 1:
        raise BitSimError(f"batch_size must be >= 1, got {batch_size}")
    syns = [_prepared(layer, ar) for layer in qnet.layers]
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
            a, a_bound = _synaptic_input(syn, s, smax, layer.n_out, precision, ar)
            spk, vr, ur, st = _lif(layer, a, a_bound, record, stats, ar)
            if record:
                rec["spikes"][k].append(spk.transpose(1, 0, 2))
                rec["u"][k].append(ur.transpose(1, 0, 2))
                rec["v"][k].append(vr.transpose(1, 0, 2))
                rec["a"][k].append(a.astype(np.int64).transpose(1, 0, 2))
            if k == L - 1:
                v_out[b0:b0 + len(xb)] = vr.transpose(1, 0, 2)
            tot[k] = st if tot[k] is None else _merge(tot[k], st)
            s = spk if k < L - 1 else None                      # binary payload 1
            smax = 1 if (s is not None and s.any()) else 0
    res = BitSimResult(v=v_out, n_steps=n, latency=L,
                       stats=tot if stats else None, state_max=ar.state_max)
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
    c = np.asarray(counts)
    if np.issubdtype(c.dtype, np.integer) and float(qnet.input_scale) == 1.0:
        return c.astype(np.int64, copy=False)
    c = c.astype(np.float64, copy=False)
    if not np.all(np.isfinite(c)):
        raise BitSimError("input counts contain NaN or infinite values")
    return np.rint(c * float(qnet.input_scale)).astype(np.int64)


def readout_membrane(qnet: QNetwork, counts, *, batch_size: int = 256,
                     precision: str = "auto") -> np.ndarray:
    """Descaled readout membrane (B, T, C) float64 on the float time axis:
    v[row t + L] * scale for input counts (B, T, n_in)."""
    x = quantize_input(qnet, counts)
    T = x.shape[1]
    L = len(qnet.layers)
    res = run(qnet, x, n_steps=T + L, stats=False, batch_size=batch_size,
              precision=precision)
    return align_to_float(res, T).astype(np.float64) * qnet.layers[-1].scale


def predict(qnet: QNetwork, counts, *, batch_size: int = 256,
            precision: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(predictions (B,), scores (B, C)) for input counts (B, T, n_in).

    Graded input = round(counts * qnet.input_scale); the readout v is read every row,
    aligned to the float time axis (exactly T steps: rows L..L+T-1), descaled by the
    readout layer's ``scale``; score = sum_t softmax; prediction = argmax.
    """
    u = readout_membrane(qnet, counts, batch_size=batch_size, precision=precision)
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
