"""Lava process network exporter: the Lava process parameters of a quantized network in
one HDF5 file (``network.lava.h5``), for recurrent networks, which lava-dl netx cannot
carry (its ``RecurrentDense`` gives the recurrent synapses the feed-forward delays), and
for feed-forward ones as an option.

The file layout and the call that builds the processes from it
(:func:`neurodelay.sim.lava_procs.build_from_file`) are documented in
:mod:`neurodelay.sim.lava_procs`; this module only writes it (atomically). A float
Network is refused: the deployment step quantizes once (what is verified is what is
exported).
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from neurodelay.core.network import QNetwork
from neurodelay.errors import ExportError, LavaRunError
from neurodelay.fs import atomic_path
from neurodelay.sim.lava_procs import FORMAT, FORMAT_VERSION, ProcessParams, process_params


def _write_synapse(g, syn) -> None:
    g.create_dataset("weights", data=syn.weights.astype(np.int32))
    g.create_dataset("delays", data=syn.delays.astype(np.int32))
    g.attrs["weight_exp"] = int(syn.weight_exp)
    g.attrs["num_weight_bits"] = int(syn.num_weight_bits)
    g.attrs["process"] = syn.process


def write_params(params: ProcessParams, path) -> Path:
    """Write ``params`` to ``path`` (HDF5, atomically)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(f"cannot write {path}: folder {path.parent} does not exist")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["producer"] = "neurodelay.exporters.lava_procs"
        f.attrs["n_layers"] = len(params.layers)
        f.attrs["n_in"] = int(params.n_in)
        f.attrs["input_message_bits"] = int(params.input_message_bits)
        f.attrs["input_scale"] = float(params.input_scale)
        f.attrs["dt"] = float(params.dt)
        f.attrs["readout_scale"] = float(params.readout_scale)
        f.attrs["class_names"] = json.dumps(list(params.class_names))
        for k, lp in enumerate(params.layers):
            g = f.create_group(f"layers/{k}")
            g.attrs["name"] = lp.name
            g.attrs["kind"] = lp.kind
            _write_synapse(g.create_group("ff"), lp.ff)
            if lp.rec is not None:
                _write_synapse(g.create_group("rec"), lp.rec)
            lif = g.create_group("lif")
            lif.create_dataset("bias_mant", data=lp.bias_mant.astype(np.int32))
            for key in ("du", "dv", "vth", "bias_exp"):
                lif.attrs[key] = int(getattr(lp, key))
    return path


def export(net, out_path, *, input_message_bits: int = 8) -> dict:
    """Write a quantized network ``net`` (QNetwork) as a Lava process network file at
    ``out_path``. Returns a dict: path, n_layers, recurrent_layers (indices), processes
    (per layer: the feed-forward and recurrent process class)."""
    if not isinstance(net, QNetwork):
        raise ExportError(f"the Lava process network exporter writes a quantized network "
                          f"(QNetwork), got {type(net).__name__}; quantize it once with "
                          f"`neurodelay export RUN --target loihi2`")
    try:
        params = process_params(net, input_message_bits)
    except LavaRunError as e:
        raise ExportError(str(e)) from None
    path = write_params(params, out_path)
    return {"path": str(path), "n_layers": len(params.layers),
            "input_message_bits": int(input_message_bits),
            "recurrent_layers": [k for k, lp in enumerate(params.layers) if lp.rec is not None],
            "processes": [{"ff": lp.ff.process,
                           "rec": "DelayDense" if lp.rec is not None else None}
                          for lp in params.layers]}
