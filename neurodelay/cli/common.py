"""What every command shares: the `main` group, error handling, option parsing.

Error handling lives in :class:`NeurodelayGroup`: any :class:`~neurodelay.errors.NeurodelayError`
raised by a command becomes ``Error: <message>`` on stderr and exit status 1 (never a
traceback). An exception that is not one of ours is a bug: it is reported in one line
with exit status 70 and the hint to set ``NEURODELAY_DEBUG=1`` for the traceback.
"""
from __future__ import annotations

import os

import click

from neurodelay.errors import NeurodelayError, OptionError

EXIT_INTERNAL = 70                     # sysexits EX_SOFTWARE: a bug, not bad input


def error_message(exc: BaseException) -> str:
    """One paragraph for a user: the message of our errors, the type + message of others."""
    if isinstance(exc, NeurodelayError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


class NeurodelayGroup(click.Group):
    """click group that turns errors into messages (see the module docstring)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException,
                KeyboardInterrupt, SystemExit):
            raise
        except NeurodelayError as exc:
            raise click.ClickException(error_message(exc)) from None
        except OSError as exc:           # a file we could not read or write
            raise click.ClickException(error_message(exc)) from None
        except Exception as exc:  # noqa: BLE001 - last resort: a bug, never a traceback
            if os.environ.get("NEURODELAY_DEBUG"):
                raise
            click.echo(f"Error: internal error (a bug in neurodelay; please report it): "
                       f"{type(exc).__name__}: {exc}. Set NEURODELAY_DEBUG=1 to see the "
                       f"traceback.", err=True)
            ctx.exit(EXIT_INTERNAL)


def fail(exc: Exception):
    """Raise a click error for ``exc`` (commands that catch an error themselves)."""
    raise click.ClickException(error_message(exc))


def _option_name(param) -> str:
    return param.opts[0] if param is not None and param.opts else "the option"


def int_list(ctx, param, value):
    """click callback: '20,21' or '20-23' -> [20, 21, 22, 23].

    An empty item ('16,,16', a leading or trailing comma) and a reversed range ('5-2')
    are refused (OptionError naming the option and the item): they are typos, and
    dropping them silently would train or test on something else than was asked.
    """
    if value is None or value == "":
        return None
    option = _option_name(param)
    out = []
    items = str(value).split(",")
    for i, part in enumerate(items, 1):
        part = part.strip()
        if not part:
            raise OptionError(
                f"{option} {value!r}: item {i} of {len(items)} is empty (a doubled, leading "
                f"or trailing comma); give integers separated by single commas, like "
                f"'20,21', or ranges like '20-23'")
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
            else:
                lo = hi = int(part)
        except ValueError:
            raise click.BadParameter(f"expected integers like '20,21' or '20-23', got {value!r}")
        if hi < lo:
            raise OptionError(
                f"{option} {value!r}: the range {part!r} is empty ({lo} > {hi}); ranges go "
                f"from low to high: write '{hi}-{lo}'")
        out.extend(range(lo, hi + 1))
    return out


def checked_float(what: str, **bounds):
    """click callback (for ``type=float`` options): the value through
    :func:`neurodelay.options.check_float` -- a finite number within ``bounds`` (``lo``,
    ``hi``, ``lo_open``, ``hi_open``, ``unit``, ``hint``) -- else an OptionError naming the
    option (exit status 1). ``click.FloatRange`` lets ``nan`` (and ``inf`` where there is
    no upper bound) through; this does not. ``None`` (option not given) passes."""
    from neurodelay.options import check_float  # lazy: CLI start-up time

    def callback(ctx, param, value):
        if value is None:
            return None
        return check_float(value, _option_name(param), what, **bounds)

    return callback


@click.group(cls=NeurodelayGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="neurodelay")
def main():
    """Train spiking networks with learned per-synapse delays (DCLS) and deploy them.

    \b
    Typical flow:
      neurodelay train --out runs/a              # embedded task, under a minute on 2 CPU cores
      neurodelay eval runs/a                     # discrete-model test accuracy
      neurodelay export runs/a --target loihi2   # one artifact: netx + qnet + NIR + report
      neurodelay verify runs/a --target loihi2 --lava 5   # verifies exactly that artifact
      neurodelay finetune runs/a --weight-bits 4 --delay-bits 5 --out runs/a4
      neurodelay import-nir model.nir --dt 0.001 --out runs/imp   # NIR from any trainer
    Errors are one-paragraph messages with exit status 1; NEURODELAY_DEBUG=1 shows the
    traceback of an internal error (exit status 70). Large tensor buffers are kept in the
    heap for reuse (glibc; NEURODELAY_MALLOC=default keeps the C library's settings).
    """
    from neurodelay.alloc import tune_allocator  # lazy: CLI start-up time

    tune_allocator()
    _terminate_cleanly()


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _terminate_cleanly() -> None:
    """SIGTERM (``kill``, a batch system's time limit) ends the command the way Ctrl-C
    does: by an exception, so every atomic write and artifact build removes its temporary
    files and a run being replaced with --overwrite is put back. Python's default would
    end the process at once and leave them behind."""
    import signal  # lazy: CLI start-up time
    import threading  # lazy: CLI start-up time

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


# the --augment option of train, finetune and ablate (neurodelay.train.augment)
AUGMENT_HELP = ("Augment the training batches (never validation or test), fresh every "
                "epoch, fixed by --seed: a comma-separated list of transforms applied in "
                "order, each with optional key=value parameters: mask (p=0.65, time="
                "window/3, channels=inputs/5: zero a random run of steps and of channels), "
                "cutmix (p=0.5: a span of the next sample, mixed labels), noise (sigma=0.2: "
                "add |round(N(0, sigma))| counts), shift (k=2, p=1: all channels moved by "
                "a random -k..k), blend (p=0.5: mix with a sample of the same class). "
                "Presets: 'reference' = mask,cutmix (the paper code's block), 'none'. "
                "Example: --augment shift:k=3,mask:p=0.5,cutmix.")


DEVICE_HELP = ("Where PyTorch runs: auto (CUDA when torch sees a GPU, else the CPU), cpu, "
               "cuda (under torchrun: one GPU per process, cuda:LOCAL_RANK) or cuda:N. "
               "Not a setting of the run: checkpoints hold CPU tensors, so a run trained "
               "on a GPU resumes, evaluates and exports on a CPU-only machine and vice "
               "versa. Precision: float32 on every device, TF32 off (see --tf32), so CUDA "
               "and CPU agree to float32 rounding; no bf16/fp16.")
TF32_HELP = ("Allow TF32 tensor-core matmuls and convolutions on CUDA (NVIDIA Ampere and "
             "later; 10-bit mantissa): faster, but results then differ from the CPU's by "
             "more than float32 rounding. Default off. No effect on the CPU.")


def device_option(f):
    """``--device`` (see DEVICE_HELP); checked by the library call it is passed to,
    before anything is written (:func:`neurodelay.devices.resolve_device`)."""
    return click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)(f)


def tf32_option(f):
    return click.option("--tf32", is_flag=True, help=TF32_HELP)(f)


# ----------------------------------------------------------------------------- tracking
TRACKER_NAMES = ("tensorboard", "wandb")
LOG_HELP = ("Also log every metrics.jsonl record to TensorBoard (event files in "
            "RUN/tensorboard/, the config as hparams, the run's figures) or W&B (RUN/wandb/, "
            "offline unless an account is configured; run name = the run folder). Repeat "
            "for both. Optional extras: pip install 'neurodelay[tensorboard]' / "
            "'neurodelay[wandb]'.")


def log_option(f):
    """``--log tensorboard|wandb`` (repeatable), passed on as ``trackers``."""
    return click.option("--log", "trackers", multiple=True,
                        type=click.Choice(TRACKER_NAMES), help=LOG_HELP)(f)


def tracked_command(f):
    """``--log`` for a command that trains one run in this process: the command runs
    inside :func:`neurodelay.tracking.tracked`."""
    import functools  # lazy: CLI start-up time

    @functools.wraps(f)
    def wrapper(*args, trackers=(), **kwargs):
        from neurodelay import tracking  # lazy: CLI start-up time

        with tracking.tracked(trackers):
            return f(*args, **kwargs)

    return log_option(wrapper)
