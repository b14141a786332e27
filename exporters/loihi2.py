"""Loihi 2 exporter: a lava-dl ``netx`` HDF5 file for a quantized network.

``write_netx(qnet, path)`` writes the file (atomically) that
``lava.lib.dl.netx.hdf5.Network(net_config=path, input_message_bits=B)`` loads;
``export(qnet, out_path)`` also writes ``<out_path stem>.qnet.h5``, the QNetwork
(:func:`neurodelay.core.network_io.save_network`) that :mod:`neurodelay.sim.lavarun` and
:mod:`neurodelay.sim.bitsim` run. A float network is quantized once, by the deployment
step (:func:`neurodelay.deploy.artifact.build_artifact`), never here: what is verified is
what is exported.

netx file layout written here (what ``lava/lib/dl/netx/hdf5.py`` reads)::

    /layer/0/type = b"input", /layer/0/shape = [n_in]          (no neuron: no process)
    /layer/k/type = b"dense", /layer/k/shape = [n_out]          k = 1..L
    /layer/k/weight (n_out, n_in) int   effective integer weights (see below)
    /layer/k/delay  (n_out, n_in) int   per-synapse delays (only if some delay > 0)
    /layer/k/bias   (n_out,) int        only if some bias != 0 (netx's fixed bias exponent)
    /layer/k/neuron/type = b"CUBA", iDecay = du + 1, vDecay = dv, vThMant = vth,
                    refDelay = 1, gradedSpike = False

How netx maps the file onto Lava (lava-dl 0.6) and why the file holds *effective*
weights: netx re-derives ``weight_exp``/``num_weight_bits`` itself
(``netx.utils.optimize_weight_bits``: shift the weights left by s bits, weight_exp = -s),
so a netx Dense always computes ``a = W_file @ x`` exactly; a QLayer computes
``a = shift(W' @ x, weight_exp)`` with ``W'`` = Lava's effective weights
(:func:`neurodelay.hw.fixedpoint.effective_weights`). Hence ``W_file = W' << weight_exp``
for ``weight_exp >= 0``, and ``W' >> -weight_exp`` when every W' is a multiple of
``2**-weight_exp``. Other cases -- a right shift that drops bits (a floor of the SUM),
weights netx re-scales differently from Lava -- cannot be written exactly; they are
detected by replaying netx's and Lava's weight processing and refused (``strict=True``).
The bias ``bias_mant << bias_exp`` is written in units of netx's fixed bias exponent
(exact only for multiples of it). The non-spiking readout is a CUBA LIF with the
target's largest threshold, like the process network of :mod:`neurodelay.sim.lavarun`.
netx's input layer has no neuron here, so graded input must be declared when loading
(``input_message_bits``). Every Loihi 2 number and rule comes from
:mod:`neurodelay.hw.fixedpoint` (the network's target).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from neurodelay import passes
from neurodelay.core.network import QLayer, QNetwork
from neurodelay.core.network_io import save_network
from neurodelay.errors import ExportError
from neurodelay.fs import atomic_path
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.resources import resource_report
from neurodelay.hw.target import arith, target_of
from neurodelay.sim.lavarun import open_netx

# ------------------------------------------------------------------ netx arithmetic

def netx_effective(w_file: np.ndarray, a: fp.Arith) -> np.ndarray | None:
    """Replay netx + Lava on file weights; return them if the result is exactly
    ``w_file @ x`` for every input, else None."""
    from neurodelay._compat import netx_utils  # lava-dl's own rule, without all of Lava

    optimize_weight_bits = netx_utils().optimize_weight_bits

    w_file = np.asarray(w_file, np.int64)
    if not np.any(w_file):
        return None                  # netx divides by the max weight: crashes on zeros
    with np.errstate(divide="ignore"):
        w_opt, nbits, wexp, _ = optimize_weight_bits(w_file.copy())
    if wexp > 0:                     # netx shifted right by a negative count: broken
        return None
    try:
        used = fp.effective_weights(np.asarray(w_opt, np.int64), nbits, a)
    except fp.FixedPointError:
        return None
    if not np.array_equal(used, w_file << -wexp):
        return None
    return w_file


def netx_layer(layer: QLayer, a: fp.Arith, check: bool = True) -> tuple[dict, list[str]]:
    """File arrays for one layer and the list of reasons it is not exact (empty: exact).
    ``check=False`` skips replaying lava-dl's weight processing (arrays only)."""
    issues = []
    w_used = fp.effective_weights(layer.weight, layer.num_weight_bits, a)
    e = layer.weight_exp
    w_file = fp.shift_sum(w_used, e)
    if not fp.shift_is_exact(w_used, e):
        issues.append(f"weight_exp={e} shifts the summed input right, dropping bits "
                      f"(a floor of the SUM) that netx cannot express; quantize with "
                      f"weight_exp >= 0 (or weights that are multiples of 2**{-e})")
    if not np.any(w_file):
        issues.append("every weight of the layer is zero (after quantization): lava-dl netx "
                      "divides by the largest weight and cannot load it; use more weight "
                      "bits, or a target whose state holds a finer threshold")
    elif check and not issues and netx_effective(w_file, a) is None:
        issues.append(f"netx cannot carry these weights exactly (range "
                      f"{int(w_file.min())}..{int(w_file.max())}, sign mode "
                      f"{fp.sign_mode(w_file)}); keep them within the mixed-sign range "
                      f"with at least one positive weight")
    b_eff = fp.effective_bias(layer.bias_mant, layer.bias_exp)
    unit = 1 << a.netx_bias_exp
    if np.any(b_eff % unit):
        issues.append(f"bias bias_mant << {layer.bias_exp} is not a multiple of {unit} "
                      f"(netx fixes bias_exp = {a.netx_bias_exp}); quantize with bias_exp "
                      f">= {a.netx_bias_exp}")
    b_file = b_eff >> a.netx_bias_exp
    lo, hi = a.bias_mant_range
    if b_file.size and (b_file.min() < lo or b_file.max() > hi):
        issues.append(f"bias in units of 2**{a.netx_bias_exp} reaches "
                      f"{int(np.abs(b_file).max())}, beyond the {a.bias_mant_bits}-bit "
                      f"bias mantissa netx writes")
    arrays = {"weight": w_file, "delay": layer.delay.astype(np.int64), "bias": b_file,
              "iDecay": layer.du + 1, "vDecay": layer.dv, "vThMant": fp.layer_vth(layer, a)}
    return arrays, issues


# ------------------------------------------------------------------ checks

def _tag(k: int, name: str) -> str:
    return f"layer {k}" + (f" ({name!r})" if name else "")


def check_limits(qnet: QNetwork, target=None) -> list[str]:
    """Every limit ``qnet`` violates on ``target`` (default: its own): the resource report's
    violations, which include every integer field (neurodelay.hw.fixedpoint)."""

    if target is None:
        target = target_of(qnet)
    return list(resource_report(qnet, target).violations)


# ------------------------------------------------------------------ writing

def _atomic_h5(path: Path, write) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        write(f)


@dataclass
class NetxFile:
    """What :func:`write_netx` wrote: the path, whether netx runs it exactly as the
    QNetwork (and why not), and per layer the weight range and the process netx builds."""

    path: str
    exact: bool
    issues: list
    input_message_bits: int
    layers: list

    def to_dict(self) -> dict:
        return asdict(self)


def input_message_bits_for(counts, input_scale: float = 1.0) -> int:
    """Graded-input bits a set of input counts needs (at least 1)."""
    peak = float(np.abs(np.asarray(counts)).max(initial=0)) * float(input_scale)
    return max(1, int(np.ceil(np.log2(np.rint(peak) + 1))))


def write_netx(qnet: QNetwork, path, input_message_bits: int = 8,
               strict: bool = True) -> NetxFile:
    """Write ``qnet`` as a netx HDF5 file at ``path`` (atomically).

    With ``strict`` an ExportError is raised instead of writing a file netx would run
    differently from ``qnet``; a network that breaks its target's limits is always
    refused.
    """
    path = Path(path)
    if qnet.recurrent:
        names = [lay.name or str(k) for k, lay in enumerate(qnet.layers) if lay.recurrent]
        raise ExportError(f"layer(s) {', '.join(names)} are recurrent: lava-dl netx cannot "
                          f"carry recurrent delays (its RecurrentDense uses the feed-forward "
                          f"delays); write the Lava process network file instead "
                          f"(neurodelay.exporters.lava_procs, network.lava.h5 in a deploy "
                          f"folder)")
    if not path.parent.is_dir():
        raise ExportError(f"cannot write {path}: folder {path.parent} does not exist")
    problems = check_limits(qnet)
    if problems:
        raise ExportError(_limits_msg(problems, qnet.target))
    a = arith(qnet)
    layers, issues = [], []
    for k, layer in enumerate(qnet.layers):
        arrays, why = netx_layer(layer, a)
        issues += [f"{_tag(k, layer.name)}: {w}" for w in why]
        layers.append(arrays)
    if issues and strict:
        raise ExportError("the netx file would not compute the same integer dynamics as "
                          "the quantized network:\n  - " + "\n  - ".join(issues) +
                          "\n(pass strict_netx=False to write it anyway; the quantized "
                          "network file run by neurodelay.sim.lavarun stays exact)")

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
    return NetxFile(str(path), not issues, issues, int(input_message_bits),
                    [{"weight_min": int(arr["weight"].min(initial=0)),
                      "weight_max": int(arr["weight"].max(initial=0)),
                      "process": "DelayDense" if arr["delay"].size and arr["delay"].max() > 0
                      else "Dense"} for arr in layers])


def netx_readme(netx: NetxFile, qnet: QNetwork) -> str:
    """How to run the netx file (a few lines for a README next to it)."""
    return (
        f"{Path(netx.path).name}: lava-dl netx HDF5 ({len(qnet.layers)} layers). Load with\n"
        f"    from lava.lib.dl.netx import hdf5\n"
        f"    net = hdf5.Network(net_config='{Path(netx.path).name}', "
        f"input_message_bits={netx.input_message_bits})\n"
        f"feed graded integer spikes round(count * {qnet.input_scale:g}) to net.inp and run "
        f"with Loihi2SimCfg(select_tag='fixed_pt'); the readout is the last layer's membrane "
        f"v (a CUBA LIF with the largest threshold, which does not spike); prediction = "
        f"argmax over classes of sum_t softmax(v[t] * {qnet.layers[-1].scale:.6g}) over the "
        f"rows of the input's time steps after {len(qnet.layers)} steps of latency.\n"
        f"Latency: each layer adds 1 step plus its synaptic delay.")


def load_check(path, input_message_bits: int, n_layers: int) -> int:
    """Load the netx file with lava-dl (builds the processes, runs nothing); return its
    layer count, or ExportError."""
    try:
        net = open_netx(path, input_message_bits)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ExportError(f"lava-dl netx could not load the written file {path}: "
                          f"{type(e).__name__}: {e}") from e
    if len(net) != n_layers:
        raise ExportError(f"netx loaded {len(net)} layers from {path}, expected {n_layers}")
    return len(net)


def _limits_msg(problems: list[str], target: str) -> str:
    return (f"the network does not fit target {target!r} ({len(problems)} problem(s)):\n"
            f"  - " + "\n  - ".join(problems))


def export(net, out_path, *, clip_delays: bool = False, strict_netx: bool = True,
           verify: bool = True, input_message_bits: int = 8) -> dict:
    """Write a quantized network ``net`` (a QNetwork) as a netx file at ``out_path`` plus
    ``<stem>.qnet.h5`` (the QNetwork itself), both atomically.

    A float Network is refused: quantize it once with the deployment step
    (``neurodelay export RUN --target loihi2`` / ``neurodelay.deploy.artifact``), which
    also writes this file. ``clip_delays`` clips delays above the target's maximum
    (reported); ``strict_netx`` refuses a file netx would run differently; ``verify``
    loads the written file with lava-dl netx.
    Returns a dict: path, qnet_path, target, n_layers, synapses, delays_max, netx
    (:class:`NetxFile` as a dict), clipped_delays, netx_layers, readme.
    """
    if not isinstance(net, QNetwork):
        raise ExportError(f"the Loihi 2 exporter writes a quantized network (QNetwork), "
                          f"got {type(net).__name__}; quantize it once with `neurodelay "
                          f"export RUN --target loihi2` or "
                          f"neurodelay.deploy.artifact.build_artifact")
    out_path = Path(out_path)
    if out_path.suffix.lower() not in (".h5", ".hdf5", ".net"):
        out_path = out_path.with_name(out_path.name + ".h5")
    qnet, n_clipped = net, 0
    if clip_delays:
        qnet, rep = passes.check_delays(net, arith(net).max_delay, clip=True)
        n_clipped = int(rep.changes["clipped"])
    netx = write_netx(qnet, out_path, input_message_bits=input_message_bits,
                      strict=strict_netx)
    qpath = out_path.with_name(out_path.stem + ".qnet.h5")
    save_network(qnet, qpath)
    n = load_check(out_path, input_message_bits, len(qnet.layers)) if verify else None
    used = [L.weight != 0 for L in qnet.layers]
    return {"path": str(out_path), "qnet_path": str(qpath), "target": qnet.target,
            "n_layers": len(qnet.layers),
            "synapses": int(sum(u.sum() for u in used)),
            "delays_max": int(max((L.delay[u].max() for L, u in zip(qnet.layers, used)
                                   if u.any()), default=0)),
            "netx": netx.to_dict(), "netx_exact": netx.exact, "netx_layers": n,
            "clipped_delays": n_clipped, "readme": netx_readme(netx, qnet)}
