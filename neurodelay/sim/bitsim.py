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
total is one delayed convolution over time. It is computed by the compiled direct sum of
:mod:`neurodelay.sim.dsum` (one multiply-add per synapse and row; exact: integer partial
sums below 2**24 in float32, else float64), or where no C compiler is available either
as one float matmul per distinct delay (<= 4 delays; exact: integer sums below 2**24 in float32 / 2**53 in
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
neurons) in cache-sized blocks; v is held in float64, which is exact (see
:func:`neurodelay.sim.bitsim_neurons._lif`).

Speed (2-core shared CPU, 140-256-256-20 network, delays 0..24, T = 100): about 3-5 ms
per sample for ``predict`` in batches of 256, against ~2.4 s per sample for Lava's
fixed_pt run on the same machine (>= ~500x); the bit-exactness against Lava is checked
by tests/test_lava.py and tests/test_bitsim.py.

Recurrent layers (``QLayer.rec_weight``): their feed-forward input still comes from the
fast path above; the layer itself is stepped row by row in int64
(:func:`neurodelay.sim.bitsim_neurons._lif_recurrent`), its recurrent synapse process
added to ``a_in`` in the event order measured against Lava (written in
:mod:`neurodelay.hw.fixedpoint`): a spike at row r reaches the layer at row r + rec_delay,
through the same current update as the feed-forward input. Recorded ``a_in`` is then
the total (feed-forward + recurrent).

Modules: this one is the entry (the checks, :func:`run` and the predict API);
:mod:`neurodelay.sim.bitsim_synapses` computes a layer's synaptic input for all rows (the
exact and the fast paths), :mod:`neurodelay.sim.bitsim_neurons` steps its LIF.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from neurodelay.core.network import QLayer, QNetwork
from neurodelay.errors import BitSimError
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.fixedpoint import Arith
from neurodelay.hw.target import arith
from neurodelay.sim.bitsim_neurons import _lif, _lif_recurrent
from neurodelay.sim.bitsim_synapses import (  # noqa: F401  (_Syn, _prepare: for tests)
    _I32,
    _prepare,
    _prepared,
    _Syn,
    _synaptic_input,
)
from neurodelay.sim.floatsim import readout_scores  # noqa: F401  (the one readout rule)

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

    Examples:
        >>> import numpy as np
        >>> from neurodelay.core.network import Layer, Network
        >>> hidden = Layer(weight=[[1.0, 1.0]], delay=[[2, 0]], bias=[0.0], decay=0.5,
        ...                threshold=1.5)
        >>> readout = Layer(weight=[[1.0]], delay=[[0]], bias=[0.0], decay=0.9, kind="li")
        >>> net = Network([hidden, readout], dt=0.01, n_channels=2, channel_bin=1)
        >>> from neurodelay.passes import quantize
        >>> qnet, report = quantize(net, "loihi2")
        >>> from neurodelay.sim import bitsim
        >>> x = np.zeros((2, 6, 2), np.int64)
        >>> x[0, 0, 0] = x[0, 2, 1] = 1        # input 0, then input 1 two steps later
        >>> x[1, 0, 1] = x[1, 2, 0] = 1        # the other order
        >>> res = bitsim.run(qnet, bitsim.quantize_input(qnet, x), record=True)
        >>> res.spikes[0][:, :, 0].sum(axis=1).tolist()   # the same as floatsim's
        [1, 0]
        >>> res.latency                       # layer l's step t is Lava row t + l + 1
        2
    """
    with _blas_threads(threads):
        return _run(qnet, s_in, n_steps, record, stats, batch_size, precision)


def _blas_threads(n: int | None):
    """Context limiting BLAS threads to n (threadpoolctl, if installed; else no-op)."""
    if n is None:
        return contextlib.nullcontext()
    try:
        # local: optional (BLAS thread limits only where it is installed)
        from threadpoolctl import threadpool_limits
    except ImportError:                    # optional dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(n), user_api="blas")


def _run(qnet, s_in, n_steps, record, stats, batch_size, precision) -> BitSimResult:
    ar, x, n = _checked(qnet, s_in, n_steps, batch_size, precision)
    B, T, _ = x.shape
    syns = [_prepared(layer, ar) for layer in qnet.layers]
    L = len(qnet.layers)
    v_out = np.zeros((B, n, qnet.layers[-1].n_out), np.int64)
    rec = _Recording(L) if record else None
    tot = [None] * L
    for b0 in range(0, max(B, 1), batch_size):
        xb = x[b0:b0 + batch_size]
        if len(xb) == 0:
            break
        s = np.zeros((n, len(xb), x.shape[2]), np.int64)
        m = min(n, T)
        s[:m] = xb[:, :m].transpose(1, 0, 2)
        for k, (a, spk, vr, ur, st) in enumerate(
                _layer_rows(qnet, syns, s, record, stats, precision, ar)):
            if record:
                rec.add(k, a, spk, vr, ur)
            if k == L - 1:
                v_out[b0:b0 + len(xb)] = vr.transpose(1, 0, 2)
            tot[k] = st if tot[k] is None else _merge(tot[k], st)
    res = BitSimResult(v=v_out, n_steps=n, latency=L,
                       stats=tot if stats else None, state_max=ar.state_max)
    if record:
        rec.fill(res)
    return res


def _checked(qnet, s_in, n_steps, batch_size, precision) -> tuple[Arith, np.ndarray, int]:
    """(arithmetic, input payloads (B, T, n_in) int64, rows) or BitSimError."""
    if precision not in ("auto", "float64"):
        raise BitSimError(f"precision must be 'auto' or 'float64', got {precision!r}")
    ar = check_qnet(qnet)
    x = as_payloads(qnet, s_in)
    n = steps_needed(qnet, x.shape[1]) if n_steps is None else int(n_steps)
    if n < 1:
        raise BitSimError(f"n_steps must be >= 1, got {n}")
    if batch_size < 1:
        raise BitSimError(f"batch_size must be >= 1, got {batch_size}")
    return ar, x, n


def _layer_rows(qnet, syns, s, record, stats, precision, ar):
    """Per layer in order, for input payloads s (R, B, n_in) int64: (a_in, spikes, v_rows,
    u_rows, stats), each layer's spikes feeding the next (binary payload 1)."""
    L = len(qnet.layers)
    smax = int(np.abs(s).max(initial=0))
    for k, (layer, syn) in enumerate(zip(qnet.layers, syns)):
        a, a_bound = _synaptic_input(syn, s, smax, layer.n_out, precision, ar)
        if layer.recurrent:     # its own spikes feed back: stepped row by row
            a, spk, vr, ur, st = _lif_recurrent(layer, a, record, stats, ar)
        else:
            spk, vr, ur, st = _lif(layer, a, a_bound, record, stats, ar)
        yield a, spk, vr, ur, st
        s = spk if k < L - 1 else None                      # binary payload 1
        smax = 1 if (s is not None and s.any()) else 0


class _Recording:
    """Per layer, the recorded arrays of every batch chunk (each (b, n_steps, n))."""

    def __init__(self, L: int):
        self.parts = {key: [[] for _ in range(L)] for key in ("spikes", "u", "v", "a")}

    def add(self, k: int, a, spk, vr, ur) -> None:
        self.parts["spikes"][k].append(spk.transpose(1, 0, 2))
        self.parts["u"][k].append(ur.transpose(1, 0, 2))
        self.parts["v"][k].append(vr.transpose(1, 0, 2))
        self.parts["a"][k].append(a.astype(np.int64).transpose(1, 0, 2))

    def fill(self, res: BitSimResult) -> None:
        def cat(key):
            return [np.concatenate(p, axis=0) for p in self.parts[key]]

        res.spikes, res.u = cat("spikes"), cat("u")
        res.v_all, res.a_in = cat("v"), cat("a")


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

    Examples:
        >>> import numpy as np
        >>> from neurodelay.core.network import Layer, Network
        >>> hidden = Layer(weight=[[1.0, 1.0]], delay=[[2, 0]], bias=[0.0], decay=0.5,
        ...                threshold=1.5)
        >>> readout = Layer(weight=[[1.0]], delay=[[0]], bias=[0.0], decay=0.9, kind="li")
        >>> net = Network([hidden, readout], dt=0.01, n_channels=2, channel_bin=1)
        >>> from neurodelay.passes import quantize
        >>> qnet, report = quantize(net, "loihi2")
        >>> from neurodelay.sim import bitsim
        >>> pred, scores = bitsim.predict(qnet, np.zeros((3, 5, 2)))
        >>> pred.shape, scores.shape
        ((3,), (3, 1))
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
