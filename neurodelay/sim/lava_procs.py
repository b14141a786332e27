"""A quantized network as Lava processes: the parameters, the file that carries them, and
the call that builds the processes from it (recurrent networks, which lava-dl netx
cannot carry; feed-forward ones too).

lava-dl netx (0.6.0) cannot hold learned recurrent delays (its ``RecurrentDense`` gives
the recurrent synapse the feed-forward delay matrix), so neurodelay writes the Lava
process parameters itself and builds the process network with Lava's own classes:

per layer k, in order::

    input / LIF_{k-1}.s_out -> [Dense | DelayDense] ff_k -> LIF_k.a_in
    (recurrent layers)          LIF_k.s_out -> DelayDense rec_k -> LIF_k.a_in

Both synapse processes of a recurrent layer write into the same ``a_in`` port, which
sums them (Lava's ``PyInPortVectorDense.recv``); each has its own ``weight_exp`` and
``num_weight_bits`` (Lava applies them per process). The recurrent process gets the
delays ``rec_delay - 1``: with its own one step of latency, a spike at step t reaches
the layer at step t + rec_delay (:mod:`neurodelay.hw.fixedpoint`).

File format (HDF5, ``network.lava.h5`` in a deploy folder; readable with h5py alone)::

    /  attrs  format = "neurodelay-lava-processes", format_version = 1,
              n_layers, n_in, input_message_bits (graded-input bits of ff_0),
              input_scale (graded input = round(count * input_scale)), dt (s),
              readout_scale (float value of one unit of the readout's v),
              class_names (JSON list), producer
    /layers/<k>  attrs name, kind ("lif" | "li")
        ff/   weights (n_out, n_in) int32, delays (n_out, n_in) int32 (Lava delays)
              attrs weight_exp, num_weight_bits, process ("Dense" | "DelayDense")
        rec/  (recurrent layers only) weights (n_out, n_out) int32, delays (n_out, n_out)
              int32 (Lava delays = rec_delay - 1), attrs weight_exp, num_weight_bits,
              process = "DelayDense"
        lif/  bias_mant (n_out,) int32; attrs du, dv, vth, bias_exp (the readout, kind
              "li", has the target's largest vth and does not spike)

Use (fresh Python process with Lava installed: reading and building need only numpy,
h5py, Lava and this module, no torch; see the README)::

    from neurodelay.sim.lava_procs import build_from_file
    net = build_from_file("network.lava.h5")    # Lava processes, nothing run yet
    from lava.proc.io.source import RingBuffer    # Lava's own API from here on
    source = RingBuffer(data=x.T)                 # graded int spikes (n_in, steps), one
                                                  # column per step (it repeats: pad x)
    source.s_out.connect(net.inp)
    # read net.neurons[-1].v (the readout) and run with Loihi2SimCfg(select_tag="fixed_pt")

``build_from_file`` applies neurodelay's in-memory fix that lets lava-nc 0.10 import on
Python 3.11 (:mod:`neurodelay._compat`); import Lava's modules after calling it (or call
``neurodelay._compat.ensure_lava()`` first). Prediction: argmax over classes of
``sum_t softmax(v[t] * readout_scale)`` over the rows of the input's time steps after one
step of latency per layer (the rows ``neurodelay.sim.bitsim`` reads).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from neurodelay.errors import LavaRunError
from neurodelay.untrusted import open_h5

FORMAT = "neurodelay-lava-processes"
FORMAT_VERSION = 1


@dataclass
class SynapseParams:
    """One synapse process: Dense (no delay) or DelayDense."""

    weights: np.ndarray            # (n_out, n_in) int
    delays: np.ndarray             # (n_out, n_in) int, Lava delays (>= 0)
    weight_exp: int
    num_weight_bits: int

    @property
    def process(self) -> str:
        return "DelayDense" if self.delays.size and self.delays.max() > 0 else "Dense"


@dataclass
class LayerParams:
    """One layer: its feed-forward synapse, optional recurrent synapse and its LIF."""

    name: str
    kind: str
    ff: SynapseParams
    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray
    bias_exp: int
    rec: SynapseParams | None = None


@dataclass
class ProcessParams:
    """Everything the Lava process network needs (what the file holds)."""

    layers: list
    input_message_bits: int
    input_scale: float = 1.0
    dt: float = 0.01
    readout_scale: float = 1.0
    class_names: list = field(default_factory=list)

    @property
    def n_in(self) -> int:
        return int(self.layers[0].ff.weights.shape[1])


def process_params(qnet, input_message_bits: int) -> ProcessParams:
    """The Lava process parameters of a QNetwork ``qnet`` (refused when it does not fit
    its target): weights as stored (Lava clips and truncates them itself), Lava delays
    (recurrent: ``rec_delay - 1``), the readout's threshold the target's largest."""
    # local: the target's arithmetic (and torch, which fixedpoint imports) is needed to
    # WRITE the parameters only; reading and building a file needs numpy, h5py and Lava
    from neurodelay.hw import fixedpoint as fp
    from neurodelay.hw.target import arith

    a = arith(qnet)
    fp.ensure_fits(qnet, a, LavaRunError,
                   f"the quantized network does not fit target {a.name!r}")
    layers = []
    for layer in qnet.layers:
        ff = SynapseParams(layer.weight.astype(np.int64), layer.delay.astype(np.int64),
                           int(layer.weight_exp), int(layer.num_weight_bits))
        rec = None
        if layer.recurrent:
            rec = SynapseParams(layer.rec_weight.astype(np.int64),
                                fp.lava_rec_delay(layer.rec_delay),
                                int(layer.rec_weight_exp), int(layer.rec_num_weight_bits))
        layers.append(LayerParams(name=layer.name, kind=layer.kind, ff=ff, rec=rec,
                                  du=int(layer.du), dv=int(layer.dv),
                                  vth=int(fp.layer_vth(layer, a)),
                                  bias_mant=layer.bias_mant.astype(np.int64),
                                  bias_exp=int(layer.bias_exp)))
    return ProcessParams(layers=layers, input_message_bits=int(input_message_bits),
                         input_scale=float(qnet.input_scale), dt=float(qnet.dt),
                         readout_scale=float(qnet.layers[-1].scale),
                         class_names=[str(c) for c in qnet.class_names])


# ----------------------------------------------------------------------------- reading

_I32 = 2 ** 31


def _int_array(g, name: str, shape: tuple, where: str) -> np.ndarray:
    import h5py  # local: h5py is a declared dependency; kept next to its one use here

    if name not in g or not isinstance(g[name], h5py.Dataset):
        raise LavaRunError(f"{where}: missing dataset {name!r}")
    arr = g[name][()]
    if not np.issubdtype(arr.dtype, np.integer):
        raise LavaRunError(f"{where}/{name}: expected integers, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise LavaRunError(f"{where}/{name}: shape {arr.shape}, expected {shape}")
    arr = arr.astype(np.int64)
    if arr.size and np.abs(arr).max() >= _I32:
        raise LavaRunError(f"{where}/{name}: values exceed int32")
    return arr


def _int_attr(g, name: str, where: str, lo: int | None = None) -> int:
    if name not in g.attrs:
        raise LavaRunError(f"{where}: missing attribute {name!r}")
    v = np.asarray(g.attrs[name])
    if v.size != 1 or not np.issubdtype(v.dtype, np.integer):
        raise LavaRunError(f"{where}: attribute {name!r} must be an integer, got {v!r}")
    v = int(v.reshape(()))
    if lo is not None and v < lo:
        raise LavaRunError(f"{where}: attribute {name!r} = {v} must be >= {lo}")
    return v


def _str_attr(g, name: str, default: str = "") -> str:
    v = g.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def _synapse(g, where: str, n_out: int, n_in: int) -> SynapseParams:
    w = _int_array(g, "weights", (n_out, n_in), where)
    d = _int_array(g, "delays", (n_out, n_in), where)
    if d.size and d.min() < 0:
        raise LavaRunError(f"{where}/delays: negative delays")
    return SynapseParams(w, d, _int_attr(g, "weight_exp", where),
                         _int_attr(g, "num_weight_bits", where, lo=1))


def read_params(path) -> ProcessParams:
    """Read a Lava process network file (module docstring), checking its layout; every
    problem is a :class:`LavaRunError` naming the file and the place in it."""
    with open_h5(path, LavaRunError, what="Lava process network file") as f:
        if _str_attr(f, "format") != FORMAT:
            raise LavaRunError(f"{path}: not a neurodelay Lava process network file "
                               f"(format {_str_attr(f, 'format')!r}, expected {FORMAT!r})")
        version = _int_attr(f, "format_version", str(path))
        if version != FORMAT_VERSION:
            raise LavaRunError(f"{path}: format_version {version} is not supported (this "
                               f"neurodelay reads {FORMAT_VERSION})")
        n_layers = _int_attr(f, "n_layers", str(path), lo=1)
        n_prev = _int_attr(f, "n_in", str(path), lo=1)
        layers = []
        for k in range(n_layers):
            where = f"{path}: layers/{k}"
            if f"layers/{k}" not in f:
                raise LavaRunError(f"{where}: missing (n_layers = {n_layers})")
            g = f[f"layers/{k}"]
            for part in ("ff", "lif"):
                if part not in g:
                    raise LavaRunError(f"{where}: missing group {part!r}")
            w = g["ff/weights"]
            n_out = int(w.shape[0]) if len(w.shape) == 2 else -1
            if n_out < 1:
                raise LavaRunError(f"{where}/ff/weights: expected a 2-D array")
            ff = _synapse(g["ff"], f"{where}/ff", n_out, n_prev)
            rec = _synapse(g["rec"], f"{where}/rec", n_out, n_out) if "rec" in g else None
            lif = g["lif"]
            kind = _str_attr(g, "kind", "lif")
            if kind not in ("lif", "li") or (rec is not None and kind != "lif"):
                raise LavaRunError(f"{where}: kind {kind!r} (lif or li; only lif layers "
                                   f"are recurrent)")
            layers.append(LayerParams(
                name=_str_attr(g, "name"), kind=kind, ff=ff, rec=rec,
                du=_int_attr(lif, "du", f"{where}/lif", lo=0),
                dv=_int_attr(lif, "dv", f"{where}/lif", lo=0),
                vth=_int_attr(lif, "vth", f"{where}/lif", lo=0),
                bias_mant=_int_array(lif, "bias_mant", (n_out,), f"{where}/lif"),
                bias_exp=_int_attr(lif, "bias_exp", f"{where}/lif")))
            n_prev = n_out
        try:
            names = json.loads(_str_attr(f, "class_names", "[]"))
        except json.JSONDecodeError:
            raise LavaRunError(f"{path}: attribute 'class_names' is not JSON") from None
        return ProcessParams(
            layers=layers,
            input_message_bits=_int_attr(f, "input_message_bits", str(path), lo=1),
            input_scale=float(f.attrs.get("input_scale", 1.0)),
            dt=float(f.attrs.get("dt", 0.01)),
            readout_scale=float(f.attrs.get("readout_scale", 1.0)),
            class_names=[str(c) for c in names] if isinstance(names, list) else [])


# ----------------------------------------------------------------------------- building

@dataclass
class LavaNetwork:
    """The Lava processes of a network (nothing compiled or run yet).

    inp          the InPort graded input spikes go to (layer 0's synapse ``s_in``)
    synapses     the feed-forward synapse process of every layer
    rec_synapses the recurrent synapse process of every layer (None: not recurrent)
    neurons      the LIF of every layer; the readout's membrane is ``neurons[-1].v``
    params       what they were built from (scales, class names, ...)
    """

    inp: object
    synapses: list
    rec_synapses: list
    neurons: list
    params: ProcessParams


def _lava_procs():
    """Lava's Dense and LIF modules (lazy: Lava takes seconds to import and needs the
    Python 3.11 fix of :mod:`neurodelay._compat` first)."""
    from neurodelay._compat import ensure_lava  # lazy: see the docstring
    ensure_lava()
    import lava.proc.dense.process as dense  # lazy: see the docstring
    import lava.proc.lif.process as lif
    return dense, lif


def _synapse_process(dense, p: SynapseParams, msg_bits: int, name: str, force_delay=False):
    common = dict(weight_exp=int(p.weight_exp), num_weight_bits=int(p.num_weight_bits),
                  num_message_bits=int(msg_bits), name=name)
    w = p.weights.astype(np.int32)
    if p.process == "DelayDense" or force_delay:
        return dense.DelayDense(weights=w, delays=p.delays.astype(int), **common)
    return dense.Dense(weights=w, **common)


def build_processes(params: ProcessParams) -> LavaNetwork:
    """Create the Lava processes for ``params`` and connect them (module docstring)."""
    dense, lif = _lava_procs()
    synapses, recs, neurons = [], [], []
    prev = None
    for k, lp in enumerate(params.layers):
        syn = _synapse_process(dense, lp.ff, params.input_message_bits if k == 0 else 0,
                               f"syn{k}")
        neu = lif.LIF(shape=(lp.ff.weights.shape[0],), du=lp.du, dv=lp.dv, vth=lp.vth,
                      bias_mant=lp.bias_mant.astype(np.int32), bias_exp=lp.bias_exp,
                      name=f"lif{k}")
        if prev is not None:
            prev.s_out.connect(syn.s_in)
        syn.a_out.connect(neu.a_in)
        rec = None
        if lp.rec is not None:
            rec = _synapse_process(dense, lp.rec, 0, f"rec{k}", force_delay=True)
            neu.s_out.connect(rec.s_in)
            rec.a_out.connect(neu.a_in)       # the a_in port sums both processes
        synapses.append(syn)
        recs.append(rec)
        neurons.append(neu)
        prev = neu
    return LavaNetwork(inp=synapses[0].s_in, synapses=synapses, rec_synapses=recs,
                       neurons=neurons, params=params)


def build_from_file(path) -> LavaNetwork:
    """The Lava process network of a file written by neurodelay's ``lava_procs``
    exporter (``network.lava.h5`` in a deploy folder): read, checked, built with Lava's
    own ``Dense``/``DelayDense`` and ``LIF``. Connect a graded-spike source to ``.inp``,
    read ``.neurons[-1].v`` and run it with ``Loihi2SimCfg(select_tag="fixed_pt")``."""
    return build_processes(read_params(path))


def params_equal(a: ProcessParams, b: ProcessParams) -> bool:
    """Whether two sets of process parameters build the same Lava network (every array
    and integer; names and class names included)."""

    def syn_eq(x, y):
        if x is None or y is None:
            return x is None and y is None
        return (np.array_equal(x.weights, y.weights) and np.array_equal(x.delays, y.delays)
                and x.weight_exp == y.weight_exp and x.num_weight_bits == y.num_weight_bits)

    if len(a.layers) != len(b.layers) or a.input_message_bits != b.input_message_bits:
        return False
    if (a.input_scale, a.readout_scale, list(a.class_names)) != \
            (b.input_scale, b.readout_scale, list(b.class_names)):
        return False
    return all(syn_eq(x.ff, y.ff) and syn_eq(x.rec, y.rec) and x.kind == y.kind
               and (x.du, x.dv, x.vth, x.bias_exp) == (y.du, y.dv, y.vth, y.bias_exp)
               and np.array_equal(x.bias_mant, y.bias_mant)
               for x, y in zip(a.layers, b.layers))
