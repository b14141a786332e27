"""NIR graph -> neurodelay float :class:`~neurodelay.core.network.Network` (exact).

What is imported
----------------
A feed-forward chain ``Input -> [synapses] -> neuron -> [synapses] -> neuron ... -> readout
-> Output`` where

* *synapses* between two neuron nodes (or the Input and the first one) is any DAG of
  ``Affine``, ``Linear``, ``Scale`` and ``Delay`` nodes whose edges sum: a Delay before a
  Linear (per presynaptic channel), after it (per postsynaptic channel: delays the current
  of output channel ``o``, i.e. becomes delay ``d_o`` of every synapse into ``o``), and
  neurodelay's own decomposition (one ``Delay(d*dt) -> Linear`` branch per distinct delay,
  all summing into the neuron node) all reduce to one weight and one integer delay per
  synapse. A synapse reached through paths of different delays (a multi-tap synapse) is
  refused: neurodelay gives each synapse one delay.
* hidden neuron nodes are spiking: ``LIF``, ``IF`` or ``CubaLIF`` (a ``Threshold`` with
  ``0 <= threshold < 1`` right after one passes its 0/1 spikes unchanged and is accepted);
  the readout feeding the Output is non-spiking: ``LI``, ``I`` or ``CubaLI``.
* recurrent layers: a cycle from a spiking node back to itself through synapse nodes
  (``neuron -> [Delay] -> Linear/Affine/Scale -> the same neuron``, several in parallel, or
  a plain self-edge) becomes the layer's ``rec_weight`` / ``rec_delay``. This covers
  neurodelay's own export, snnTorch's RLeaky / RSynaptic (an Affine from ``1.lif`` back to
  ``1.lif``, no Delay) and its older nested-subgraph form (inlined). Time: one graph
  evaluation per step, and a cycle reads its neuron's output of the previous step
  (:data:`neurodelay.nir.graph.RECURRENCE`): a cycle without a Delay is a recurrent delay
  of 1 step, a Delay of k steps on it gives k + 1 (stated in the network's
  ``meta["recurrence"]`` and in the import notes). The loop's nodes may take no input
  from outside it and feed nothing outside it; a cycle through two neuron nodes, through
  a non-spiking node, or through no neuron at all is refused. An Affine bias in the loop
  is a constant input from step 0 (the loop reads zeros at t = 0) and joins the bias.

Discretization with step ``dt`` (``a = dt/tau`` for ``euler``, ``a = 1 - exp(-dt/tau)`` for
``exp``; see :data:`neurodelay.nir.graph.DISCRETIZATION_TEXT`), per neuron node::

    LIF / LI       decay = 1 - a,   W = a*r*W_graph,   bias = a*v_leak + a*r*b_graph
    IF / I         decay = 1,       W = dt*r*W_graph,  bias = dt*r*b_graph
    CubaLIF/CubaLI current_decay = 1 - a_syn, decay = 1 - a_mem,
                   W = a_mem*r*a_syn*w_in*W_graph, bias = a_mem*v_leak
                   (the new synaptic current drives v in the same step, like Loihi's u)

``b_graph`` is the constant offset the Affine biases put on the neuron's input. A bias
that reaches a CubaLIF's synaptic current is filtered by it (it ramps up as
``1 - current_decay**t``), which the float Layer (bias added to u) cannot express: refused;
move it into ``v_leak`` (``bias = a_mem*v_leak``). A bias behind a Delay is zero for the
first steps: refused too.

Thresholds: NIR fires when ``v > v_threshold``; neurodelay when ``u >= threshold``: the
threshold is the smallest float32 above ``v_threshold`` (so both rules agree for every
float32 membrane; the exporter's float32 ``nextafter`` read backwards). ``v_reset`` is
the reset value. ``tau``, ``v_threshold`` and ``v_reset`` must be the same for all neurons
of a node (a Layer has one of each); ``r``, ``w_in`` and ``v_leak`` may differ per neuron.

An imported network written as a run folder: :mod:`neurodelay.nir.run_folder`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np

from neurodelay.core.network import Layer, Network, NetworkError
from neurodelay.errors import NirImportError
from neurodelay.nir.graph import (
    CONVENTIONS,
    DEFAULT_MAX_DELAY_STEPS,
    DISCRETIZATION_TEXT,
    NEURONS,
    NON_SPIKING,
    SPIKING,
    check_discretization,
    check_dt,
    check_time_constants,
    cycle_text,
    delay_steps,
    file_version,
    kahn_order,
    metadata_dt,
    metadata_value,
    neuron_factors,
    read_graph,
    strict_to_inclusive,
    type_name,
    view,
)

SHD_CHANNELS = 700   # raw channels of an SHD-layout file (the default input layout)


# --------------------------------------------------------------------------- signals

@dataclass
class _Signal:
    """The value at a node as an affine map of its source's output s (n_src values):
    value_i[t] = sum_j W_ij s_j[t - D_ij] + b_i  (D meaningless where W == 0)."""

    src: str
    W: np.ndarray            # (m, n_src) float64
    D: np.ndarray            # (m, n_src) int64
    b: np.ndarray            # (m,) float64
    delayed_bias: str | None = None   # Delay node that shifted a nonzero bias

    @classmethod
    def source(cls, name: str, n: int) -> "_Signal":
        return cls(name, np.eye(n), np.zeros((n, n), np.int64), np.zeros(n))


def _multi_tap(at: str, i: int, j: int, d1: int, d2: int, src: str) -> NirImportError:
    return NirImportError(
        f"node {at!r}: the synapse from channel {j} of {src!r} to channel {i} arrives through "
        f"paths with different delays ({d1} and {d2} steps), a multi-tap synapse; neurodelay "
        f"gives every synapse one weight and one delay: split it into separate neurons or "
        f"keep one path per synapse")


def _combine(parts: list[tuple[np.ndarray, np.ndarray]], at: str, src: str):
    """Sum (W, D) terms; two nonzero terms of one synapse must have the same delay."""
    W, D = parts[0][0].copy(), parts[0][1].copy()
    for W2, D2 in parts[1:]:
        clash = (W != 0) & (W2 != 0) & (D != D2)
        if clash.any():
            i, j = (int(v) for v in np.argwhere(clash)[0])
            raise _multi_tap(at, i, j, int(D[i, j]), int(D2[i, j]), src)
        D = np.where(W != 0, D, D2)
        W = W + W2
    return W, D


def _sum(signals: list[_Signal], at: str, g) -> _Signal:
    srcs = sorted({s.src for s in signals})
    if len(srcs) > 1:
        raise NirImportError(
            f"node {at!r} ({g.kind(at)}) sums signals coming from different layers "
            f"({', '.join(repr(s) for s in srcs)}): a skip or branch connection across layers, "
            f"which a neurodelay Network (a chain of layers) cannot hold; remove it")
    if len(signals) == 1:
        return signals[0]
    W, D = _combine([(s.W, s.D) for s in signals], at, srcs[0])
    delayed = next((s.delayed_bias for s in signals if s.delayed_bias), None)
    return _Signal(srcs[0], W, D, sum(s.b for s in signals), delayed)


def _linear(A: np.ndarray, s: _Signal, at: str) -> _Signal:
    """A @ s: per distinct delay, only the rows of s that carry it take part."""
    A = np.asarray(A, np.float64)
    nz = s.W != 0
    parts = []
    for d in np.unique(s.D[nz]):
        rows = np.flatnonzero((nz & (s.D == d)).any(axis=1))
        Wd = np.where(s.D[rows] == d, s.W[rows], 0.0)
        parts.append((A[:, rows] @ Wd, np.full((A.shape[0], s.W.shape[1]), int(d), np.int64)))
    if not parts:
        parts = [(np.zeros((A.shape[0], s.W.shape[1])),
                  np.zeros((A.shape[0], s.W.shape[1]), np.int64))]
    W, D = _combine(parts, at, s.src)
    return _Signal(s.src, W, D, A @ s.b, s.delayed_bias)


def _apply(name: str, node, s: _Signal, dt: float, max_delay: int) -> _Signal:
    t = type_name(node)
    if t == "Linear":
        return _linear(node.weight, s, name)
    if t == "Affine":
        out = _linear(node.weight, s, name)
        out.b = out.b + np.asarray(node.bias, np.float64)
        return out
    if t == "Scale":
        k = np.asarray(node.scale, np.float64)
        return _Signal(s.src, k[:, None] * s.W, s.D, k * s.b, s.delayed_bias)
    if t == "Delay":
        k = delay_steps(node, name, dt, max_delay)
        delayed = s.delayed_bias
        if np.any((k > 0) & (s.b != 0)):
            delayed = name
        return _Signal(s.src, s.W, s.D + k[:, None], s.b, delayed)
    raise NirImportError(f"node {name!r}: {t} is not a synapse node")  # pragma: no cover


# --------------------------------------------------------------------------- layers

def _uniform(values: np.ndarray, what: str, name: str, t: str) -> float:
    v = np.asarray(values, np.float64)
    if v.size and not np.allclose(v, v[0], rtol=1e-9, atol=0.0):
        raise NirImportError(
            f"node {name!r} ({t}): {what} differs between its neurons ({v.min():g} .. "
            f"{v.max():g}); a neurodelay layer has one {what} for all its neurons: split the "
            f"node into one node per value, or make it uniform")
    return float(v[0]) if v.size else 0.0


def _layer(name: str, node, s: _Signal, dt: float, disc: str, max_delay: int,
           rec: _Signal | None = None) -> Layer:
    """The Layer of neuron node ``name`` fed by ``s``; ``rec``: its recurrent input (the
    signal its own output sends back to it, see :func:`_recurrent_loops`)."""
    t = type_name(node)
    check_time_constants(node, name)
    f = neuron_factors(node, name, dt, disc)
    decay = _uniform(f["decay"], "membrane decay (tau)", name, t)
    gain = f["gain"]
    current_decay = 0.0
    b_in = s.b if rec is None else s.b + rec.b
    if f["current_decay"] is not None:
        current_decay = _uniform(f["current_decay"], "current decay (tau_syn)", name, t)
        gain = gain * f["current_gain"]
        if current_decay != 0.0 and np.any(b_in != 0):
            i = int(np.flatnonzero(b_in)[0])
            raise NirImportError(
                f"node {name!r} ({t}): its input carries a constant bias (Affine bias, "
                f"e.g. {b_in[i]:g} on neuron {i}) that the synaptic current filters "
                f"(tau_syn: it ramps up as 1 - {current_decay:.4g}**t), but neurodelay adds "
                f"a layer's bias to the membrane, not to the current. Move the bias into the "
                f"node's v_leak (v_leak += r*w_in*bias gives the same steady state; exact "
                f"from the first step) and make the Affine bias zero, or use a Linear")
    delayed = s.delayed_bias or (rec.delayed_bias if rec is not None else None)
    if delayed:
        raise NirImportError(
            f"node {name!r} ({t}): an Affine bias reaches it through Delay "
            f"{delayed!r}, so it is zero for the first steps and constant after; a "
            f"neurodelay bias is constant from step 0: put the bias after the Delay (or "
            f"into the neuron's v_leak)")
    W = gain[:, None] * s.W
    bias = f["bias"] + gain * b_in
    D = np.where(W != 0, s.D, 0)
    kw = dict(decay=decay, current_decay=current_decay, name=name)
    if rec is not None:
        # a cycle takes one step (the previous step's output) plus its Delays
        R = gain[:, None] * rec.W
        kw.update(rec_weight=R.astype(np.float32),
                  rec_delay=np.where(R != 0, rec.D + 1, 1).astype(np.int32))
    for what, M in (("synapse", D), ("recurrent synapse", kw.get("rec_delay"))):
        if M is not None and M.size and M.max() > max_delay:
            i, j = np.unravel_index(int(M.argmax()), M.shape)
            raise NirImportError(
                f"node {name!r}: the {what} {j} -> {i} is delayed by {int(M.max())} steps "
                f"in total (chained Delay nodes), above the limit of {max_delay} steps; "
                f"check the delay unit and --dt, or raise --max-delay-steps")
    if f["spiking"]:
        v_thr = _uniform(f["v_threshold"], "v_threshold", name, t)
        v_reset = _uniform(f["v_reset"], "v_reset", name, t)
        threshold = strict_to_inclusive(v_thr)
        if not threshold > 0:
            raise NirImportError(
                f"node {name!r} ({t}): v_threshold = {v_thr:g}; neurodelay's spiking layers "
                f"need a positive threshold (scale the weights, biases, v_reset and "
                f"v_threshold of this node together to make it positive)")
        kw.update(threshold=threshold, reset=v_reset, kind="lif")
    else:
        kw.update(kind="li")
    try:
        return Layer(weight=W.astype(np.float32), delay=D.astype(np.int32),
                     bias=bias.astype(np.float32), **kw)
    except NetworkError as e:
        raise NirImportError(f"node {name!r} ({t}): {e}") from None


# --------------------------------------------------------------------------- graph

@dataclass
class ImportResult:
    """What :func:`to_network` returns: the Network and how it was read."""

    network: Network
    layers: list[dict]              # per layer: neuron node, type, synapse nodes
    notes: list[str] = field(default_factory=list)


def graph_class_names(graph: nir.NIRGraph, n_out: int, notes: list) -> list[str]:
    for key in ("class_names_json", "class_names"):
        v = metadata_value(graph, key)
        if v is None:
            continue
        try:
            names = json.loads(v) if isinstance(v, str) else [
                x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(v).tolist()]
        except (ValueError, TypeError):
            names = None
        if isinstance(names, list) and len(names) == n_out:
            return [str(x) for x in names]
        notes.append(f"metadata {key!r} does not hold {n_out} class names; using class0..")
    return [f"class{i}" for i in range(n_out)]


def input_layout(n_in: int, n_channels: int | None = None, channel_bin: int | None = None,
                 graph: nir.NIRGraph | None = None) -> tuple[int, int]:
    """(n_channels, channel_bin) with n_channels // channel_bin == n_in.

    Defaults: the graph's metadata (neurodelay writes both); else 700 raw channels (an SHD
    layout) summed in groups of 700 // n_in when n_in divides 700; else n_in channels, no
    binning.
    """
    if graph is not None and n_channels is None and channel_bin is None:
        mc, mb = metadata_value(graph, "n_channels"), metadata_value(graph, "channel_bin")
        try:
            mc, mb = int(mc), int(mb)
            if mb > 0 and mc % mb == 0 and mc // mb == n_in:
                return mc, mb
        except (TypeError, ValueError):
            pass
    if n_channels is None and channel_bin is None:
        return (SHD_CHANNELS, SHD_CHANNELS // n_in) if SHD_CHANNELS % n_in == 0 else (n_in, 1)
    if n_channels is None:
        n_channels = n_in * int(channel_bin)
    if channel_bin is None:
        channel_bin = int(n_channels) // n_in if n_in and int(n_channels) % n_in == 0 else 0
    n_channels, channel_bin = int(n_channels), int(channel_bin)
    if channel_bin <= 0 or n_channels % channel_bin or n_channels // channel_bin != n_in:
        raise NirImportError(
            f"the graph takes {n_in} inputs, but n_channels={n_channels} with "
            f"channel_bin={channel_bin} gives "
            f"{n_channels // channel_bin if channel_bin > 0 else 'no'} inputs; choose them so "
            f"that n_channels / channel_bin = {n_in} (e.g. --n-channels {n_in * max(channel_bin, 1)}"
            f" --channel-bin {max(channel_bin, 1)})")
    return n_channels, channel_bin


def to_network(graph: nir.NIRGraph, dt: float, discretization: str = "euler", *,
               max_delay_steps: int = DEFAULT_MAX_DELAY_STEPS, class_names=None,
               n_channels: int | None = None, channel_bin: int | None = None,
               meta: dict | None = None, where: str = "") -> ImportResult:
    """Convert a NIR graph (see the module docstring) to a float Network with step dt."""
    dt = check_dt(dt)
    disc = check_discretization(discretization)
    try:
        g = view(graph)
        return _to_network(g, dt, disc, int(max_delay_steps), class_names, n_channels,
                           channel_bin, meta or {})
    except NirImportError as e:
        if where:
            raise NirImportError(f"{where}: {e}") from None
        raise


def _threshold_error(g, name: str) -> NirImportError:
    preds = g.preds[name]
    what = (f"after {preds[0]!r} ({g.kind(preds[0])})" if len(preds) == 1
            else f"fed by {len(preds)} nodes")
    return NirImportError(
        f"Threshold {name!r} {what}: neurodelay takes a Threshold only right after a "
        f"spiking node (LIF, IF, CubaLIF) with 0 <= threshold < 1, where it passes the 0/1 "
        f"spikes unchanged. A Threshold on a membrane (e.g. LI -> Threshold) is a neuron "
        f"that never resets, which a neurodelay layer (reset after every spike) cannot "
        f"hold: write it as a LIF node with v_reset, or run the graph as it is with "
        f"`neurodelay nir-run`")


RECURRENT_IMPORT = (
    "recurrent synapses i <- j of a layer come from the graph's cycles neuron -> "
    "[Delay] -> Linear/Affine/Scale -> the same neuron; one graph evaluation is one step, "
    "a cycle without a Delay reads the previous step's output (recurrent delay 1 step) "
    "and one through Delay nodes of k steps in total the output of k + 1 steps before "
    "(recurrent delay k + 1)")


def _recurrent_loops(g) -> dict[str, list[str]]:
    """{neuron node: the nodes of its recurrent loop, in evaluation order} for every cycle
    of the graph; a cycle that is not one spiking node's loop back to itself (through
    nodes that take no other input and feed nothing else) is refused."""
    loops: dict[str, list[str]] = {}
    for part in g.cycles:
        cyc = cycle_text(part, g.succs)
        neurons = [n for n in part if g.kind(n) in NEURONS]   # >= 1: view() checks
        if len(neurons) > 1:
            raise NirImportError(
                f"the cycle {cyc} goes through {len(neurons)} neuron nodes "
                f"({', '.join(repr(n) for n in neurons)}): a loop between layers has no "
                f"neurodelay Network equivalent, whose recurrent synapses connect a layer to "
                f"itself only (neuron -> [Delay] -> Linear/Affine -> the same neuron); run "
                f"the graph as it is with `neurodelay nir-run`")
        n = neurons[0]
        if g.kind(n) not in SPIKING:
            raise NirImportError(
                f"the non-spiking node {n!r} ({g.kind(n)}) is on the cycle {cyc}; only "
                f"spiking nodes (LIF, IF, CubaLIF) can have recurrent synapses in neurodelay")
        inside = set(part)
        rest = [m for m in part if m != n]
        for m in rest:
            outside = [p for p in g.preds[m] if p not in inside]
            if outside:
                raise NirImportError(
                    f"node {m!r} ({g.kind(m)}) is on the recurrent loop of {n!r} ({cyc}) but "
                    f"also takes input from {outside[0]!r} outside the loop; a layer's "
                    f"recurrent synapses take only its own spikes: give the loop its own "
                    f"Linear/Affine nodes")
            outside = [x for x in g.succs[m] if x not in inside]
            if outside:
                raise NirImportError(
                    f"node {m!r} ({g.kind(m)}) is on the recurrent loop of {n!r} ({cyc}) but "
                    f"also feeds {outside[0]!r} outside the loop; a layer's recurrent "
                    f"synapses feed only the layer itself: give the loop its own "
                    f"Linear/Affine nodes")
        # acyclic without n: a cycle through no neuron was refused by view()
        loops[n] = kahn_order(rest, g.succs)
    return loops


def _recurrent_signal(g, n: str, loop: list[str], dt: float, max_delay: int) -> _Signal:
    """What neuron ``n``'s own output sends back into it through ``loop``."""
    local = {n: _Signal.source(n, g.dims[n][1])}
    for m in loop:
        node = g.nodes[m]
        if g.kind(m) == "Threshold":
            local[m] = local[_threshold_source(g, m, node)]
            continue
        local[m] = _apply(m, node, _sum([local[p] for p in g.preds[m]], m, g), dt,
                          max_delay)
    return _sum([local[p] for p in g.preds[n] if p in local], n, g)


def _to_network(g, dt, disc, max_delay, class_names, n_channels, channel_bin, meta):
    """Walk the graph in order: synapse nodes become signals, each neuron node a layer
    (with the recurrent synapses of its loop, if it has one)."""
    loops = _recurrent_loops(g)
    in_loop = {m: n for n, loop in loops.items() for m in loop}
    signals: dict[str, _Signal] = {}
    layers: list[Layer] = []
    info: list[dict] = []
    last_source = g.input
    consumed: dict[str, str] = {}
    synapse_nodes: list[str] = []
    notes: list[str] = []
    for name in _import_order(g, loops, in_loop):
        node, t = g.nodes[name], g.kind(name)
        if t == "Input":
            signals[name] = _Signal.source(name, g.n_in)
            continue
        incoming = [signals[p] for p in g.preds[name]
                    if p != name and in_loop.get(p) != name]
        if t == "Output":
            _check_output(g, name)
        elif t == "Threshold":
            signals[name] = signals[_threshold_source(g, name, node)]
        elif t in SPIKING + NON_SPIKING:
            s = _sum(incoming, name, g)
            _check_neuron(g, name, t, s, last_source, consumed)
            rec = (_recurrent_signal(g, name, loops[name], dt, max_delay) if name in loops
                   else None)
            layers.append(_layer(name, node, s, dt, disc, max_delay, rec))
            info.append({"neuron_node": name, "type": t, "synapse_nodes": synapse_nodes})
            if rec is not None:
                lay = layers[-1]
                used = lay.rec_weight != 0
                delays = sorted({int(e) for e in lay.rec_delay[used]})
                info[-1]["recurrent_nodes"] = loops[name]
                notes.append(f"node {name!r}: {int(used.sum())} recurrent synapses through "
                             f"{', '.join(repr(m) for m in loops[name]) or 'a self-edge'}, "
                             f"delays {delays} steps (a cycle reads the previous step's "
                             f"output: its Delay + 1 step)")
            synapse_nodes = []
            signals[name] = _Signal.source(name, g.dims[name][1])
            last_source = name
        else:
            s = _sum(incoming, name, g)
            signals[name] = _apply(name, node, s, dt, max_delay)
            synapse_nodes.append(name)
    if loops:
        meta = {**meta, "recurrence": RECURRENT_IMPORT}
    res = _result(g, dt, layers, info, class_names, n_channels, channel_bin, meta)
    res.notes[:0] = notes
    return res


def _import_order(g, loops: dict, in_loop: dict) -> list[str]:
    """A topological order of the graph without its recurrent loops (the loop nodes are
    evaluated with their neuron, :func:`_recurrent_signal`)."""
    names = [m for m in g.nodes if m not in in_loop]
    keep = lambda a, b: a != b and in_loop.get(a) != b  # noqa: E731 - not a return edge
    succs = {m: [x for x in g.succs[m] if x not in in_loop and keep(m, x)] for m in names}
    return kahn_order(names, succs)


def _check_output(g, name: str) -> None:
    """The Output must be fed by exactly one non-spiking neuron node (the readout)."""
    feeders = g.preds[name]
    if len(feeders) != 1 or g.kind(feeders[0]) not in NON_SPIKING:
        kinds = ", ".join(f"{p!r} ({g.kind(p)})" for p in feeders)
        raise NirImportError(
            f"the Output node {name!r} is fed by {kinds}; neurodelay's readout is the "
            f"membrane of one non-spiking neuron node (LI, I or CubaLI) connected "
            f"straight to the Output: add an LI readout (spike outputs and synapses "
            f"after the last neuron node have no Network equivalent)")


def _threshold_source(g, name: str, node) -> str:
    """The spiking node a Threshold passes through unchanged (0 <= threshold < 1)."""
    p = g.preds[name][0] if len(g.preds[name]) == 1 else None
    thr = np.asarray(node.threshold, np.float64)
    if p is None or g.kind(p) not in SPIKING or not np.all((thr >= 0) & (thr < 1)):
        raise _threshold_error(g, name)
    return p


def _check_neuron(g, name: str, t: str, s: _Signal, last_source: str,
                  consumed: dict) -> None:
    """A neuron node continues the chain: fed only by the previous layer, which feeds
    nothing else; hidden nodes spike, the readout does not. Records it in consumed."""
    if s.src != last_source:
        raise NirImportError(
            f"neuron node {name!r} is fed by {s.src!r}, but the previous layer is "
            f"{last_source!r}: neurodelay imports a chain of layers, each fed only by "
            f"the one before it")
    if s.src in consumed:
        raise NirImportError(
            f"{s.src!r} feeds both {consumed[s.src]!r} and {name!r}; a neurodelay "
            f"Network is a chain (each layer feeds only the next one)")
    consumed[s.src] = name
    if t in NON_SPIKING and any(g.kind(x) != "Output" for x in g.succs[name]):
        nxt = [x for x in g.succs[name] if g.kind(x) != "Output"]
        if g.kind(nxt[0]) == "Threshold":
            raise _threshold_error(g, nxt[0])
        raise NirImportError(
            f"node {name!r} ({t}) is non-spiking (it outputs its membrane) but feeds "
            f"{nxt[0]!r}; neurodelay's hidden layers emit spikes: use LIF / IF / "
            f"CubaLIF for hidden layers and {t} only as the readout")
    if t in SPIKING and any(g.kind(x) == "Output" for x in g.succs[name]):
        raise NirImportError(
            f"spiking node {name!r} ({t}) feeds the Output; neurodelay's readout is "
            f"the membrane of a non-spiking node (LI, I or CubaLI): add an LI readout")


def _result(g, dt, layers, info, class_names, n_channels, channel_bin, meta) -> ImportResult:
    """The Network of the imported layers, with class names and the input layout."""
    if not layers:
        raise NirImportError("the graph has no neuron node between Input and Output; "
                             "neurodelay needs at least an LI readout")
    notes: list[str] = []
    n_out = layers[-1].n_out
    if class_names is None:
        class_names = graph_class_names(g.graph, n_out, notes)
    n_channels, channel_bin = input_layout(g.n_in, n_channels, channel_bin, g.graph)
    try:
        net = Network(layers=layers, dt=dt, n_channels=n_channels, channel_bin=channel_bin,
                      class_names=list(class_names), meta=dict(meta))
    except NetworkError as e:
        raise NirImportError(str(e)) from None
    return ImportResult(net, info, notes)


def import_nir(path, dt: float | None = None, discretization: str = "euler", *,
               max_delay_steps: int = DEFAULT_MAX_DELAY_STEPS, n_channels: int | None = None,
               channel_bin: int | None = None) -> tuple[ImportResult, dict]:
    """Read a NIR file and convert it; returns (result, source description).

    ``dt`` None takes the graph's ``metadata["dt"]`` (neurodelay's files state it); a graph
    without one needs dt. The source description is what an imported run records.
    """
    path = Path(path)
    graph = read_graph(path)
    md_dt = metadata_dt(graph)
    if dt is None:
        if md_dt is None:
            raise NirImportError(
                f"{path}: the graph does not state its time step (no metadata 'dt'); NIR "
                f"nodes are continuous-time, so pass --dt SECONDS (the step the graph was "
                f"trained with, e.g. 0.001)")
        dt = md_dt
    dt = check_dt(dt)
    disc = check_discretization(discretization)
    source = _source(path, graph, dt, disc, md_dt, max_delay_steps)
    res = to_network(graph, dt, disc, max_delay_steps=max_delay_steps, n_channels=n_channels,
                     channel_bin=channel_bin, where=str(path),
                     meta={"imported_from": str(path.resolve()), "sha256": source["sha256"],
                           "discretization": disc})
    if md_dt is not None and abs(md_dt - dt) > 1e-12 * max(md_dt, dt):
        res.notes.append(f"the graph's metadata says dt = {md_dt:g} s; imported with "
                         f"dt = {dt:g} s as asked")
    md_disc = source["metadata_discretization"]
    if isinstance(md_disc, str) and md_disc in ("euler", "exp") and md_disc != disc:
        res.notes.append(f"the graph's metadata says discretization {md_disc!r}; imported "
                         f"with {disc!r} as asked")
    return res, source


def _source(path: Path, graph: nir.NIRGraph, dt: float, disc: str, md_dt,
            max_delay_steps: int) -> dict:
    """What an imported run records about its NIR file and how it was read."""
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    counts: dict[str, int] = {}
    for node in graph.nodes.values():
        counts[type_name(node)] = counts.get(type_name(node), 0) + 1
    return {
        "file": str(path.resolve()), "sha256": sha, "dt": dt, "discretization": disc,
        "discretization_rule": DISCRETIZATION_TEXT[disc], "conventions": CONVENTIONS,
        "nir_version": file_version(path), "nir_library": getattr(nir, "version", "unknown"),
        "generator": metadata_value(graph, "generator"),
        "metadata_dt": md_dt, "metadata_discretization":
            metadata_value(graph, "discretization"),
        "node_counts": dict(sorted(counts.items())), "max_delay_steps": int(max_delay_steps),
    }
