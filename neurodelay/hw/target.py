"""Hardware targets as data (``hw_configs/*.toml``): the schema, the loader, and the
target lookup (name, path, or the description a QNetwork carries) that yields the
integer constants of :class:`neurodelay.hw.fixedpoint.Arith`.

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

Resource reports against a target are in :mod:`neurodelay.hw.resources`.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from neurodelay.core.network import QNetwork
from neurodelay.errors import FixedPointError, TargetError
from neurodelay.hw.fixedpoint import Arith, arith_from_target
from neurodelay.untrusted import printable

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


# ----------------------------------------------------------------------------- lookup

def default_target() -> Target:
    """The built-in Loihi 2 target (hw_configs/loihi2.toml)."""
    return load_target("loihi2")


def target_of(qnet) -> Target:
    """The target a QNetwork was quantized for: the description stored in it
    (``qnet.target_spec``), else the built-in target of that name."""
    spec = getattr(qnet, "target_spec", None)
    if spec:
        return target_from_dict(spec)
    try:
        return load_target(qnet.target)
    except TargetError:
        raise FixedPointError(
            f"the quantized network was made for target {qnet.target!r}, which is not a "
            f"built-in target and carries no target description; pass the target "
            f"explicitly (a name from hw_configs/ or a .toml path)") from None


def arith(target=None) -> Arith:
    """The :class:`~neurodelay.hw.fixedpoint.Arith` of a Target, a target name or path,
    or a QNetwork (its own target); None: Loihi 2."""
    if target is None:
        target = default_target()
    elif isinstance(target, QNetwork):
        target = target_of(target)
    elif not isinstance(target, Target):
        target = load_target(target)
    return arith_from_target(target)
