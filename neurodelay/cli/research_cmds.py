"""`neurodelay ablate`, `report`, `plot` and `sweep-bits`."""
from __future__ import annotations

import click

from neurodelay.cli import train_cmds  # noqa: F401 - registers "train", whose options ablate shares
from neurodelay.cli.common import device_option, log_option, main

_ABLATE_SETS = {"out", "resume", "overwrite", "delays", "sigma", "learn", "seed", "connections",
                "no_progress", "recurrent", "recurrent_delays"}
_EXECUTOR_PARAMS = ("executor", "jobs", "slurm_partition", "slurm_time", "slurm_cpus",
                    "slurm_gpus", "slurm_mem", "slurm_parallel", "slurm_extra", "no_wait")


def executor_options(f):
    """The options of a command that runs many runs: where they run (local or Slurm)."""
    opts = [
        click.option("--executor", type=click.Choice(["local", "slurm"]), default="local",
                     show_default=True,
                     help="local: in this machine's processes (--jobs at a time). slurm: one "
                          "Slurm job per run through submitit (needs sbatch; pip install "
                          "'neurodelay[slurm]'); a job that is preempted or times out is "
                          "requeued and resumes from its checkpoint."),
        click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
                     help="local: runs trained at the same time, each in its own process; "
                          "the CPU threads are split between them (--threads each when "
                          "given). 1: one after the other in this process."),
        click.option("--slurm-partition", help="slurm: the partition (default: the "
                                               "cluster's default)."),
        click.option("--slurm-time", type=click.IntRange(min=1), default=240,
                     show_default=True, help="slurm: time limit of each job in minutes "
                                             "(longer runs are requeued and resume)."),
        click.option("--slurm-cpus", type=click.IntRange(min=1), default=2,
                     show_default=True, help="slurm: CPUs per job (= torch threads unless "
                                             "--threads)."),
        click.option("--slurm-gpus", type=click.IntRange(min=0), default=0,
                     show_default=True, help="slurm: GPUs per job."),
        click.option("--slurm-mem", type=float, help="slurm: memory per job in GB "
                                                     "(default: the cluster's)."),
        click.option("--slurm-parallel", type=click.IntRange(min=1), default=64,
                     show_default=True, help="slurm: jobs of the array running at once."),
        click.option("--slurm-extra", multiple=True, metavar="KEY=VALUE",
                     help="slurm: any other sbatch option, e.g. --slurm-extra qos=high "
                          "--slurm-extra constraint=a100 (KEY alone: a flag). Repeatable."),
        click.option("--no-wait", is_flag=True,
                     help="slurm: submit the jobs and return; `neurodelay report OUT` shows "
                          "their state, re-issuing the command waits for them (or resumes "
                          "what stopped)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _executor(options: dict) -> dict:
    """ExecutorOptions fields from (and removed from) a command's options."""
    from neurodelay.research.executors import parse_extra  # lazy: CLI start-up time

    o = {k: options.pop(k) for k in _EXECUTOR_PARAMS}
    return dict(executor=o["executor"], jobs=o["jobs"], partition=o["slurm_partition"],
                time_min=o["slurm_time"], cpus=o["slurm_cpus"], gpus=o["slurm_gpus"],
                mem_gb=o["slurm_mem"], array_parallelism=o["slurm_parallel"],
                extra=parse_extra(o["slurm_extra"]), wait=not o["no_wait"])


def _echo_failed(failed: list) -> None:
    for r in failed:
        click.echo(f"FAILED {r['run']}: {r.get('error')}\n  log: {r.get('log')}", err=True)


@main.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Ablation folder: runs go to OUT/<model>/seed<k>/, the report to OUT/report.*")
@click.option("--seeds", type=int, default=3, show_default=True,
              help="Seeds 0..N-1 per model, N >= 1 (same seed = same initialisation across "
                   "models, except the widened no-delay model whose shapes differ).")
@click.option("--connections", type=int,
              help="Sparse models: K >= 1 synapses per neuron (fixed random mask). Default: "
                   "dense.")
@click.option("--recurrent", is_flag=True,
              help="The recurrent ablation instead: the feed-forward learned-delay model "
                   "(learned) against recurrent models with learned, fixed random and "
                   "one-step recurrent delays, each narrowed to learned's parameter count "
                   "(both counts printed). --recurrent-max-delay sets their window.")
@click.option("--models", help="A subset of the models, comma-separated (default all "
                                "five, or the four of --recurrent): learned, constant-sigma, "
                                "fixed-random, fixed-weights, no-delays; recurrent, "
                                "recurrent-fixed-random, recurrent-one-step.")
@click.option("--compare-augment", "augment_variants", multiple=True, metavar="SETTING",
              help="Compare augmentation settings: every model is trained once per setting "
                   "given (repeat the option; 'none' = no augmentation; the syntax of "
                   "--augment), with the same seeds, as the variants MODEL+augment(SETTING) "
                   "in the report. Example: --models learned,fixed-random --compare-augment "
                   "none --compare-augment shift.")
@click.option("--no-progress", is_flag=True, help="No progress bar over the runs.")
@executor_options
def ablate(out, seeds, connections, recurrent, models, augment_variants, no_progress,
           **options):
    """Train the paper's five ablation models for N seeds each, then report.

    \b
    Models (Fig. 5 of Hammouamri et al. 2023):
      learned         learned delays, sigma decreasing (the method)
      constant-sigma  learned delays, sigma 0.5 throughout        (--sigma constant)
      fixed-random    fixed random integer delays                 (--delays fixed-random)
      fixed-weights   learned delays, weights frozen              (--learn delays)
      no-delays       no delays, layers widened to equal params   (--delays none)

    \b
    With --recurrent (all with learned feed-forward delays):
      learned                 feed-forward only (the reference count)
      recurrent               + recurrent synapses, learned delays   (--recurrent)
      recurrent-fixed-random  + recurrent synapses, fixed random delays
      recurrent-one-step      + recurrent synapses, all delays 1 step
    The recurrent models' hidden layers are narrowed to learned's parameter count.

    Resumable: finished runs (result.json) are skipped, interrupted ones resumed; a
    changed option is refused (naming it). The other options are those of `neurodelay
    train` and apply to every run; all of them are checked (for every model) before
    anything is written.

    \b
    Where the runs train (every run is an ordinary run folder either way):
      --executor local --jobs 4     4 runs at a time in their own processes
      --executor slurm              one Slurm job per run (OUT/jobs/slurm/ has the logs)
    OUT/jobs.json records which job ran which run; `neurodelay report OUT` shows each
    run's state (pending, running, finished, failed with its log).
    """
    from neurodelay.research import study  # lazy: CLI start-up time

    executor = _executor(options)
    trackers = options.pop("trackers", ())
    if not recurrent and options.get("recurrent_max_delay_ms") is not None:
        raise click.UsageError("--recurrent-max-delay sets the recurrent models of "
                               "`ablate --recurrent`; add --recurrent or omit it")
    models = ([m.strip() for m in models.split(",") if m.strip()] if models
              else list(study.RECURRENT_MODELS) if recurrent else None)
    res = study.run_ablation(out, seeds, connections, progress=not no_progress,
                             log=lambda m: click.echo(m, err=True), executor=executor,
                             trackers=trackers, models=models,
                             augment_variants=list(augment_variants) or None, **options)
    acts = ("trained", "resumed", "done", "skipped", "submitted", "failed")
    done = {a: sum(r["action"] == a for r in res) for a in acts}
    click.echo(f"{len(res)} runs: " + ", ".join(
        f"{n} {'already finished' if a == 'skipped' else a}" for a, n in done.items()
        if n or a in ("trained", "resumed", "skipped")))
    if any(r["test_accuracy"] is not None for r in res):
        rep = study.report(out)
        click.echo(rep["markdown"])
        click.echo("wrote " + ", ".join(str(f) for f in rep["files"]))
    failed = [r for r in res if r["action"] == "failed"]
    if failed:
        _echo_failed(failed)
        raise click.ClickException(
            f"{len(failed)} of {len(res)} runs failed (logs above); the others finished. "
            f"Re-issuing the same command resumes the failed ones")
    if done["submitted"]:
        click.echo(f"submitted; `neurodelay report {out}` shows the state of each run")


ablate.params.extend(p for p in main.commands["train"].params
                     if p.name not in _ABLATE_SETS
                     and p.name not in {q.name for q in ablate.params})


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
def report(folder):
    """Aggregate all finished runs under FOLDER: mean test accuracy +- 95 % CI per model.

    Any folder with result.json + config.json counts as a run; runs are grouped by model
    (delays, sigma, learn) and connectivity. Writes FOLDER/report.md, report.csv, report.png.
    A run whose result.json or config.json is unreadable (corrupted, not JSON) is skipped
    with a note naming the file and why (under "Notes" and on stderr).

    For a study folder (`ablate`, `sweep-bits --finetune`) it also lists every run's
    state: pending, running, finished, or failed with the path of the failing log.
    """
    from neurodelay.errors import ReportError  # lazy: CLI start-up time
    from neurodelay.research import executors, study  # lazy: CLI start-up time

    names = study.study_cells(folder)
    try:
        rep = study.report(folder)
    except ReportError:
        if names is None:
            raise
        click.echo(executors.states_markdown(executors.cell_states(folder, names)))
        return
    for note in rep["notes"]:
        if note.startswith("skipped "):
            click.echo(f"note: {note}", err=True)
    click.echo(rep["markdown"])
    if names is not None:
        click.echo(executors.states_markdown(executors.cell_states(folder, names)))
    click.echo("wrote " + ", ".join(str(f) for f in rep["files"]))


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--sample", type=int, default=0, show_default=True,
              help="Test sample for the spike raster (0 .. test samples - 1).")
@click.option("--synapses", type=int, default=4, show_default=True,
              help="Synapses per layer in the kernel figure (1..16).")
@click.option("--verify", "verify_target", metavar="TARGET", default=None,
              help="Also draw verify.png: the test sample through the PyTorch model and "
                   "through the chip (the bit-accurate simulator on the run's artifact for "
                   "TARGET, e.g. loihi2, built as `export` builds it if missing), spikes "
                   "overlaid: both in black, PyTorch only in blue, chip only in red.")
def plot(run, sample, synapses, verify_target):
    """Figures of a run into RUN/plots/: kernels, delay histograms, curves, spike raster
    (and with --verify, PyTorch against the chip on one sample)."""
    from pathlib import Path  # lazy: CLI start-up time

    from neurodelay.research import plots  # lazy: CLI start-up time
    from neurodelay.runs import open_run  # lazy: CLI start-up time

    # a fine-tuned run has no kernels to draw: with --verify, its verify figure alone
    only_verify = bool(verify_target) and open_run(run).kind == "finetuned"
    paths = [] if only_verify else plots.plot_run(run, sample=sample, synapses=synapses)
    if verify_target:
        paths.append(plots.plot_verify_raster(run, Path(run) / "plots" / "verify.png",
                                              sample=sample, target=verify_target))
    click.echo(f"wrote {len(paths)} figure{'s' if len(paths) != 1 else ''} to "
               f"{paths[0].parent}: "
               + ", ".join(p.name for p in paths))


@main.command("sweep-bits")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--target", default="loihi2", show_default=True,
              help="Hardware target: a name from hw_configs/ or a .toml path. Its max delay "
                   "caps every column (see hw_configs/).")
@click.option("--weight-bits", default="8,6,4,3,2", show_default=True,
              help="Weight mantissa bits to try (comma list or range like 2-8). A width the "
                   "quantizer refuses shows as an error cell.")
@click.option("--delay-bits", default="6,5,4,3", show_default=True,
              help="Delay bits to try; b bits hold delays 0..2**b-1 (never above the "
                   "target's max delay).")
@click.option("--delay-mode", type=click.Choice(["clip", "coarse", "both"]), default="clip",
              show_default=True,
              help="clip: delays above 2**b-1 are clipped to it, shorter ones stay exact (the "
                   "cheaper hardware choice: only the delay field shrinks). coarse: the range "
                   "is kept at a coarser resolution, d -> k*round(d/k) with k = "
                   "ceil(largest delay / (2**b-1)) steps (hardware needs a k-step delay unit). "
                   "both: one table per mode.")
@click.option("--test-file", type=click.Path(dir_okay=False),
              help="Evaluate on this SHD-layout file instead of the run's own test split.")
@click.option("--calib-samples", type=int,
              help="Quantization calibrates its exponents on N >= 1 samples of the run's "
                   "TRAINING split (seeded; default 256, as `neurodelay export` does). Test "
                   "data is never used for calibration.")
@click.option("--finetune", is_flag=True,
              help="Also fine-tune every cell hardware-exactly (`neurodelay finetune`, one "
                   "run per cell in OUT/finetuned/, resumable) and report those cells next "
                   "to the post-training ones (table and heatmap).")
@click.option("--finetune-epochs", type=int, default=10, show_default=True,
              help="Fine-tuning epochs per cell (>= 1).")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (fine-tuning).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output folder (default RUN/sweep).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@device_option
@executor_options
@log_option
def sweep_bits_cmd(run, target, weight_bits, delay_bits, delay_mode, test_file, calib_samples,
                   finetune, finetune_epochs, threads, out_dir, no_progress, device, **options):
    """Accuracy and synaptic memory for every (weight bits, delay bits) combination.

    Each cell: delays reduced to b bits (--delay-mode), quantized with w-bit weights,
    classified on the test set by the bit-accurate simulator. A float row gives the
    unquantized network's accuracy with the same delays. Synaptic memory = sum over layers
    ceil(synapses x (w + b) / 8) bytes, synapses = nonzero weight mantissas after
    quantization. Published anchor: 4-bit weights with 5-bit delays kept 94 % on SHD.

    Writes sweep.csv, sweep.md, sweep.json and sweep.png (accuracy and memory heatmaps)
    to RUN/sweep (or --out) and prints the markdown table. The fine-tuned cells
    (--finetune) are ordinary runs; --executor / --jobs / --slurm-* choose where they
    train (as for `neurodelay ablate`), --log what tracks them.
    """
    from neurodelay.research.sweep import sweep_bits  # lazy: CLI start-up time

    executor = _executor(options)
    r = sweep_bits(run, target, weight_bits, delay_bits, delay_mode, test_file,
                   out_dir=out_dir, calib_samples=calib_samples, progress=not no_progress,
                   finetune=finetune, finetune_epochs=finetune_epochs, threads=threads,
                   log=lambda m: click.echo(m, err=True), device=device,
                   executor=executor, trackers=options.pop("trackers", ()))
    click.echo(r["markdown"])
    click.echo("wrote " + ", ".join(r["files"]))
