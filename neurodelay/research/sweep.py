"""Bit-width sweep: accuracy and synaptic memory for every (weight bits, delay bits) pair.

``sweep_bits(run)`` freezes a trained run, and for every combination of weight bits ``w``
and delay bits ``b``

1. shortens the delays to what ``b`` bits hold (see *delay modes* below),
2. quantizes with :func:`neurodelay.passes.quantize` (``weight_bits=w``), calibrated
   like a deployment artifact on a seeded subset of the run's TRAINING split (never test
   data),
3. classifies the test set with the bit-accurate simulator (:func:`neurodelay.sim.bitsim.predict`),
4. computes the synaptic memory ``sum over layers ceil(synapses * (w + b) / 8)`` bytes,
   where ``synapses`` counts the nonzero weight mantissas of the quantized layer (weights
   that round to 0 at few bits need no storage; with the target's own bit widths this is
   exactly ``hwconfig.resource_report``'s synaptic_memory_bytes).

A reference row gives the float (unquantized) network's accuracy with each column's
delays, so the delay cost and the weight cost can be told apart.

Delay modes (``b`` bits hold the values 0 .. 2**b - 1; never more than the target's
``max_delay`` from its hw_configs/ file):

* ``clip``   delays above ``m = min(2**b - 1, target max)`` become ``m`` (what
             :func:`neurodelay.passes.check_delays` with ``clip=True`` does). Short delays
             keep their exact value; only the long ones are lost. The default: it needs
             nothing but the delay field the hardware already has.
* ``coarse`` the time resolution of the delays is coarsened so the range is kept: with
             ``D`` the largest used delay and ``k = ceil(D / (2**b - 1))`` steps per delay
             unit, every delay ``d`` becomes ``k * floor(d / k + 1/2)`` (the stored value
             ``floor(d / k + 1/2) <= 2**b - 1`` fits in ``b`` bits), then is clipped to the
             target's maximum. ``k = 1`` (no change) when ``D <= 2**b - 1``. Running it on
             hardware needs a delay unit of ``k`` steps (one shared factor for the network).

Outputs (``write_outputs``): sweep.csv, sweep.md, sweep.json and sweep.png (heatmaps of
accuracy and synaptic memory), written atomically; they are made in
:mod:`neurodelay.research.sweep_output` (its names are importable from here too).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np

from neurodelay import passes, tracking
from neurodelay.core.network import Network, QNetwork
from neurodelay.data import pad_batch, rundata
from neurodelay.deploy.artifact import DEFAULT_CALIB_SAMPLES, DeployOptions, calibration_data
from neurodelay.devices import check_device_spec
from neurodelay.errors import NeurodelayError, SweepError
from neurodelay.fs import atomic_write
from neurodelay.hw.target import load_target
from neurodelay.options import check_int
from neurodelay.passes import DELAY_MODES, used_delay_max  # noqa: E402,F401
from neurodelay.progress import bar
from neurodelay.research import executors

# the outputs (tables, heatmaps, files); re-exported names: noqa F401
from neurodelay.research.sweep_output import (  # noqa: F401
    CSV_COLUMNS,
    MODE_TEXT,
    SWEEP_FILES,
    format_csv,
    format_markdown,
    plot_sweep,
    write_outputs,
)
from neurodelay.runs import open_run
from neurodelay.sim import bitsim, floatsim
from neurodelay.train.finetune import FinetuneConfig, finetune
from neurodelay.train.loaders import float_network

DEFAULT_WEIGHT_BITS = (8, 6, 4, 3, 2)
DEFAULT_DELAY_BITS = (6, 5, 4, 3)
MAX_DELAY_BITS = 16
ANCHOR = ("published anchor: 4-bit weights with 5-bit delays kept 94 % accuracy on SHD "
          "(a full-size SHD model; a small task need not behave the same)")
MEMORY_FORMULA = ("synaptic memory = sum over layers ceil(synapses * (weight bits + delay "
                  "bits) / 8) bytes; synapses = nonzero weight mantissas after quantization")


# ----------------------------------------------------------------------------- inputs

def parse_bits(value, what: str = "bits") -> tuple[int, ...]:
    """Bit widths from "8,6,4" / "2-8" / an int / a sequence of ints; duplicates dropped,
    order kept. Raises SweepError naming ``what`` for anything else or an empty list."""
    if isinstance(value, (int, np.integer)):
        items = [int(value)]
    elif isinstance(value, str):
        items = []
        parts = value.replace(" ", "").split(",")
        for i, part in enumerate(parts, 1):
            if not part:                # '8,,4', '8,6,': a typo, not "skip this one"
                raise SweepError(f"{what} {value!r}: item {i} of {len(parts)} is empty (a "
                                 f"doubled, leading or trailing comma); give integers like "
                                 f"'8,6,4' or a range like '2-8'")
            rng = re.fullmatch(r"(-?\d+)-(-?\d+)", part)
            try:
                items.extend(range(int(rng[1]), int(rng[2]) + 1) if rng else [int(part)])
            except ValueError:
                raise SweepError(f"{what}: expected integers like '8,6,4' or '2-8', got "
                                 f"{value!r}") from None
            if rng and int(rng[2]) < int(rng[1]):
                raise SweepError(f"{what} {value!r}: the range {part!r} is empty "
                                 f"({rng[1]} > {rng[2]}); ranges go from low to high: "
                                 f"write '{rng[2]}-{rng[1]}'")
    else:
        try:
            items = [int(v) for v in value]
            if any(int(v) != v for v in value):
                raise ValueError
        except (TypeError, ValueError):
            raise SweepError(f"{what}: expected a list of integers, got {value!r}") from None
    out = tuple(dict.fromkeys(items))
    if not out:
        raise SweepError(f"{what}: no bit widths given (e.g. '8,6,4')")
    return out


def parse_modes(delay_mode) -> tuple[str, ...]:
    """('clip',), ('coarse',) or both, from 'clip' | 'coarse' | 'both' | a sequence."""
    if isinstance(delay_mode, str):
        modes = DELAY_MODES if delay_mode == "both" else (delay_mode,)
    else:
        modes = tuple(delay_mode)
    bad = [m for m in modes if m not in DELAY_MODES]
    if bad or not modes:
        raise SweepError(f"delay_mode must be 'clip', 'coarse' or 'both', got {delay_mode!r}")
    return tuple(dict.fromkeys(modes))


def _check_delay_bits(bits: tuple[int, ...]) -> None:
    bad = [b for b in bits if not 1 <= b <= MAX_DELAY_BITS]
    if bad:
        raise SweepError(f"delay bits {bad} out of range; use 1..{MAX_DELAY_BITS} "
                         f"(b bits hold delays 0..2**b - 1)")


# ----------------------------------------------------------------------------- delays

def reduce_delays(net: Network, delay_bits: int, mode: str, target_max: int
                  ) -> tuple[Network, dict]:
    """:func:`neurodelay.passes.reduce_delays` with the sweep's errors: the network
    with delays that fit ``delay_bits`` bits, and a dict (mode, delay_bits, max_delay,
    delay_step, delays_changed, largest_delay)."""

    try:
        out, rep = passes.reduce_delays(net, delay_bits, mode, target_max)
    except passes.PassError as e:
        raise SweepError(str(e)) from None
    return out, dict(rep.changes)


def _delay_key(net: Network) -> str:
    """A digest of all delay arrays (identical delays give identical quantized cells)."""
    h = hashlib.sha1()
    for lay in net.layers:
        h.update(np.ascontiguousarray(lay.delay, np.int64).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- memory

def layer_synapses(net: Network | QNetwork) -> list[int]:
    """Nonzero weights (float) or weight mantissas (quantized) per layer, recurrent
    synapses included (the resource report counts them too)."""
    return [int(lay.n_synapses) for lay in net.layers]


def memory_from_counts(synapses_per_layer, weight_bits: int, delay_bits: int) -> int:
    """sum over layers ceil(synapses * (weight_bits + delay_bits) / 8) bytes."""
    bits = int(weight_bits) + int(delay_bits)
    return sum(math.ceil(int(n) * bits / 8) for n in synapses_per_layer)


def memory_bytes(net: Network | QNetwork, weight_bits: int, delay_bits: int) -> int:
    """Synaptic memory of ``net`` at the given widths (:data:`MEMORY_FORMULA`)."""
    return memory_from_counts(layer_synapses(net), weight_bits, delay_bits)


# ----------------------------------------------------------------------------- sweep

def _quant_cell(net_b: Network, target, w: int, b: int, x, labels, calib, f_pred) -> dict:
    """Quantize net_b with w-bit weights and classify x bit-accurately; errors in the cell."""

    cell = {"accuracy": None, "agreement_with_float": None, "synapses": None,
            "layer_synapses": None, "memory_bytes": None, "n_warnings": 0, "warnings": [], "error": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # collected from the report instead
            qnet, rep = passes.quantize(net_b, target, data=calib, weight_bits=w)
        pred, _ = bitsim.predict(qnet, x)
    except ValueError as exc:                        # PassError, QuantizationError, ...
        cell["error"] = f"{type(exc).__name__}: {exc}"
        return cell
    cell.update({"accuracy": float(np.mean(pred == labels)),
                 "agreement_with_float": float(np.mean(pred == f_pred)),
                 "synapses": int(qnet.n_synapses), "layer_synapses": layer_synapses(qnet),
                 "memory_bytes": memory_bytes(qnet, w, b),
                 "n_warnings": len(rep.warnings), "warnings": list(rep.warnings)})
    return cell


def sweep_network(net: Network, x, labels, target="loihi2", *,
                  weight_bits=DEFAULT_WEIGHT_BITS, delay_bits=DEFAULT_DELAY_BITS,
                  delay_mode="clip", calib=None, calib_note: str = "",
                  progress: bool = True) -> dict:
    """Sweep a float network over weight x delay bit widths on padded data x (N, T, n_in).

    Returns a dict (JSON-ready): target, n, steps, weight_bits, delay_bits, modes,
    float_accuracy (original delays), target_max_delay, columns (one per mode and delay
    bits: the delay info of :func:`reduce_delays` + float_accuracy), cells (one per mode,
    weight bits, delay bits: accuracy, agreement_with_float, synapses, memory_bytes,
    n_warnings, warnings, error; error is a string when quantize refused that width),
    notes. calib: padded calibration inputs (N, T', n_in) the quantizer chooses its
    exponents from (training data; None: from the weights alone), described by
    ``calib_note``.
    """

    tgt = load_target(target)
    wbits = parse_bits(weight_bits, "weight bits")
    dbits = parse_bits(delay_bits, "delay bits")
    _check_delay_bits(dbits)
    modes = parse_modes(delay_mode)
    x, labels, calib, top = _check_inputs(net, tgt, x, labels, calib)
    _, f_pred0 = floatsim.predict(net, x)
    result = {"target": tgt.name, "n": int(len(x)), "steps": int(x.shape[1]),
              "calib_samples": 0 if calib is None else int(len(calib)),
              "calibration": calib_note or ("training data" if calib is not None
                                            else "none (weights only)"),
              "weight_bits": list(wbits), "delay_bits": list(dbits),
              "modes": list(modes), "target_max_delay": int(tgt.max_delay),
              "network_max_delay": top, "synapses_float": int(net.n_synapses),
              "float_accuracy": float(np.mean(f_pred0 == labels)),
              "columns": [], "cells": [],
              "notes": [MEMORY_FORMULA] + [f"delay mode {m}: {MODE_TEXT[m]}" for m in modes]
              + [ANCHOR]}
    done: dict[tuple, dict] = {}                      # (w, delay digest) -> cell
    pbar = bar(total=len(modes) * len(dbits) * len(wbits), desc="sweep", unit="cell",
               enabled=progress, leave=False)
    for mode in modes:
        for b in dbits:
            net_b, info = reduce_delays(net, b, mode, tgt.max_delay)
            _, f_pred = floatsim.predict(net_b, x)
            info["float_accuracy"] = float(np.mean(f_pred == labels))
            result["columns"].append(info)
            key = _delay_key(net_b)
            for w in wbits:
                pbar.set_postfix_str(f"{mode} w{w} d{b}")
                cell = _cached_cell(done, (w, key), net_b, tgt, w, b, x, labels, calib, f_pred)
                result["cells"].append({"mode": mode, "weight_bits": w, "delay_bits": b,
                                        **cell})
                pbar.update(1)
    pbar.close()
    return result


def _check_inputs(net, tgt, x, labels, calib):
    """(x, labels, calib as arrays, the network's largest used delay); a SweepError for
    anything :func:`sweep_network` cannot sweep."""

    if not isinstance(net, Network):
        raise SweepError(f"sweep_network expects a float Network, got {type(net).__name__}")
    x = np.asarray(x)
    labels = np.asarray(labels)
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[2] != net.n_in:
        raise SweepError(f"x must be padded samples (N, T, {net.n_in}) with N > 0, got "
                         f"shape {x.shape}")
    if labels.shape != (x.shape[0],):
        raise SweepError(f"labels must have shape ({x.shape[0]},), got {labels.shape}")
    top = used_delay_max(net)
    if not tgt.has_delays and top > 0:
        raise SweepError(f"target {tgt.name!r} has no synaptic delays but the network uses "
                         f"delays up to {top} steps; sweep a target with delays (e.g. loihi2)")
    if calib is not None:
        calib = np.asarray(calib)
        if calib.ndim != 3 or calib.shape[2] != net.n_in:
            raise SweepError(f"calib must be padded samples (N, T, {net.n_in}), got shape "
                             f"{calib.shape}")
    return x, labels, calib, top


def _cached_cell(done: dict, key: tuple, net_b: Network, target, w: int, b: int, x, labels,
                 calib, f_pred) -> dict:
    """:func:`_quant_cell`, computed once per ``key`` (weight bits, delay digest): the same
    delays give the same quantized network, whose memory is recounted for ``b`` bits."""

    if key in done:                                   # same delays: same quantized network
        cell = dict(done[key])
        if cell["layer_synapses"] is not None:
            cell["memory_bytes"] = memory_from_counts(cell["layer_synapses"], w, b)
        return cell
    cell = _quant_cell(net_b, target, w, b, x, labels, calib, f_pred)
    done[key] = cell
    return cell


def finetune_cells(run, out_dir, target, wbits, dbits, *, epochs: int = 10,
                   threads: int | None = None, progress: bool = True, log=None,
                   device="auto", executor=None, trackers=()) -> list:
    """One hardware-exact fine-tuning run per (weight bits, delay bits) cell, in
    ``out_dir/finetuned/w<w>_d<b>`` (finished runs are reused, interrupted ones resumed).
    ``executor``: where they train (:mod:`neurodelay.research.executors`; default here,
    one after the other); ``trackers``: ``--log`` trackers of every cell.
    Returns one dict per cell: weight_bits, delay_bits, accuracy (test, bit-accurate),
    post-training and fine-tuned validation accuracy, delay mode chosen, synapses,
    memory_bytes, seconds, run, error (and job, log through another executor)."""

    say = log or (lambda m: None)
    opts = executors.ExecutorOptions.of(executor)
    trackers = tracking.check_trackers(trackers)
    grid = [(w, b) for w in wbits for b in dbits]
    _check_finetune_record(Path(out_dir) / "finetuned",
                           {"parent": str(Path(run).resolve()), "target": str(target),
                            "finetune_epochs": int(epochs)})
    if not opts.in_process:
        cells = [executors.Cell(f"finetuned/w{w}_d{b}", "finetune",
                                {"parent": str(run), "target": str(target),
                                 "weight_bits": w, "delay_bits": b, "epochs": epochs,
                                 "device": device})
                 for w, b in grid]
        done = executors.run_cells(out_dir, cells, opts, threads=threads,
                                   trackers=trackers, log=say)
        out = []
        for (w, b), r in zip(grid, done):
            cell = _finetuned(Path(r["run"]), w, b)
            cell.update({"job": r["job"], "log": r["log"]})
            if r["action"] in ("failed", "submitted") and cell["error"] is None:
                cell["error"] = (f"not finished: {r['error']} (log {r['log']})"
                                 if r["action"] == "failed" else
                                 f"submitted as job {r['job']}; re-issue the command to "
                                 f"collect it")
            out.append(cell)
        return out
    cells = []
    with tracking.tracked(trackers):
        for w, b in grid:
            folder = Path(out_dir) / "finetuned" / f"w{w}_d{b}"
            try:
                finetune_cell(folder, parent=run, target=target, weight_bits=w,
                              delay_bits=b, epochs=epochs, threads=threads, log=say,
                              progress=progress, device=device)
            except NeurodelayError as exc:
                cells.append({"weight_bits": w, "delay_bits": b, "run": str(folder),
                              "error": f"{type(exc).__name__}: {exc}", "accuracy": None,
                              "memory_bytes": None})
                continue
            cells.append(_finetuned(folder, w, b))
    return cells


FINETUNE_RECORD = "finetune_cells.json"


def _check_finetune_record(folder: Path, record: dict) -> None:
    """Refuse to mix fine-tuned cells of other settings in ``folder`` (naming what
    changed); records the settings otherwise."""
    path = folder / FINETUNE_RECORD
    if path.exists() and any(folder.glob("w*_d*/config.json")):
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in record.items()
                   if isinstance(old, dict) and old.get(k) != v]
        if changed:
            raise SweepError(f"{folder} holds fine-tuned cells of other settings: "
                             f"{'; '.join(changed)} (recorded in {path}); re-issue with the "
                             f"same settings to resume them, or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, indent=2) + "\n")


def finetune_cell(folder, *, parent, target, weight_bits: int, delay_bits: int,
                  epochs: int, threads=None, log=None, progress: bool = False,
                  device="auto") -> str:
    """Fine-tune one sweep cell into ``folder`` ('skipped' when it has finished,
    'resumed' from its checkpoint, else 'trained'); also the cell function of the
    executors (:data:`neurodelay.research.executors.CELL_FUNCTIONS`)."""
    folder = Path(folder)
    say = log or (lambda m: None)
    if (folder / "result.json").exists():
        return "skipped"
    say(f"fine-tuning {weight_bits}-bit weights, {delay_bits}-bit delays -> {folder}")
    resume = (folder / "checkpoint.pt").exists()
    finetune(None if resume else parent, folder,
             None if resume else FinetuneConfig(target=str(target), weight_bits=weight_bits,
                                                delay_bits=delay_bits, epochs=epochs),
             resume=resume, overwrite=not resume, progress=progress, threads=threads,
             log=say, device=device)
    return "resumed" if resume else "trained"


def _finetuned(folder: Path, w: int, b: int) -> dict:
    """The sweep's record of a fine-tuned cell (error set when it has no result)."""
    cell = {"weight_bits": w, "delay_bits": b, "run": str(folder), "error": None,
            "accuracy": None, "memory_bytes": None}
    if not (folder / "result.json").exists():
        cell["error"] = "not finished"
        return cell
    try:
        res = open_run(folder).result()
        memory = memory_from_counts(layer_synapses(open_run(folder).qnetwork()), w, b)
    except NeurodelayError as exc:
        cell["error"] = f"{type(exc).__name__}: {exc}"
        return cell
    cell.update({"accuracy": res["test_accuracy"],
                 "post_training_valid_accuracy": res["post_training_valid_accuracy"],
                 "valid_accuracy": res["best_valid_accuracy"],
                 "delay_mode": res["delay_mode"], "delay_step": res["delay_step"],
                 "synapses": res["synapses"], "memory_bytes": memory,
                 "seconds": res["seconds"]})
    return cell


def sweep_bits(run, target="loihi2", weight_bits=DEFAULT_WEIGHT_BITS,
               delay_bits=DEFAULT_DELAY_BITS, delay_mode="clip", test_file=None, *,
               out_dir=None, calib_samples: int | None = None, progress: bool = True,
               finetune: bool = False, finetune_epochs: int = 10,
               threads: int | None = None, log=None, device="auto", executor=None,
               trackers=()) -> dict:
    """Sweep a trained run (see the module docstring) and write the outputs to out_dir
    (default RUN/sweep). Quantization is calibrated like a deployment artifact: on a
    seeded subset of the run's training split (``calib_samples``, default 256), never on
    test data. With ``finetune`` every cell is also fine-tuned hardware-exactly
    (:func:`finetune_cells`, on ``executor`` with ``trackers``; result key
    ``finetuned``). Returns :func:`sweep_network`'s
    dict plus run, test, markdown (the tables) and files (paths written).


    Examples:
        >>> import tempfile
        >>> from neurodelay import api
        >>> from neurodelay.data import make_synthetic
        >>> tmp = tempfile.mkdtemp()
        >>> files = make_synthetic(tmp, sizes={"train": 64, "valid": 32, "test": 32})
        >>> _ = api.train_run(f"{tmp}/run", preset="tiny", hidden=[8], epochs=1,
        ...                   train_file=str(files["train"]), test_file=str(files["test"]),
        ...                   cache_dir=tmp, threads=1, progress=False, log=lambda m: None)
        >>> from neurodelay.research.sweep import sweep_bits
        >>> res = sweep_bits(f"{tmp}/run", weight_bits="8,4", delay_bits="6,4",
        ...                  progress=False, threads=1)
        >>> [(c["weight_bits"], c["delay_bits"]) for c in res["cells"]]
        [(8, 6), (4, 6), (8, 4), (4, 4)]
        >>> import os
        >>> sorted(os.path.basename(p) for p in res["files"])
        ['sweep.csv', 'sweep.json', 'sweep.md', 'sweep.png']
    """

    r = open_run(run, kinds=("trained", "imported"))
    wbits = parse_bits(weight_bits, "weight bits")      # fail before the slow loading
    dbits = parse_bits(delay_bits, "delay bits")
    _check_delay_bits(dbits)
    modes = parse_modes(delay_mode)
    n_cal = DEFAULT_CALIB_SAMPLES
    if calib_samples is not None:
        n_cal = check_int(calib_samples, "--calib-samples",
                          "the number of training samples quantization calibrates on", lo=1)
    check_device_spec(device)                           # a typo fails with or without --finetune
    if finetune:
        finetune_epochs = check_int(finetune_epochs, "--finetune-epochs",
                                    "the fine-tuning epochs per cell", lo=1)
    out = Path(out_dir) if out_dir is not None else r.path / "sweep"
    if finetune:                        # a changed setting is refused before the slow part
        _check_finetune_record(out / "finetuned",
                               {"parent": str(Path(r.path).resolve()), "target": str(target),
                                "finetune_epochs": int(finetune_epochs)})
    net = float_network(r)
    ds = rundata.run_test_data(r, test_file)
    x = pad_batch(ds.samples, pad_to=ds.max_steps)
    calib, cal = calibration_data(r, DeployOptions(target=target, calib_samples=n_cal))
    result = {"run": str(r.path),
              "test": str(test_file) if test_file else "run's own test split"}
    result.update(sweep_network(net, x, np.asarray(ds.labels), target, weight_bits=wbits,
                                delay_bits=dbits, delay_mode=modes, calib=calib,
                                calib_note=cal.description or cal.source,
                                progress=progress))
    if finetune:
        result["finetuned"] = finetune_cells(r.path, out, target, wbits, dbits,
                                             epochs=finetune_epochs, threads=threads,
                                             progress=progress, log=log, device=device,
                                             executor=executor, trackers=trackers)
        result["finetune_epochs"] = finetune_epochs
    result["markdown"] = format_markdown(result)
    result["files"] = [str(p) for p in [out / n for n in SWEEP_FILES]]
    write_outputs(result, out)
    return result
