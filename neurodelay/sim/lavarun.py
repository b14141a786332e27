"""Run a :class:`~neurodelay.core.network.QNetwork` as a Lava process network (``fixed_pt``).

This is the reference the bit-accurate simulator (:mod:`neurodelay.sim.bitsim`) is checked
against: Lava's own Loihi 2 ``fixed_pt`` process models on the CPU.

Process network built for a QNetwork with layers ``0..L-1``::

    source RingBuffer (graded int32 input, one column per step)
      -> [Dense | DelayDense | Sparse | DelaySparse]_0 -> LIF_0 -> ... -> LIF_{L-1} (readout)

* every synapse process gets ``weights``, ``weight_exp``, ``num_weight_bits`` and, where a
  layer has any non-zero delay, the per-synapse ``delays`` straight from the QLayer;
  the first one takes graded input (``num_message_bits`` > 0), the others binary spikes;
* a recurrent layer gets a second DelayDense from its LIF's ``s_out`` back to its own
  ``a_in`` (delays ``rec_delay - 1``, its own exponent; the port sums both processes):
  the processes of :mod:`neurodelay.sim.lava_procs`, which also builds them from the
  deploy folder's ``network.lava.h5`` (:func:`build_from_file`, :func:`run_lava_file`);
* every LIF gets ``du, dv, vth, bias_mant, bias_exp``; the non-spiking readout
  (``kind == "li"`` / ``vth is None``) gets the target's largest threshold
  (:func:`neurodelay.hw.fixedpoint.layer_vth`);
* the spikes of every layer go to a sink RingBuffer, the membrane ``v`` of the readout
  (optionally of every layer) is read after every step by a ``Read`` process.

Timing ("Lava timing"): row ``k`` of every recorded array belongs to Lava time step
``k + 1``; input row ``k`` is sent at step ``k + 1``. A spike entering a synapse process
at step ``t`` reaches its LIF at step ``t + 1 + d`` (measured, see tests/test_lava.py).

Samples are independent: one process network is compiled once and, between samples, the
state is cleared (LIF ``u``/``v`` and the synapses' activation buffers set to 0) instead
of recompiling; ``tests/test_lava.py`` checks this equals a fresh network.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from scipy.sparse import csr_matrix

from neurodelay.core.network import QLayer, QNetwork
from neurodelay.errors import LavaRunError
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.target import arith
from neurodelay.sim import bitsim, lava_procs
from neurodelay.untrusted import open_h5


def _lava():
    """Import the Lava pieces lazily: Lava takes seconds to import, only Lava runs need it,
    and it needs the Python 3.11 fix of :mod:`neurodelay._compat` first."""
    from neurodelay._compat import ensure_lava  # lazy: see the docstring
    ensure_lava()
    import lava.magma.core.run_conditions as rc  # lazy: see the docstring
    import lava.magma.core.run_configs as rcfg
    import lava.proc.dense.process as dense
    import lava.proc.io.sink as sink
    import lava.proc.io.source as source
    import lava.proc.lif.process as lif
    import lava.proc.sparse.process as sparse
    return rc, rcfg, dense, sink, source, lif, sparse


def layer_vth(layer: QLayer, qnet: QNetwork | None = None) -> int:
    """The threshold mantissa Lava gets for ``layer`` (a readout: the largest)."""
    return fp.layer_vth(layer, arith(qnet))


def input_message_bits(s_in: np.ndarray) -> int:
    """Bits a graded input payload needs (at least 1, so Lava treats it as graded)."""
    peak = int(np.abs(s_in).max()) if s_in.size else 0
    return max(1, peak.bit_length() + int(s_in.size > 0 and s_in.min() < 0))


def check_qnet(qnet: QNetwork) -> None:
    """Raise :class:`LavaRunError` for a network that does not fit its target's integer
    format (the rules of :mod:`neurodelay.hw.fixedpoint`, which the bit-accurate
    simulator and the exporters apply too)."""
    a = arith(qnet)
    fp.ensure_fits(qnet, a, LavaRunError,
                   f"the quantized network does not fit target {a.name!r}; Lava would run "
                   f"it differently from the chip's format (wrapping or zeroing values)")


def as_counts(qnet: QNetwork, s_in, n_steps: int | None) -> tuple[np.ndarray, int]:
    """Validate ``s_in`` (B, T, n_in) integers; return it padded/cut to ``n_steps``."""
    return _counts(s_in, qnet.layers[0].n_in, n_steps)


def _counts(s_in, n_in: int, n_steps: int | None) -> tuple[np.ndarray, int]:
    """Validate ``s_in`` (B, T, n_in) integers; return it as int64 zero-padded or cut to
    ``n_steps`` (default T) steps, and that number (a Lava RingBuffer repeats its data,
    so shorter input is padded)."""
    x = np.asarray(s_in)
    if x.ndim != 3 or x.shape[2] != n_in:
        raise LavaRunError(f"input must have shape (B, T, {n_in}), "
                           f"got {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        if not np.all(x == np.round(x)):
            raise LavaRunError("input must hold integer graded spikes (counts); "
                               "quantize it first (round(count * qnet.input_scale))")
    x = x.astype(np.int64)
    if np.abs(x).max(initial=0) >= 2 ** 31:
        raise LavaRunError("input values exceed int32, Lava's payload type")
    n = x.shape[1] if n_steps is None else int(n_steps)
    if n < 1:
        raise LavaRunError(f"n_steps must be >= 1, got {n}")
    if n > x.shape[1]:
        x = np.concatenate([x, np.zeros((x.shape[0], n - x.shape[1], x.shape[2]),
                                        np.int64)], axis=1)
    return x[:, :n], n


@dataclass
class _Built:
    """Handles of one compiled-to-be Lava process network."""

    source: object
    synapses: list
    neurons: list
    spike_sinks: list
    v_readers: list          # (layer index, Read process)


def build(qnet: QNetwork, n_steps: int, msg_bits: int, synapse: str = "dense",
          record_v: str = "readout") -> _Built:
    """Create (not run) the Lava processes for ``qnet``; buffers hold ``n_steps`` steps.

    synapse: "dense" (Dense / DelayDense) or "sparse" (Sparse / DelaySparse).
    record_v: "readout" (only the last layer's v) or "all".
    """
    if synapse not in ("dense", "sparse"):
        raise LavaRunError(f"synapse must be 'dense' or 'sparse', got {synapse!r}")
    if record_v not in ("readout", "all"):
        raise LavaRunError(f"record_v must be 'readout' or 'all', got {record_v!r}")
    check_qnet(qnet)
    if synapse == "dense":          # the processes the Lava process network file holds
        return _probed(lava_procs.build_processes(
            lava_procs.process_params(qnet, msg_bits)), n_steps, record_v)
    if qnet.recurrent:
        raise LavaRunError("synapse='sparse' builds feed-forward networks only; a "
                           "recurrent network runs with synapse='dense'")
    _, _, dense, sink, source, lif, sparse = _lava()

    src = source.RingBuffer(data=np.zeros((qnet.layers[0].n_in, n_steps), np.int32))
    prev_out = src.s_out
    synapses, neurons, sinks, readers = [], [], [], []
    last = len(qnet.layers) - 1
    for k, layer in enumerate(qnet.layers):
        common = dict(weight_exp=layer.weight_exp, num_weight_bits=layer.num_weight_bits,
                      num_message_bits=msg_bits if k == 0 else 0,
                      name=f"syn{k}")
        w = layer.weight.astype(np.int32)
        has_delay = bool(layer.delay.size and layer.delay.max() > 0)
        if synapse == "dense":
            if has_delay:
                syn = dense.DelayDense(weights=w, delays=layer.delay.astype(int), **common)
            else:
                syn = dense.Dense(weights=w, **common)
        else:
            if has_delay:
                # DelaySparse wants int64 delays; delays of absent synapses are dropped
                d = np.where(w != 0, layer.delay, 0).astype(np.int64)
                syn = sparse.DelaySparse(weights=csr_matrix(w), delays=csr_matrix(d),
                                         **common)
            else:
                syn = sparse.Sparse(weights=csr_matrix(w), **common)
        neu = lif.LIF(shape=(layer.n_out,), du=layer.du, dv=layer.dv,
                      vth=layer_vth(layer, qnet),
                      bias_mant=layer.bias_mant.astype(np.int32),
                      bias_exp=layer.bias_exp, name=f"lif{k}")
        prev_out.connect(syn.s_in)
        syn.a_out.connect(neu.a_in)
        spk = sink.RingBuffer(shape=(layer.n_out,), buffer=n_steps)
        neu.s_out.connect(spk.a_in)
        if record_v == "all" or k == last:
            rd = sink.Read(buffer=n_steps)
            rd.connect_var(neu.v)
            readers.append((k, rd))
        synapses.append(syn)
        neurons.append(neu)
        sinks.append(spk)
        prev_out = neu.s_out
    return _Built(src, synapses, neurons, sinks, readers)


def _probed(net: "lava_procs.LavaNetwork", n_steps: int, record_v: str) -> _Built:
    """A graded-input source on ``net.inp``, a spike sink on every layer and a Read of v
    on the readout (``record_v="all"``: on every layer); buffers of ``n_steps``."""
    _, _, _, sink, source, _, _ = _lava()
    src = source.RingBuffer(data=np.zeros((net.params.n_in, n_steps), np.int32))
    src.s_out.connect(net.inp)
    sinks, readers = [], []
    last = len(net.neurons) - 1
    for k, neu in enumerate(net.neurons):
        spk = sink.RingBuffer(shape=neu.s_out.shape, buffer=n_steps)
        neu.s_out.connect(spk.a_in)
        sinks.append(spk)
        if record_v == "all" or k == last:
            rd = sink.Read(buffer=n_steps)
            rd.connect_var(neu.v)
            readers.append((k, rd))
    return _Built(src, net.synapses + [r for r in net.rec_synapses if r is not None],
                  net.neurons, sinks, readers)


def build_from_file(path, n_steps: int, record_v: str = "readout") -> _Built:
    """The Lava process network of a file written by the ``lava_procs`` exporter
    (:func:`neurodelay.sim.lava_procs.build_from_file`, the call a user makes), with a
    source and probes for ``n_steps`` steps attached."""
    if record_v not in ("readout", "all"):
        raise LavaRunError(f"record_v must be 'readout' or 'all', got {record_v!r}")
    return _probed(lava_procs.build_from_file(path), n_steps, record_v)


def _reset_state(b: _Built) -> None:
    """Zero every dynamic state of a paused network: LIF u, v and synapse buffers
    (the recurrent synapses' too)."""
    for neu in b.neurons:
        neu.u.set(np.zeros(neu.u.shape, np.int32))
        neu.v.set(np.zeros(neu.v.shape, np.int32))
    for syn in b.synapses:
        syn.a_buff.set(np.zeros(syn.a_buff.shape, np.int32))


def open_netx(path, msg_bits: int):
    """lava-dl's ``netx.hdf5.Network`` for a netx file, with the file closed afterwards
    (netx copies every array into its processes but leaves its HDF5 handle open, which
    keeps the file locked for writers in this process)."""
    _lava()
    from lava.lib.dl.netx import hdf5  # lazy: Lava takes seconds to import; only Lava runs need it

    net = hdf5.Network(net_config=str(path), input_message_bits=msg_bits)
    handle = getattr(getattr(net, "net_config", None), "f", None)
    if handle is not None:
        handle.close()
    return net


def build_netx(path, n_steps: int, msg_bits: int, record_v: str = "readout") -> _Built:
    """Load a lava-dl netx HDF5 file as a Lava Network and attach the same probes."""
    if record_v not in ("readout", "all"):
        raise LavaRunError(f"record_v must be 'readout' or 'all', got {record_v!r}")
    _, _, _, sink, source, _, _ = _lava()
    net = open_netx(path, msg_bits)
    blocks = list(net.layers)
    src = source.RingBuffer(data=np.zeros((int(np.prod(net.inp.shape)), n_steps), np.int32))
    src.s_out.connect(net.inp)
    sinks, readers = [], []
    for k, blk in enumerate(blocks):
        spk = sink.RingBuffer(shape=blk.neuron.s_out.shape, buffer=n_steps)
        blk.neuron.s_out.connect(spk.a_in)
        sinks.append(spk)
        if record_v == "all" or k == len(blocks) - 1:
            rd = sink.Read(buffer=n_steps)
            rd.connect_var(blk.neuron.v)
            readers.append((k, rd))
    return _Built(src, [b.synapse for b in blocks], [b.neuron for b in blocks], sinks,
                  readers)


def _run_samples(make, x: np.ndarray, n: int, sizes: list[int], record_v: str,
                 fresh_each_sample: bool) -> dict:
    """Run each sample of ``x`` (B, n, n_in) through the network ``make()`` builds."""
    rc, rcfg, *_ = _lava()
    B = x.shape[0]
    spikes = [np.zeros((B, n, m), np.int8) for m in sizes]
    v_all = [np.zeros((B, n, m), np.int64) for m in sizes]
    cfg = rcfg.Loihi2SimCfg(select_tag="fixed_pt")
    compile_s = run_s = 0.0
    built = None
    try:
        for i in range(B):
            t0 = time.perf_counter()
            if built is None or fresh_each_sample:
                if built is not None:
                    built.source.stop()
                built = make()
                built.source.data.init = x[i].T.astype(np.int32).copy()
                built.source.create_runtime(run_cfg=cfg)
                compile_s += time.perf_counter() - t0
                t0 = time.perf_counter()
            else:
                _reset_state(built)
                built.source.data.set(x[i].T.astype(np.int32).copy())
            built.source.run(condition=rc.RunSteps(num_steps=n), run_cfg=cfg)
            for k, snk in enumerate(built.spike_sinks):
                spikes[k][i] = np.asarray(snk.data.get()).reshape(sizes[k], n).T
            for k, rd in built.v_readers:
                v_all[k][i] = np.asarray(rd.data.get()).reshape(sizes[k], n).T
            run_s += time.perf_counter() - t0
    finally:
        if built is not None:
            try:
                built.source.stop()
            except Exception:  # noqa: BLE001 - never mask the original error
                pass
    out = {"spikes": spikes, "v": v_all[-1], "n_steps": n,
           "s_per_sample": run_s / max(B, 1), "compile_s": compile_s}
    if record_v == "all":
        out["v_all"] = v_all
    return out


def run_lava(qnet: QNetwork, s_in, n_steps: int | None = None, *, synapse: str = "dense",
             record_v: str = "readout", fresh_each_sample: bool = False) -> dict:
    """Run every sample of ``s_in`` (B, T, n_in) graded integer spikes through Lava
    fixed_pt for ``n_steps`` steps (default T; shorter input is padded with zeros).

    Returns a dict:
      ``spikes``  list over layers of (B, n_steps, n_out) int8 (readout included)
      ``v``       (B, n_steps, C) int64, readout membrane after every step
      ``v_all``   list over layers of (B, n_steps, n_out) (only with record_v="all")
      ``n_steps``, ``s_per_sample`` (run time, compile excluded), ``compile_s``.
    ``fresh_each_sample`` rebuilds and recompiles the network for every sample instead
    of clearing the state (slow; used to check the reset).
    """
    x, n = as_counts(qnet, s_in, n_steps)
    msg_bits = input_message_bits(x)
    return _run_samples(lambda: build(qnet, n, msg_bits, synapse=synapse,
                                      record_v=record_v),
                        x, n, [L.n_out for L in qnet.layers], record_v, fresh_each_sample)


def run_netx(path, s_in, n_steps: int | None = None, *, message_bits: int | None = None,
             record_v: str = "readout") -> dict:
    """Like :func:`run_lava` for a lava-dl netx HDF5 file (``lava.lib.dl.netx.hdf5``).

    ``message_bits`` is what the file's first layer is loaded with (default: the
    bits the input needs). Same return dict as :func:`run_lava`.
    """

    with open_h5(path, LavaRunError, what="netx file") as f:
        n_layers = len(f["layer"])
        sizes = [int(np.prod(f[f"layer/{k}/shape"][()])) for k in range(n_layers)]
    x, n = _counts(s_in, sizes[0], n_steps)
    bits = input_message_bits(x) if message_bits is None else int(message_bits)
    return _run_samples(lambda: build_netx(path, n, bits, record_v=record_v),
                        x, n, sizes[1:], record_v, False)


def run_lava_file(path, s_in, n_steps: int | None = None, *,
                  record_v: str = "readout") -> dict:
    """Like :func:`run_lava` for a Lava process network file (the ``lava_procs``
    exporter's ``network.lava.h5``): the processes are built from the FILE
    (:func:`build_from_file`). Same return dict as :func:`run_lava`."""
    params = lava_procs.read_params(path)
    sizes = [int(lp.ff.weights.shape[0]) for lp in params.layers]
    x, n = _counts(s_in, params.n_in, n_steps)
    if input_message_bits(x) > params.input_message_bits:
        raise LavaRunError(f"the input needs {input_message_bits(x)}-bit graded spikes, "
                           f"{path} declares {params.input_message_bits}")
    return _run_samples(lambda: build_from_file(path, n, record_v=record_v),
                        x, n, sizes, record_v, False)


# ----------------------------------------------------------------------------- cross-check

@dataclass
class CrossCheck:
    """Lava (process network or the netx file) against the bit-accurate simulator.

    lava_mismatches counts differing (sample, step, neuron) entries over every layer's
    spikes and the readout membrane v; first_mismatch says where the first one is.
    """

    lava_samples: int
    lava_mismatches: int
    spike_mismatches: list
    v_mismatches: int
    first_mismatch: dict | None
    identical_predictions: bool
    prediction_agreement: float
    lava_s_per_sample: float           # run only, compile excluded
    lava_compile_s: float
    sim_s_per_sample: float
    n_steps: int
    lava_spike_counts: list
    lava_source: str                   # "netx file <path>" or "Lava process network"

    def to_dict(self) -> dict:
        return asdict(self)


def _first(diff: np.ndarray, what: str, lava: np.ndarray, sim: np.ndarray) -> dict:
    i, t, j = map(int, np.argwhere(diff)[0])
    return {"what": what, "sample": i, "step": t, "neuron": j, "lava": int(lava[i, t, j]),
            "bitsim": int(sim[i, t, j])}


def _spike_mismatches(lava_spikes, sim_spikes) -> tuple[list[int], dict | None]:
    """Mismatched spikes per layer, and the first one (sample, step, neuron)."""
    counts, first = [], None
    for k, (a, b) in enumerate(zip(lava_spikes, sim_spikes)):
        b = np.asarray(b).astype(np.int64)
        if b.shape != a.shape:
            raise LavaRunError(f"bitsim layer {k} spikes have shape {b.shape}, Lava "
                               f"{a.shape}: the two disagree on timing/recording")
        diff = a.astype(np.int64) != b
        counts.append(int(diff.sum()))
        if first is None and diff.any():
            first = _first(diff, f"layer {k} spikes", a, b)
    return counts, first


def _readout_mismatches(lava_v, sim_v, first):
    """(bitsim's readout v as int64, where it differs from Lava's, the first mismatch)."""
    sim_v = np.asarray(sim_v).astype(np.int64)
    if sim_v.shape != lava_v.shape:
        raise LavaRunError(f"bitsim readout v has shape {sim_v.shape}, Lava "
                           f"{lava_v.shape}")
    vdiff = lava_v != sim_v
    if first is None and vdiff.any():
        first = _first(vdiff, "readout v", lava_v, sim_v)
    return sim_v, vdiff, first


def cross_check(qnet: QNetwork, counts, n: int | None = None, n_steps: int | None = None,
                synapse: str = "dense", netx_path=None,
                message_bits: int | None = None, lava_path=None) -> CrossCheck:
    """Run the first ``n`` samples of ``counts`` (B, T, n_in) through Lava fixed_pt and
    through :func:`neurodelay.sim.bitsim.run`; compare every layer's spikes and the readout
    membrane at every step.

    With ``netx_path`` Lava runs that lava-dl netx file (``netx.hdf5.Network``, loaded with
    ``message_bits`` graded-input bits; default: what the input needs) -- the file that
    goes to the chip; with ``lava_path`` the Lava process network built from that file
    (:func:`run_lava_file`: a deploy folder's ``network.lava.h5``, recurrent networks
    included); otherwise the process network :func:`build` makes from ``qnet``.
    The graded input is ``bitsim.quantize_input`` (round(count * input_scale)); both run
    ``n_steps`` rows (default T + L, the rows ``bitsim.predict`` reads). Predictions are
    made from each readout trace by bitsim's rule (rows L..L+T-1, descaled,
    sum of softmax, argmax).
    """

    s_in = bitsim.quantize_input(qnet, counts)
    if s_in.ndim != 3:
        raise LavaRunError(f"counts must be (B, T, n_in), got shape {s_in.shape}")
    if n is not None:
        s_in = s_in[: int(n)]
    B, T, _ = s_in.shape
    if B == 0:
        raise LavaRunError("cross_check needs at least one sample")
    L = len(qnet.layers)
    steps = T + L if n_steps is None else int(n_steps)
    check_qnet(qnet)
    if netx_path is not None and lava_path is not None:
        raise LavaRunError("give netx_path or lava_path, not both")
    if netx_path is not None:
        lava = run_netx(netx_path, s_in, steps, message_bits=message_bits)
        source = f"netx file {netx_path}"
    elif lava_path is not None:
        lava = run_lava_file(lava_path, s_in, steps)
        source = f"Lava process network file {lava_path}"
    else:
        lava = run_lava(qnet, s_in, steps, synapse=synapse)
        source = "Lava process network"
    t0 = time.perf_counter()
    sim = bitsim.run(qnet, s_in, n_steps=steps, record=True)
    sim_s = (time.perf_counter() - t0) / B

    if len(lava["spikes"]) != L:
        raise LavaRunError(f"{source} has {len(lava['spikes'])} layers, the quantized "
                           f"network {L}: they are not the same network")
    spike_mis, first = _spike_mismatches(lava["spikes"], sim.spikes)
    sim_v, vdiff, first = _readout_mismatches(lava["v"], sim.v, first)

    def predictions(v):
        rows = v[:, L:L + T].astype(np.float64) * qnet.layers[-1].scale
        return bitsim.readout_scores(rows).argmax(axis=1)

    p_lava, p_sim = predictions(lava["v"]), predictions(sim_v)
    return CrossCheck(
        lava_samples=int(B), lava_mismatches=int(sum(spike_mis) + vdiff.sum()),
        spike_mismatches=spike_mis, v_mismatches=int(vdiff.sum()), first_mismatch=first,
        identical_predictions=bool(np.array_equal(p_lava, p_sim)),
        prediction_agreement=float(np.mean(p_lava == p_sim)),
        lava_s_per_sample=lava["s_per_sample"], lava_compile_s=lava["compile_s"],
        sim_s_per_sample=sim_s, n_steps=int(steps),
        lava_spike_counts=[int(a.sum()) for a in lava["spikes"]], lava_source=source)
