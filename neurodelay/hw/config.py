"""Hardware targets as data (``hw_configs/*.toml``) and resource reports against them.

A target file has a top-level ``name`` and ``description`` and five tables; every field
below is required unless marked optional, and unknown fields are rejected (typos)::

    [synapse]   weight_bits      int    weight mantissa bits (Lava Dense: 8)
                weight_exp_min   int    smallest shared weight exponent
                weight_exp_max   int    largest shared weight exponent
                sign_mode        str    "mixed" | "excitatory" | "inhibitory"
                delay_bits       int    bits of the per-synapse delay field (0: none)
                max_delay        int    largest usable delay in steps (0: no delays);
                                        must fit in delay_bits
                max_delay_hardware int  (optional) what the lowest layer accepts, >= max_delay
                accumulator_bits int    (optional, 32) synaptic buffer width (wraps)
                weight_register_bits int (optional, 8) the width Lava's Dense clips weights
                                        to; weight_bits (the precision) must not exceed it
                input_bits       int    (optional, 16) declared width of the LIF input a_in
    [neuron]    du_bits, dv_bits, vth_bits, state_bits, bias_mant_bits, bias_exp_bits   int
                current_shift    int    (optional, 6) a_in << current_shift enters u
                threshold_shift  int    (optional, 6) spike when v > vth << threshold_shift
                netx_bias_exp    int    (optional, 6) the bias exponent lava-dl netx fixes
    [spikes]    graded bool ; payload_bits int (0 for binary spikes, > 0 iff graded)
    [timing]    latency_per_layer int  steps each synaptic layer adds
    [resources] cores_per_chip, chips, neurons_per_core, synaptic_memory_per_core (bytes)
                max_fan_in, max_fan_out, max_neurons_per_layer  (optional; 0 = no limit)

Resource estimate (``resource_report``), per synaptic layer (inputs arrive from the
host and are not counted as neurons):

    synapses                = nonzero weights
    synaptic_memory_bytes   = ceil(synapses * (weight_bits + delay_bits) / 8)
    cores                   = max(ceil(neurons / neurons_per_core),
                                  ceil(synaptic_memory_bytes / synaptic_memory_per_core))

This is an ESTIMATE of the dominant terms only: real compilers add routing tables,
synapse-list headers and neuron state, and pack synapses differently.
"""
from __future__ import annotations

from neurodelay.errors import NeurodelayError

import math
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


from neurodelay.deploy.network import Layer, Network, QLayer, QNetwork
from neurodelay.untrusted import printable


class TargetError(NeurodelayError, ValueError):
    """A target description is missing, unreadable or invalid."""


class FitError(NeurodelayError, ValueError):
    """A network violates a target's limits (the message lists every violation)."""


SIGN_MODES = ("mixed", "excitatory", "inhibitory")

# section -> field -> (type, required). Types: int, bool, str.
_SCHEMA: dict[str, dict[str, tuple[type, bool]]] = {
    "synapse": {"weight_bits": (int, True), "weight_exp_min": (int, True),
                "weight_exp_max": (int, True), "sign_mode": (str, True),
                "delay_bits": (int, True), "max_delay": (int, True),
                "max_delay_hardware": (int, False), "accumulator_bits": (int, False),
                "input_bits": (int, False), "weight_register_bits": (int, False)},
    "neuron": {"du_bits": (int, True), "dv_bits": (int, True), "vth_bits": (int, True),
               "state_bits": (int, True), "bias_mant_bits": (int, True),
               "bias_exp_bits": (int, True), "current_shift": (int, False),
               "threshold_shift": (int, False), "netx_bias_exp": (int, False)},
    "spikes": {"graded": (bool, True), "payload_bits": (int, True)},
    "timing": {"latency_per_layer": (int, True)},
    "resources": {"cores_per_chip": (int, True), "chips": (int, True),
                  "neurons_per_core": (int, True), "synaptic_memory_per_core": (int, True),
                  "max_fan_in": (int, False), "max_fan_out": (int, False),
                  "max_neurons_per_layer": (int, False)},
}


@dataclass(frozen=True)
class Target:
    """One hardware target; field meanings in the module docstring."""

    name: str
    description: str
    source: str                      # the TOML file it came from
    # [synapse]
    weight_bits: int
    weight_exp_min: int
    weight_exp_max: int
    sign_mode: str
    delay_bits: int
    max_delay: int
    max_delay_hardware: int          # defaults to max_delay
    # [neuron]
    du_bits: int
    dv_bits: int
    vth_bits: int
    state_bits: int
    bias_mant_bits: int
    bias_exp_bits: int
    # [spikes]
    graded: bool
    payload_bits: int
    # [timing]
    latency_per_layer: int
    # [resources]
    cores_per_chip: int
    chips: int
    neurons_per_core: int
    synaptic_memory_per_core: int
    max_fan_in: int = 0              # 0 = no limit
    max_fan_out: int = 0
    max_neurons_per_layer: int = 0
    # arithmetic details of Lava's models (defaults: the measured Loihi 2 values)
    accumulator_bits: int = 32
    input_bits: int = 16
    weight_register_bits: int = 8
    current_shift: int = 6
    threshold_shift: int = 6
    netx_bias_exp: int = 6

    @property
    def has_delays(self) -> bool:
        return self.max_delay > 0

    @property
    def max_cores(self) -> int:
        return self.cores_per_chip * self.chips

    @property
    def bits_per_synapse(self) -> int:
        return self.weight_bits + self.delay_bits

    def to_dict(self) -> dict:
        """Every field (JSON-ready); :func:`target_from_dict` reads it back."""
        from dataclasses import asdict

        return asdict(self)


def config_dir():
    """The folder (a Traversable) holding the built-in target files."""
    return resources.files("neurodelay.hw_configs")


def available_targets() -> list[str]:
    """Names of the built-in targets (hw_configs/<name>.toml)."""
    return sorted(p.name[:-5] for p in config_dir().iterdir() if p.name.endswith(".toml"))


def _type_ok(value, typ: type) -> bool:
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


# a target's name becomes a folder name: one plain path component, nothing else
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _parse(data: dict, src: str) -> Target:
    def fail(where: str, msg: str) -> TargetError:
        return TargetError(f"{src}: {where}: {msg}")

    values: dict = {}
    for key in ("name", "description"):
        if key not in data:
            raise fail(key, "missing (a top-level string)")
        if not isinstance(data[key], str) or not data[key].strip():
            raise fail(key, f"must be a non-empty string, got {data[key]!r}")
        values[key] = data[key]
    if not _NAME_RE.fullmatch(values["name"]) or ".." in values["name"]:
        raise fail("name", f"{printable(values['name'], 80)!r} is not a plain target name: "
                   f"it names the artifact folder (RUN/deploy/<name>), so it must be 1-64 "
                   f"letters, digits, '.', '_' or '-', start with a letter or digit, and "
                   f"hold no '/' or '..' (e.g. \"loihi2-mychip\")")
    values["description"] = printable(values["description"], 500)
    unknown = sorted(set(data) - set(_SCHEMA) - {"name", "description"})
    if unknown:
        raise fail(", ".join(unknown), f"unknown top-level entries; expected name, "
                   f"description and the tables {sorted(_SCHEMA)}")
    for section, spec in _SCHEMA.items():
        table = data.get(section)
        if not isinstance(table, dict):
            raise fail(f"[{section}]", "missing table" if table is None
                       else f"must be a table, got {table!r}")
        extra = sorted(set(table) - set(spec))
        if extra:
            raise fail(f"[{section}] {extra[0]}", f"unknown field; known fields: "
                       f"{', '.join(spec)}")
        for key, (typ, required) in spec.items():
            where = f"[{section}] {key}"
            if key not in table:
                if required:
                    raise fail(where, f"missing (a {typ.__name__})")
                continue
            if not _type_ok(table[key], typ):
                raise fail(where, f"must be a {typ.__name__}, got {table[key]!r}")
            values[key] = table[key]
    values.setdefault("max_delay_hardware", values["max_delay"])
    _check_values(values, fail)
    return Target(source=src, **values)


def target_from_dict(d: dict) -> Target:
    """A Target from :meth:`Target.to_dict` (as stored in a quantized network file),
    validated like a TOML file."""
    if not isinstance(d, dict):
        raise TargetError(f"a target description must be a dict, got {type(d).__name__}")
    src = str(d.get("source", "stored target description"))

    def fail(where: str, msg: str) -> TargetError:
        return TargetError(f"{src}: {where}: {msg}")

    known = {f for spec in _SCHEMA.values() for f in spec} | {"name", "description"}
    values = {k: v for k, v in d.items() if k in known}
    missing = sorted(f for s, spec in _SCHEMA.items() for f, (_, req) in spec.items()
                     if req and f not in values)
    if missing:
        raise fail(", ".join(missing), "missing from the stored target description")
    values.setdefault("max_delay_hardware", values["max_delay"])
    _check_values(values, fail)
    return Target(source=src, **values)


def _check_values(v: dict, fail) -> None:
    """Range and consistency checks; raise via fail(where, msg)."""
    nonneg = ["delay_bits", "max_delay", "max_delay_hardware", "payload_bits",
              "latency_per_layer", "max_fan_in", "max_fan_out", "max_neurons_per_layer",
              "bias_exp_bits", "current_shift", "threshold_shift", "netx_bias_exp"]
    positive = ["weight_bits", "du_bits", "dv_bits", "vth_bits", "state_bits",
                "bias_mant_bits", "cores_per_chip", "chips", "neurons_per_core",
                "synaptic_memory_per_core"]
    section = {k: s for s, spec in _SCHEMA.items() for k in spec}
    for key in nonneg:
        if key in v and v[key] < 0:
            raise fail(f"[{section[key]}] {key}", f"must be >= 0, got {v[key]}")
    for key in positive:
        if v[key] <= 0:
            raise fail(f"[{section[key]}] {key}", f"must be > 0, got {v[key]}")
    if v["weight_bits"] > 32:
        raise fail("[synapse] weight_bits", f"must be <= 32, got {v['weight_bits']}")
    if v["weight_bits"] > v.get("weight_register_bits", 8):
        raise fail("[synapse] weight_bits", f"{v['weight_bits']} exceeds weight_register_bits "
                   f"{v.get('weight_register_bits', 8)} (the width Lava's Dense holds)")
    for key, lo, hi in (("accumulator_bits", 8, 64), ("input_bits", 2, 64),
                        ("weight_register_bits", 1, 16),
                        ("state_bits", 2, 48), ("du_bits", 1, 24), ("dv_bits", 1, 24),
                        ("vth_bits", 1, 40), ("bias_mant_bits", 2, 32)):
        if key in v and not lo <= v[key] <= hi:
            raise fail(f"[{section[key]}] {key}", f"must be in {lo}..{hi}, got {v[key]}")

    if v["weight_exp_min"] > v["weight_exp_max"]:
        raise fail("[synapse] weight_exp_min", f"{v['weight_exp_min']} > weight_exp_max "
                   f"{v['weight_exp_max']}")
    if v["sign_mode"] not in SIGN_MODES:
        raise fail("[synapse] sign_mode", f"must be one of {SIGN_MODES}, got "
                   f"{v['sign_mode']!r}")
    if v["delay_bits"] > 16:
        raise fail("[synapse] delay_bits", f"must be <= 16, got {v['delay_bits']}")
    if v["max_delay"] > 2 ** v["delay_bits"] - 1:
        raise fail("[synapse] max_delay", f"{v['max_delay']} does not fit in delay_bits = "
                   f"{v['delay_bits']} (at most {2 ** v['delay_bits'] - 1})")
    if v["max_delay_hardware"] < v["max_delay"]:
        raise fail("[synapse] max_delay_hardware", f"{v['max_delay_hardware']} < max_delay "
                   f"{v['max_delay']}")
    if v["graded"] != (v["payload_bits"] > 0):
        raise fail("[spikes] payload_bits", f"graded = {str(v['graded']).lower()} needs "
                   f"payload_bits {'> 0' if v['graded'] else '= 0'}, got {v['payload_bits']}")


def load_target(name_or_path) -> Target:
    """Load and validate a target: a built-in name ("loihi2") or a path to a TOML file.

    Raises TargetError naming the file and the field for every problem; an unknown
    name lists the available targets.
    """
    if isinstance(name_or_path, Target):
        return name_or_path
    s = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or s.endswith(".toml") or "/" in s or "\\" in s
    if is_path:
        path = Path(s)
        if not path.is_file():
            raise TargetError(f"{path}: target file not found")
        text, src = path.read_bytes(), str(path)
    else:
        entry = config_dir() / f"{s}.toml"
        if not entry.is_file():
            raise TargetError(f"unknown target {s!r}; available targets: "
                              f"{', '.join(available_targets())} (or give a path to a "
                              f".toml file)")
        text, src = entry.read_bytes(), f"hw_configs/{s}.toml"
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TargetError(f"{src}: not valid TOML: {e}") from None
    return _parse(data, src)


# ----------------------------------------------------------------------------- reports

def _layer_stats(layer: Layer | QLayer, target: Target, bits_per_synapse: int) -> dict:
    used = layer.weight != 0
    n_syn = int(used.sum())
    delays = layer.delay[used]
    mem = math.ceil(n_syn * bits_per_synapse / 8)
    cores = max(math.ceil(layer.n_out / target.neurons_per_core),
                math.ceil(mem / target.synaptic_memory_per_core)) if layer.n_out else 0
    return {
        "name": layer.name,
        "kind": layer.kind,
        "inputs": layer.n_in,
        "neurons": layer.n_out,
        "synapses": n_syn,
        "synaptic_memory_bytes": mem,
        "cores": cores,
        "delay_min": int(delays.min()) if n_syn else 0,
        "delay_max": int(delays.max()) if n_syn else 0,
        "max_fan_in": int(used.sum(axis=1).max()) if used.size else 0,
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
        from dataclasses import asdict

        return asdict(self)


def resource_report(net: Network | QNetwork, target) -> ResourceReport:
    """Estimate what ``net`` needs on ``target`` (a Target, name or path) and list limits it
    violates.

    Returns a dict: target (name), memory_formula (str), layers (list of dicts with
    name, kind, inputs, neurons, synapses, synaptic_memory_bytes, cores, delay_min,
    delay_max, max_fan_in, max_fan_out), totals (neurons, synapses,
    synaptic_memory_bytes, cores, chips_needed), limits (the target values compared),
    violations (list of str, each naming layer, limit, value and allowed value), notes
    (list of str) and fits (bool: no violations).
    """
    from neurodelay.hw import fixedpoint as fp

    t = load_target(target)
    if not isinstance(net, (Network, QNetwork)):
        raise TargetError(f"resource_report expects a Network or QNetwork, got "
                          f"{type(net).__name__}")
    a = fp.arith(t)
    # a quantized network narrowed below the target's widths (fewer weight or delay bits)
    # stores only those bits per synapse
    meta = net.meta if isinstance(net, QNetwork) else {}
    w_bits = min(int(meta.get("weight_bits", t.weight_bits)), t.weight_bits)
    d_bits = min(int(meta.get("delay_bits", t.delay_bits)), t.delay_bits)
    layers, violations, notes = [], [], []
    for k, layer in enumerate(net.layers):
        st = _layer_stats(layer, t, w_bits + d_bits)
        layers.append(st)
        tag = f"layer {k}" + (f" {layer.name!r}" if layer.name else "")
        if isinstance(layer, QLayer):     # every integer field, delays included
            violations += fp.check_qlayer(layer, a, tag, hidden=k < len(net.layers) - 1)
        else:
            violations += fp.delay_violations(tag, layer.weight, layer.delay, a)
        if t.max_neurons_per_layer and st["neurons"] > t.max_neurons_per_layer:
            violations.append(f"{tag}: max_neurons_per_layer: {st['neurons']} > allowed "
                              f"{t.max_neurons_per_layer}")
        if t.max_fan_in and st["max_fan_in"] > t.max_fan_in:
            violations.append(f"{tag}: max_fan_in: {st['max_fan_in']} > allowed "
                              f"{t.max_fan_in}")
        if t.max_fan_out and st["max_fan_out"] > t.max_fan_out:
            violations.append(f"{tag}: max_fan_out: {st['max_fan_out']} > allowed "
                              f"{t.max_fan_out}")
    totals = {key: sum(st[key] for st in layers)
              for key in ("neurons", "synapses", "synaptic_memory_bytes", "cores")}
    totals["chips_needed"] = math.ceil(totals["cores"] / t.cores_per_chip)
    if totals["cores"] > t.max_cores:
        violations.append(f"network: total cores: {totals['cores']} > allowed {t.max_cores} "
                          f"({t.chips} chip(s) x {t.cores_per_chip} cores)")
    if isinstance(net, QNetwork) and net.target != t.name:
        notes.append(f"the quantized network was made for target {net.target!r}, "
                     f"checked here against {t.name!r}")
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
                row.append(f"{st['delay_min']}..{st['delay_max']}")
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
