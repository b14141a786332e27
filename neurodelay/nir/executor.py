"""Reference executor: runs a NIR graph step by step straight from its nodes.

It does not go through the importer's Network: every node is stepped on its own, in
topological order, with the summed values of its incoming edges (conventions in
:data:`neurodelay.nir.graph.CONVENTIONS`, discretization in
:data:`~neurodelay.nir.graph.DISCRETIZATION_TEXT`), so it runs graphs the importer
refuses too (a Threshold on a membrane, a spiking output, skip connections), as long as
they are made of supported nodes.

Cycles (recurrent graphs; :data:`neurodelay.nir.graph.RECURRENCE`): still one graph
evaluation per step; the edges leaving a neuron node inside a cycle carry that neuron's
output of the previous step (zeros at t = 0), so a cycle without a Delay reads the
previous step's output and a Delay of k steps on it makes that k + 1 steps.

Per step t (batch-vectorised; x[t] the Input value):

    Affine  y = W x + b      Linear  y = W x      Scale  y = s * x
    Delay   y_c[t] = x_c[t - k_c], k_c = delay_c / dt (whole steps), 0 before
    Threshold  y = (x > threshold)
    neurons: c = current_decay*c + current_gain*x  (Cuba nodes; else c = x)
             v = decay*v + gain*c + bias            (factors: neuron_factors)
             spiking: z = v > v_threshold; v = v_reset where z; y = z   else y = v
    Output  y = x  (what the readout rule scores: sum_t softmax(y[t]))
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np

from neurodelay import data as D
from neurodelay.errors import NirImportError
from neurodelay.nir.graph import (
    DEFAULT_MAX_DELAY_STEPS,
    NEURONS,
    check_discretization,
    check_dt,
    check_time_constants,
    delay_steps,
    metadata_dt,
    neuron_factors,
    read_graph,
    view,
)
from neurodelay.nir.importer import input_layout
from neurodelay.sim.floatsim import readout_scores


@dataclass
class NirRunResult:
    """output (B, T, n_out): the Output node's value each step; scores (B, n_out) float64
    sum_t softmax(output[t]); predictions (B,) argmax; spikes: with record=True, each
    spiking node's output (B, T, n) bool by node name."""

    output: np.ndarray
    scores: np.ndarray
    predictions: np.ndarray
    spikes: dict | None = None


class _Op:
    """One node; ``preds`` its inputs as (name, from the previous step?) pairs."""

    def __init__(self, name: str, kind: str, preds: list[tuple[str, bool]]):
        self.name, self.kind, self.preds = name, kind, preds


class Program:
    """A compiled graph: one operation per node, in topological order."""

    def __init__(self, graph: nir.NIRGraph, dt: float, discretization: str = "euler", *,
                 max_delay_steps: int = DEFAULT_MAX_DELAY_STEPS):
        self.dt = check_dt(dt)
        self.discretization = check_discretization(discretization)
        g = view(graph)
        self.view = g
        self.n_in, self.n_out = g.n_in, g.n_out
        self.ops: list[_Op] = []
        for name in g.order:
            node, t = g.nodes[name], g.kind(name)
            op = _Op(name, t, [(p, (p, name) in g.feedback) for p in g.preds[name]])
            if t in ("Affine", "Linear"):
                op.W = np.asarray(node.weight, np.float64)
                op.b = np.asarray(node.bias, np.float64) if t == "Affine" else None
            elif t == "Scale":
                op.s = np.asarray(node.scale, np.float64)
            elif t == "Threshold":
                op.thr = np.asarray(node.threshold, np.float64)
            elif t == "Delay":
                op.k = delay_steps(node, name, self.dt, max_delay_steps)
                op.L = int(op.k.max()) + 1 if op.k.size else 1
            elif t in NEURONS:
                check_time_constants(node, name)
                op.f = neuron_factors(node, name, self.dt, self.discretization)
            self.ops.append(op)

    def run(self, x, *, record: bool = False, dtype=np.float64) -> NirRunResult:
        """Execute on x (B, T, n_in) (or (T, n_in): one sample)."""
        dtype = np.dtype(dtype)
        x = _check_input(x, self.n_in, dtype)
        B, T, _ = x.shape
        cast = {op.name: self._params(op, dtype) for op in self.ops}   # once per run
        state: dict[str, dict] = {}
        for op in self.ops:
            n = self.view.dims[op.name][1]
            if op.kind == "Delay":
                state[op.name] = {"buf": np.zeros((op.L, B, n), dtype)}
            elif op.kind in NEURONS:
                state[op.name] = {"v": np.zeros((B, n), dtype), "c": np.zeros((B, n), dtype)}
        out = np.zeros((B, T, self.n_out), dtype)
        spikes = ({op.name: np.zeros((B, T, self.view.dims[op.name][1]), bool)
                   for op in self.ops if op.kind in NEURONS and op.f["spiking"]}
                  if record else None)
        # the previous step's output of every neuron with a feedback edge (cycles)
        prev = {a: np.zeros((B, self.view.dims[a][1]), dtype) for a, _ in self.view.feedback}
        for t in range(T):
            val: dict[str, np.ndarray] = {}
            for op in self.ops:
                if op.kind == "Input":
                    val[op.name] = x[:, t]
                    continue
                val[op.name] = self._step(op, self._input(op, val, prev), t,
                                          state.get(op.name), cast[op.name], dtype)
                if spikes is not None and op.name in spikes:
                    spikes[op.name][:, t] = val[op.name] > 0
            for a in prev:
                prev[a] = val[a]
            out[:, t] = val[self.view.output]
        scores = readout_scores(out)
        return NirRunResult(out, scores, scores.argmax(axis=1), spikes)

    @staticmethod
    def _params(op: _Op, dtype) -> dict:
        """The node's parameters in the run's precision, converted once per run."""
        if op.kind in ("Affine", "Linear"):
            return {"WT": np.ascontiguousarray(op.W.T, dtype),
                    "b": op.b.astype(dtype) if op.b is not None else None}
        if op.kind == "Scale":
            return {"s": op.s.astype(dtype)}
        if op.kind == "Threshold":
            return {"thr": op.thr.astype(dtype)}
        if op.kind == "Delay":
            return {"channels": np.arange(op.k.size)}
        return {k: (v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                    else v) for k, v in getattr(op, "f", {}).items()}

    @staticmethod
    def _input(op: _Op, val: dict, prev: dict):
        """The sum of a node's incoming edges (a feedback edge: the previous step's)."""
        parts = [prev[p] if fb else val[p] for p, fb in op.preds]
        inp = parts[0]
        for v in parts[1:]:
            inp = inp + v
        return inp

    @staticmethod
    def _step(op: _Op, inp, t: int, st, f, dtype):
        k = op.kind
        if k == "Output":
            return inp
        if k in ("Affine", "Linear"):
            y = inp @ f["WT"]
            return y + f["b"] if f["b"] is not None else y
        if k == "Scale":
            return inp * f["s"]
        if k == "Threshold":
            return (inp > f["thr"]).astype(dtype)
        if k == "Delay":
            buf = st["buf"]
            buf[t % op.L] = inp
            return buf[(t - op.k) % op.L, :, f["channels"]].T
        # neuron
        if f["current_decay"] is not None:
            st["c"] = f["current_decay"] * st["c"] + f["current_gain"] * inp
            drive = st["c"]
        else:
            drive = inp
        v = f["decay"] * st["v"] + f["gain"] * drive + f["bias"]
        if not f["spiking"]:
            st["v"] = v
            return v
        z = v > f["v_threshold"]
        st["v"] = np.where(z, f["v_reset"], v)
        return z.astype(dtype)


def _check_input(x, n_in: int, dtype) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[2] != n_in:
        raise NirImportError(f"input must be (batch, time, {n_in}) or (time, {n_in}) for this "
                             f"graph ({n_in} inputs), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise NirImportError(f"input must be numeric, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise NirImportError(f"input has no samples (shape {x.shape}); give at least one "
                             f"sample of shape (time, {n_in})")
    if x.shape[1] == 0:
        raise NirImportError(f"input has no time steps (shape {x.shape}): there is nothing "
                             f"to run, and a prediction from no input would be made up; "
                             f"give at least one step (batch, time >= 1, {n_in})")
    x = x.astype(dtype)
    bad = ~np.isfinite(x)
    if bad.any():
        b, t, i = (int(k) for k in np.argwhere(bad)[0])
        raise NirImportError(f"input contains NaN or infinite values ({x[b, t, i]} at sample "
                             f"{b}, step {t}, input {i}; {int(bad.sum())} in all); inputs are "
                             f"spike counts per step: finite and >= 0")
    neg = x < 0
    if neg.any():
        b, t, i = (int(k) for k in np.argwhere(neg)[0])
        raise NirImportError(f"input contains negative values ({x[b, t, i]:g} at sample {b}, "
                             f"step {t}, input {i}; {int(neg.sum())} in all); inputs are "
                             f"spike counts per step: finite and >= 0")
    return x


def _program(graph_or_path, dt, discretization, max_delay_steps) -> Program:
    graph = (read_graph(graph_or_path) if isinstance(graph_or_path, (str, Path))
             else graph_or_path)
    if dt is None:
        dt = metadata_dt(graph) if isinstance(graph, nir.NIRGraph) else None
        if dt is None:
            raise NirImportError("the graph does not state its time step (no metadata 'dt'); "
                                 "NIR nodes are continuous-time: pass dt (--dt SECONDS)")
    where = str(graph_or_path) if isinstance(graph_or_path, (str, Path)) else ""
    try:
        return Program(graph, dt, discretization, max_delay_steps=max_delay_steps)
    except NirImportError as e:
        if where:
            raise NirImportError(f"{where}: {e}") from None
        raise


def execute(graph_or_path, x, dt: float | None = None, discretization: str = "euler", *,
            record: bool = False, dtype=np.float64, batch_size: int = 256,
            max_delay_steps: int = DEFAULT_MAX_DELAY_STEPS) -> NirRunResult:
    """Run a NIR graph (object or file) on x (B, T, n_in) in chunks of batch_size.

    ``dt`` None takes the graph's metadata dt (neurodelay's files state it).
    """
    if int(batch_size) < 1:
        raise NirImportError(f"batch_size must be >= 1, got {batch_size}")
    prog = _program(graph_or_path, dt, discretization, max_delay_steps)
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    parts = [prog.run(x[i:i + batch_size], record=record, dtype=dtype)
             for i in range(0, max(len(x), 1), int(batch_size))] if len(x) else []
    if not parts:
        raise NirImportError("no samples to run")
    output = np.concatenate([p.output for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    spikes = ({k: np.concatenate([p.spikes[k] for p in parts]) for k in parts[0].spikes}
              if record else None)
    return NirRunResult(output, scores, scores.argmax(axis=1), spikes)


def run_test_file(graph_or_path, test_file, dt: float | None = None,
                  discretization: str = "euler", *, channel_bin: int | None = None,
                  n_channels: int | None = None, max_time: float | None = None,
                  batch_size: int = 256, cache_dir=None, progress: bool = False,
                  max_delay_steps: int = DEFAULT_MAX_DELAY_STEPS) -> dict:
    """Bin an SHD-layout file with the graph's dt and input layout, run every sample
    (zero-padded to the longest), and return {"accuracy", "n", "predictions", "labels",
    "n_channels", "channel_bin", "dt", "discretization"}."""

    prog = _program(graph_or_path, dt, discretization, max_delay_steps)
    n_channels, channel_bin = input_layout(prog.n_in, n_channels, channel_bin,
                                           prog.view.graph)
    ds = D.load_binned(test_file, channel_bin=channel_bin, dt=prog.dt, max_time=max_time,
                       n_channels=n_channels, cache_dir=cache_dir, progress=progress)
    if len(ds) == 0:
        raise NirImportError(f"{test_file}: holds no samples")
    if ds.n_classes and ds.n_classes != prog.n_out:
        raise NirImportError(f"{test_file}: the data has {ds.n_classes} classes but the graph "
                             f"has {prog.n_out} outputs; use a file of the task the graph "
                             f"was trained on")
    x = D.pad_batch(ds.samples)
    preds = []
    for i in range(0, len(x), int(batch_size)):
        preds.append(prog.run(x[i:i + batch_size]).predictions)
    pred = np.concatenate(preds)
    return {"accuracy": float(np.mean(pred == ds.labels)), "n": int(len(ds)),
            "predictions": pred.tolist(), "labels": ds.labels.tolist(),
            "class_names": list(ds.class_names), "n_channels": n_channels,
            "channel_bin": channel_bin, "dt": prog.dt,
            "discretization": prog.discretization, "steps": int(x.shape[1])}
