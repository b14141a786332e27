"""Loihi 2 exporter: a lava-dl ``netx`` HDF5 file + the QNetwork it was made from.

``export(net, out_path, ...)`` checks the network against the target's limits, quantizes
it (:func:`neurodelay.deploy.passes.quantize`) and writes two files, each atomically:

* ``out_path`` -- a lava-dl netx HDF5 network, loadable with
  ``lava.lib.dl.netx.hdf5.Network(net_config=out_path, input_message_bits=B)``;
* ``<out_path stem>.qnet.h5`` -- the QNetwork (:func:`neurodelay.deploy.network.save_network`),
  the exact integer network that :mod:`neurodelay.sim.lavarun` and :mod:`neurodelay.sim.bitsim`
  run.

netx file layout written here (what ``lava/lib/dl/netx/hdf5.py`` reads)::

    /layer/0/type = b"input", /layer/0/shape = [n_in]          (no neuron: no process)
    /layer/k/type = b"dense", /layer/k/shape = [n_out]          k = 1..L
    /layer/k/weight (n_out, n_in) int   effective integer weights (see below)
    /layer/k/delay  (n_out, n_in) int   per-synapse delays (only if some delay > 0)
    /layer/k/bias   (n_out,) int        only if some bias != 0; netx uses bias_exp = 6
    /layer/k/neuron/type = b"CUBA", iDecay = du + 1, vDecay = dv, vThMant = vth,
                    refDelay = 1, gradedSpike = False

How netx maps the file onto Lava (lava-dl 0.6) and why the file holds *effective*
weights: netx re-derives ``weight_exp``/``num_weight_bits`` itself
(``netx.utils.optimize_weight_bits``: shift the weights left by s bits, weight_exp = -s),
so a netx Dense always computes ``a = W_file @ x`` exactly; a QLayer computes
``a = shift(W' @ x, weight_exp)`` with ``W' = truncate(clip(weight), num_weight_bits)``
(Lava's Dense rules). Hence ``W_file = W' << weight_exp`` for ``weight_exp >= 0``, and
``W' >> -weight_exp`` when every W' is a multiple of ``2**-weight_exp``. Other cases --
a right shift that drops bits (a floor division of the SUM), weights outside netx's
range (254 max for mixed signs), a layer whose weights are all <= 0 with a power-of-two
minimum (netx makes it -256, Lava's inhibitory clip turns that into -255) -- cannot be
written exactly; they are detected by replaying netx's and Lava's weight processing and
reported (``strict=True``: ExportError). The bias ``bias_mant << bias_exp`` is written
as ``bias >> 6`` (exact only when divisible by 64). The non-spiking readout is a CUBA
LIF with ``vThMant = 2**17 - 1`` (the largest 17-bit threshold), like the Lava process
network of :mod:`neurodelay.sim.lavarun`. netx's input layer has no neuron here, so graded
input must be declared when loading (``input_message_bits``).
"""
from __future__ import annotations

from neurodelay.errors import NeurodelayError

import json
from pathlib import Path

import numpy as np

from neurodelay._io import atomic_path

from neurodelay.deploy.network import Network, QLayer, QNetwork

NETX_MAX_DELAY = 62          # netx clamps larger delays (DelayDense itself takes 63)
READOUT_VTH = 2 ** 17 - 1
NETX_BIAS_EXP = 6            # netx hard-codes bias_exp = 6 for CUBA neurons


class ExportError(NeurodelayError, ValueError):
    """The network cannot be exported to Loihi 2 as asked (message says what to do)."""


# ------------------------------------------------------------------ Lava/netx arithmetic

def _sign_mode(w: np.ndarray) -> str:
    """Lava's determine_sign_mode: 'exc' (min >= 0), 'inh' (max <= 0), else 'mixed'."""
    if w.size == 0 or w.min() >= 0:
        return "exc"
    return "inh" if w.max() <= 0 else "mixed"


def lava_weights(w: np.ndarray, num_weight_bits: int, num_bits: int = 8) -> np.ndarray:
    """The weights a Lava fixed_pt Dense/DelayDense actually uses for mantissas ``w``:
    clipped to ``num_bits`` for its sign mode, then LSB-truncated to num_weight_bits."""
    w = np.asarray(w, np.int64)
    mode = _sign_mode(w)
    mixed = int(mode == "mixed")
    x = -w if mode == "inh" else w.copy()
    x = np.clip(x, -(2 ** num_bits) * mixed, 2 ** num_bits - 1)
    cut = num_bits - int(num_weight_bits) + mixed
    if cut > 0:
        x = (x >> cut) << cut
    elif cut < 0:  # Lava would shift by a negative count (undefined): refuse it
        raise ExportError(f"num_weight_bits={num_weight_bits} exceeds Lava's "
                          f"{num_bits + mixed}-bit limit for {mode} weights")
    return -x if mode == "inh" else x


def _shift(a: np.ndarray, exp: int) -> np.ndarray:
    """Lava's shared-exponent shift of an accumulated sum (arithmetic, floor)."""
    return a << exp if exp > 0 else a >> -exp


def netx_effective(w_file: np.ndarray) -> np.ndarray | None:
    """Replay netx + Lava on file weights; return the per-synapse multiplier if the
    result is exactly ``w_file @ x`` for every input, else None."""
    from neurodelay._compat import ensure_lava
    ensure_lava()
    from lava.lib.dl.netx.utils import optimize_weight_bits

    w_file = np.asarray(w_file, np.int64)
    if not np.any(w_file):
        return None                  # netx divides by the max weight: crashes on zeros
    with np.errstate(divide="ignore"):
        w_opt, nbits, wexp, _ = optimize_weight_bits(w_file.copy())
    if wexp > 0:                     # netx shifted right by a negative count: broken
        return None
    used = lava_weights(np.asarray(w_opt, np.int64), nbits)
    if not np.array_equal(used, w_file << -wexp):
        return None
    return w_file


def netx_layer(layer: QLayer) -> tuple[dict, list[str]]:
    """File arrays for one layer and the list of reasons it is not exact (empty: exact)."""
    issues = []
    w_used = lava_weights(layer.weight, layer.num_weight_bits)
    e = layer.weight_exp
    if e >= 0:
        w_file = w_used << e
    else:
        w_file = w_used >> -e
        if np.any(w_used & ((1 << -e) - 1)):
            issues.append(f"weight_exp={e} shifts the summed input right, dropping bits "
                          f"(a floor of the SUM) that netx cannot express; quantize with "
                          f"weight_exp >= 0 (or weights that are multiples of 2**{-e})")
    if not issues and netx_effective(w_file) is None:
        issues.append(f"netx cannot carry these weights exactly (range "
                      f"{int(w_file.min())}..{int(w_file.max())}, sign mode "
                      f"{_sign_mode(w_file)}); keep them within -256..254 with at least "
                      f"one positive weight")
    b = layer.bias_mant.astype(np.int64)
    b_eff = _shift(b, layer.bias_exp)
    if np.any(b_eff % (1 << NETX_BIAS_EXP)):
        issues.append(f"bias bias_mant << {layer.bias_exp} is not a multiple of 64 "
                      f"(netx fixes bias_exp = 6); quantize with bias_exp >= 6")
    b_file = b_eff >> NETX_BIAS_EXP
    if np.abs(b_file).max(initial=0) > 2 ** 15 - 1:
        issues.append("bias mantissa does not fit Lava's int16 bias_mant")
    vth = READOUT_VTH if layer.kind == "li" or layer.vth is None else int(layer.vth)
    arrays = {"weight": w_file, "delay": layer.delay.astype(np.int64), "bias": b_file,
              "iDecay": layer.du + 1, "vDecay": layer.dv, "vThMant": vth}
    return arrays, issues


# ------------------------------------------------------------------ checks

def _tag(k: int, name: str) -> str:
    return f"layer {k}" + (f" ({name!r})" if name else "")


def _clip_delays(net: Network, limit: int) -> tuple[Network, int]:
    """A copy of ``net`` with delays clipped to ``limit``; returns it and the count."""
    import copy
    out = copy.deepcopy(net)
    n = 0
    for layer in out.layers:
        over = layer.delay > limit
        n += int((over & (layer.weight != 0)).sum())
        layer.delay = np.minimum(layer.delay, limit).astype(layer.delay.dtype)
    return out, n


def check_limits(net: Network | QNetwork, target: str = "loihi2") -> list[str]:
    """Limit violations of ``net`` (float or quantized) for ``target``: the hardware
    config's resource report where available, plus netx's own delay limit."""
    problems = []
    try:
        from neurodelay.hw.config import TargetError, load_target, resource_report
        try:
            load_target(target)
            problems += list(resource_report(net, target)["violations"])
        except TargetError:
            problems += _own_limits(net)
    except ImportError:
        problems += _own_limits(net)
    for k, layer in enumerate(net.layers):
        used = layer.weight != 0
        if used.any() and layer.delay[used].max() > NETX_MAX_DELAY:
            msg = (f"{_tag(k, layer.name)}: delay {int(layer.delay[used].max())} > "
                   f"{NETX_MAX_DELAY} (netx clamps delays to {NETX_MAX_DELAY}); pass "
                   f"clip_delays=True or train with a smaller maximum delay")
            if msg not in problems:
                problems.append(msg)
    return problems


def _own_limits(net: Network | QNetwork) -> list[str]:
    """Fallback checks when no hardware config is available."""
    out = []
    for k, L in enumerate(net.layers):
        tag = _tag(k, L.name)
        if isinstance(L, QLayer):
            for nm, lo, hi in (("du", 0, 4095), ("dv", 0, 4095),
                               ("bias_exp", 0, 7)):
                v = int(getattr(L, nm))
                if not lo <= v <= hi:
                    out.append(f"{tag}: {nm}={v} outside {lo}..{hi}")
            if L.bias_mant.size and np.abs(L.bias_mant).max() > 4095:
                out.append(f"{tag}: bias_mant up to {int(np.abs(L.bias_mant).max())} "
                           f"exceeds the 13-bit range -4096..4095")
            if L.weight.size and (L.weight.min() < -256 or L.weight.max() > 255):
                out.append(f"{tag}: weight mantissas {int(L.weight.min())}.."
                           f"{int(L.weight.max())} outside Lava's -256..255")
    return out


# ------------------------------------------------------------------ writing

def _atomic_h5(path: Path, write) -> None:
    import h5py
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        write(f)


def write_netx(qnet: QNetwork, path, input_message_bits: int = 8,
               strict: bool = True) -> dict:
    """Write ``qnet`` as a netx HDF5 file at ``path`` (atomically).

    Returns {"path", "exact", "issues", "layers": [...]}. With ``strict`` an ExportError
    is raised instead of writing a file netx would run differently from ``qnet``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(f"cannot write {path}: folder {path.parent} does not exist")
    layers, issues = [], []
    for k, layer in enumerate(qnet.layers):
        arrays, why = netx_layer(layer)
        issues += [f"{_tag(k, layer.name)}: {w}" for w in why]
        layers.append(arrays)
    if issues and strict:
        raise ExportError("the netx file would not compute the same integer dynamics as "
                          "the quantized network:\n  - " + "\n  - ".join(issues) +
                          "\n(pass strict_netx=False to write it anyway; the .qnet.h5 "
                          "sidecar run by neurodelay.sim.lavarun stays exact)")

    def write(f):
        f.attrs["producer"] = "neurodelay.exporters.loihi2"
        f.attrs["input_message_bits"] = int(input_message_bits)
        f.attrs["input_scale"] = float(qnet.input_scale)
        f.attrs["dt"] = float(qnet.dt)
        f.attrs["class_names"] = json.dumps(list(qnet.class_names))
        g = f.create_group("layer")
        g0 = g.create_group("0")
        g0.create_dataset("type", data=np.bytes_("input"))
        g0.create_dataset("shape", data=np.array([qnet.layers[0].n_in], np.int64))
        for k, (arr, layer) in enumerate(zip(layers, qnet.layers), start=1):
            gk = g.create_group(str(k))
            gk.create_dataset("type", data=np.bytes_("dense"))
            gk.create_dataset("shape", data=np.array([layer.n_out], np.int64))
            gk.create_dataset("weight", data=arr["weight"].astype(np.int64))
            if arr["delay"].size and arr["delay"].max() > 0:
                gk.create_dataset("delay", data=arr["delay"])
            if np.any(arr["bias"]):
                gk.create_dataset("bias", data=arr["bias"].astype(np.int64))
            n = gk.create_group("neuron")
            n.create_dataset("type", data=np.bytes_("CUBA"))
            n.create_dataset("iDecay", data=np.int64(arr["iDecay"]))
            n.create_dataset("vDecay", data=np.int64(arr["vDecay"]))
            n.create_dataset("vThMant", data=np.int64(arr["vThMant"]))
            n.create_dataset("refDelay", data=np.int64(1))
            n.create_dataset("gradedSpike", data=np.bool_(False))
            gk.attrs["name"] = layer.name

    _atomic_h5(path, write)
    return {"path": str(path), "exact": not issues, "issues": issues,
            "layers": [{"weight_min": int(a["weight"].min()),
                        "weight_max": int(a["weight"].max()),
                        "delay": bool(a["delay"].size and a["delay"].max() > 0)}
                       for a in layers]}


def _readme(report: dict) -> str:
    return (
        f"Loihi 2 export ({report['target']}): {report['n_layers']} layers, "
        f"{report['synapses']} synapses, max delay {report['delays_max']} steps.\n"
        f"- {report['path']}: lava-dl netx HDF5. Load with\n"
        f"    from lava.lib.dl.netx import hdf5\n"
        f"    net = hdf5.Network(net_config='{report['path']}', "
        f"input_message_bits={report['input_message_bits']})\n"
        f"  feed graded integer spikes round(count * {report['input_scale']}) to net.inp "
        f"and run with Loihi2SimCfg(select_tag='fixed_pt'); the readout is the last "
        f"layer's membrane v (a CUBA LIF with vThMant = 2**17-1 that does not spike).\n"
        f"  netx file exact w.r.t. the quantized network: {report['netx_exact']}.\n"
        f"- {report['qnet_path']}: the quantized network (neurodelay.deploy.network.load_network); "
        f"neurodelay.sim.lavarun.run_lava runs it as Lava processes, neurodelay.sim.bitsim "
        f"simulates it bit-exactly.\n"
        f"- Latency: each layer adds 1 step plus its synaptic delay.")


def export(net, out_path, data=None, target: str = "loihi2", clip_delays: bool = False,
           weight_bits: int = 8, strict_netx: bool = True, verify: bool = True,
           input_message_bits: int | None = None, **opts) -> dict:
    """Export ``net`` (a float Network, or an already quantized QNetwork) for Loihi 2.

    data: calibration input counts for :func:`neurodelay.deploy.passes.quantize` (optional).
    clip_delays: clip delays above netx's 62 instead of refusing the network.
    strict_netx: refuse to write a netx file that would not be exact (see module doc).
    verify: load the written file with lava-dl netx and compare its layer count.
    input_message_bits: graded-input width recorded for loading (default: from data, 8).
    Returns a report dict (paths, layers, synapses, delays_max, netx_layers, ...).
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() not in (".h5", ".hdf5", ".net"):
        out_path = out_path.with_suffix(out_path.suffix + ".h5") if out_path.suffix \
            else out_path.with_suffix(".h5")
    n_clipped = 0
    qreport = None
    if isinstance(net, QNetwork):
        qnet = net
        if clip_delays:
            qnet, n_clipped = _clip_delays(qnet, NETX_MAX_DELAY)
        problems = check_limits(qnet, target)
    elif isinstance(net, Network):
        if clip_delays:
            net, n_clipped = _clip_delays(net, NETX_MAX_DELAY)
        problems = check_limits(net, target)
        if problems:
            raise ExportError(_limits_msg(problems, target))
        from neurodelay.deploy import passes
        qnet, qreport = passes.quantize(net, target, data=data, weight_bits=weight_bits,
                                        **opts)
        problems = check_limits(qnet, target)
    else:
        raise ExportError(f"export expects a neurodelay Network or QNetwork, got "
                          f"{type(net).__name__}")
    if problems:
        raise ExportError(_limits_msg(problems, target))

    if input_message_bits is None:
        input_message_bits = 8
        if data is not None:
            peak = float(np.abs(np.asarray(data)).max(initial=0)) * qnet.input_scale
            input_message_bits = max(1, int(np.ceil(np.log2(peak + 1))))
    netx = write_netx(qnet, out_path, input_message_bits=input_message_bits,
                      strict=strict_netx)
    from neurodelay.deploy.network import save_network
    qpath = out_path.with_name(out_path.stem + ".qnet.h5")
    save_network(qnet, qpath)

    netx_layers = len(qnet.layers)
    if verify:
        netx_layers = _load_check(out_path, input_message_bits, len(qnet.layers))
    used = [L.weight != 0 for L in qnet.layers]
    report = {
        "path": str(out_path),
        "qnet_path": str(qpath),
        "target": target,
        "n_layers": len(qnet.layers),
        "layers": [{"name": L.name, "n_in": L.n_in, "n_out": L.n_out,
                    "synapses": int(u.sum()),
                    "delay_max": int(L.delay[u].max()) if u.any() else 0,
                    "process": ("DelayDense" if netx["layers"][k]["delay"] else "Dense"),
                    "weight_exp": L.weight_exp, "num_weight_bits": L.num_weight_bits}
                   for k, (L, u) in enumerate(zip(qnet.layers, used))],
        "synapses": int(sum(u.sum() for u in used)),
        "delays_max": int(max((L.delay[u].max() for L, u in zip(qnet.layers, used)
                               if u.any()), default=0)),
        "netx_layers": netx_layers,
        "netx_exact": netx["exact"],
        "netx_issues": netx["issues"],
        "clipped_delays": n_clipped,
        "input_message_bits": int(input_message_bits),
        "input_scale": float(qnet.input_scale),
        "quantize": qreport,
    }
    report["readme"] = _readme(report)
    return report


def _limits_msg(problems: list[str], target: str) -> str:
    return (f"the network does not fit target {target!r} ({len(problems)} problem(s)):\n"
            f"  - " + "\n  - ".join(problems))


def _load_check(path: Path, input_message_bits: int, n_layers: int) -> int:
    """Load the netx file (builds the processes, runs nothing); return its layer count."""
    from neurodelay._compat import ensure_lava
    ensure_lava()
    from lava.lib.dl.netx import hdf5
    try:
        net = hdf5.Network(net_config=str(path), input_message_bits=input_message_bits)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ExportError(f"lava-dl netx could not load the written file {path}: "
                          f"{type(e).__name__}: {e}") from e
    if len(net) != n_layers:
        raise ExportError(f"netx loaded {len(net)} layers from {path}, expected {n_layers}")
    return len(net)
