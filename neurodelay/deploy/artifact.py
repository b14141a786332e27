"""The deployment artifact: the quantized network computed ONCE, and everything a user
hands over, in one folder. ``neurodelay export`` writes it; ``neurodelay verify`` verifies
exactly it (same file, same hash).

Folder (default ``RUN/deploy/<target>``; see :func:`default_folder`)::

    network.qnet.h5        the quantized network (neurodelay.core.network format), the
                           object every check below is about
    network.netx.h5        lava-dl netx file of that network (what goes to a Loihi 2);
                           feed-forward networks only: netx cannot carry recurrent delays
    network.lava.h5        the Lava process parameters of that network (every network;
                           for a recurrent one, THE Loihi 2 file):
                           ``neurodelay.sim.lava_procs.build_from_file`` builds Lava's
                           DelayDense/LIF processes from it (format in that module)
    model.nir              NIR graph of the float network (absent for finetuned runs,
                           whose float weights are not what is deployed)
    model.quantized.nir    NIR graph of the quantized network in float units
    deploy.json            the deploy report (:class:`DeployReport`), with
                           ``artifact_hash``: sha256 of the quantized network's content
    README.txt             how to load and run the files

The hash (:func:`qnet_hash`) covers every integer and every field that changes what the
network computes (weights, delays, exponents, decays, thresholds, biases, scales, input
scale, dt, classes and the target's arithmetic); it does not depend on HDF5 byte layout
or file timestamps, so :func:`load_artifact` can recompute it from the file and refuse a
folder whose network changed after export.

Calibration never reads test or validation data: exponents and scales are chosen from a
fixed, seeded subset of the run's TRAINING split (``calib_samples`` samples, default
:data:`DEFAULT_CALIB_SAMPLES`, seed ``calib_seed``), or from a file the user names, or
from the weights alone for a network that comes without data (an imported NIR graph).
The report says which.

The folder is written next to its destination and renamed into place at the end, so a
refused or failed export leaves nothing behind, and a reader never sees half of one.

This module builds and loads the folders; the file names, hash, report and options are in
:mod:`neurodelay.deploy.manifest`, the calibration and quantization in
:mod:`neurodelay.deploy.calibrate`. Every public name of both is importable from here.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from neurodelay import __version__
from neurodelay.core.network import QNetwork
from neurodelay.core.network_io import load_network, save_network

# re-exported names (noqa: F401): importers use neurodelay.deploy.artifact for all of them
from neurodelay.deploy.calibrate import calibration_data, quantize_run  # noqa: F401
from neurodelay.deploy.manifest import (  # noqa: F401
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_CALIB_SEED,
    DEFAULT_MESSAGE_BITS,
    FILES,
    FORMAT,
    FORMAT_VERSION,
    Artifact,
    Calibration,
    DeployOptions,
    DeployReport,
    canonical_target,
    file_sha256,
    qnet_hash,
)
from neurodelay.errors import ArtifactError, LavaRunError, TargetError
from neurodelay.exporters import get_exporter
from neurodelay.exporters.lava_procs import export as write_lava_procs
from neurodelay.exporters.loihi2 import load_check, netx_layer, netx_readme, write_netx
from neurodelay.fs import disk_full_error, inside, make_dirs, refuse_links, remove_empty_dirs
from neurodelay.hw.resources import check_fits
from neurodelay.hw.target import arith, load_target
from neurodelay.runs import Run, open_run, read_json
from neurodelay.sim.lava_procs import params_equal, process_params, read_params
from neurodelay.untrusted import open_h5

# ----------------------------------------------------------------------------- folders

def _target_folder_name(tgt) -> str:
    """The target's name, plus a short digest when the description differs from the
    built-in target of that name (a modified copy must not share its folder)."""

    try:
        builtin = load_target(tgt.name)
        same = canonical_target(builtin.to_dict(), "") == canonical_target(tgt.to_dict(), "")
    except TargetError:
        same = False
    if same:
        return tgt.name
    digest = hashlib.sha256(json.dumps(canonical_target(tgt.to_dict(), ""),
                                       sort_keys=True).encode()).hexdigest()[:8]
    return f"{tgt.name}-{digest}"


def default_folder(run, options: DeployOptions) -> Path:
    """``RUN/deploy/<target>[-w<bits>][-clip][-calib<n>s<seed>]``: one folder per target
    and set of non-default options, so verify finds what export wrote."""

    tgt = load_target(options.target)
    name = _target_folder_name(tgt)
    if options.weight_bits is not None and int(options.weight_bits) != tgt.weight_bits:
        name += f"-w{int(options.weight_bits)}"
    if options.clip_delays:
        name += "-clip"
    if (options.calib_samples, options.calib_seed) != (DEFAULT_CALIB_SAMPLES,
                                                       DEFAULT_CALIB_SEED):
        name += f"-calib{int(options.calib_samples)}s{int(options.calib_seed)}"
    if options.calib_file:
        name += "-calibfile"
    return Path(run) / "deploy" / name


# ----------------------------------------------------------------------------- building

def _source(run) -> dict:
    model_file = {"trained": "best.pt", "imported": run.config.get("network", "network.h5"),
                  "finetuned": "qnet.h5"}[run.kind]
    path = run.path / model_file
    return {"run": str(run.path), "kind": run.kind, "model_file": model_file,
            "model_sha256": file_sha256(path) if path.exists() else None}


def _write_nir(net, path) -> None:

    get_exporter("nir")(net, path)


def build_artifact(run, options: DeployOptions | None = None, out=None, *,
                   log=None) -> Artifact:
    """Quantize ``run`` once for ``options.target`` and write the artifact folder ``out``
    (default :func:`default_folder`). A network that breaks the target's limits is
    refused (FitError listing every violation) and nothing is written. An existing
    artifact folder at ``out`` is replaced; any other non-empty folder is refused.


    Examples:
        Train a small run, then write its Loihi 2 artifact (what ``neurodelay export RUN
        --target loihi2`` does):

        >>> import tempfile
        >>> from neurodelay import api
        >>> from neurodelay.data import make_synthetic
        >>> tmp = tempfile.mkdtemp()
        >>> files = make_synthetic(tmp, sizes={"train": 64, "valid": 32, "test": 32})
        >>> _ = api.train_run(f"{tmp}/run", preset="tiny", hidden=[8], epochs=1,
        ...                   train_file=str(files["train"]), test_file=str(files["test"]),
        ...                   cache_dir=tmp, threads=1, progress=False, log=lambda m: None)
        >>> from neurodelay.deploy.artifact import DeployOptions, build_artifact
        >>> art = build_artifact(f"{tmp}/run", DeployOptions(target="loihi2"))
        >>> sorted(p.name for p in art.folder.iterdir())  # doctest: +NORMALIZE_WHITESPACE
        ['README.txt', 'deploy.json', 'model.nir', 'model.quantized.nir', 'network.lava.h5',
         'network.netx.h5', 'network.qnet.h5']
        >>> art.hash.startswith("sha256:")
        True
    """

    say = log or (lambda m: None)
    options = options or DeployOptions()
    run = open_run(run)
    tgt = load_target(options.target)
    out = _destination(run, options, out)
    unfinished = _unfinished(run)
    for w in unfinished:
        say(f"warning: {w}")
    qnet, net, qrep, drep, cal = quantize_run(run, options, say)
    resources = check_fits(qnet, tgt)                       # FitError: nothing written
    h = qnet_hash(qnet)

    def write(tmp: Path) -> DeployReport:
        netx, files, notes = _write_networks(tmp, qnet, net)
        rep = _deploy_report(run, tgt, options, qnet, h, qrep=qrep, drep=drep, cal=cal,
                             resources=resources, netx=netx, files=files,
                             warnings=unfinished + (list(qrep.warnings) if qrep is not None
                                                    else []))
        rep.file_notes = notes
        (tmp / FILES["report"]).write_text(json.dumps(rep.to_dict(), indent=2) + "\n")
        text = netx_readme(netx, qnet) if netx is not None else ""
        (tmp / FILES["readme"]).write_text(_readme(rep, text))
        return rep

    rep = _write_folder(out, write)
    say(f"artifact {out}: {h}")
    return Artifact(out, qnet, rep)


def _destination(run: Run, options: DeployOptions, out) -> Path:
    """The artifact folder to write (``out`` or :func:`default_folder`), refused when it
    is a file, a non-empty folder that is no artifact, or reached through a link."""

    if out is None:
        out = default_folder(run.path, options)
        # never write or delete through a link planted in a run folder from elsewhere
        refuse_links(run.path, ["deploy"], "run folder")
        refuse_links(out.parent, [out.name], "run's deploy folder")
    out = Path(out)
    _check_destination(out)
    refuse_links(out, None, "artifact folder")
    return out


def _unfinished(run: Run) -> list:
    """The warning an artifact of an unfinished run carries (none for a finished run)."""

    status = run.status()
    return [] if status.finished else [
        f"{run.path} is {status.describe()}: this artifact holds the best epoch so far, not "
        f"a finished run (continue it with `neurodelay train --resume --out {run.path}`, "
        f"then export again)"]


NETX_RECURRENT = ("no netx file: lava-dl netx cannot carry recurrent delays (its "
                  "RecurrentDense gives the recurrent synapses the feed-forward delay "
                  "matrix); network.lava.h5 is this network's Loihi 2 file")


def _write_networks(tmp: Path, qnet: QNetwork, net):
    """The quantized network, its netx file (feed-forward networks; read back to check
    it), its Lava process network file and the NIR graphs into ``tmp``; returns (netx
    export or None, files: kind -> name, file notes: kind -> why)."""

    x_bits = DEFAULT_MESSAGE_BITS
    save_network(qnet, tmp / FILES["qnet"])
    skip, notes = set(), {}
    netx = None
    if qnet.recurrent:
        skip.add("netx")
        notes["netx"] = NETX_RECURRENT
    else:
        netx = write_netx(qnet, tmp / FILES["netx"], input_message_bits=x_bits)
        load_check(tmp / FILES["netx"], x_bits, len(qnet.layers))
        notes["netx"] = "lava-dl netx file: what lava-dl's netx.hdf5.Network loads"
    write_lava_procs(qnet, tmp / FILES["lava"], input_message_bits=x_bits)
    notes["lava"] = ("Lava process parameters (DelayDense feed-forward"
                     + (" and recurrent" if qnet.recurrent else "") + " synapses, LIF "
                     "neurons); build with neurodelay.sim.lava_procs.build_from_file")
    if net is None:
        skip.add("nir_float")
        notes["nir_float"] = "no float network (a fine-tuned run deploys its integers)"
    files = {k: v for k, v in FILES.items() if k not in skip}
    if net is not None:
        _write_nir(net, tmp / FILES["nir_float"])
    _write_nir(qnet, tmp / FILES["nir_quantized"])
    return netx, files, notes


def _deploy_report(run: Run, tgt, options: DeployOptions, qnet: QNetwork, h: str, *, qrep,
                   drep, cal, resources, netx, files: dict, warnings: list) -> DeployReport:
    return DeployReport(
        artifact_hash=h,
        target={"name": tgt.name, "description": tgt.description, "source": tgt.source},
        weight_bits=int(qnet.weight_bits if qnet.weight_bits is not None
                        else tgt.weight_bits),
        delay_bits=int(qnet.delay_bits if qnet.delay_bits is not None else tgt.delay_bits),
        max_delay=int(tgt.max_delay),
        input_scale=float(qnet.input_scale),
        layers=_layer_rows(qnet, qrep),
        calibration=asdict(cal), resources=resources.to_dict(),
        delays={"max_delay": int(drep.changes["max_delay"]),
                "clipped": int(drep.changes["clipped"]),
                "unused_delays_zeroed": int(drep.changes["unused_delays_zeroed"])},
        netx=({"input_message_bits": netx.input_message_bits, "exact": netx.exact,
               "layers": netx.layers} if netx is not None else
              {"input_message_bits": DEFAULT_MESSAGE_BITS, "exact": None, "layers": [],
               "written": False, "why": NETX_RECURRENT}),
        source=_source(run), files=files, options=options.describe(),
        warnings=warnings,
        neurodelay_version=__version__, created=time.strftime("%Y-%m-%d %H:%M:%S"))


def _write_folder(out: Path, write):
    """``write(tmp)`` into a new temporary folder next to ``out``, then renamed to ``out``
    (replacing an old artifact there); on any failure nothing is left behind. Returns
    what ``write`` returned."""

    created = make_dirs(out.parent)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        result = write(tmp)
        _replace_folder(tmp, out)
    except BaseException as exc:
        full = disk_full_error(exc, tmp, f"{out} is as it was before"
                               if out.exists() else f"{out} was not created")
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty_dirs(created)
        if full is not None and full is not exc:
            raise full from None
        raise
    return result


def _layer_rows(qnet: QNetwork, qrep) -> list:
    rows = []
    for k, layer in enumerate(qnet.layers):
        row = {"layer": k, "name": layer.name, "kind": layer.kind,
               "weight_exp": int(layer.weight_exp), "num_weight_bits": int(layer.num_weight_bits),
               "scale": float(layer.scale), "vth": layer.vth, "du": int(layer.du),
               "dv": int(layer.dv), "bias_exp": int(layer.bias_exp),
               "synapses": int(np.count_nonzero(layer.weight))}
        if qrep is not None:
            extra = qrep.layers[k]
            for key in ("headroom", "max_abs_a_in", "u_wraps", "v_clips", "weights_clipped",
                        "weights_zeroed", "bias_clipped", "mantissa_min", "mantissa_max"):
                if key in extra:
                    row[key] = extra[key]
        rows.append(row)
    return rows


def _readme(rep: DeployReport, netx_text: str) -> str:
    cal = rep.calibration
    return (f"neurodelay deployment artifact for target {rep.target['name']}\n"
            f"artifact hash (content of {FILES['qnet']}): {rep.artifact_hash}\n"
            f"source: {rep.source['run']} ({rep.source['kind']})\n"
            f"weights: {rep.weight_bits} bits; delays up to {rep.max_delay} steps\n"
            f"calibration: {cal['description']}\n\n"
            + (f"{netx_text}\n\n" if netx_text else "")
            + "".join((f"{rep.files[k]}: {why}\n" if k in rep.files else f"{why}\n")
                      for k, why in rep.file_notes.items() if k in ("netx", "lava"))
            + "\n"
            f"Lava process network (network.lava.h5), in Python with Lava installed:\n"
            f"    from neurodelay.sim.lava_procs import build_from_file\n"
            f"    net = build_from_file('{FILES['lava']}')   # Lava processes, not run yet\n"
            f"    # connect a graded-spike source (round(count * {rep.input_scale:g}), one "
            f"column per step) to net.inp,\n"
            f"    # read net.neurons[-1].v and run with Loihi2SimCfg(select_tag='fixed_pt')\n"
            f"    # prediction: argmax over classes of sum_t softmax(v[t] * "
            f"{rep.layers[-1]['scale']:.6g}) over the\n"
            f"    # input's time steps after {len(rep.layers)} steps of latency\n\n"
            f"{FILES['qnet']}: the quantized network (neurodelay.core.network_io.load_network "
            f"or h5py); `neurodelay verify --artifact THIS_FOLDER` re-checks it against the "
            f"trained model, the bit-accurate simulator and Lava.\n"
            f"{FILES['nir_quantized']}: NIR graph of the quantized network in float units"
            + (f"; {FILES['nir_float']}: the float network" if "nir_float" in rep.files else "")
            + f".\n{FILES['report']}: everything above as JSON.\n")


def _check_destination(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out}: exists and is a file; give a folder for the artifact")
    if out.is_dir() and any(out.iterdir()) and not (out / FILES["report"]).exists():
        raise ArtifactError(f"{out}: exists, is not empty and is not a neurodelay artifact; "
                            f"nothing was written. Choose a new or empty folder")


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an old artifact there."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)                 # mkdtemp makes 0700: a normal folder
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old.", suffix=".tmp"))
        os.rmdir(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- loading

def load_artifact(folder) -> Artifact:
    """Read an artifact folder and check it is intact: the quantized network's hash must
    equal the report's, and the netx file must hold exactly that network."""

    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: no such artifact folder (create one with "
                            f"`neurodelay export RUN --target loihi2 --out {folder}`)")
    rpath = folder / FILES["report"]
    if not rpath.exists():
        raise ArtifactError(f"{folder}: not a neurodelay artifact (no {FILES['report']})")
    rep = DeployReport.from_dict(read_json(rpath, "the deploy report"), str(rpath))
    if not isinstance(rep.files, dict) or not all(isinstance(v, str)
                                                  for v in rep.files.values()):
        raise ArtifactError(f"{rpath}: 'files' must map kinds to file names")
    # netx: feed-forward networks; lava: folders written since the Lava process file
    for kind in ("qnet", "netx", "lava"):
        if kind != "qnet" and kind not in rep.files:
            continue
        if not inside(folder, rep.files.get(kind, FILES[kind]), "artifact folder").exists():
            raise ArtifactError(f"{folder}: {rep.files.get(kind, FILES[kind])} is missing; "
                                f"the artifact is incomplete: export it again")
    qnet = load_network(inside(folder, rep.files["qnet"], "artifact folder"),
                        kind="quantized")
    h = qnet_hash(qnet)
    if h != rep.artifact_hash:
        raise ArtifactError(f"{folder / rep.files['qnet']}: its content hash {h} differs from "
                            f"{rep.artifact_hash} in {FILES['report']}: the network was "
                            f"changed after export; export it again")
    art = Artifact(folder, qnet, rep)
    if "netx" in rep.files:
        _check_netx_matches(art)
    elif qnet.recurrent is False:
        raise ArtifactError(f"{folder}: a feed-forward network without its netx file; "
                            f"export it again")
    if "lava" in rep.files:
        _check_lava_matches(art)
    elif qnet.recurrent:
        raise ArtifactError(f"{folder}: a recurrent network without its Lava process "
                            f"network file {FILES['lava']}; export it again")
    return art


def _check_lava_matches(art: Artifact) -> None:
    """The Lava process network file must hold exactly the parameters of the hashed
    quantized network (so what Lava builds from it is what was verified)."""

    path = art.lava_path
    try:
        got = read_params(path)
    except LavaRunError as e:
        raise ArtifactError(f"{path}: not a readable Lava process network file ({e})") \
            from None
    want = process_params(art.qnet, got.input_message_bits)
    if not params_equal(got, want):
        raise ArtifactError(f"{path}: does not hold the quantized network of this artifact "
                            f"(modified after export?); export it again")


def _check_netx_matches(art: Artifact) -> None:
    """The netx file must hold the arrays the exporter derives from the quantized
    network (so the file Lava runs is the network that was hashed)."""

    a = arith(art.qnet)
    path = art.netx_path
    try:
        with open_h5(path, ArtifactError, what="netx file") as f:
            n = len(f["layer"]) - 1
            if n != len(art.qnet.layers):
                raise ArtifactError(f"{path}: {n} layers, the quantized network has "
                                    f"{len(art.qnet.layers)}")
            for k, layer in enumerate(art.qnet.layers, start=1):
                want, _ = netx_layer(layer, a, check=False)
                g = f[f"layer/{k}"]
                got_w = g["weight"][()].astype(np.int64)
                got_d = g["delay"][()].astype(np.int64) if "delay" in g else \
                    np.zeros_like(want["delay"])
                got_b = g["bias"][()].astype(np.int64) if "bias" in g else \
                    np.zeros_like(want["bias"])
                neu = g["neuron"]
                same = (np.array_equal(got_w, want["weight"])
                        and np.array_equal(got_d, want["delay"])
                        and np.array_equal(got_b, want["bias"])
                        and int(neu["iDecay"][()]) == want["iDecay"]
                        and int(neu["vDecay"][()]) == want["vDecay"]
                        and int(neu["vThMant"][()]) == want["vThMant"])
                if not same:
                    raise ArtifactError(f"{path}: layer {k} does not hold the quantized "
                                        f"network of this artifact (modified after "
                                        f"export?); export it again")
    except (OSError, KeyError) as e:
        raise ArtifactError(f"{path}: not a readable netx file ({e})") from None


def artifact_for(run, options: DeployOptions, *, build: bool = True, log=None) -> Artifact:
    """The run's artifact for these options: loaded from :func:`default_folder` if it is
    there and was built from the run's current model, else built there (``build``)."""

    run = open_run(run)
    folder = default_folder(run.path, options)
    if (folder / FILES["report"]).exists():
        art = load_artifact(folder)
        now = _source(run)["model_sha256"]
        if art.report.source.get("model_sha256") != now:
            raise ArtifactError(
                f"{folder} was exported from another version of {run.path}'s model "
                f"({art.report.source.get('model_sha256')} vs now {now}); export it again "
                f"(`neurodelay export {run.path} --target {options.target}` replaces it)")
        return art
    if not build:
        raise ArtifactError(f"{run.path} has no artifact for these options ({folder}); "
                            f"create it with `neurodelay export`")
    (log or (lambda m: None))(f"no artifact at {folder}: building it (as `neurodelay export` "
                              f"would)")
    return build_artifact(run, options, folder, log=log)
