"""Batched numpy reference simulator of a float :class:`~neurodelay.core.network.Network`.

Implements exactly the float semantics in :mod:`neurodelay.core.network` (no torch)::

    J_i[t] = current_decay * J_i[t-1] + sum_j W_ij * x_j[t - D_ij]   (x[t] = 0 for t < 0)
    u_i[t] = decay * u_i[t-1] + J_i[t] + b_i            (u[-1] = J[-1] = 0)
    "lif": s_i[t] = u_i[t] >= threshold ; u_i[t] = reset where s_i[t]
    "li" : never spikes; its membrane u[t] is the output
    score_c = sum_t softmax_c(u_readout[t]) ;  prediction = argmax_c score_c

How it is computed, per layer:

1. Synaptic currents for all T steps at once: the compiled direct sum of
   :mod:`neurodelay.sim.dsum` (one multiply-add per synapse and step, ascending inputs),
   or where no C compiler is available, synapses grouped by their integer delay: for
   every distinct delay d used by a nonzero weight, W_d = W masked to D == d and
   ``Y = X.reshape(B*T, n_in) @ W_d.T`` (one matmul over the whole batch), then
   ``I[:, d:] += Y[:, :T-d]``. Delays >= T never reach the output and are skipped.
   The bias is added last.
2. The LIF/LI recursion, a loop over T vectorised over batch and neurons. A recurrent
   layer (:func:`recurrent_dynamics`) adds, at each step, the recurrent current its own
   earlier spikes send: when a step's spikes s are known, ``s @ R_e.T`` is added to a
   ring buffer slot e steps ahead, for every distinct recurrent delay e.

Precision: ``dtype`` selects the arithmetic (float32 by default, the precision of
the trained PyTorch model; float64 for a higher-precision reference). In float32 the
result differs from a float64 run only by rounding, except where a membrane is within
rounding distance of the threshold (then a spike can flip); the compiled sums of a
float32 run accumulate in float64 and round once (:func:`neurodelay.sim.dsum.delayed_sum`
``wide``, and the recurrent current), the numpy path's products round as BLAS does. The
returned membrane
has the chosen dtype. Memory: a few arrays of B*T*max(n) elements of that dtype, so
simulate a large set in chunks (``predict``/``accuracy`` do).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodelay.core.network import Layer, Network
from neurodelay.errors import SimulationError
from neurodelay.sim import dsum

METHODS = ("auto", "compiled", "numpy")    # how synaptic_sum computes the delayed sum


@dataclass
class SimResult:
    """Output of :func:`simulate`.

    u            (B, T, n_classes) membrane of the last layer (after reset if it spikes)
    scores       (B, n_classes)    sum over t of softmax(u[:, t]) (float64)
    predictions  (B,) int64        argmax of scores
    spikes       with record=True: one bool array (B, T, n) per hidden layer; else None
    """

    u: np.ndarray
    scores: np.ndarray
    predictions: np.ndarray
    spikes: list[np.ndarray] | None = None


def _check_input(net: Network, x, dtype) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise SimulationError(f"input must be (batch, time, n_in), got shape {x.shape}; "
                              f"add a batch axis with x[None] for one sample")
    if x.shape[2] != net.n_in:
        raise SimulationError(f"input has {x.shape[2]} channels, the network takes "
                              f"{net.n_in}")
    if not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
        raise SimulationError(f"input must be numeric, got dtype {x.dtype}")
    x = x.astype(dtype, copy=False)
    if not np.all(np.isfinite(x)):
        raise SimulationError("input contains NaN or infinite values")
    return x


def synaptic_current(layer: Layer, x: np.ndarray, dtype=np.float32) -> np.ndarray:
    """I = J + b (B, T, n_out) for input x (B, T, n_in): the delayed sum W x
    (:func:`synaptic_sum`), then the synaptic current filter J[t] = current_decay * J[t-1]
    + (W x)[t] (when current_decay > 0), then the bias."""
    return filter_current(layer, synaptic_sum(layer, x, dtype))


def filter_current(layer: Layer, S: np.ndarray) -> np.ndarray:
    """J + b from the delayed sums S = W x (B, T, n_out), in place (S is returned)."""
    if layer.current_decay:
        c = S.dtype.type(layer.current_decay)
        for t in range(1, S.shape[1]):
            S[:, t] += c * S[:, t - 1]
    S += layer.bias.astype(S.dtype)
    return S


def synaptic_sum(layer: Layer, x: np.ndarray, dtype=np.float32,
                 method: str = "auto") -> np.ndarray:
    """(W x)[t] = sum_i w_i x_i[t - d_i] (B, T, n_out): what enters the neuron each step
    (no current filter, no bias). ``method``: "compiled" the direct sum of
    :mod:`neurodelay.sim.dsum` (one multiply-add per synapse and step), "numpy" one
    matmul per distinct used delay, "auto" (default) the compiled sum where it is
    available, else numpy's. The two agree to float rounding (other summation orders)."""
    if method not in METHODS:
        raise SimulationError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "compiled" or (method == "auto" and dsum.available()):
        return dsum.delayed_sum(x, layer.weight, layer.delay, dtype, wide=True)
    B, T, n_in = x.shape
    W = layer.weight.astype(dtype)
    I = np.zeros((B, T, layer.n_out), dtype=dtype)
    flat = x.reshape(B * T, n_in)
    used = layer.weight != 0
    for d in np.unique(layer.delay[used]):
        d = int(d)
        if d >= T:
            break                      # np.unique is sorted: all further delays too long
        W_d = np.where(used & (layer.delay == d), W, 0).astype(dtype, copy=False)
        Y = (flat @ W_d.T).reshape(B, T, layer.n_out)
        I[:, d:] += Y[:, :T - d]
    return I


def neuron_dynamics(layer: Layer, I: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Run the membrane recursion over time on currents I (B, T, n), in I's dtype.

    Returns (u, spikes): u (B, T, n) the membrane after reset; spikes (B, T, n) bool,
    or None for an "li" layer. I is overwritten (u is stored in it).
    """
    B, T, n = I.shape
    decay = I.dtype.type(layer.decay)
    u = np.zeros((B, n), dtype=I.dtype)
    if layer.kind == "li":
        for t in range(T):
            u *= decay
            u += I[:, t]
            I[:, t] = u
        return I, None
    thr, reset = I.dtype.type(layer.threshold), I.dtype.type(layer.reset)
    spikes = np.empty((B, T, n), dtype=bool)
    for t in range(T):
        u *= decay
        u += I[:, t]
        s = u >= thr
        u[s] = reset
        spikes[:, t] = s
        I[:, t] = u
    return I, spikes


def recurrent_dynamics(layer: Layer, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The membrane recursion of a recurrent "lif" layer on feed-forward sums S = W x
    (B, T, n) (:func:`synaptic_sum`: no filter, no bias), in S's dtype::

        J[t] = current_decay * J[t-1] + (S[t] + sum_j R_ij s_j[t - E_ij]) ;  I = J + b
        u[t] = decay * u[t-1] + I[t] ;  spike where u >= threshold, then u = reset

    Returns (u, spikes) like :func:`neuron_dynamics`; S is overwritten with u. Compiled
    (:func:`neurodelay.sim.dsum.recurrent_loop`: each spike's recurrent weights added to
    the steps they reach) where available, else numpy (one product per distinct delay and
    step); the two agree to float rounding (other orders of the recurrent sums).
    """
    if dsum.available() and S.flags.c_contiguous:
        spikes = dsum.recurrent_loop(
            S, layer.rec_weight, layer.rec_delay, decay=layer.decay,
            current_decay=layer.current_decay, threshold=layer.threshold,
            reset=layer.reset, bias=layer.bias)
        return S, spikes
    return _recurrent_numpy(layer, S)


def _recurrent_numpy(layer: Layer, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`recurrent_dynamics` in numpy (no C compiler): the recurrent current of each
    step's spikes as one product per distinct recurrent delay."""
    B, T, n = S.shape
    dt = S.dtype.type
    R = layer.rec_weight.astype(S.dtype)
    used = layer.rec_weight != 0
    by_delay = [(int(e), np.where(used & (layer.rec_delay == e), R, 0).T.copy())
                for e in np.unique(layer.rec_delay[used]) if e < T]
    slots = (max(e for e, _ in by_delay) + 1) if by_delay else 1
    pending = np.zeros((slots, B, n), dtype=S.dtype)   # recurrent current due at t % slots
    decay, cdecay = dt(layer.decay), dt(layer.current_decay)
    thr, reset = dt(layer.threshold), dt(layer.reset)
    bias = layer.bias.astype(S.dtype)
    u = np.zeros((B, n), dtype=S.dtype)
    J = np.zeros((B, n), dtype=S.dtype)
    spikes = np.empty((B, T, n), dtype=bool)
    for t in range(T):
        slot = t % slots
        J *= cdecay
        J += S[:, t] + pending[slot]
        pending[slot] = 0
        u *= decay
        u += J + bias
        s = u >= thr
        u[s] = reset
        spikes[:, t] = s
        S[:, t] = u
        if s.any():
            sf = s.astype(S.dtype)
            for e, RT in by_delay:
                if t + e < T:
                    pending[(t + e) % slots] += sf @ RT
    return S, spikes


def readout_scores(u: np.ndarray) -> np.ndarray:
    """sum_t softmax(u[:, t]) in float64, shape (B, n_classes): the readout rule of the
    PyTorch model, shared by every simulator (zeros when there is no time step)."""
    z = np.asarray(u, np.float64)
    if z.shape[1] == 0:
        return np.zeros((z.shape[0], z.shape[2]))
    z = z - z.max(axis=2, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=2, keepdims=True)).sum(axis=1)


def simulate(net: Network, x, *, record: bool = False, dtype=np.float32) -> SimResult:
    """Simulate ``net`` on a batch x (B, T, n_in) of binned input counts.

    ``record=True`` also returns every hidden layer's spikes (bool, (B, T, n)).
    ``dtype`` np.float32 (default) or np.float64 selects the arithmetic.

    Examples:
        A coincidence detector: input 0 is delayed by 2 steps, so only "input 0, then
        input 1 two steps later" makes both arrive together and the neuron spike:

        >>> import numpy as np
        >>> from neurodelay.core.network import Layer, Network
        >>> hidden = Layer(weight=[[1.0, 1.0]], delay=[[2, 0]], bias=[0.0], decay=0.5,
        ...                threshold=1.5)
        >>> readout = Layer(weight=[[1.0]], delay=[[0]], bias=[0.0], decay=0.9, kind="li")
        >>> net = Network([hidden, readout], dt=0.01, n_channels=2, channel_bin=1)
        >>> from neurodelay.sim.floatsim import simulate
        >>> x = np.zeros((2, 6, 2), np.float32)
        >>> x[0, 0, 0] = x[0, 2, 1] = 1        # sample 0: input 0, then input 1
        >>> x[1, 0, 1] = x[1, 2, 0] = 1        # sample 1: the other order
        >>> res = simulate(net, x, record=True)
        >>> res.spikes[0][:, :, 0].sum(axis=1).tolist()
        [1, 0]
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise SimulationError(f"dtype must be float32 or float64, got {dtype}")
    h = _check_input(net, x, dtype)
    recorded = [] if record else None
    for k, layer in enumerate(net.layers):
        if layer.recurrent:
            u, s = recurrent_dynamics(layer, synaptic_sum(layer, h, dtype))
        else:
            u, s = neuron_dynamics(layer, synaptic_current(layer, h, dtype))
        if k < len(net.layers) - 1:
            h = s.astype(dtype)
            if record:
                recorded.append(s)
    scores = readout_scores(u)
    return SimResult(u=u, scores=scores, predictions=scores.argmax(axis=1),
                     spikes=recorded)


def predict(net: Network, samples, *, batch_size: int = 256,
            dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N, C), predictions (N,)) for samples (N, T, n_in), in chunks of batch_size."""
    if batch_size < 1:
        raise SimulationError(f"batch_size must be >= 1, got {batch_size}")
    samples = np.asarray(samples)
    if samples.ndim != 3:
        raise SimulationError(f"samples must be (N, time, n_in), got shape {samples.shape}")
    scores = [simulate(net, samples[i:i + batch_size], dtype=dtype).scores
              for i in range(0, len(samples), batch_size)]
    scores = (np.concatenate(scores) if scores
              else np.zeros((0, net.layers[-1].n_out)))
    return scores, scores.argmax(axis=1)


def accuracy(net: Network, samples_padded, labels, *, batch_size: int = 256,
             dtype=np.float32) -> float:
    """Fraction of samples (N, T, n_in), zero-padded to a common T, classified as labels."""
    labels = np.asarray(labels)
    if labels.shape != (len(samples_padded),):
        raise SimulationError(f"labels must have shape ({len(samples_padded)},), got "
                              f"{labels.shape}")
    if len(labels) == 0:
        raise SimulationError("no samples: accuracy of an empty set is undefined")
    _, pred = predict(net, samples_padded, batch_size=batch_size, dtype=dtype)
    return float(np.mean(pred == labels))
