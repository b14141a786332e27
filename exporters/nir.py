"""NIR exporter: a neurodelay network as a standard NIR graph, delays exact.

NIR has no per-synapse delay primitive, only ``Delay`` (an element-wise delay of each
channel). A layer with per-synapse integer delays ``D`` is therefore *decomposed* exactly,
one branch per distinct delay ``d`` used by its non-zero synapses::

    pre --[Delay(d*dt), shape (n_in,)]--> Affine/Linear(g * W * (D == d)) --+
    pre --[Delay(d'*dt)]---------------> Linear(g * W * (D == d'))  -------+--> neuron
    ...                                                                      (edges SUM)

* ``d == 0``: no Delay node; the presynaptic node feeds the Linear directly.
* The branch of the layer's SMALLEST used delay is an ``Affine`` carrying the per-neuron
  bias (added once per step); every other branch is a bias-free ``Linear``. So each layer
  has exactly one Affine, ``k - 1`` Linear nodes and ``k - [0 is used]`` Delay nodes for
  ``k`` distinct delays. A layer without any non-zero weight keeps one Affine (d = 0).

Recurrent layers (``rec_weight`` R, ``rec_delay`` E >= 1, synapse i <- j within a spiking
layer) become cycles, one per distinct recurrent delay ``e`` of the non-zero R::

    neuron --[Delay((e-1)*dt), shape (n_out,)]--> Linear(g * R * (E == e)) --> the same neuron

* ``e == 1``: no Delay node; the neuron feeds the Linear directly.
* Time: one graph evaluation = one step, and a cycle reads the neuron's output of the
  PREVIOUS step (zeros at t = 0): a cycle without a Delay is a recurrent delay of 1 step,
  a Delay of k steps on it makes k + 1. So the Delay holds ``e - 1`` steps and a spike of
  neuron j at step t reaches neuron i at t + E_ij, as in the Network. This is the one
  step per cycle that nirtorch's interpreter takes too, and how neurodelay imports other
  trainers' recurrent graphs (snnTorch's RLeaky: a Linear/Affine from the neuron back to
  itself, no Delay).
* The recurrent Linear sums into the neuron's input with the feed-forward branches (so,
  as in the Network, before a CubaLIF's synaptic current filter), with the same gain
  ``g``; it has no bias. A recurrent layer whose R is all zero keeps one zero Linear
  (e = 1), so it stays recurrent through a round trip.

Neurons. The discrete model (neurodelay.core.network)::

    J[t] = current_decay*J[t-1] + W x[t - D] (+ R s[t - E])   u[t] = decay*u[t-1] + J[t] + b

maps onto NIR's continuous nodes under the forward-Euler convention with step ``dt``
(seconds, ``net.dt``): ``v += dt/tau * (v_leak - v + r*I)``, so ``decay = 1 - dt/tau``:

    LIF / LI     tau = dt/(1-decay), r = 1, v_leak = 0; input gain g = tau/dt = 1/(1-decay)
    IF / I       (decay == 1, no finite tau)   r = 1; v += dt*I: input gain g = 1/dt
    CubaLIF /    (current_decay > 0) tau_syn = dt/(1-current_decay), tau_mem = dt/(1-decay),
    CubaLI       r = 1, w_in = 1, v_leak = b/(1-decay) (the bias enters v, not the current),
                 Affine bias 0; g = 1/((1-current_decay)(1-decay)); the synaptic current is
                 stepped first and the new current drives v in the same step

Every ``r`` (and ``w_in``) is 1: the input gain ``g`` is folded into the Linear / Affine
weights and biases (``W_graph = g*W``, ``b_graph = g*b``), which are written in float64
so that an importer multiplying back by ``dt/tau`` recovers the float32 weights exactly.
Spiking layers are ``LIF``/``IF``/``CubaLIF`` with ``v_reset = reset``; the readout is
``LI``/``I``/``CubaLI`` and its membrane is the graph output (score_c = sum_t softmax_c).

Thresholds: NIR fires when ``v > v_threshold`` (strict); neurodelay's float model fires
when ``u >= threshold``. The float variant stores ``v_threshold`` = the largest float32
below ``float32(threshold)``, so the strict rule equals neurodelay's in float32 arithmetic.
The quantized variant stores the chip's own strict threshold (the target's
``vth << threshold_shift``) times the layer's scale.

Variants: ``float`` exports a float :class:`~neurodelay.core.network.Network`;
``quantized`` exports the float equivalent of a QNetwork -- the one a deployment artifact
holds (this module never quantizes) -- with integer weights, biases, decays, current decays
and thresholds converted back to float units with each layer's ``scale`` by the target's
rules in :mod:`neurodelay.hw.fixedpoint`; the chip's integer rounding is not modelled,
nor is its pipeline latency of one step per layer.

Schemas (``nir_schema``): ``"1.0.8"`` (default; nir.write of the installed nir) or
``"1.0.4"``, the layout read by nir <= 1.0.4, which Sinabs 3.1 and Rockpool 3.1 pin:
LIF / IF / CubaLIF without ``v_reset`` (a reset other than 0 cannot be written; nir >= 1.0.5
reads the missing field as 0; nir 1.0.4's docstrings describe a subtractive reset, which
is not what the network does) and no ``CubaLI`` (refused). Same nodes otherwise.

Everything above is also written into the graph's ``metadata``.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import h5py
import nir
import numpy as np

from neurodelay import __version__ as _ND_VERSION
from neurodelay.core.network import Network, QNetwork
from neurodelay.errors import NirExportError
from neurodelay.fs import atomic_path
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.target import arith

__all__ = ["NirExportError", "export", "to_nir", "nir_node_counts", "VARIANTS", "SCHEMAS"]

VARIANTS = ("float", "quantized")
SCHEMAS = ("1.0.8", "1.0.4")

DT_CONVENTION = (
    "forward Euler with step dt (seconds): v += dt/tau*(v_leak - v + r*I), so decay = "
    "1 - dt/tau: tau = dt/(1-decay); r = 1 everywhere and the input gain tau/dt = "
    "1/(1-decay) is folded into the Linear/Affine weights and biases (float64); "
    "decay == 1 -> IF/I (v += dt*r*I) with gain 1/dt in the weights; current_decay > 0 -> "
    "CubaLIF/CubaLI with tau_syn = dt/(1-current_decay), w_in = 1, gain "
    "1/((1-current_decay)(1-decay)) in the weights, bias as v_leak = b/(1-decay), synaptic "
    "current stepped first (the new current drives v in the same step); Delay = d*dt "
    "seconds (d integer steps)")
DISCRETE_SEMANTICS = (
    "J_i[t] = current_decay*J_i[t-1] + sum_j W_ij x_j[t-D_ij] (x[t]=0 for t<0); "
    "u_i[t] = decay*u_i[t-1] + J_i[t] + b_i (u[-1]=J[-1]=0); spiking layers: "
    "s_i[t] = u_i[t] > v_threshold, then u_i[t] = v_reset; readout (LI/I/CubaLI): membrane "
    "u[t] is the output; one graph evaluation = one time step")
DECOMPOSITION = (
    "per layer and per distinct integer delay d of its non-zero synapses: "
    "pre -> Delay(d*dt, shape (n_in,)) -> Linear(g * W masked to D==d) -> neuron; no Delay "
    "node when d == 0; the smallest delay's branch is an Affine holding the bias; "
    "edges into one node sum")
RECURRENT_DECOMPOSITION = (
    "per recurrent layer and per distinct recurrent delay e >= 1 of its non-zero recurrent "
    "synapses R (i <- j within the layer): neuron -> Delay((e-1)*dt, shape (n_out,)) -> "
    "Linear(g * R masked to E==e) -> the same neuron (no Delay node when e == 1), summing "
    "with the feed-forward branches (before a CubaLIF's current filter: J[t] = "
    "current_decay*J[t-1] + W x[t-D] + R s[t-E]); one graph evaluation = one step; a "
    "cycle without a Delay reads the previous step's output of its neuron (zeros at "
    "t = 0), a recurrent delay of 1 step, and a Delay of k steps on the cycle makes it "
    "k + 1; a layer with all-zero R keeps one zero branch (e = 1)")
READOUT = ("membrane of the readout layer each step; "
           "score_c = sum_t softmax_c(v[t]), prediction = argmax_c score_c")


@dataclass
class _LayerSpec:
    """One layer in float units, thresholds already in NIR's strict ``v > v_threshold`` form."""

    weight: np.ndarray          # (n_out, n_in) float32
    delay: np.ndarray           # (n_out, n_in) int
    bias: np.ndarray            # (n_out,) float32
    decay: float
    v_threshold: float | None   # None for the readout
    v_reset: float
    kind: str                   # "lif" | "li"
    name: str
    current_decay: float = 0.0  # synaptic current J = current_decay*J + W x (CUBA)
    rec_weight: np.ndarray | None = None   # (n_out, n_out) recurrent i <- j, or None
    rec_delay: np.ndarray | None = None    # (n_out, n_out) int >= 1


# --------------------------------------------------------------------------- float / quantized

def _strict_threshold(threshold: float) -> float:
    """Largest float32 below float32(threshold): ``v > it`` <=> ``v >= threshold`` in float32."""
    t32 = np.float32(threshold)
    return float(np.nextafter(t32, np.float32(-np.inf)))


def _float_specs(net: Network) -> list[_LayerSpec]:
    return [_LayerSpec(weight=layer.weight, delay=layer.delay, bias=layer.bias,
                       decay=layer.decay,
                       v_threshold=_strict_threshold(layer.threshold) if layer.kind == "lif"
                       else None,
                       v_reset=layer.reset, kind=layer.kind,
                       name=layer.name or f"layer{k}", current_decay=layer.current_decay,
                       rec_weight=layer.rec_weight, rec_delay=layer.rec_delay)
            for k, layer in enumerate(net.layers)]


def _quantized_specs(qnet: QNetwork) -> list[_LayerSpec]:
    """The float equivalent of a QNetwork, with the integer rules of its target
    (:mod:`neurodelay.hw.fixedpoint`: Lava's effective weights, decay fractions, shifts)."""

    a = arith(qnet)
    specs = []
    for k, ql in enumerate(qnet.layers):
        tag = f"quantized layer {k} ({ql.name!r})"
        if not (np.isfinite(ql.scale) and ql.scale > 0):
            raise NirExportError(f"{tag}: scale must be finite and positive, got {ql.scale}")
        # one weight unit -> v float units (the shifted sum enters u << current_shift)
        gain = fp.weight_unit(ql.weight_exp, a) * ql.scale
        if k == 0:
            gain *= qnet.input_scale                       # graded input = count * input_scale
        weight = fp.effective_weights(ql.weight, ql.num_weight_bits, a) * gain
        bias = fp.effective_bias(ql.bias_mant, ql.bias_exp).astype(np.float64) * ql.scale
        vth = None if ql.kind == "li" else float(fp.threshold(ql.vth, a)) * ql.scale
        rec_w = rec_d = None
        if ql.recurrent:          # its own synapse process: own exponent, spikes in
            rec_w = (fp.effective_weights(ql.rec_weight, ql.rec_num_weight_bits, a)
                     * (fp.weight_unit(ql.rec_weight_exp, a) * ql.scale)).astype(np.float32)
            rec_d = ql.rec_delay
        specs.append(_LayerSpec(weight=weight.astype(np.float32), delay=ql.delay,
                                bias=bias.astype(np.float32), decay=fp.dv_to_decay(ql.dv, a),
                                v_threshold=vth, v_reset=0.0, kind=ql.kind,
                                name=ql.name or f"layer{k}",
                                current_decay=fp.du_to_current_decay(ql.du, a),
                                rec_weight=rec_w, rec_delay=rec_d))
    return specs


# --------------------------------------------------------------------------- graph building

def _neuron_node(spec: _LayerSpec, dt: float) -> tuple[nir.NIRNode, float, bool]:
    """(node, input gain g, bias in the Affine?) reproducing the discrete layer under
    forward Euler with r = 1 (module docstring): the graph's weights are g * W."""
    n = spec.weight.shape[0]
    full = lambda value: np.full(n, value, dtype=np.float64)  # noqa: E731
    spiking = spec.kind != "li"
    thr = {"v_threshold": full(spec.v_threshold), "v_reset": full(spec.v_reset)} if spiking \
        else {}
    if spec.current_decay > 0.0:
        if spec.decay >= 1.0:
            raise NirExportError(
                f"layer {spec.name!r}: current_decay {spec.current_decay:g} with decay 1 (no "
                f"membrane leak) is a current-based integrate-and-fire neuron, which NIR has "
                f"no node for (CubaLIF needs a finite tau_mem); give the layer a decay < 1")
        tau_syn, tau_mem = dt / (1.0 - spec.current_decay), dt / (1.0 - spec.decay)
        g = 1.0 / ((dt / tau_syn) * (dt / tau_mem))
        v_leak = spec.bias.astype(np.float64) / (dt / tau_mem)
        common = dict(tau_syn=full(tau_syn), tau_mem=full(tau_mem), r=full(1.0),
                      v_leak=v_leak, w_in=full(1.0))
        return (nir.CubaLIF(**common, **thr) if spiking else nir.CubaLI(**common)), g, False
    if spec.decay >= 1.0:
        node = nir.IF(r=full(1.0), **thr) if spiking else nir.I(r=full(1.0))
        return node, 1.0 / dt, True
    tau = dt / (1.0 - spec.decay)
    common = dict(tau=full(tau), r=full(1.0), v_leak=full(0.0))
    return (nir.LIF(**common, **thr) if spiking else nir.LI(**common)), 1.0 / (dt / tau), True


def _used_delays(spec: _LayerSpec) -> list[int]:
    """Distinct delays of the non-zero synapses, ascending; [0] when there are none."""
    used = np.unique(spec.delay[spec.weight != 0])
    return [int(d) for d in used] if used.size else [0]


def _used_rec_delays(spec: _LayerSpec) -> list[int]:
    """Distinct recurrent delays of the non-zero recurrent synapses, ascending; [1] when
    there are none (one zero branch keeps the layer recurrent); [] if not recurrent."""
    if spec.rec_weight is None:
        return []
    used = np.unique(spec.rec_delay[spec.rec_weight != 0])
    return [int(e) for e in used] if used.size else [1]


def _build_graph(specs: list[_LayerSpec], dt: float, metadata: dict) -> nir.NIRGraph:
    nodes: dict[str, nir.NIRNode] = {
        "input": nir.Input(input_type={"input": np.array([specs[0].weight.shape[1]])})}
    edges: list[tuple[str, str]] = []
    layer_info = []
    src = "input"
    for k, spec in enumerate(specs):
        neuron = f"L{k}_{spec.kind}"
        delays = _used_delays(spec)
        node, g, bias_in_affine = _neuron_node(spec, dt)
        bias = (spec.bias.astype(np.float64) * g if bias_in_affine
                else np.zeros(spec.weight.shape[0]))
        for i, d in enumerate(delays):
            w = np.where(spec.delay == d, spec.weight, 0).astype(np.float64) * g
            syn = f"L{k}_syn_d{d}"
            nodes[syn] = nir.Affine(weight=w, bias=bias) if i == 0 else nir.Linear(weight=w)
            if d == 0:
                edges.append((src, syn))
            else:
                dname = f"L{k}_delay_d{d}"
                nodes[dname] = nir.Delay(delay=np.full(spec.weight.shape[1], d * dt,
                                                       dtype=np.float64))
                edges += [(src, dname), (dname, syn)]
            edges.append((syn, neuron))
        rec_delays = _used_rec_delays(spec)
        n = spec.weight.shape[0]
        for e in rec_delays:               # the cycle itself takes one step: Delay e - 1
            w = np.where(spec.rec_delay == e, spec.rec_weight, 0).astype(np.float64) * g
            syn = f"L{k}_rec_syn_d{e}"
            nodes[syn] = nir.Linear(weight=w)
            if e == 1:
                edges.append((neuron, syn))
            else:
                dname = f"L{k}_rec_delay_d{e}"
                nodes[dname] = nir.Delay(delay=np.full(n, (e - 1) * dt, dtype=np.float64))
                edges += [(neuron, dname), (dname, syn)]
            edges.append((syn, neuron))
        nodes[neuron] = node
        info = {"name": spec.name, "kind": spec.kind, "n_in": spec.weight.shape[1],
                "n_out": n, "decay": spec.decay, "current_decay": spec.current_decay,
                "v_threshold": spec.v_threshold, "v_reset": spec.v_reset,
                "input_gain": g, "delays": delays, "neuron_node": neuron,
                "neuron_type": type(node).__name__}
        if spec.rec_weight is not None:
            info["recurrent_delays"] = rec_delays
        layer_info.append(info)
        src = neuron
    nodes["output"] = nir.Output(output_type={"output": np.array([specs[-1].weight.shape[0]])})
    edges.append((src, "output"))
    meta = dict(metadata)
    meta["layers_json"] = json.dumps(layer_info)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def _base_metadata(dt: float, variant: str, target: str, class_names) -> dict:
    return {
        "generator": "neurodelay",
        "neurodelay_version": _ND_VERSION,
        "nir_version": getattr(nir, "version", "unknown"),
        "variant": variant,
        "target": target,
        "dt": float(dt),
        "time_unit": "s",
        "discretization": "euler",
        "dt_convention": DT_CONVENTION,
        "discrete_semantics": DISCRETE_SEMANTICS,
        "delay_decomposition": DECOMPOSITION,
        "output": READOUT,
        "readout": "sum_t softmax",
        "class_names_json": json.dumps(list(class_names)),
    }


def _check_schema(nir_schema) -> str:
    if nir_schema not in SCHEMAS:
        raise NirExportError(f"NIR export: nir_schema must be one of {SCHEMAS}, got "
                             f"{nir_schema!r}")
    return nir_schema


def to_nir(net: Network | QNetwork, *, nir_schema: str = "1.0.8") -> nir.NIRGraph:
    """Build the NIR graph of a float :class:`Network` or of a :class:`QNetwork`'s float
    equivalent (see the module docstring for the decomposition and conventions).

    ``nir_schema="1.0.4"`` checks that the network fits the older layout (no v_reset other
    than 0, no CubaLI readout) and records the schema in the metadata; the graph object
    itself is always the installed nir's (write it with :func:`export`).


    Examples:
        Each distinct delay of a layer becomes a ``Delay -> Linear`` branch:

        >>> from neurodelay.core.network import Layer, Network
        >>> hidden = Layer(weight=[[1.0, 1.0]], delay=[[2, 0]], bias=[0.0], decay=0.5,
        ...                threshold=1.5)
        >>> readout = Layer(weight=[[1.0]], delay=[[0]], bias=[0.0], decay=0.9, kind="li")
        >>> net = Network([hidden, readout], dt=0.01, n_channels=2, channel_bin=1)
        >>> from neurodelay.exporters.nir import to_nir
        >>> graph = to_nir(net)
        >>> sorted(type(n).__name__ for n in graph.nodes.values())  # doctest: +NORMALIZE_WHITESPACE
        ['Affine', 'Affine', 'Delay', 'Input', 'LI', 'LIF', 'Linear', 'Output']
    """
    _check_schema(nir_schema)
    if isinstance(net, Network):
        specs, variant, target = _float_specs(net), "float", ""
        meta = _base_metadata(net.dt, variant, target, net.class_names)
        meta["n_channels"], meta["channel_bin"] = int(net.n_channels), int(net.channel_bin)
        meta["threshold_rule"] = ("neurodelay spikes when u >= threshold; v_threshold is the "
                                  "largest float32 below float32(threshold) so NIR's strict "
                                  "v > v_threshold is identical in float32")
    elif isinstance(net, QNetwork):
        specs, variant, target = _quantized_specs(net), "quantized", net.target
        meta = _base_metadata(net.dt, variant, target, net.class_names)
        meta["threshold_rule"] = ("the chip spikes when v > vth << threshold_shift: "
                                  "v_threshold = (vth << threshold_shift) * scale")
        meta["quantized_conversion"] = (
            "W = lava_effective(weight) * 2**(weight_exp+current_shift) * scale (* input_scale "
            "in layer 0); b = (bias_mant << bias_exp) * scale; decay = (2**D-dv)/2**D; "
            "current_decay = (2**D-1-du)/2**D (D = 12 on Loihi 2); reset 0; "
            "integer rounding and the chip's 1-step-per-layer latency are not modelled")
        meta["input_scale"] = float(net.input_scale)
    else:
        raise NirExportError(f"to_nir expects a neurodelay Network or QNetwork, got "
                             f"{type(net).__name__}; build one with neurodelay's freeze()")
    meta["nir_schema"] = nir_schema
    if any(spec.rec_weight is not None for spec in specs):
        meta["recurrent"] = RECURRENT_DECOMPOSITION
    if nir_schema == "1.0.4":
        meta["nir_schema_note"] = (
            "written in the nir 1.0.4 layout: no v_reset fields (every reset is 0, as nir "
            ">= 1.0.5 reads a missing v_reset); the network resets v to 0 after a spike, not "
            "by subtraction")
        for spec in specs:
            if spec.kind != "li" and spec.v_reset != 0.0:
                raise NirExportError(
                    f"layer {spec.name!r}: reset {spec.v_reset:g}, but the nir 1.0.4 schema "
                    f"has no v_reset (readers assume 0): export with nir_schema='1.0.8' "
                    f"(--nir-schema 1.0.8) or retrain with reset 0")
            if spec.kind == "li" and spec.current_decay > 0.0:
                raise NirExportError(
                    f"readout layer {spec.name!r} has a synaptic current (current_decay "
                    f"{spec.current_decay:g}), i.e. a CubaLI node, which nir 1.0.4 does not "
                    f"have: export with nir_schema='1.0.8' (--nir-schema 1.0.8)")
    return _build_graph(specs, float(net.dt), meta)


_NO_RESET_IN_104 = ("LIF", "IF", "CubaLIF")


def _write_schema_104(path, graph: nir.NIRGraph) -> None:
    """Write ``graph`` in the nir 1.0.4 HDF5 layout (what nir <= 1.0.4's ``read`` accepts):
    the same groups as nir.write, without the ``v_reset`` datasets 1.0.4 does not know."""

    def node_dict(node) -> dict:
        d = node.to_dict()
        if d.get("type") in _NO_RESET_IN_104:
            d.pop("v_reset", None)
        if d.get("type") == "NIRGraph":
            d["nodes"] = {k: node_dict(n) for k, n in node.nodes.items()}
        return d

    def write_group(group, d: dict) -> None:
        for k, v in d.items():
            if k == "metadata":
                if v:
                    write_group(group.create_group(k), v)
            elif isinstance(v, str):
                group.create_dataset(k, data=v, dtype=h5py.string_dtype())
            elif isinstance(v, np.ndarray):
                group.create_dataset(k, data=v, dtype=v.dtype)
            elif isinstance(v, dict):
                write_group(group.create_group(str(k)), v)
            else:
                group.create_dataset(k, data=v)

    with h5py.File(path, "w") as f:
        f.create_dataset("version", data="1.0.4", dtype=h5py.string_dtype())
        write_group(f.create_group("node"), node_dict(graph))


def nir_node_counts(graph: nir.NIRGraph) -> dict[str, int]:
    """Number of nodes of each NIR type in ``graph`` (type name -> count, sorted by name)."""
    counts = Counter(type(node).__name__ for node in graph.nodes.values())
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- export

def export(net: Network | QNetwork, out_path, *, variant: str | None = None,
           nir_schema: str = "1.0.8") -> dict:
    """Write ``net`` as a NIR HDF5 file at ``out_path`` (atomically) and return a report.

    net          a float Network ("float" variant), or a QNetwork ("quantized": its float
                 equivalent). A float network is never quantized here: the deployment
                 step (``neurodelay export RUN --target loihi2``) quantizes once and writes
                 the quantized NIR file into its artifact, so it is the verified network.
    variant      optional check: "float" or "quantized", must match ``net``
    nir_schema   "1.0.8" (default, the installed nir's nir.write) or "1.0.4" (the layout
                 nir <= 1.0.4 reads: no v_reset; see the module docstring)
    Returns {"path", "variant", "target", "dt", "nir_schema", "node_counts", "n_nodes",
    "n_delay_nodes", "n_edges", "delays_per_layer", "recurrent_delays_per_layer"} (the
    latter [] for a feed-forward layer).
    """
    _check_schema(nir_schema)
    if not isinstance(net, (Network, QNetwork)):
        raise NirExportError(f"NIR export expects a neurodelay Network or QNetwork, got "
                             f"{type(net).__name__}")
    kind = "quantized" if isinstance(net, QNetwork) else "float"
    if variant is None:
        variant = kind
    if variant not in VARIANTS:
        raise NirExportError(f"NIR export: variant must be one of {VARIANTS}, got {variant!r}")
    if variant != kind:
        raise NirExportError(
            "NIR export: a QNetwork has no float (trained) variant; pass the float Network"
            if kind == "quantized" else
            "NIR export: a float Network is not quantized here; use the quantized network of "
            "a deployment artifact (`neurodelay export RUN --target nir --variant quantized`"
            " or neurodelay.deploy.artifact.build_artifact)")
    graph = to_nir(net, nir_schema=nir_schema)

    path = Path(out_path)
    with atomic_path(path) as tmp:
        if nir_schema == "1.0.4":
            _write_schema_104(tmp, graph)
        else:
            nir.write(tmp, graph)
    counts = nir_node_counts(graph)
    return {
        "path": str(path),
        "variant": variant,
        "target": str(graph.metadata["target"]),
        "dt": float(net.dt),
        "nir_schema": nir_schema,
        "node_counts": counts,
        "n_nodes": len(graph.nodes),
        "n_delay_nodes": counts.get("Delay", 0),
        "n_edges": len(graph.edges),
        "delays_per_layer": [d["delays"] for d in json.loads(graph.metadata["layers_json"])],
        "recurrent_delays_per_layer": [d.get("recurrent_delays", []) for d in
                                       json.loads(graph.metadata["layers_json"])],
    }
