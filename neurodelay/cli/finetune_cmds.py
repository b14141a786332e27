"""`neurodelay finetune`: hardware-exact fine-tuning of a trained run."""
from __future__ import annotations

import click

from neurodelay.cli.common import AUGMENT_HELP, checked_float, device_option, main, tracked_command


@main.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="The fine-tuned run folder to create (a normal run: eval, export, verify "
                   "work on it).")
@click.option("--target", default="loihi2", show_default=True,
              help="Hardware target (name or .toml path) whose integer arithmetic the "
                   "forward pass computes.")
@click.option("--weight-bits", type=click.IntRange(min=2),
              help="Weight precision (default: the target's; 2 = ternary).")
@click.option("--delay-bits", type=click.IntRange(1, 16),
              help="Delay bits (default: the target's). b bits hold delays 0..2**b-1.")
@click.option("--delay-mode", type=click.Choice(["auto", "clip", "coarse"]), default="auto",
              show_default=True,
              help="How delays are reduced to --delay-bits: clip long delays, keep the range "
                   "on a coarser k-step grid, or auto: whichever is better on validation "
                   "after post-training quantization (reported).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True,
              callback=checked_float("the learning rate", lo=0.0, lo_open=True),
              help="Adam learning rate of the latent float weights (cosine annealed; > 0).")
@click.option("--prune", type=float, default=0.0, show_default=True,
              callback=checked_float("the fraction of synapses removed by magnitude",
                                     lo=0.0, hi=1.0, hi_open=True),
              help="Fraction of each layer's synapses removed by magnitude during "
                   "fine-tuning (ramped over the first half of the epochs); trades accuracy "
                   "for synaptic memory and cores (in [0, 1)).")
@click.option("--calib-samples", type=click.IntRange(min=1), default=256, show_default=True,
              help="Training samples that calibrate the starting quantization.")
@click.option("--train-file", type=click.Path(dir_okay=False),
              help="Training data for a run without data of its own (an imported NIR "
                   "graph): an SHD-layout file of its task; 10 % of it (seeded) validates.")
@click.option("--augment", metavar="SETTING", default="", help=AUGMENT_HELP + " Fine-tuning "
              "overfits fast (100 % train accuracy within a few epochs): augmenting helps.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads.")
@click.option("--resume", is_flag=True, help="Continue an interrupted fine-tuning in --out.")
@click.option("--overwrite", is_flag=True, help="Replace the run files already in --out.")
@click.option("--no-progress", is_flag=True)
@device_option
@tracked_command
def finetune(run, out, target, weight_bits, delay_bits, delay_mode, epochs, batch_size, lr,
             prune, calib_samples, train_file, augment, seed, threads, resume, overwrite,
             no_progress, device):
    """Train the network the chip runs: PyTorch computes the target's integer arithmetic.

    Starts from a trained RUN, reduces its delays to --delay-bits, quantizes it once
    (calibrated on training data) to --weight-bits, then trains a model whose forward pass
    IS the bit-accurate integer simulation (integer weights with Lava's truncation,
    decays rounding toward zero, strict thresholds, 24-bit state, biases from step 0, one
    step of latency per layer), with straight-through gradients. The best epoch on
    validation data (never test data) is kept. The result is a run whose `eval` is the
    chip's accuracy, whose `export` needs no re-quantization, and whose `verify` shows
    PyTorch == bit-accurate simulator exactly. It computes in float64 on every device
    (exact integers; TF32 does not apply), so --device cuda gives the same integers.
    """
    from neurodelay.train.finetune import FinetuneConfig  # lazy: CLI start-up time
    from neurodelay.train.finetune import finetune as run_finetune  # lazy: CLI start-up time

    fc = FinetuneConfig(target=target, weight_bits=weight_bits, delay_bits=delay_bits,
                        delay_mode=delay_mode, epochs=epochs, batch_size=batch_size, lr=lr,
                        prune=prune, calib_samples=calib_samples, seed=seed,
                        train_file=train_file, augment=augment)
    res = run_finetune(run, out, fc, resume=resume, overwrite=overwrite,
                       progress=not no_progress, threads=threads,
                       log=lambda m: click.echo(m, err=True), device=device)
    test = (f"hardware-exact test accuracy {res['test_accuracy']:.4f} (n={res['n_test']}, "
            if res["test_accuracy"] is not None else "no test split of its own (use "
            f"`neurodelay eval {out} --test-file F`) (")
    click.echo(f"{test}best epoch {res['best_epoch']}; post-training validation "
               f"{res['post_training_valid_accuracy']:.4f} -> {res['best_valid_accuracy']:.4f})"
               f"; {res['synaptic_memory_bytes']:,} bytes of synaptic memory  -> "
               f"{out}/result.json")
