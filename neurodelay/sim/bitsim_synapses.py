"""The bit-accurate simulator's synapse processes: a layer's synaptic input for all rows.

Part of :mod:`neurodelay.sim.bitsim` (its module docstring gives the timing and the
strategy). The synaptic input of a layer does not depend on its own state, so it is
computed for all rows at once, before the LIF loop:

* exact path (:func:`_total_exact`): per delay group, the int64 sum, Lava's floor shift by
  ``weight_exp`` and the wrapping synaptic buffer, as Lava computes them;
* fast path (:func:`_total_fast`), when every intermediate fits int32 and the shift is
  exact (it then commutes with the sums): the compiled direct sum of
  :mod:`neurodelay.sim.dsum` (exact: integer partial sums in float32 below 2**24, else
  float64), or without a C compiler one float matmul per distinct delay (few delays) or
  a convolution over time through the discrete Fourier transform written as real
  matmuls (:func:`_fft_conv`), rounded to integers.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from neurodelay.core.network import QLayer
from neurodelay.errors import BitSimError
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.fixedpoint import Arith
from neurodelay.sim import dsum

# Every Loihi 2 rule (weight clip/truncation, shifts, widths) comes from
# neurodelay.hw.fixedpoint, parameterised by the network's target; the constants below
# are only this simulator's own numerical strategy.
_I32 = 2 ** 31                       # float64 sums below this are exact after rint
_GROUPED_MAX = 4                     # up to this many distinct delays: grouped matmuls
_F32_BOUND = 2 ** 20                 # float32 FFT only for |sums| below this bound ...
_F32_TOL = 1 / 16                    # ... and only if every result is this close to an int
_SPARSE_DFT = 0.05                   # input density below which the DFT goes sparse


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
    return _total_exact(syn, s, bound, n_out, a), 1 << (a.accumulator_bits - 1)


def _total_exact(syn: _Syn, s: np.ndarray, bound: int, n_out: int, a: Arith) -> np.ndarray:
    """The input as Lava computes it: per-group int64 sums, Lava's floor shift per group,
    the buffer wrap; integer-valued float64 (R, B, n_out)."""
    R, B, n_in = s.shape
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
    return fp.wrap_bits(out, a.accumulator_bits).astype(np.float64)


def _total_fast(syn: _Syn, s: np.ndarray, bound: int, precision: str) -> np.ndarray:
    """Exact total sum_k (S @ W_k^T) delayed by 1 + k, integer-valued float64 (R, B, n_out)."""
    if dsum.available():            # exact: integer partial sums below 2**24 / 2**31
        dt = np.float32 if bound < 2 ** 24 else np.float64
        out = dsum.delayed_sum(s, syn.w, 1 + syn.delay, dt, time_axis=0)
        return out.astype(np.float64, copy=False)
    R = s.shape[0]
    delays = [int(k) for k in syn.delays if 1 + k < R]
    if len(delays) <= _GROUPED_MAX:
        return _total_grouped(syn, s, bound, delays)
    use32 = precision == "auto" and bound < _F32_BOUND
    if use32:
        out, err = _fft_conv(syn, s, R, delays, np.float32)
        if err <= _F32_TOL:
            return out
    out, err = _fft_conv(syn, s, R, delays, np.float64)
    if err > 0.01:   # impossible for |values| < 2**31 in float64; never round wrongly
        raise BitSimError(f"internal: FFT rounding error {err:.3g} too large")
    return out


def _total_grouped(syn: _Syn, s: np.ndarray, bound: int, delays: list) -> np.ndarray:
    """One float matmul per distinct delay; exact: integer sums below 2**24 / 2**53."""
    R, B, n_in = s.shape
    dt = np.float32 if bound < 2 ** 24 else np.float64
    flat = s.reshape(R * B, n_in).astype(dt, copy=False)
    acc = np.zeros((R, B, syn.w.shape[0]), np.float64)
    for k in delays:
        y = (flat @ syn.group(k).T.astype(dt)).reshape(R, B, -1)
        acc[1 + k:] += y[:R - 1 - k]
    return acc                                    # exact integers already


# ----------------------------------------------------------------------------- DFT path

def _fft_conv(syn: _Syn, s: np.ndarray, R: int, delays: list, dtype):
    """Convolution over time through the discrete Fourier transform, all as real matmuls.

    With N = R + max_delay + 2 (no circular wrap-around into rows < R) and F = N//2 + 1:
    S_hat = DFT(s) (two (F, R) @ (R, B*n_in) matmuls), A = S_hat @ K_hat per frequency
    with K_hat[f] = W * exp(-2 pi i f (1 + D) / N) (complex product by 3 real batched
    matmuls), y = inverse DFT (rows < R only). Returns (rint(y), max |y - rint(y)|).
    """
    N = R + max(delays) + 2
    F = N // 2 + 1
    fwd_c, fwd_s, inv_c, inv_s, kr, ki, ks = _fft_mats(syn, N, R, dtype)
    B = s.shape[1]
    p1, p3 = _spectrum(s, fwd_c, fwd_s, kr, ki, ks, F, dtype)
    n_out = p1.shape[2]
    y = inv_c @ p1.reshape(F, B * n_out)
    y -= inv_s @ p3.reshape(F, B * n_out)      # Re(A e^{+i theta}) = Ar cos - Ai sin
    out = np.rint(y)
    y -= out
    err = float(np.abs(y).max()) if y.size else 0.0
    return out.reshape(R, B, n_out).astype(np.float64, copy=False), err


def _fft_mats(syn: _Syn, N: int, R: int, dtype) -> tuple:
    """(fwd_c, fwd_s, inv_c, inv_s, kr, ki, kr + ki) for an N-point transform of R rows,
    cached on the synapse (at most 4 entries)."""
    key = (N, R, np.dtype(dtype).name)
    mats = syn.cache.get(key)
    if mats is None:
        if len(syn.cache) >= 4:
            syn.cache.pop(next(iter(syn.cache)))
        kr, ki = _kernel_spectrum(syn, N, R, dtype)
        mats = tuple(np.ascontiguousarray(m, dtype) for m in
                     _dft_mats(N, R)) + (kr, ki, kr + ki)
        syn.cache[key] = mats
    return mats


def _dft_mats(N: int, R: int) -> tuple:
    """(fwd_c, fwd_s, inv_c, inv_s) float64: S_hat = (fwd_c + i fwd_s) @ S over the
    F = N//2 + 1 frequencies of a real signal, and the real inverse restricted to rows < R."""
    F = N // 2 + 1
    f = np.arange(F)
    ang = 2 * np.pi * np.outer(f, np.arange(R)) / N            # (F, R)
    fwd_c, fwd_s = np.cos(ang), -np.sin(ang)                    # S_hat = (c + i s) @ S
    wgt = np.full(F, 2.0)
    wgt[0] = 1.0
    if N % 2 == 0:
        wgt[-1] = 1.0
    inv_c = (np.cos(ang) * wgt[:, None]).T / N                  # (R, F)
    inv_s = (np.sin(ang) * wgt[:, None]).T / N
    return fwd_c, fwd_s, inv_c, inv_s


def _kernel_spectrum(syn: _Syn, N: int, R: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(kr, ki) (F, n_in, n_out): real and imaginary part of K_hat[f] = W * exp(-2 pi i f
    (1 + D) / N)."""
    F = N // 2 + 1
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
    return kr, ki


def _dft_forward(s: np.ndarray, fwd_c: np.ndarray, fwd_s: np.ndarray, F: int, dtype):
    """(sr, si) (F, B, n_in): real and imaginary part of the DFT of s (R, B, n_in) over
    time; a sparse-dense product for sparse input (spikes), cost ~ nonzeros * F."""
    R, B, n_in = s.shape
    M = B * n_in
    flat = s.reshape(R, M)
    if np.count_nonzero(flat) < _SPARSE_DFT * flat.size:
        # local: scipy (not a declared dependency) only for sparse input on this path
        from scipy.sparse import csr_matrix

        nz = np.flatnonzero(flat)                               # row-major: CSR order
        r_idx, m_idx = np.divmod(nz, M)
        indptr = np.zeros(R + 1, np.int64)
        np.cumsum(np.bincount(r_idx, minlength=R), out=indptr[1:])
        vals = flat.reshape(-1)[nz].astype(dtype)
        sp = csr_matrix((vals, m_idx, indptr), shape=(R, M))    # S; sp.T is S^T (CSC)
        both = np.ascontiguousarray((sp.T @ np.concatenate([fwd_c, fwd_s]).T).T)
        return both[:F].reshape(F, B, n_in), both[F:].reshape(F, B, n_in)
    flat = flat.astype(dtype, copy=False)
    return (fwd_c @ flat).reshape(F, B, n_in), (fwd_s @ flat).reshape(F, B, n_in)


def _spectrum(s, fwd_c, fwd_s, kr, ki, ks, F: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(real, imaginary) part of A = S_hat @ K_hat per frequency, (F, B, n_out) each: the
    complex product by 3 real batched matmuls (ks = kr + ki)."""
    sr, si = _dft_forward(s, fwd_c, fwd_s, F, dtype)
    p1 = np.matmul(sr, kr)
    p2 = np.matmul(si, ki)
    sr += si
    p3 = np.matmul(sr, ks)
    del sr, si
    p3 -= p1
    p3 -= p2                                   # imaginary part of S_hat K_hat
    p1 -= p2                                   # real part
    return p1, p3
