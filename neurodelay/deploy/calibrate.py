"""A run's quantized network for a target, computed once: the calibration data (a seeded
subset of the TRAINING split, a file the user names, or nothing) and the quantization.

:func:`quantize_run` is what :func:`neurodelay.deploy.artifact.build_artifact` (and the
bit-width sweep's calibration) uses; the rules are in :mod:`neurodelay.deploy.artifact`'s
module docstring.
"""
from __future__ import annotations

import hashlib
import warnings as _w

import numpy as np

from neurodelay import passes
from neurodelay.data import load_binned, pad_batch
from neurodelay.data.rundata import run_data_config, run_train_data
from neurodelay.deploy.manifest import Calibration, DeployOptions, canonical_target
from neurodelay.errors import ArtifactError
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.target import arith, load_target
from neurodelay.train.loaders import float_network


def calibration_data(run, options: DeployOptions, log=None):
    """(x_padded or None, Calibration): a seeded subset of the run's training split, or
    of ``options.calib_file``; never test or validation data."""

    if options.calib_file:
        dc = run_data_config(run)
        ds = load_binned(options.calib_file, channel_bin=dc.channel_bin, dt=dc.dt,
                         max_time=dc.max_time, n_channels=dc.n_channels,
                         cache_dir=dc.cache_dir, progress=False)
        source, what = "file", f"file {options.calib_file}"
    elif run.has_own_data():
        ds = run_train_data(run)
        source, what = "training split", (f"the training split of {run.path} (validation "
                                          f"and test samples excluded)")
    else:
        return None, Calibration("none (weights only)", description=(
            f"{run.path} has no data of its own and no --calib-file was given: exponents "
            f"were chosen from the weights alone"))
    if len(ds) == 0:
        raise ArtifactError(f"calibration data ({what}) has no samples")
    n = min(int(options.calib_samples), len(ds))
    rng = np.random.default_rng(int(options.calib_seed))
    idx = np.sort(rng.permutation(len(ds))[:n])
    x = pad_batch([ds.samples[i] for i in idx])
    cal = Calibration(source, n=n, seed=int(options.calib_seed),
                      file=str(options.calib_file) if options.calib_file else None,
                      indices_sha256="sha256:" + hashlib.sha256(
                          idx.astype("<i8").tobytes()).hexdigest(),
                      description=f"{n} samples drawn with seed {options.calib_seed} from "
                                  f"{what} ({len(ds)} samples)")
    return x, cal


def quantize_run(run, options: DeployOptions, log=None):
    """(qnet, float network or None, quant report or None, delay report, Calibration):
    the quantized network of a run on a target, computed as :func:`build_artifact` does."""

    tgt = load_target(options.target)
    if run.kind == "finetuned":
        return _finetuned_network(run, tgt, options)
    net = float_network(run)
    if not tgt.has_delays and not options.clip_delays:
        _refuse_delays(net, tgt)
    net_d, drep = passes.check_delays(net, tgt.max_delay, clip=options.clip_delays)
    x, cal = calibration_data(run, options, log)
    with _w.catch_warnings():
        _w.simplefilter("ignore")                # collected in the report instead
        qnet, qrep = passes.quantize(net_d, tgt, data=x, weight_bits=options.weight_bits)
    qnet.meta = {k: v for k, v in qnet.meta.items() if k != "run"}
    return qnet, net_d, qrep, drep, cal


def _finetuned_network(run, tgt, options: DeployOptions):
    """:func:`quantize_run` of a fine-tuned run: its own integers, for its own target and
    weight bits only (nothing is re-quantized)."""

    qnet = run.qnetwork()
    if canonical_target(qnet.target_spec, qnet.target) != \
            canonical_target(tgt.to_dict(), tgt.name):
        raise ArtifactError(
            f"{run.path} was fine-tuned for target {qnet.target!r} with its exact "
            f"arithmetic; it cannot be deployed to {tgt.name!r} ({tgt.source}) without "
            f"re-quantizing: fine-tune for that target instead")
    if options.weight_bits is not None and int(options.weight_bits) != \
            (qnet.weight_bits if qnet.weight_bits is not None else -1):
        raise ArtifactError(f"{run.path} was fine-tuned with "
                            f"{qnet.weight_bits}-bit weights; drop "
                            f"--weight-bits or fine-tune again")
    net_d, drep = passes.check_delays(qnet, tgt.max_delay, clip=options.clip_delays)
    return net_d, None, None, drep, Calibration(
        "none (fine-tuned integers)", description="the run's integers are the chip's "
        "(hardware-exact fine-tuning); nothing was re-quantized")


def _refuse_delays(net, tgt) -> None:
    """A network whose delays matter cannot go to a target without delays (unclipped)."""

    a = arith(tgt)
    problems = [v for k, L in enumerate(net.layers)
                for v in fp.delay_violations(f"layer {k} {L.name!r}", L.weight, L.delay, a)]
    if problems:
        raise ArtifactError("the network cannot run on this target:\n  - "
                            + "\n  - ".join(problems)
                            + "\n(choose a target with delays, e.g. loihi2, train with "
                              "--delays none, or pass --clip-delays to set every delay "
                              "to 0 and see the cost)")
