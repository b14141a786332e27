"""`neurodelay import-nir` and `nir-run`: NIR graphs from other toolchains, delays honoured."""
from __future__ import annotations

import json
import math

import click

from neurodelay.cli.common import main

_DISC_HELP = ("How continuous NIR neurons become steps of --dt: euler (forward Euler, "
              "v += dt/tau*(v_leak - v + r*I); neurodelay's exporter writes this) or exp "
              "(decay exp(-dt/tau), input gain r*(1 - exp(-dt/tau))).")
_DT_HELP = ("Time step in seconds that one graph evaluation stands for (e.g. 0.01). Default: "
            "the graph's metadata 'dt' (neurodelay's files state it); required otherwise.")


def _positive_float(ctx, param, value):
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a positive number (finite), got {value}")
    return value


def _positive_int(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter(f"must be a positive integer, got {value}")
    return value


@main.command("import-nir")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder to create (config.json of kind 'imported' + network.h5).")
@click.option("--dt", type=float, callback=_positive_float, help=_DT_HELP)
@click.option("--discretization", type=click.Choice(["euler", "exp"]), default="euler",
              show_default=True, help=_DISC_HELP)
@click.option("--n-channels", type=int, callback=_positive_int,
              help="Raw channels of the data files the network reads (default: the graph's "
                   "metadata; else 700, an SHD layout, when the input count divides 700; else "
                   "the input count).")
@click.option("--channel-bin", type=int, callback=_positive_int,
              help="Raw channels summed per network input (default: n_channels / inputs).")
@click.option("--max-time", type=float, callback=_positive_float,
              help="Drop spikes later than this many seconds when binning data for this run.")
@click.option("--max-delay-steps", type=int, default=10_000, show_default=True,
              callback=_positive_int,
              help="Refuse delays longer than this many steps of --dt (a wrong unit or dt "
                   "usually shows up here).")
@click.option("--overwrite", is_flag=True,
              help="Replace the run files an earlier run left in --out (otherwise a non-empty "
                   "--out is refused).")
@click.option("--json", "as_json", is_flag=True, help="Print the run's config.json.")
def import_nir(model, out, dt, discretization, n_channels, channel_bin, max_time,
               max_delay_steps, overwrite, as_json):
    """Import a NIR graph as a neurodelay run (delays kept exactly).

    \b
    Supported: Input/Output, Affine, Linear, Scale, Delay (per channel, before or after a
    Linear, or neurodelay's per-delay branches), LIF / IF / CubaLIF hidden layers, an
    LI / I / CubaLI readout, a Threshold right after a spiking node; edges sum.
    Recurrent layers: a cycle from a hidden neuron back to itself (neuron -> [Delay] ->
    Linear/Affine -> the same neuron; snnTorch's RLeaky export has this shape). One graph
    evaluation is one step: a cycle without a Delay reads the previous step's output
    (recurrent delay 1 step), a Delay of k steps on it makes k + 1. Cycles through two
    layers or through no neuron are refused. The run then works with inspect, export,
    verify --test-file F and finetune (a recurrent run: inspect and export --target nir;
    hardware targets, and so verify and finetune, take no recurrent network yet).
    """
    from neurodelay.nir import import_to_run  # lazy: CLI start-up time

    res = import_to_run(model, out, dt, discretization, overwrite=overwrite,
                        max_delay_steps=max_delay_steps, n_channels=n_channels,
                        channel_bin=channel_bin, max_time=max_time,
                        log=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(res["config"], indent=2))
    else:
        click.echo(res["summary"])
        click.echo(res["network"])
        click.echo(f"-> {out}/config.json, {out}/network.h5")


@main.command("nir-run")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--dt", type=float, callback=_positive_float, help=_DT_HELP)
@click.option("--discretization", type=click.Choice(["euler", "exp"]), default="euler",
              show_default=True, help=_DISC_HELP)
@click.option("--input", "input_file", type=click.Path(exists=True, dir_okay=False),
              help="A .npy array of input values per step: (time, inputs) for one sample or "
                   "(batch, time, inputs).")
@click.option("--test-file", type=click.Path(dir_okay=False),
              help="An SHD-layout HDF5 file: binned with --dt, every sample run, accuracy "
                   "printed.")
@click.option("--n-channels", type=int, callback=_positive_int,
              help="--test-file: raw channels (default as import-nir).")
@click.option("--channel-bin", type=int, callback=_positive_int,
              help="--test-file: raw channels summed per input (default n_channels / inputs).")
@click.option("--max-time", type=float, callback=_positive_float,
              help="--test-file: drop spikes later than this many seconds.")
@click.option("--batch-size", type=int, default=256, show_default=True,
              callback=_positive_int)
@click.option("--max-delay-steps", type=int, default=10_000, show_default=True,
              callback=_positive_int, help="Refuse delays longer than this many steps.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Cache for binned data (default $NEURODELAY_CACHE or ~/.cache/neurodelay).")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: with --input {predictions, scores, class_names, ...}; with "
                   "--test-file {accuracy, n, predictions, labels, ...}.")
def nir_run(model, dt, discretization, input_file, test_file, n_channels, channel_bin,
            max_time, batch_size, max_delay_steps, cache_dir, as_json):
    """Run a NIR graph directly from its nodes (reference executor) and print predictions.

    Readout: score_c = sum_t softmax_c(output[t]), prediction = argmax. Independent of the
    importer: it steps every NIR node itself, so it also runs graphs import-nir refuses
    (a Threshold on a membrane, a spiking output, a cycle through two layers). Cycles:
    one graph evaluation per step; an edge leaving a neuron inside a cycle carries its
    output of the previous step, so a cycle without a Delay reads the previous step's
    output. A cycle through no neuron node is refused.
    """
    from neurodelay.errors import OptionError  # lazy: CLI start-up time
    from neurodelay.nir import execute, run_test_file  # lazy: CLI start-up time
    from neurodelay.nir.importer import graph_class_names  # lazy: CLI start-up time

    if (input_file is None) == (test_file is None):
        raise OptionError("give exactly one of --input X.npy or --test-file F")
    if input_file is not None:
        import numpy as np  # lazy: CLI start-up time

        from neurodelay.nir import read_graph  # lazy: CLI start-up time

        try:
            x = np.load(input_file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:     # EOFError: an empty file
            raise OptionError(f"{input_file}: not a readable .npy array ({e}); save the input "
                              f"with numpy.save") from None
        graph = read_graph(model)
        res = execute(graph, x, dt, discretization, batch_size=batch_size,
                      max_delay_steps=max_delay_steps)
        names = graph_class_names(graph, res.scores.shape[1], [])
        out = {"predictions": res.predictions.tolist(),
               "predicted_classes": [names[i] for i in res.predictions],
               "scores": res.scores.tolist(), "class_names": names,
               "n": int(len(res.predictions)), "steps": int(res.output.shape[1]),
               "discretization": discretization}
        if as_json:
            click.echo(json.dumps(out))
        else:
            for i, (p, s) in enumerate(zip(out["predicted_classes"], res.scores)):
                click.echo(f"sample {i}: {p} (score {s.max():.4g} of {s.sum():.4g})")
        return
    out = run_test_file(model, test_file, dt, discretization, channel_bin=channel_bin,
                        n_channels=n_channels, max_time=max_time, batch_size=batch_size,
                        cache_dir=cache_dir, max_delay_steps=max_delay_steps)
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"accuracy {out['accuracy']:.4f} on {out['n']} samples of {test_file} "
                   f"(dt {out['dt'] * 1000:g} ms, {out['discretization']}, "
                   f"{out['n_channels']} channels / {out['channel_bin']})")
