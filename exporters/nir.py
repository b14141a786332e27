"""NIR exporter: a neurodelay network as a standard NIR graph (nir 1.0.8), delays exact.

NIR has no per-synapse delay primitive, only ``Delay`` (an element-wise delay of each
channel). A layer with per-synapse integer delays ``D`` is therefore *decomposed* exactly,
one branch per distinct delay ``d`` used by its non-zero synapses::

    pre --[Delay(d*dt), shape (n_in,)]--> Affine/Linear(W * (D == d)) --+
    pre --[Delay(d'*dt)]---------------> Linear(W * (D == d'))  -------+--> LIF / LI
    ...                                                                  (edges SUM)

* ``d == 0``: no Delay node; the presynaptic node feeds the Linear directly.
* The branch of the layer's SMALLEST used delay is an ``Affine`` carrying the per-neuron
  bias (added once per step); every other branch is a bias-free ``Linear``. So each layer
  has exactly one Affine, ``k - 1`` Linear nodes and ``k - [0 is used]`` Delay nodes for
  ``k`` distinct delays. A layer without any non-zero weight keeps one Affine (d = 0).

Neurons (discrete model ``u[t] = decay*u[t-1] + I[t]``, see neurodelay.deploy.network) map onto
NIR's continuous nodes under the forward-Euler convention with step ``dt`` (seconds,
``net.dt``): ``v += dt/tau * (v_leak - v + r*I)`` gives ``decay = 1 - dt/tau``, so

    tau = dt / (1 - decay),   r = tau / dt = 1 / (1 - decay),   v_leak = 0

and the input enters with gain ``dt/tau * r = 1``. ``decay == 1`` (no leak) has no finite
tau: such a layer becomes ``IF`` (spiking) / ``I`` (readout) with ``r = 1/dt``
(``v += dt*r*I``). Spiking layers are ``LIF``/``IF`` with ``v_reset = reset``; the readout is
``LI``/``I`` and its membrane is the graph output.

Thresholds: NIR fires when ``v > v_threshold`` (strict); neurodelay's float model fires
when ``u >= threshold``. The float variant stores ``v_threshold`` = the largest float32
below ``float32(threshold)``, so the strict rule equals neurodelay's in float32 arithmetic.
The quantized variant stores Loihi's own strict threshold ``(vth << 6) * scale``.

Variants: ``float`` exports the trained :class:`~neurodelay.deploy.network.Network`;
``quantized`` runs :func:`neurodelay.deploy.passes.quantize` and exports the float equivalent of
the quantized model (integer weights, biases, decays and thresholds converted back to
float units with each layer's ``scale``; integer rounding of the chip is not modelled, nor
is its pipeline latency of one step per layer).

Everything above is also written into the graph's ``metadata``.
"""
from __future__ import annotations

from neurodelay.errors import NeurodelayError

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np

from neurodelay._io import atomic_path

from neurodelay import __version__ as _ND_VERSION
from neurodelay.deploy.network import Network, QNetwork

__all__ = ["NirExportError", "export", "to_nir", "nir_node_counts", "VARIANTS"]

VARIANTS = ("float", "quantized")

DT_CONVENTION = (
    "forward Euler with step dt (seconds): v += dt/tau*(v_leak - v + r*I); "
    "decay = 1 - dt/tau, tau = dt/(1-decay), r = tau/dt (input gain 1), v_leak = 0; "
    "decay == 1 -> IF/I with r = 1/dt; Delay = d*dt seconds (d integer steps)")
DISCRETE_SEMANTICS = (
    "I_i[t] = sum_j W_ij x_j[t-D_ij] + b_i (x[t]=0 for t<0); u_i[t] = decay*u_i[t-1] + I_i[t] "
    "(u[-1]=0); spiking layers: s_i[t] = u_i[t] > v_threshold, then u_i[t] = v_reset; "
    "readout (LI/I): membrane u[t] is the output; one graph evaluation = one time step")
DECOMPOSITION = (
    "per layer and per distinct integer delay d of its non-zero synapses: "
    "pre -> Delay(d*dt, shape (n_in,)) -> Linear(W masked to D==d) -> neuron; no Delay node "
    "when d == 0; the smallest delay's branch is an Affine holding the bias; "
    "edges into one node sum")


class NirExportError(NeurodelayError, ValueError):
    """The network cannot be exported to NIR as asked (bad option, unsupported field)."""


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
                       name=layer.name or f"layer{k}")
            for k, layer in enumerate(net.layers)]


def _lava_effective_weights(weight: np.ndarray, num_weight_bits: int) -> np.ndarray:
    """The integer weights Lava's fixed-point Dense actually uses (clip to 8 bits, then drop
    the ``8 - num_weight_bits (+1 if mixed sign)`` least significant bits, flooring)."""
    w = np.asarray(weight, dtype=np.int64)
    if w.size == 0:
        return w
    inhibitory = w.max() <= 0 and w.min() < 0
    mixed = w.min() < 0 < w.max()
    if inhibitory:
        w = -w
    w = np.clip(w, -256 if mixed else 0, 255)
    drop = 8 - int(num_weight_bits) + int(mixed)
    if drop > 0:
        w = (w >> drop) << drop
    return -w if inhibitory else w


def _quantized_specs(qnet: QNetwork) -> list[_LayerSpec]:
    specs = []
    for k, ql in enumerate(qnet.layers):
        tag = f"quantized layer {k} ({ql.name!r})"
        if ql.du != 4095:
            raise NirExportError(
                f"{tag}: du={ql.du} keeps a synaptic current between steps, which the float "
                "model (and this exporter) does not have; quantize with du=4095")
        if not (np.isfinite(ql.scale) and ql.scale > 0):
            raise NirExportError(f"{tag}: scale must be finite and positive, got {ql.scale}")
        gain = 2.0 ** (ql.weight_exp + 6) * ql.scale       # one weight unit -> v float units
        if k == 0:
            gain *= qnet.input_scale                       # graded input = count * input_scale
        weight = (_lava_effective_weights(ql.weight, ql.num_weight_bits) * gain)
        bias = ql.bias_mant.astype(np.float64) * 2.0 ** ql.bias_exp * ql.scale
        vth = None if ql.kind == "li" else float(ql.vth << 6) * ql.scale
        specs.append(_LayerSpec(weight=weight.astype(np.float32), delay=ql.delay,
                                bias=bias.astype(np.float32), decay=(4096 - ql.dv) / 4096.0,
                                v_threshold=vth, v_reset=0.0, kind=ql.kind,
                                name=ql.name or f"layer{k}"))
    return specs


# --------------------------------------------------------------------------- graph building

def _neuron_node(spec: _LayerSpec, dt: float) -> nir.NIRNode:
    """LIF/LI (or IF/I when decay == 1) reproducing ``u = decay*u + I`` under forward Euler."""
    n = spec.weight.shape[0]
    full = lambda value: np.full(n, value, dtype=np.float64)  # noqa: E731
    if spec.decay >= 1.0:
        r = full(1.0 / dt)
        if spec.kind == "li":
            return nir.I(r=r)
        return nir.IF(r=r, v_threshold=full(spec.v_threshold), v_reset=full(spec.v_reset))
    tau = dt / (1.0 - spec.decay)
    if spec.kind == "li":
        return nir.LI(tau=full(tau), r=full(tau / dt), v_leak=full(0.0))
    return nir.LIF(tau=full(tau), r=full(tau / dt), v_leak=full(0.0),
                   v_threshold=full(spec.v_threshold), v_reset=full(spec.v_reset))


def _used_delays(spec: _LayerSpec) -> list[int]:
    """Distinct delays of the non-zero synapses, ascending; [0] when there are none."""
    used = np.unique(spec.delay[spec.weight != 0])
    return [int(d) for d in used] if used.size else [0]


def _build_graph(specs: list[_LayerSpec], dt: float, metadata: dict) -> nir.NIRGraph:
    nodes: dict[str, nir.NIRNode] = {
        "input": nir.Input(input_type={"input": np.array([specs[0].weight.shape[1]])})}
    edges: list[tuple[str, str]] = []
    layer_info = []
    src = "input"
    for k, spec in enumerate(specs):
        neuron = f"L{k}_{spec.kind}"
        delays = _used_delays(spec)
        for i, d in enumerate(delays):
            w = np.where(spec.delay == d, spec.weight, 0).astype(np.float32)
            syn = f"L{k}_syn_d{d}"
            nodes[syn] = (nir.Affine(weight=w, bias=spec.bias.astype(np.float32)) if i == 0
                          else nir.Linear(weight=w))
            if d == 0:
                edges.append((src, syn))
            else:
                dname = f"L{k}_delay_d{d}"
                nodes[dname] = nir.Delay(delay=np.full(spec.weight.shape[1], d * dt,
                                                       dtype=np.float64))
                edges += [(src, dname), (dname, syn)]
            edges.append((syn, neuron))
        nodes[neuron] = _neuron_node(spec, dt)
        layer_info.append({"name": spec.name, "kind": spec.kind, "n_in": spec.weight.shape[1],
                           "n_out": spec.weight.shape[0], "decay": spec.decay,
                           "v_threshold": spec.v_threshold, "v_reset": spec.v_reset,
                           "delays": delays, "neuron_node": neuron})
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
        "dt_convention": DT_CONVENTION,
        "discrete_semantics": DISCRETE_SEMANTICS,
        "delay_decomposition": DECOMPOSITION,
        "output": "membrane of the readout layer each step; "
                  "score_c = sum_t softmax_c(v[t]), prediction = argmax_c score_c",
        "class_names_json": json.dumps(list(class_names)),
    }


def to_nir(net: Network | QNetwork) -> nir.NIRGraph:
    """Build the NIR graph of a float :class:`Network` or of a :class:`QNetwork`'s float
    equivalent (see the module docstring for the decomposition and conventions)."""
    if isinstance(net, Network):
        specs, variant, target = _float_specs(net), "float", ""
        meta = _base_metadata(net.dt, variant, target, net.class_names)
        meta["threshold_rule"] = ("neurodelay spikes when u >= threshold; v_threshold is the "
                                  "largest float32 below float32(threshold) so NIR's strict "
                                  "v > v_threshold is identical in float32")
    elif isinstance(net, QNetwork):
        specs, variant, target = _quantized_specs(net), "quantized", net.target
        meta = _base_metadata(net.dt, variant, target, net.class_names)
        meta["threshold_rule"] = "Loihi spikes when v > vth << 6: v_threshold = (vth << 6)*scale"
        meta["quantized_conversion"] = (
            "W = lava_effective(weight) * 2**(weight_exp+6) * scale (* input_scale in layer 0); "
            "b = bias_mant * 2**bias_exp * scale; decay = (4096-dv)/4096; reset 0; "
            "integer rounding and the chip's 1-step-per-layer latency are not modelled")
        meta["input_scale"] = float(net.input_scale)
    else:
        raise NirExportError(f"to_nir expects a neurodelay Network or QNetwork, got "
                             f"{type(net).__name__}; build one with neurodelay's freeze()")
    return _build_graph(specs, float(net.dt), meta)


def nir_node_counts(graph: nir.NIRGraph) -> dict[str, int]:
    """Number of nodes of each NIR type in ``graph`` (type name -> count, sorted by name)."""
    counts = Counter(type(node).__name__ for node in graph.nodes.values())
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- export

def _quantize(net: Network, target, data, weight_bits: int, opts: dict) -> QNetwork:
    try:
        from neurodelay.deploy.passes import quantize
    except ImportError as err:
        raise NirExportError(
            "variant='quantized' needs the quantization pass neurodelay.deploy.passes.quantize, "
            f"which could not be imported ({err}); export variant='float' instead, pass an "
            "already quantized QNetwork, or use a neurodelay version that ships "
            "neurodelay/passes.py") from err
    qnet, _report = quantize(net, target, data=data, weight_bits=weight_bits, **opts)
    return qnet


def export(net: Network | QNetwork, out_path, *, variant: str | None = None,
           target="loihi2", data=None, weight_bits: int = 8, **quantize_opts) -> dict:
    """Write ``net`` as a NIR HDF5 file at ``out_path`` (atomically) and return a report.

    net          a float Network, or an already quantized QNetwork (exported as its
                 float equivalent; variant must then be "quantized" or None)
    variant      "float" (the trained network; default for a Network) or "quantized"
                 (the float equivalent of ``neurodelay.deploy.passes.quantize(net, target,
                 data=data, weight_bits=weight_bits, **quantize_opts)``)
    target       hardware target name or parameters for the quantize pass
    Returns {"path", "variant", "target", "dt", "node_counts", "n_nodes", "n_delay_nodes",
    "n_edges", "delays_per_layer"}.
    """
    if variant is None:
        variant = "quantized" if isinstance(net, QNetwork) else "float"
    if variant not in VARIANTS:
        raise NirExportError(f"NIR export: variant must be one of {VARIANTS}, got {variant!r}")
    if isinstance(net, QNetwork):
        if variant != "quantized":
            raise NirExportError("NIR export: a QNetwork has no float (trained) variant; pass "
                                 "the float Network for variant='float', or use "
                                 "variant='quantized'")
        qnet = net
    elif isinstance(net, Network):
        if variant == "float" and quantize_opts:
            raise NirExportError(f"NIR export: options {sorted(quantize_opts)} only apply to "
                                 "variant='quantized'")
        qnet = (_quantize(net, target, data, weight_bits, quantize_opts)
                if variant == "quantized" else None)
    else:
        raise NirExportError(f"NIR export expects a neurodelay Network or QNetwork, got "
                             f"{type(net).__name__}")
    graph = to_nir(qnet if qnet is not None else net)

    path = Path(out_path)
    with atomic_path(path) as tmp:
        nir.write(tmp, graph)
    counts = nir_node_counts(graph)
    return {
        "path": str(path),
        "variant": variant,
        "target": str(graph.metadata["target"]),
        "dt": float(net.dt),
        "node_counts": counts,
        "n_nodes": len(graph.nodes),
        "n_delay_nodes": counts.get("Delay", 0),
        "n_edges": len(graph.edges),
        "delays_per_layer": [d["delays"] for d in json.loads(graph.metadata["layers_json"])],
    }
