"""`neurodelay verify`, `inspect` and `export`."""
from __future__ import annotations

import json
import sys

import click

from neurodelay.cli.common import main


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--target", default="loihi2", show_default=True,
              help="Hardware target: a name from hw_configs/ (loihi2, loihi1, nodelay) or a "
                   ".toml path.")
@click.option("--test-file", type=click.Path(dir_okay=False),
              help="Verify on this SHD-layout file instead of the run's own test split.")
@click.option("--tolerance", type=float, default=0.5, show_default=True,
              help="Fail (exit 1) when the quantized accuracy is more than this many percentage "
                   "points below the PyTorch discrete model's.")
@click.option("--lava", type=int, default=0, show_default=True,
              help="Also run the first N samples through Lava's own fixed-point simulation "
                   "(Loihi2SimCfg fixed_pt, ~1-4 s per sample) and compare every layer's "
                   "spikes and the readout membrane at every step with the bit-accurate "
                   "simulator (mismatches must be 0).")
@click.option("--weight-bits", type=int, default=8, show_default=True,
              help="Weight mantissa bits for quantization.")
@click.option("--clip-delays", is_flag=True,
              help="Clip delays above the target's maximum instead of refusing (the accuracy "
                   "cost is reported).")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (keys include pytorch_accuracy, float_accuracy, "
                   "quantized_accuracy, agreement, n; with --lava also lava_samples, "
                   "lava_mismatches, lava_s_per_sample, sim_s_per_sample).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def verify(run, target, test_file, tolerance, lava, weight_bits, clip_delays, as_json,
           no_progress):
    """Prove the deployed network equals the trained one.

    Compares, on the same test samples: the PyTorch discrete model, the frozen float
    network, and the quantized network on the bit-accurate simulator of the target
    (optionally cross-checked spike-for-spike against Lava). Prints accuracies, per-sample
    agreement, synaptic memory and the resource report.
    """
    from neurodelay.deploy.verify import format_verify, verify_run

    r = verify_run(run, target, test_file=test_file, lava=lava, weight_bits=weight_bits,
                   clip_delays=clip_delays, progress=not no_progress,
                   log=lambda m: click.echo(m, err=True))
    drop = (r["pytorch_accuracy"] - r["quantized_accuracy"]) * 100
    ok = drop <= tolerance and r.get("lava_mismatches", 0) == 0
    r["tolerance_pp"], r["accuracy_drop_pp"], r["passed"] = tolerance, drop, ok
    if as_json:
        click.echo(json.dumps(r, indent=2, default=str))
    else:
        click.echo(format_verify(r))
        click.echo(("PASS" if ok else "FAIL") + f": quantized accuracy is {drop:+.2f} pp below "
                   f"PyTorch (tolerance {tolerance} pp)"
                   + (f", Lava mismatches {r['lava_mismatches']}" if "lava_mismatches" in r else ""))
    if not ok:
        sys.exit(1)


@main.command()
@click.argument("run", type=click.Path(exists=True))
@click.option("--target", default="loihi2", show_default=True, help="Hardware target.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect(run, target, as_json):
    """Resource report of a run's frozen network (or a saved network file) on a target:
    neurons, synapses, synaptic memory, estimated cores, delay range, fan-in/out and every
    limit violated."""
    from pathlib import Path

    from neurodelay.hw.config import format_resource_report, resource_report

    if Path(run).is_dir():
        from neurodelay.deploy.freeze import freeze_run
        net = freeze_run(run)
    else:
        from neurodelay.deploy.network import load_network
        net = load_network(run)
    rep = resource_report(net, target)
    click.echo(json.dumps(rep, indent=2, default=str) if as_json else format_resource_report(rep))


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--target", type=click.Choice(["nir", "loihi2"]), required=True,
              help="nir: NIR graph with exact per-synapse delays (Delay -> Linear branches per "
                   "distinct delay); loihi2: lava-dl netx HDF5 + the quantized network.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="File to write (atomically).")
@click.option("--variant", type=click.Choice(["float", "quantized"]),
              help="NIR only: the trained float network (default) or the float equivalent of "
                   "the quantized Loihi 2 network.")
@click.option("--clip-delays", is_flag=True,
              help="loihi2: clip delays above the target's maximum instead of refusing.")
@click.option("--weight-bits", type=int, default=8, show_default=True)
def export(run, target, out_path, variant, clip_delays, weight_bits):
    """Export a trained run for other toolchains or hardware."""
    from neurodelay.exporters import get_exporter
    from neurodelay.deploy.freeze import freeze_run
    from neurodelay.train.trainer import run_test_data
    from neurodelay.data import pad_batch

    from pathlib import Path
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    net = freeze_run(run)
    ds = run_test_data(run)
    calib = (pad_batch(ds.samples[:256], pad_to=ds.max_steps), ds.labels[:256])
    if target == "nir":
        rep = get_exporter("nir")(net, out_path, variant=variant or "float",
                                  data=calib if variant == "quantized" else None,
                                  weight_bits=weight_bits)
    else:
        rep = get_exporter("loihi2")(net, out_path, data=calib[0], clip_delays=clip_delays,
                                     weight_bits=weight_bits)
    shown = {k: v for k, v in rep.items() if k != "readme" and isinstance(
        v, (str, int, float, bool, list, dict, type(None)))}
    if "delays_per_layer" in shown:  # the full lists are long: show how many per layer
        shown["distinct_delays_per_layer"] = [len(d) for d in shown.pop("delays_per_layer")]
    click.echo(json.dumps(shown, indent=2, default=str))
    if rep.get("readme"):
        click.echo(rep["readme"], err=True)
