"""Resource reports: what a network needs on a target, and the limits it breaks.

Resource estimate (``resource_report``), per synaptic layer (inputs arrive from the
host and are not counted as neurons):

    synapses                = nonzero weights (feed-forward + recurrent)
    max_fan_in              = per neuron, feed-forward + recurrent synapses into it
    synaptic_memory_bytes   = ceil(synapses * (weight_bits + delay_bits) / 8)
    cores                   = max(ceil(neurons / neurons_per_core),
                                  ceil(synaptic_memory_bytes / synaptic_memory_per_core))

This is an ESTIMATE of the dominant terms only: real compilers add routing tables,
synapse-list headers and neuron state, and pack synapses differently.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from neurodelay.core.network import Layer, Network, QLayer, QNetwork
from neurodelay.errors import FitError, TargetError
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.target import Target, arith, load_target


def _layer_stats(layer: Layer | QLayer, target: Target, bits_per_synapse: int) -> dict:
    used = layer.weight != 0
    n_syn = int(used.sum())
    delays = layer.delay[used]
    rec = getattr(layer, "rec_weight", None)
    n_rec = int(np.count_nonzero(rec)) if rec is not None else 0
    rec_fan_in = (rec != 0).sum(axis=1) if rec is not None else 0
    fan_in = used.sum(axis=1) + rec_fan_in if used.size else np.zeros(1, int)
    n_syn_all = n_syn + n_rec
    mem = math.ceil(n_syn_all * bits_per_synapse / 8)
    cores = max(math.ceil(layer.n_out / target.neurons_per_core),
                math.ceil(mem / target.synaptic_memory_per_core)) if layer.n_out else 0
    return {
        "name": layer.name,
        "kind": layer.kind,
        "inputs": layer.n_in,
        "neurons": layer.n_out,
        "synapses": n_syn_all,
        "recurrent_synapses": n_rec,
        "synaptic_memory_bytes": mem,
        "cores": cores,
        "delay_min": int(delays.min()) if n_syn else 0,
        "delay_max": int(delays.max()) if n_syn else 0,
        # recurrent synapses' delays E (>= 1 step; Lava's DelayDense holds E - 1)
        "rec_delay_min": int(layer.rec_delay[rec != 0].min()) if n_rec else None,
        "rec_delay_max": int(layer.rec_delay[rec != 0].max()) if n_rec else None,
        "max_fan_in": int(np.max(fan_in)) if used.size else 0,
        "max_fan_out": int(used.sum(axis=0).max()) if used.size else 0,
    }


@dataclass
class ResourceReport:
    """What a network needs on a target and every limit it violates (see
    :func:`resource_report`). ``to_dict()`` gives the JSON form."""

    target: str
    memory_formula: str
    layers: list            # per layer: name, kind, inputs, neurons, synapses, ...
    totals: dict            # neurons, synapses, synaptic_memory_bytes, cores, chips_needed
    limits: dict
    violations: list
    notes: list
    fits: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _size_limits(tag: str, st: dict, t: Target) -> list[str]:
    """The per-layer size limits of ``t`` (0 = no limit) that layer stats ``st`` break."""
    out = []
    for limit, key in (("max_neurons_per_layer", "neurons"), ("max_fan_in", "max_fan_in"),
                       ("max_fan_out", "max_fan_out")):
        allowed = getattr(t, limit)
        if allowed and st[key] > allowed:
            out.append(f"{tag}: {limit}: {st[key]} > allowed {allowed}")
    return out


def resource_report(net: Network | QNetwork, target) -> ResourceReport:
    """Estimate what ``net`` needs on ``target`` (a Target, name or path) and list limits it
    violates.

    Returns a :class:`ResourceReport`: target (name), memory_formula (str), layers (dicts with
    name, kind, inputs, neurons, synapses, recurrent_synapses, synaptic_memory_bytes,
    cores, delay_min, delay_max, rec_delay_min and rec_delay_max (the recurrent
    synapses' delays, None without any), max_fan_in, max_fan_out), totals (neurons, synapses,
    synaptic_memory_bytes, cores, chips_needed), limits (the target values compared),
    violations (list of str, each naming layer, limit, value and allowed value), notes
    (list of str) and fits (bool: no violations).
    """
    t = load_target(target)
    if not isinstance(net, (Network, QNetwork)):
        raise TargetError(f"resource_report expects a Network or QNetwork, got "
                          f"{type(net).__name__}")
    a = arith(t)
    # a quantized network narrowed below the target's widths (fewer weight or delay bits)
    # stores only those bits per synapse
    q = net if isinstance(net, QNetwork) else None
    w_bits = min(q.weight_bits if q and q.weight_bits is not None else t.weight_bits,
                 t.weight_bits)
    d_bits = min(q.delay_bits if q and q.delay_bits is not None else t.delay_bits,
                 t.delay_bits)
    layers, violations, notes = [], [], []
    for k, layer in enumerate(net.layers):
        st = _layer_stats(layer, t, w_bits + d_bits)
        layers.append(st)
        tag = f"layer {k}" + (f" {layer.name!r}" if layer.name else "")
        if isinstance(layer, QLayer):     # every integer field, delays included
            violations += fp.check_qlayer(layer, a, tag, hidden=k < len(net.layers) - 1)
        else:
            violations += fp.delay_violations(tag, layer.weight, layer.delay, a)
            if getattr(layer, "recurrent", False):
                violations += fp.delay_violations(f"{tag} (recurrent)", layer.rec_weight,
                                                  layer.rec_delay, a)
        violations += _size_limits(tag, st, t)
    totals = {key: sum(st[key] for st in layers)
              for key in ("neurons", "synapses", "synaptic_memory_bytes", "cores")}
    totals["chips_needed"] = math.ceil(totals["cores"] / t.cores_per_chip)
    if totals["cores"] > t.max_cores:
        violations.append(f"network: total cores: {totals['cores']} > allowed {t.max_cores} "
                          f"({t.chips} chip(s) x {t.cores_per_chip} cores)")
    if isinstance(net, QNetwork) and net.target != t.name:
        notes.append(f"the quantized network was made for target {net.target!r}, "
                     f"checked here against {t.name!r}")
    rec = [st["name"] or str(k) for k, st in enumerate(layers) if st["recurrent_synapses"]]
    if rec:
        notes.append(f"recurrent layer(s) {', '.join(rec)}: their recurrent synapses are "
                     f"counted in synapses, memory and fan-in (a second synapse process "
                     f"into the same neurons); lava-dl netx cannot carry their delays, "
                     f"the deploy folder holds a Lava process network file for them")
    if not t.graded:
        notes.append(f"target {t.name!r} has binary spikes only: inputs must be 0/1 "
                     f"(binned spike counts above 1 need splitting over input neurons)")
    notes.append(f"latency: {t.latency_per_layer * len(net.layers)} step(s) from "
                 f"{len(net.layers)} layer(s) plus the synaptic delays")
    return ResourceReport(
        target=t.name,
        memory_formula=(f"ceil(synapses * ({w_bits} weight + {d_bits} "
                        f"delay bits) / 8) bytes; cores = max(ceil(neurons / "
                        f"{t.neurons_per_core}), ceil(bytes / "
                        f"{t.synaptic_memory_per_core})); an estimate"),
        layers=layers, totals=totals,
        limits={"max_delay": t.max_delay, "neurons_per_core": t.neurons_per_core,
                "synaptic_memory_per_core": t.synaptic_memory_per_core,
                "max_cores": t.max_cores, "max_fan_in": t.max_fan_in,
                "max_fan_out": t.max_fan_out,
                "max_neurons_per_layer": t.max_neurons_per_layer},
        violations=violations, notes=notes, fits=not violations)


def check_fits(net: Network | QNetwork, target) -> ResourceReport:
    """resource_report, raising FitError listing every violation if there is any."""
    report = resource_report(net, target)
    if report.violations:
        lines = "\n  - ".join(report.violations)
        raise FitError(f"the network does not fit target {report.target!r} "
                       f"({len(report.violations)} violation(s)):\n  - {lines}")
    return report


def format_resource_report(report) -> str:
    """A plain-text table of a resource report (a ResourceReport or its dict form), with
    totals, violations and notes."""
    if isinstance(report, ResourceReport):
        report = report.to_dict()
    cols = [("layer", None), ("kind", "kind"), ("in", "inputs"), ("neurons", "neurons"),
            ("synapses", "synapses"), ("syn.mem B", "synaptic_memory_bytes"),
            ("cores", "cores"), ("delays", None), ("fan-in", "max_fan_in"),
            ("fan-out", "max_fan_out")]
    rows = []
    for k, st in enumerate(report["layers"]):
        row = []
        for head, key in cols:
            if head == "layer":
                row.append(f"{k} {st['name']}".strip())
            elif head == "delays":
                cell = f"{st['delay_min']}..{st['delay_max']}"
                if st.get("rec_delay_min") is not None:
                    cell += f", rec {st['rec_delay_min']}..{st['rec_delay_max']}"
                row.append(cell)
            else:
                row.append(str(st[key]))
        rows.append(row)
    tot = report["totals"]
    rows.append(["total", "", "", str(tot["neurons"]), str(tot["synapses"]),
                 str(tot["synaptic_memory_bytes"]), str(tot["cores"]), "", "", ""])
    heads = [h for h, _ in cols]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]

    def fmt(r):
        return "  ".join(c.rjust(w) if i >= 2 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    lines = [f"Resource estimate for target {report['target']!r}",
             fmt(heads), fmt(["-" * w for w in widths])]
    lines += [fmt(r) for r in rows[:-1]] + [fmt(["-" * w for w in widths]), fmt(rows[-1])]
    lines.append(f"chips needed: {tot['chips_needed']}")
    lines.append(f"memory estimate: {report['memory_formula']}")
    if report["violations"]:
        lines.append(f"VIOLATIONS ({len(report['violations'])}):")
        lines += [f"  - {v}" for v in report["violations"]]
    else:
        lines.append("fits: no limit violated")
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)
