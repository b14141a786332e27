"""`neurodelay export`, `verify` and `inspect`: one deployment artifact, verified as exported."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click

from neurodelay.cli.common import checked_float, main
from neurodelay.options import TOLERANCE

TARGET_HELP = ("Hardware target: a name from hw_configs/ (loihi2, loihi1, nodelay) or a path "
               "to a target .toml file. The target file is the truth: its weight bits, state "
               "width and limits are used; options may only narrow them.")


def deploy_options(f):
    """The options that decide how a run is quantized (shared by export and verify)."""
    f = click.option("--calib-file", type=click.Path(dir_okay=False),
                     help="Calibrate on this SHD-layout file instead of the run's training "
                          "split (for runs without data of their own, e.g. imported NIR "
                          "graphs). Never pass test data.")(f)
    f = click.option("--calib-seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of the calibration subset.")(f)
    f = click.option("--calib-samples", type=click.IntRange(min=1), default=256,
                     show_default=True,
                     help="Training samples (a fixed, seeded subset of the run's TRAINING "
                          "split; never validation or test data) the quantizer calibrates "
                          "its exponents on.")(f)
    f = click.option("--clip-delays", is_flag=True,
                     help="Clip delays above the target's maximum instead of refusing (the "
                          "clipped count is in the deploy report).")(f)
    f = click.option("--weight-bits", type=click.IntRange(min=2),
                     help="Weight precision in bits; default: the target's. May only narrow "
                          "what the target holds.")(f)
    return f


def _options(target, weight_bits, clip_delays, calib_samples, calib_seed, calib_file=None):
    from neurodelay.deploy.artifact import DeployOptions  # lazy: CLI start-up time

    return DeployOptions(target=target, weight_bits=weight_bits, clip_delays=clip_delays,
                         calib_samples=calib_samples, calib_seed=calib_seed,
                         calib_file=calib_file)


@main.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--target", required=True,
              help="'nir' for a NIR graph file, else a hardware target (loihi2, loihi1, "
                   "nodelay, or a .toml path): the deployment artifact folder.")
@click.option("--out", "out_path", type=click.Path(),
              help="Hardware target: the artifact folder (default RUN/deploy/<target>; an "
                   "existing artifact there is replaced). nir: the .nir file to write.")
@click.option("--variant", type=click.Choice(["float", "quantized"]), default="float",
              show_default=True,
              help="nir only: the trained float network, or the quantized network of the "
                   "--hw target's artifact (in float units).")
@click.option("--hw", "hw_target", default="loihi2", show_default=True,
              help="nir --variant quantized: the hardware target whose artifact is used.")
@click.option("--nir-schema", type=click.Choice(["1.0.8", "1.0.4"]), default="1.0.8",
              show_default=True,
              help="nir only: the NIR file schema. 1.0.4 is what Sinabs and Rockpool pin (LIF "
                   "without v_reset; a non-zero reset is refused).")
@deploy_options
@click.option("--json", "as_json", is_flag=True, help="Print the deploy report as JSON.")
def export(run, target, out_path, variant, hw_target, nir_schema, weight_bits, clip_delays,
           calib_samples, calib_seed, calib_file, as_json):
    """Export a run: a deployment artifact for hardware, or a NIR graph.

    \b
    For a hardware target (e.g. --target loihi2) the run is quantized ONCE, calibrated on
    its training data, and everything a user hands over goes into one folder:
      network.qnet.h5       the quantized network
      network.netx.h5       lava-dl netx file (feed-forward networks; netx cannot carry
                            recurrent delays)
      network.lava.h5       Lava process network parameters: a recurrent network's Loihi 2
                            file (neurodelay.sim.lava_procs.build_from_file builds it)
      model.nir             NIR graph of the float network
      model.quantized.nir   NIR graph of the quantized network
      deploy.json           target, bits, per-layer exponents and headroom, calibration
                            source and size, resources, and the artifact hash
    `neurodelay verify RUN --target T` verifies exactly this folder (same hash).
    A network that breaks the target's limits is refused and nothing is written.
    """
    from neurodelay.deploy.artifact import build_artifact  # lazy: CLI start-up time
    from neurodelay.runs import open_run  # lazy: CLI start-up time

    r = open_run(run)
    if target == "nir":
        return _export_nir(r, out_path, variant, nir_schema,
                           _options(hw_target, weight_bits, clip_delays, calib_samples,
                                    calib_seed, calib_file))
    art = build_artifact(r, _options(target, weight_bits, clip_delays, calib_samples,
                                     calib_seed, calib_file), out_path,
                         log=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(art.report.to_dict(), indent=2, default=str))
        return
    _print_artifact(r, art)


def _export_nir(r, out_path, variant: str, nir_schema: str, options) -> None:
    """``export --target nir``: the float network, or the quantized network of the
    hardware target's artifact (in float units)."""
    from neurodelay.deploy.artifact import FILES, artifact_for  # lazy: CLI start-up time
    from neurodelay.exporters import get_exporter  # lazy: CLI start-up time
    from neurodelay.fs import atomic_path  # lazy: CLI start-up time
    from neurodelay.train.loaders import float_network  # lazy: CLI start-up time

    if not out_path:
        raise click.UsageError("--target nir needs --out FILE.nir")
    if variant == "float":
        rep = get_exporter("nir")(float_network(r), out_path,      # atomic write
                                  nir_schema=nir_schema)
        click.echo(json.dumps({k: v for k, v in rep.items()
                               if k not in ("delays_per_layer",)}, indent=2, default=str))
        return
    art = artifact_for(r, options, log=lambda m: click.echo(m, err=True))
    if nir_schema == "1.0.8":
        with atomic_path(Path(out_path)) as tmp:
            shutil.copyfile(art.folder / FILES["nir_quantized"], tmp)
    else:
        get_exporter("nir")(art.qnet, out_path, nir_schema=nir_schema)
    click.echo(f"wrote {out_path}: the quantized network of artifact {art.folder} "
               f"({art.hash}) in float units")


def _print_artifact(r, art) -> None:
    rep = art.report
    tot = rep.resources["totals"]
    click.echo(f"exported {r.path} to {art.folder}")
    click.echo(f"  artifact_hash {art.hash}")
    click.echo(f"  target {rep.target['name']} ({rep.target['source']}), {rep.weight_bits}-bit "
               f"weights, delays up to {rep.max_delay} steps ({rep.delays['clipped']} clipped)")
    click.echo(f"  calibration: {rep.calibration['description']}")
    click.echo(f"  {tot['neurons']} neurons, {tot['synapses']} synapses, "
               f"{tot['synaptic_memory_bytes']:,} bytes of synaptic memory, {tot['cores']} "
               f"core(s)")
    for k, f in sorted(rep.files.items()):
        click.echo(f"  {f}")
    for w in rep.warnings:
        click.echo(f"  warning: {w}")


@main.command()
@click.argument("run", required=False, type=click.Path(file_okay=False))
@click.option("--target", default="loihi2", show_default=True, help=TARGET_HELP)
@click.option("--artifact", "artifact_dir", type=click.Path(file_okay=False),
              help="Verify this artifact folder (any `neurodelay export` output) instead of "
                   "the run's own; RUN defaults to the artifact's source run.")
@click.option("--test-file", type=click.Path(dir_okay=False),
              help="Verify on this SHD-layout file instead of the run's own test split.")
@click.option("--tolerance", type=float, default=0.5, show_default=True,
              callback=checked_float(**TOLERANCE),
              help="Fail (exit 1) when the quantized accuracy is more than this many percentage "
                   "points below the reference model's (a finite number >= 0).")
@click.option("--lava", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also run the first N samples of the exported netx FILE through Lava's "
                   "fixed-point simulation (lava-dl netx.hdf5.Network under Loihi2SimCfg "
                   "fixed_pt, ~1-4 s per sample) and compare every layer's spikes and the "
                   "readout membrane at every step with the bit-accurate simulator "
                   "(mismatches must be 0). A recurrent network runs as the Lava process "
                   "network built from the exported network.lava.h5 FILE instead.")
@deploy_options
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (keys include artifact_hash, pytorch_accuracy, float_accuracy, "
                   "quantized_accuracy, agreement, n, passed, problems; with --lava also "
                   "lava_samples, lava_mismatches, lava_s_per_sample, sim_s_per_sample).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def verify(run, target, artifact_dir, test_file, tolerance, lava, weight_bits, clip_delays,
           calib_samples, calib_seed, calib_file, as_json, no_progress):
    """Prove the exported network is the trained one, on test data.

    Uses the run's deployment artifact for the target (the folder `neurodelay export`
    wrote; built the same way first if there is none) and compares, on the same test
    samples: the PyTorch discrete model, the frozen float network, and the artifact's
    quantized network on the bit-accurate simulator (optionally cross-checked spike for
    spike against Lava running the artifact's netx file). Prints accuracies, agreement,
    synaptic memory, the resource report and the artifact hash; exits 1 on FAIL.
    """
    from neurodelay.deploy.verify import format_verify, verify_run  # lazy: CLI start-up time

    if run is None and artifact_dir is None:
        raise click.UsageError("give a RUN folder or --artifact DIR")
    r = verify_run(run, target, artifact=artifact_dir, test_file=test_file, lava=lava,
                   weight_bits=weight_bits, clip_delays=clip_delays,
                   calib_samples=calib_samples, calib_seed=calib_seed,
                   calib_file=calib_file, tolerance=tolerance,
                   progress=not no_progress, log=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=2, default=str))
    else:
        click.echo(format_verify(r))
    if not r.passed:
        sys.exit(1)


@main.command()
@click.argument("run", type=click.Path(exists=True))
@click.option("--target", default="loihi2", show_default=True, help=TARGET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect(run, target, as_json):
    """Resource report on a target: neurons, synapses, synaptic memory, estimated cores,
    delay range, fan-in/out and every limit violated.

    RUN may be a run folder (its exported artifact for the target if there is one, else
    its float network), an artifact folder, or a saved network file.
    """
    # lazy: CLI start-up time
    from neurodelay.hw.resources import format_resource_report, resource_report
    from neurodelay.train.loaders import float_network  # lazy: CLI start-up time

    path = Path(run)
    head = []
    if path.is_dir() and (path / "deploy.json").exists():
        from neurodelay.deploy.artifact import load_artifact  # lazy: CLI start-up time

        art = load_artifact(path)
        net = art.qnet
        head.append(f"artifact {path}: {art.hash}")
    elif path.is_dir():
        # lazy: CLI start-up time
        from neurodelay.deploy.artifact import DeployOptions, default_folder, load_artifact
        from neurodelay.runs import open_run  # lazy: CLI start-up time

        r = open_run(path)
        head += _run_description(r)
        folder = default_folder(r.path, DeployOptions(target=target))
        if (folder / "deploy.json").exists():
            art = load_artifact(folder)
            net = art.qnet
            head.append(f"exported artifact {folder}: {art.hash}")
        elif r.kind == "finetuned":
            net = r.qnetwork()
        else:
            net = float_network(r)
            head.append(f"float network (not exported for {target} yet: `neurodelay export "
                        f"{path} --target {target}`)")
    else:
        from neurodelay.core.network_io import load_network  # lazy: CLI start-up time

        net = load_network(path)
    rep = resource_report(net, target)
    if as_json:
        click.echo(json.dumps({**rep.to_dict(), "about": head}, indent=2, default=str))
        return
    for line in head:
        click.echo(line)
    click.echo(format_resource_report(rep))


def _run_description(r) -> list[str]:
    """A line or two about where a run's network came from."""
    if r.kind == "imported":
        try:
            from neurodelay.nir import describe_imported  # lazy: CLI start-up time
        except ImportError:
            src = r.config.get("source", {})
            return [f"imported NIR graph {src.get('file')} (dt {src.get('dt')} s, "
                    f"discretization {src.get('discretization')})"]
        return [describe_imported(r.config)]
    if r.kind == "finetuned":
        ft = r.config.get("finetune", {})
        return [f"fine-tuned (hardware-exact) from {r.config.get('parent')} for "
                f"{r.config.get('target', {}).get('name')}: {ft.get('weight_bits')}-bit "
                f"weights, {ft.get('delay_bits')}-bit delays"]
    return [f"trained run ({r.status().describe()})"]
