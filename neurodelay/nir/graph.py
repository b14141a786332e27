"""What the importer, the executor and the torch node map share: reading and validating a
NIR graph, and the one place where continuous NIR parameters become per-step factors.

Every problem raises :class:`NirImportError` naming the node (and file) and the fix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np

from neurodelay.errors import NirImportError
from neurodelay.untrusted import open_h5, printable

DISCRETIZATIONS = ("euler", "exp")
DEFAULT_MAX_DELAY_STEPS = 10_000     # a Delay longer than this many steps is refused
DELAY_RTOL = 1e-6                    # a delay must be a whole number of steps within this

SPIKING = ("LIF", "IF", "CubaLIF")
NON_SPIKING = ("LI", "I", "CubaLI")
NEURONS = SPIKING + NON_SPIKING
SYNAPSE_OPS = ("Affine", "Linear", "Scale", "Delay", "Threshold")
SUPPORTED = ("Input", "Output") + SYNAPSE_OPS + NEURONS

DISCRETIZATION_TEXT = {
    "euler": "forward Euler: each step v += dt/tau*(v_leak - v + r*I), i.e. decay 1 - dt/tau "
             "and input gain r*dt/tau",
    "exp": "exponential: each step v = v_leak + (v - v_leak)*exp(-dt/tau) + "
           "(1 - exp(-dt/tau))*r*I (input held constant over the step), i.e. decay "
           "exp(-dt/tau) and input gain r*(1 - exp(-dt/tau))",
}
RECURRENCE = (
    "cycles (recurrent edges): still one graph evaluation per step; every edge that leaves "
    "a neuron node and stays inside a cycle carries that neuron's output of the PREVIOUS "
    "step (zeros at t = 0), so a cycle without a Delay reads the previous step's output "
    "(a recurrent delay of 1 step) and a cycle through Delay nodes of k steps in total "
    "has delay k + 1 (the same one-step latency per cycle as nirtorch's interpreter); a "
    "cycle through n neuron nodes takes n steps plus its Delays; a cycle with no neuron "
    "node is refused")
CONVENTIONS = (
    "one graph evaluation = one time step of dt seconds; edges into a node sum; "
    "Delay(tau) delays channel c by tau[c]/dt steps (a whole number), zeros before; "
    "IF/I: v += dt*r*I; CubaLIF/CubaLI: the synaptic current I_syn is stepped first "
    "(same rule with tau_syn and input gain w_in) and the NEW I_syn drives v in the same "
    "step; spiking nodes emit z = v > v_threshold (strict), then v = v_reset where z; "
    "Threshold: z = x > threshold; readout: score_c = sum_t softmax_c(output[t]), "
    "prediction = argmax_c score_c; " + RECURRENCE)


def type_name(node) -> str:
    return type(node).__name__


def check_discretization(discretization: str) -> str:
    if discretization not in DISCRETIZATIONS:
        raise NirImportError(f"discretization must be one of {', '.join(DISCRETIZATIONS)}, "
                             f"got {discretization!r}")
    return discretization


def check_dt(dt) -> float:
    try:
        dt = float(dt)
    except (TypeError, ValueError):
        raise NirImportError(f"dt must be a number of seconds, got {dt!r}") from None
    if not (math.isfinite(dt) and dt > 0):
        raise NirImportError(f"dt must be a positive number of seconds (e.g. 0.01 for 10 ms), "
                             f"got {dt}")
    return dt


def read_graph(path) -> nir.NIRGraph:
    """nir.read with a NirImportError naming the file for every failure."""
    path = Path(path)
    if not path.is_file():
        raise NirImportError(f"{path}: no such file" + (" (it is a folder)" if path.exists()
                                                         else ""))

    def unreadable(e: BaseException) -> NirImportError:
        msg = str(e).splitlines()[0] if str(e) else ""
        return NirImportError(f"{path}: cannot be read as a NIR graph by nir "
                              f"{getattr(nir, 'version', '?')} ({type(e).__name__}: {msg}); "
                              f"is it a NIR HDF5 file (nir.write)?")

    # links, external data and oversized declarations: refused before nir reads the file
    open_h5(path, NirImportError, what="NIR file", unreadable=unreadable).close()
    try:
        graph = nir.read(str(path))
    except Exception as e:  # noqa: BLE001 - nir raises AssertionError, KeyError, OSError...
        raise unreadable(e) from None
    if not isinstance(graph, nir.NIRGraph):
        raise NirImportError(f"{path}: holds a single {type_name(graph)} node, not a "
                             f"NIRGraph; wrap it with nir.NIRGraph.from_list(...)")
    return graph


def file_version(path) -> str:
    """The NIR version string a file was written with ('unknown' if absent)."""
    try:
        with open_h5(path, NirImportError, what="NIR file") as f:
            v = f["version"][()]
    except (OSError, KeyError, NirImportError):
        return "unknown"
    v = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    return str(v.item() if isinstance(v, np.ndarray) else v)


def metadata_value(graph: nir.NIRGraph, key: str):
    """A graph metadata entry as a plain Python value (bytes/0-d arrays unwrapped)."""
    meta = getattr(graph, "metadata", None) or {}
    if key not in meta:
        return None
    v = meta[key]
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v.item()
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str):  # text from the file: no terminal escapes, bounded length

        v = printable(v)
    return v


def metadata_dt(graph: nir.NIRGraph) -> float | None:
    v = metadata_value(graph, "dt")
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


# --------------------------------------------------------------------------- structure

def _vec(node, attr: str, name: str) -> np.ndarray:
    a = np.asarray(getattr(node, attr), dtype=np.float64)
    if a.ndim != 1:
        raise NirImportError(f"node {name!r} ({type_name(node)}): {attr} has shape {a.shape}; "
                             f"only one-dimensional (flat) layers are supported: reshape the "
                             f"layer to ({a.size},) or add a Flatten before exporting")
    if not np.all(np.isfinite(a)) and attr not in ("tau", "tau_mem", "tau_syn"):
        raise NirImportError(f"node {name!r} ({type_name(node)}): {attr} contains NaN or "
                             f"infinite values")
    return a


def _dims(name: str, node) -> tuple[int, int]:
    """(input size, output size) of a node, for 1-D signals."""
    t = type_name(node)
    if t in ("Affine", "Linear"):
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise NirImportError(f"node {name!r} ({t}): weight has shape {w.shape}; only 2-D "
                                 f"(n_out, n_in) weights are supported")
        if t == "Affine" and np.asarray(node.bias).shape != (w.shape[0],):
            raise NirImportError(f"node {name!r} (Affine): bias shape "
                                 f"{np.asarray(node.bias).shape} != ({w.shape[0]},)")
        return int(w.shape[1]), int(w.shape[0])
    if t in ("Input", "Output"):
        types = node.input_type if t == "Input" else node.output_type
        shape = np.asarray(next(iter(types.values()))).reshape(-1)
        if shape.size != 1:
            raise NirImportError(f"node {name!r} ({t}) has shape {tuple(int(s) for s in shape)};"
                                 f" only flat one-dimensional signals (n,) are supported: "
                                 f"flatten the input before the first Linear")
        return int(shape[0]), int(shape[0])
    attr = {"Scale": "scale", "Delay": "delay", "Threshold": "threshold", "LIF": "tau",
            "LI": "tau", "IF": "r", "I": "r", "CubaLIF": "tau_mem", "CubaLI": "tau_mem"}[t]
    n = _vec(node, attr, name).size
    return n, n


@dataclass
class GraphView:
    """A validated NIR graph: step order, edges, 1-D sizes, and how its cycles are cut.

    ``order`` is the order of one step's evaluation (:data:`RECURRENCE`): a topological
    order of the graph without its ``feedback`` edges (the edges leaving a neuron node
    inside a cycle: they carry the previous step's value). ``cycles`` lists the strongly
    connected parts of the graph (each a sorted list of node names); both are empty for a
    feed-forward graph.
    """

    graph: nir.NIRGraph
    order: list[str]
    preds: dict[str, list[str]]
    succs: dict[str, list[str]]
    dims: dict[str, tuple[int, int]]
    input: str
    output: str
    where: str = ""
    notes: list[str] = field(default_factory=list)
    cycles: list[list[str]] = field(default_factory=list)
    feedback: set = field(default_factory=set)

    @property
    def nodes(self) -> dict:
        return self.graph.nodes

    @property
    def n_in(self) -> int:
        return self.dims[self.input][1]

    @property
    def n_out(self) -> int:
        return self.dims[self.output][0]

    def kind(self, name: str) -> str:
        return type_name(self.nodes[name])


def view(graph: nir.NIRGraph, where: str = "") -> GraphView:
    """Validate node types, edges, single Input/Output, cycles, connectivity, sizes.

    Nested NIRGraph nodes (a subgraph with one Input and one Output, e.g. an older
    snnTorch RLeaky export) are inlined first, their nodes named ``sub.inner``."""
    pre = f"{where}: " if where else ""
    if not isinstance(graph, nir.NIRGraph):
        raise NirImportError(f"{pre}expected a nir.NIRGraph, got {type(graph).__name__}")
    graph = inline_subgraphs(graph, pre)
    nodes = graph.nodes
    _check_node_types(nodes, pre)
    inp, out = _single_io(nodes, pre)
    preds, succs = _edges(graph, pre)
    if preds[inp]:
        raise NirImportError(f"{pre}the Input node {inp!r} has incoming edges from {preds[inp]}")
    if succs[out]:
        raise NirImportError(f"{pre}the Output node {out!r} has outgoing edges to {succs[out]}")
    cycles = strongly_connected(nodes, succs)
    feedback = {(n, m) for part in cycles for n in part if type_name(nodes[n]) in NEURONS
                for m in succs[n] if m in part}
    order = _topological_order(nodes, succs, pre, feedback)
    _check_connected(nodes, order, inp, out, preds, succs, pre)
    dims = {n: _dims(n, nodes[n]) for n in nodes}
    _check_sizes(nodes, order, succs, dims, pre)
    return GraphView(graph, order, preds, succs, dims, inp, out, where, cycles=cycles,
                     feedback=feedback)


def inline_subgraphs(graph: nir.NIRGraph, pre: str = "") -> nir.NIRGraph:
    """The graph with every nested NIRGraph node replaced by its nodes (``sub.inner``):
    edges into the subgraph go to the successors of its Input, edges out of it leave
    from the predecessors of its Output. The graph itself when nothing is nested."""
    if not any(isinstance(n, nir.NIRGraph) for n in graph.nodes.values()):
        return graph
    nodes: dict = {}
    entry: dict[str, list[str]] = {}     # subgraph -> inlined nodes its Input feeds
    exits: dict[str, list[str]] = {}     # subgraph -> inlined nodes feeding its Output
    inner_edges: list[tuple[str, str]] = []
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.NIRGraph):
            nodes[name] = node
            continue
        sub = inline_subgraphs(node, pre)
        ins = [k for k, v in sub.nodes.items() if isinstance(v, nir.Input)]
        outs = [k for k, v in sub.nodes.items() if isinstance(v, nir.Output)]
        inner = [tuple(str(e) for e in edge) for edge in sub.edges]
        if len(ins) != 1 or len(outs) != 1 or (ins[0], outs[0]) in inner:
            raise NirImportError(
                f"{pre}node {name!r} is a nested NIRGraph (a subgraph) with {len(ins)} Input "
                f"and {len(outs)} Output node(s)"
                + (" joined directly" if len(ins) == len(outs) == 1 else "")
                + "; neurodelay inlines a subgraph only with exactly one Input and one "
                  "Output and nodes between them: inline the subgraph's nodes into the "
                  "top-level graph")
        full = lambda k, s_=name: f"{s_}.{k}"  # noqa: E731
        for k, v in sub.nodes.items():
            if k not in (ins[0], outs[0]):
                if full(k) in graph.nodes:
                    raise NirImportError(f"{pre}inlining subgraph {name!r}: its node {k!r} "
                                         f"becomes {full(k)!r}, a name the graph already has")
                nodes[full(k)] = v
        entry[name] = [full(b) for a, b in inner if a == ins[0]]
        exits[name] = [full(a) for a, b in inner if b == outs[0]]
        inner_edges += [(full(a), full(b)) for a, b in inner
                        if a != ins[0] and b != outs[0]]
    edges = []
    for edge in graph.edges:
        a, b = (str(e) for e in edge)
        for src in exits.get(a, [a]):
            for dst in entry.get(b, [b]):
                edges.append((src, dst))
    edges = list(dict.fromkeys(edges + inner_edges))
    meta = getattr(graph, "metadata", None)
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata=dict(meta) if isinstance(meta, dict) else {},
                        type_check=False)


def _check_node_types(nodes: dict, pre: str) -> None:
    """Every node a supported type (nested graphs are inlined before)."""
    for name, node in nodes.items():
        t = type_name(node)
        if t not in SUPPORTED:
            raise NirImportError(
                f"{pre}node {name!r} is a {t}, which neurodelay does not import (supported: "
                f"{', '.join(SUPPORTED)}); replace it by supported nodes (e.g. a Conv on a "
                f"flat signal by its equivalent Linear) or remove it")


def _single_io(nodes: dict, pre: str) -> tuple[str, str]:
    """The names of the one Input and the one Output node."""
    inputs = [n for n, v in nodes.items() if type_name(v) == "Input"]
    outputs = [n for n, v in nodes.items() if type_name(v) == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NirImportError(
            f"{pre}the graph has {len(inputs)} Input node(s) {inputs} and {len(outputs)} "
            f"Output node(s) {outputs}; neurodelay needs exactly one of each (one input "
            f"spike train, one readout): merge or remove the extra ones")
    return inputs[0], outputs[0]


def _edges(graph: nir.NIRGraph, pre: str) -> tuple[dict, dict]:
    """(preds, succs): every node's predecessors and successors, in edge order; an edge
    naming an unknown node or appearing twice is refused."""
    nodes = graph.nodes
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    succs: dict[str, list[str]] = {n: [] for n in nodes}
    seen = set()
    for edge in graph.edges:
        a, b = (str(e) for e in edge)
        for end in (a, b):
            if end not in nodes:
                raise NirImportError(f"{pre}edge {a!r} -> {b!r} names a node {end!r} that is "
                                     f"not in the graph (nodes: {sorted(nodes)[:8]}...)")
        if (a, b) in seen:
            raise NirImportError(f"{pre}edge {a!r} -> {b!r} appears twice; NIR sums edges "
                                 f"into a node, so a duplicate doubles the signal: remove it")
        seen.add((a, b))
        preds[b].append(a)
        succs[a].append(b)
    return preds, succs


def strongly_connected(nodes: dict, succs: dict) -> list[list[str]]:
    """The cycles of a graph: its strongly connected parts with more than one node or a
    self-loop, each as a sorted list of names (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(succs[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            n, it = work[-1]
            m = next(it, None)
            if m is not None:
                if m not in index:
                    index[m] = low[m] = len(index)
                    stack.append(m)
                    on_stack.add(m)
                    work.append((m, iter(succs[m])))
                elif m in on_stack:
                    low[n] = min(low[n], index[m])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[n])
            if low[n] == index[n]:
                part = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    part.append(m)
                    if m == n:
                        break
                if len(part) > 1 or n in succs[n]:
                    found.append(sorted(part))
    return found


def cycle_text(part, succs: dict) -> str:
    """One cycle through the nodes ``part`` as 'a' -> 'b' -> 'a'."""
    inside = set(part)
    cyc = _find_cycle(inside, {n: [m for m in succs[n] if m in inside] for n in inside})
    return " -> ".join(repr(c) for c in cyc)


def kahn_order(names: list, succs: dict) -> list:
    """Kahn's topological order of ``names`` (edges ``succs``, only those between
    ``names`` count); nodes on a cycle are left out of the result."""
    inside = set(names)
    indeg = {n: 0 for n in names}
    for n in names:
        for m in succs[n]:
            if m in inside:
                indeg[m] += 1
    ready = [n for n in names if indeg[n] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in succs[n]:
            if m in inside:
                indeg[m] -= 1
                if indeg[m] == 0:
                    ready.append(m)
    return order


def _topological_order(nodes: dict, succs: dict, pre: str,
                       feedback: set = frozenset()) -> list[str]:
    """Kahn's topological order of the graph without its ``feedback`` edges; a cycle left
    has no neuron node, which is refused."""
    dep_succs = {n: [m for m in succs[n] if (n, m) not in feedback] for n in nodes}
    order = kahn_order(list(nodes), dep_succs)
    if len(order) != len(nodes):
        left = {n for n in nodes if n not in order}
        cyc = _find_cycle(left, {n: [m for m in dep_succs[n] if m in left] for n in left})
        raise NirImportError(
            f"{pre}the cycle {' -> '.join(repr(c) for c in cyc)} goes through no neuron "
            f"node: a loop of synapse nodes only, whose value at a step would depend on "
            f"itself (NIR defines no latency for it; neurodelay steps a cycle through the "
            f"previous output of its neuron). Put the loop through a neuron node or "
            f"remove its edges")
    return order


def _check_connected(nodes: dict, order: list, inp: str, out: str, preds: dict,
                     succs: dict, pre: str) -> None:
    """Every node lies between the Input and the Output."""
    fwd = _reach(inp, succs)
    bwd = _reach(out, preds)
    for n in order:
        if n not in fwd:
            raise NirImportError(f"{pre}node {n!r} ({type_name(nodes[n])}) is not fed by the "
                                 f"Input node {inp!r}; remove it or connect it")
        if n not in bwd:
            raise NirImportError(f"{pre}node {n!r} ({type_name(nodes[n])}) does not lead to "
                                 f"the Output node {out!r}; remove it or connect it")


def _check_sizes(nodes: dict, order: list, succs: dict, dims: dict, pre: str) -> None:
    """Every edge joins an output and an input of the same size."""
    for a in order:
        for b in succs[a]:
            if dims[a][1] != dims[b][0]:
                raise NirImportError(
                    f"{pre}shape mismatch on edge {a!r} -> {b!r}: {a!r} ({type_name(nodes[a])}) "
                    f"outputs {dims[a][1]} values but {b!r} ({type_name(nodes[b])}) takes "
                    f"{dims[b][0]}; fix the layer sizes")


def _reach(start: str, nbrs: dict) -> set:
    seen, todo = {start}, [start]
    while todo:
        for m in nbrs[todo.pop()]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def _find_cycle(candidates: set, succs: dict) -> list[str]:
    """One cycle among ``candidates`` (nodes Kahn's algorithm could not order)."""
    candidates = set(candidates)
    while True:              # drop nodes downstream of a cycle (no successor left)
        ends = {n for n in candidates if not any(m in candidates for m in succs[n])}
        if not ends:
            break
        candidates -= ends
    start = sorted(candidates)[0]
    path, pos, n = [], {}, start
    while n not in pos:
        pos[n] = len(path)
        path.append(n)
        n = next(m for m in succs[n] if m in candidates)
    return path[pos[n]:] + [n]


# --------------------------------------------------------------------------- parameters

def delay_steps(node, name: str, dt: float, max_steps: int = DEFAULT_MAX_DELAY_STEPS,
                where: str = "") -> np.ndarray:
    """Per-channel integer delays of a Delay node, in steps of dt (int64)."""
    pre = f"{where}: " if where else ""
    tau = np.asarray(node.delay, dtype=np.float64)
    if tau.ndim != 1:
        raise NirImportError(f"{pre}Delay {name!r}: delay has shape {tau.shape}; only one "
                             f"delay per channel (1-D) is supported")
    if not np.all(np.isfinite(tau)) or (tau.size and tau.min() < 0):
        raise NirImportError(f"{pre}Delay {name!r}: delays must be finite and >= 0 seconds")
    k = np.rint(tau / dt)
    off = np.abs(tau - k * dt) > DELAY_RTOL * np.maximum(tau, dt)
    if off.any():
        c = int(np.flatnonzero(off)[0])
        raise NirImportError(
            f"{pre}Delay {name!r}: channel {c} delays {tau[c]:.9g} s = {tau[c] / dt:.6g} steps "
            f"of dt = {dt:g} s, not a whole number of steps ({int(off.sum())} channel(s)); "
            f"neurodelay delays are integer steps: pass the --dt the graph was made with "
            f"(a divisor of every delay) or round the delays")
    k = k.astype(np.int64)
    if k.size and k.max() > max_steps:
        raise NirImportError(
            f"{pre}Delay {name!r}: {int(k.max())} steps (channel {int(k.argmax())}, "
            f"{tau[k.argmax()]:g} s at dt = {dt:g} s) exceeds the limit of {max_steps} steps; "
            f"check the delay unit (seconds) and --dt, or raise --max-delay-steps")
    return k


def step_factor(tau, dt: float, discretization: str, name: str, what: str = "tau",
                where: str = "") -> np.ndarray:
    """a with v_new = (1 - a) * v + a * (v_leak + r*I): dt/tau (euler) or 1-exp(-dt/tau)."""
    pre = f"{where}: " if where else ""
    tau = np.asarray(tau, dtype=np.float64)
    if not np.all(np.isfinite(tau)) or (tau.size and tau.min() <= 0):
        raise NirImportError(f"{pre}node {name!r}: {what} must be finite and positive seconds, "
                             f"got {tau.min() if tau.size else tau}; a neuron without leak is "
                             f"an IF / I node")
    if discretization == "euler":
        a = dt / tau
        if a.size and a.max() > 1.0:
            raise NirImportError(
                f"{pre}node {name!r}: {what} = {tau.min():g} s is shorter than dt = {dt:g} s; "
                f"forward Euler then overshoots (decay 1 - dt/{what} < 0). Use a smaller "
                f"--dt or --discretization exp")
        return a
    return -np.expm1(-dt / tau)


def neuron_factors(node, name: str, dt: float, discretization: str, where: str = "") -> dict:
    """Per-step factors of a neuron node (arrays over its neurons).

    Returns {"decay", "gain", "bias", "current_decay", "current_gain", "spiking",
    "v_threshold", "v_reset"}: per step, with input x (the sum of incoming edges),

        c[t] = current_decay * c[t-1] + current_gain * x[t]     (Cuba nodes; else c = x)
        v[t] = decay * v[t-1] + gain * c[t] + bias
    """
    t = type_name(node)
    f = {"spiking": t in SPIKING, "current_decay": None, "current_gain": None}
    if t in ("IF", "I"):
        r = _vec(node, "r", name)
        f.update(decay=np.ones_like(r), gain=dt * r, bias=np.zeros_like(r))
    elif t in ("LIF", "LI"):
        a = step_factor(_vec(node, "tau", name), dt, discretization, name, "tau", where)
        f.update(decay=1.0 - a, gain=a * _vec(node, "r", name),
                 bias=a * _vec(node, "v_leak", name))
    elif t in ("CubaLIF", "CubaLI"):
        a_s = step_factor(_vec(node, "tau_syn", name), dt, discretization, name, "tau_syn",
                          where)
        a_m = step_factor(_vec(node, "tau_mem", name), dt, discretization, name, "tau_mem",
                          where)
        w_in = np.broadcast_to(np.asarray(node.w_in, np.float64), a_m.shape)
        f.update(decay=1.0 - a_m, gain=a_m * _vec(node, "r", name),
                 bias=a_m * _vec(node, "v_leak", name), current_decay=1.0 - a_s,
                 current_gain=a_s * w_in)
    else:
        raise NirImportError(f"node {name!r}: {t} is not a neuron node")
    if f["spiking"]:
        f["v_threshold"] = _vec(node, "v_threshold", name)
        v_reset = getattr(node, "v_reset", None)
        f["v_reset"] = (np.zeros_like(f["v_threshold"]) if v_reset is None
                        else _vec(node, "v_reset", name))
    return f


TIME_CONSTANTS = {"LIF": ("tau",), "LI": ("tau",), "CubaLIF": ("tau_syn", "tau_mem"),
                  "CubaLI": ("tau_syn", "tau_mem")}


def check_time_constants(node, name: str, where: str = "") -> None:
    """NirImportError naming the node, the parameter, the neuron and the offending value
    when a time constant of a neuron node is not finite and positive (seconds).

    Checked before :func:`neuron_factors` so the message quotes the bad value itself (an
    infinite tau among finite ones is not the layer's smallest tau)."""
    pre = f"{where}: " if where else ""
    t = type_name(node)
    for attr in TIME_CONSTANTS.get(t, ()):
        try:
            tau = np.asarray(getattr(node, attr), dtype=np.float64)
        except (TypeError, ValueError):
            raise NirImportError(f"{pre}node {name!r} ({t}): {attr} is not numeric") from None
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(tau) & (tau > 0))
        if not bad.any():
            continue
        flat = tau.reshape(-1)
        k = int(np.flatnonzero(bad.reshape(-1))[0])
        where_k = (f"neuron {k}" if tau.ndim == 1 else
                   f"index {tuple(int(i) for i in np.unravel_index(k, tau.shape))}"
                   if tau.ndim else "the value")
        value = flat[k]
        kind = ("infinite" if np.isinf(value) else "NaN" if np.isnan(value) else
                "zero" if value == 0 else "negative")
        raise NirImportError(
            f"{pre}node {name!r} ({t}): {attr} = {value} s at {where_k} is {kind} "
            f"({int(bad.sum())} of {tau.size} value{'s' if tau.size != 1 else ''} bad); "
            f"{attr} must be a finite, positive number of seconds"
            + ("; a neuron without leak (infinite tau) is an IF / I node"
               if np.isinf(value) and value > 0 else ""))


def strict_to_inclusive(v_threshold: float) -> float:
    """The float32 threshold t with (u >= t) <=> (u > v_threshold) for every float32 u:
    the smallest float32 strictly above v_threshold (the exporter's inverse)."""
    t32 = np.float32(v_threshold)
    if float(t32) <= float(v_threshold):
        t32 = np.nextafter(t32, np.float32(np.inf))
    return float(t32)
