"""`neurodelay train`, `eval` and `demo`."""
from __future__ import annotations

import json

import click
from click.core import ParameterSource

from neurodelay.cli.common import AUGMENT_HELP, device_option, main, tf32_option, tracked_command
from neurodelay.cli.common import int_list as _int_list


@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Run directory to create (config.json, metrics.jsonl, checkpoints, result.json).")
@click.option("--resume", is_flag=True,
              help="Continue the interrupted run in --out from its last checkpoint (same result as "
                   "an uninterrupted run), exactly as configured in its config.json: an option "
                   "given with it that differs from the run's setting is refused (--threads, "
                   "--no-progress are free).")
@click.option("--preset", type=click.Choice(["shd", "ssc", "tiny"]),
              help="Paper settings for SHD (2x256, 250 ms delays, 150 epochs), SSC (2x512, 310 ms, "
                   "60 epochs) or the tiny embedded task. Default: tiny without data options, "
                   "else from --dataset (shd). Explicit options below override it.")
@click.option("--dataset", type=click.Choice(["shd", "ssc"]),
              help="Look for the official file names (shd_train.h5/shd_test.h5; ssc_train/valid/"
                   "test.h5) in --data-dir.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder with the official files.")
@click.option("--train-file", type=click.Path(dir_okay=False), help="Any SHD-layout HDF5 training file.")
@click.option("--valid-file", type=click.Path(dir_okay=False), help="Validation file (SSC has one).")
@click.option("--test-file", type=click.Path(dir_okay=False), help="Test file.")
@click.option("--test-speakers", callback=_int_list,
              help="Hold these speaker ids (e.g. '20-23') out of the training file as the test set.")
@click.option("--valid-speakers", callback=_int_list,
              help="Hold these speaker ids out of the training file as the validation set. Without "
                   "any validation split the test set stands in (as the paper does for SHD).")
@click.option("--dt", "dt_ms", type=float, default=10.0, show_default=True,
              help="Time bin in ms (> 0).")
@click.option("--channel-bin", type=int, default=5, show_default=True,
              help="Sum groups of this many of the 700 cochlea channels (700 -> 140); must "
                   "divide 700.")
@click.option("--max-time", type=float, help="Drop spikes later than this many seconds (> 0) "
                                             "after the first spike (default: keep all). "
                                             "Caps the memory long samples need.")
@click.option("--hidden", callback=_int_list, help="Hidden layer sizes (each >= 1), e.g. "
                                                   "'256,256'.")
@click.option("--max-delay", "max_delay_ms", type=float,
              help="Delay window in ms (window = max-delay/dt steps, at least 2; delays "
                   "0..window-1).")
@click.option("--tau", "tau_ms", type=float, help="LIF membrane time constant in ms (> --dt).")
@click.option("--dropout", type=float, help="Dropout after each hidden layer, in [0, 1) (mask "
                                            "shared over time).")
@click.option("--threshold", type=float, help="LIF firing threshold (> 0).")
@click.option("--epochs", type=int, help="Training epochs (>= 1).")
@click.option("--batch-size", type=int, help="Training batch size (>= 1).")
@click.option("--delays", type=click.Choice(["learned", "fixed-random", "none"]), default="learned",
              show_default=True,
              help="Ablation: learned DCLS delays, fixed random integer delays, or no delays (hidden "
                   "layers widened to the same parameter count; both counts are printed).")
@click.option("--recurrent", is_flag=True,
              help="Recurrent hidden layers: every hidden neuron also receives synapses from "
                   "all neurons of its own layer, each with its own weight and delay (1 step "
                   "or more; learned like the feed-forward delays, no BatchNorm on that "
                   "current). The parameter count is printed.")
@click.option("--recurrent-delays", type=click.Choice(["learned", "fixed-random", "one-step"]),
              help="With --recurrent: learned recurrent delays (DCLS, the default), fixed random "
                   "integer delays 1..window, or one-step (every recurrent delay 1 step: a "
                   "plain recurrent SNN).")
@click.option("--recurrent-max-delay", "recurrent_max_delay_ms", type=float,
              help="With --recurrent: recurrent delay window in ms (window = value/dt steps, "
                   "delays 1..window; at least 2 steps for learned delays). Default: "
                   "--max-delay.")
@click.option("--sigma", type=click.Choice(["decreasing", "constant"]), default="decreasing",
              show_default=True,
              help="Gaussian width schedule: Td/2 -> 0.5 over the first quarter of the epochs, or "
                   "0.5 throughout.")
@click.option("--learn", type=click.Choice(["weights+delays", "weights", "delays"]),
              default="weights+delays", show_default=True, help="Which synaptic parameters train.")
@click.option("--connections", type=int,
              help="Sparse model: a fixed random mask of K >= 1 synapses per neuron (re-applied "
                   "after every batch). Default: fully connected.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Fixes initialisation, data order and dropout (0 .. 2**32-1).")
@click.option("--lr", type=float, default=1e-3, show_default=True,
              help="Initial weight learning rate (> 0).")
@click.option("--max-lr", type=float, default=5e-3, show_default=True,
              help="OneCycle peak (weights, > 0).")
@click.option("--position-lr-factor", type=float, default=100.0, show_default=True,
              help="Delay-position learning rate = lr x this (> 0; cosine annealed).")
@click.option("--augment", metavar="SETTING", help=AUGMENT_HELP)
@click.option("--threads", type=int,
              help="torch CPU threads for this command (>= 1; default: torch's choice).")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Cache for binned data and the embedded task (default $NEURODELAY_CACHE or "
                   "~/.cache/neurodelay).")
@click.option("--reference-kernels", is_flag=True,
              help="Train through dcls' Dcls1d and spikingjelly's LIFNode themselves (the "
                   "paper's formulation, 5-20x slower) instead of neurodelay's equivalent "
                   "fast kernels; for comparisons.")
@click.option("--overwrite", is_flag=True,
              help="Replace the run files (config.json, metrics, checkpoints, results, deploy/) "
                   "that an earlier run left in --out. Without it a non-empty --out is refused.")
@click.option("--no-progress", is_flag=True, help="No progress bars (per-epoch lines still print).")
@device_option
@tf32_option
@tracked_command
def train(out, resume, overwrite, no_progress, threads, device, tf32, **options):
    """Train a delay SNN with DCLS and evaluate its DISCRETE model (integer delays).

    Prints one line per epoch (loss, train accuracy, discrete validation accuracy, sigma) and
    ends with the discrete test accuracy of the best-on-validation model.

    Every option is checked before anything is written. Memory guard: data or a model whose
    estimated memory exceeds 8 GiB is refused with the estimate and how to cap it (e.g.
    --max-time, a smaller --max-delay or --batch-size); the environment variable
    NEURODELAY_MAX_GIB sets another limit in GiB.

    \b
    Devices and precision: --device auto (the default) trains on CUDA
    when torch sees a GPU. float32 with TF32 off unless --tf32, so GPU
    and CPU agree to float32 rounding (no bf16: not measured to keep
    accuracy). A seed fixes a run on either; CUDA runs use deterministic
    algorithms (CUBLAS_WORKSPACE_CONFIG=:4096:8 is set when absent).
    Several GPUs: torchrun --nproc-per-node N -m neurodelay train ...
    (NCCL, one GPU per process; --batch-size stays the global batch).
    """
    from neurodelay import api  # lazy: CLI start-up time

    if resume:
        # only what this command line sets: defaults must not read as changed options
        # (api.check_resume_options refuses a given option that differs from the run's)
        ctx = click.get_current_context()
        options = {k: v for k, v in options.items()
                   if ctx.get_parameter_source(k) not in (None, ParameterSource.DEFAULT)}
    res = api.train_run(out, resume=resume, overwrite=overwrite, progress=not no_progress,
                        threads=threads, log=lambda m: click.echo(m, err=True),
                        device=device, tf32=tf32, **options)
    if res.get("finished") and res.get("rank", 0) == 0:
        click.echo(f"discrete test accuracy: {res['test_accuracy']:.4f} "
                   f"(n={res['n_test']}, best epoch {res['best_epoch']})  -> {out}/result.json")


@main.command("eval")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--test-file", type=click.Path(dir_okay=False),
              help="Evaluate on this SHD-layout file instead of the run's own test split.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"accuracy": ..., "n": ..., "finished": ...}.')
@click.option("--batch-size", type=int, default=256, show_default=True,
              help="Samples evaluated at once (>= 1).")
@device_option
def eval_cmd(run, test_file, as_json, batch_size, device):
    """Accuracy of a run's discrete model (delays rounded, one tap per synapse).

    A test file whose classes differ from the model's is refused. Memory guard: data whose
    estimated memory exceeds 8 GiB (e.g. a sample spanning hours) is refused before it is
    binned; NEURODELAY_MAX_GIB sets another limit in GiB.
    """
    from neurodelay import api  # lazy: CLI start-up time

    res = api.evaluate_run(run, test_file=test_file, batch_size=batch_size,
                           device=device).to_dict()
    for note in res["notes"]:
        click.echo(f"note: {note}", err=True)
    if not res["finished"]:
        click.echo(f"warning: {run} is {res['status']}; this is the accuracy of its best "
                   f"epoch so far, not of a finished run (continue it with "
                   f"`neurodelay train --resume --out {run}`)", err=True)
    if as_json:
        click.echo(json.dumps({"accuracy": res["accuracy"], "n": res["n"],
                               "finished": res["finished"]}))
    else:
        what = res["model"]
        click.echo(f"accuracy {res['accuracy']:.4f} on {res['n']} samples ({res['test']}; "
                   f"{what})" + ("" if res["finished"] else f" [{res['status']}]"))


# ------------------------------------------------------------------ research workflow


@main.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Run directory (reused: a finished run is not retrained).")
@click.option("--lava", type=int, default=3, show_default=True,
              help="Samples cross-checked against Lava fixed_pt (>= 0).")
@click.option("--threads", type=int, default=2, show_default=True,
              help="torch CPU threads (>= 1).")
@click.option("--cache-dir", type=click.Path(file_okay=False))
@device_option
def demo(out, lava, threads, cache_dir, device):
    """The main job on the embedded task: train -> export (loihi2 + NIR) -> verify with Lava."""
    from pathlib import Path  # lazy: CLI start-up time

    from neurodelay import api  # lazy: CLI start-up time
    from neurodelay.options import check_int, check_threads  # lazy: CLI start-up time

    check_int(lava, "--lava", "the number of samples cross-checked with Lava", lo=0)
    check_threads(threads)
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    if not (Path(out) / "result.json").exists():
        resume = (Path(out) / "checkpoint.pt").exists()
        res = api.train_run(out, resume=resume, threads=threads, cache_dir=cache_dir,
                            log=log, device=device)
        click.echo(f"[1/3] trained: discrete test accuracy {res['test_accuracy']:.4f} "
                   f"(n={res['n_test']})")
    else:
        click.echo(f"[1/3] {out} already trained (result.json present)")
    from neurodelay.cli.deploy_cmds import export, verify  # lazy: CLI start-up time

    ctx = click.get_current_context()
    click.echo("[2/3] export: one deployment artifact (quantized once, calibrated on training "
               "data): netx file, quantized network, NIR graphs, deploy report")
    common = dict(weight_bits=None, clip_delays=False, calib_samples=256, calib_seed=0,
                  calib_file=None)
    ctx.invoke(export, run=out, target="loihi2", out_path=None, variant="float",
               hw_target="loihi2", nir_schema="1.0.8", as_json=False, **common)
    click.echo("[3/3] verify the exported artifact (its netx file through Lava)")
    ctx.invoke(verify, run=out, target="loihi2", artifact_dir=None, test_file=None,
               tolerance=0.5, lava=lava, as_json=False, no_progress=False, **common)
