"""Validation of the numbers a user gives, and the memory guard.

Every numeric option of the training and research commands goes through the checks
here, both from the CLI and from the library (``api.make_configs``, ``api.resolve_data``,
``TrainConfig``, ``ModelConfig``, ...), so a notebook user gets the same message as the
command line: an :class:`~neurodelay.errors.OptionError` naming the option (as the CLI
spells it), the value, the allowed range and what the number means. ``None`` is the only
"not set"; 0 is a value like any other and is refused where it is meaningless.

**Memory guard.** Inputs can make the program allocate without bound (one spike 10^5
seconds after the first one makes a sample of 10^7 time steps; ``--max-delay 1e7`` makes a
kernel of 10^6 taps per synapse). Before such allocations the code estimates what it will
need (:func:`binned_bytes`, :func:`model_memory_bytes`) and :func:`check_memory` refuses
with a :class:`~neurodelay.errors.ResourceLimitError` giving the estimate in GiB and how to
cap it. The limit is ``NEURODELAY_MAX_GIB`` GiB (default 8). Normal SHD/SSC/SSHD use needs
well under 2 GiB.
"""
from __future__ import annotations

import math
import numbers
import os

from neurodelay.errors import OptionError, ResourceLimitError

MAX_GIB_ENV = "NEURODELAY_MAX_GIB"
DEFAULT_MAX_GIB = 8.0
GIB = float(1 << 30)
SEED_MAX = 2 ** 32 - 1          # numpy's seed range
LIMIT_HELP = (f"Memory guard: inputs whose estimated memory exceeds {DEFAULT_MAX_GIB:g} GiB are "
              f"refused before anything is allocated (set {MAX_GIB_ENV} to change the limit).")


# ----------------------------------------------------------------------------- numbers

def _fmt(value) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _fail(option: str, value, unit: str, must: str, hint: str | None) -> OptionError:
    shown = f"{_fmt(value)}{(' ' + unit) if unit else ''}"
    return OptionError(f"{option} {shown}: out of range; {must}" + (f". {hint}" if hint else ""))


def _range_text(lo, hi, lo_open: bool, hi_open: bool, unit: str) -> str:
    u = f" {unit}" if unit else ""
    if lo is not None and hi is not None:
        return (f"in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
                f"{u}")
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_fmt(lo)}{u}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_fmt(hi)}{u}"
    return "a finite number"


def check_int(value, option: str, what: str, *, lo: int | None = None,
              hi: int | None = None, hint: str | None = None) -> int:
    """``value`` as an int in [lo, hi], or an OptionError naming ``option`` (e.g. '--epochs').

    ``what`` says what the number means ('the number of training epochs').
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            (isinstance(value, float) and not value.is_integer()) or \
            (isinstance(value, numbers.Real) and not math.isfinite(float(value))):
        raise OptionError(f"{option} {value!r}: {what} must be an integer "
                          f"{_range_text(lo, hi, False, False, '')}"
                          + (f". {hint}" if hint else ""))
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _fail(option, v, "", f"{what} must be an integer "
                                   f"{_range_text(lo, hi, False, False, '')}", hint)
    return v


def check_float(value, option: str, what: str, *, lo: float | None = None,
                hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
                unit: str = "", hint: str | None = None) -> float:
    """``value`` as a finite float within the bounds (open or closed), or an OptionError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(f"{option} {value!r}: {what} must be a number "
                          f"{_range_text(lo, hi, lo_open, hi_open, unit)}"
                          + (f". {hint}" if hint else ""))
    v = float(value)
    bad = not math.isfinite(v)
    if lo is not None:
        bad = bad or (v <= lo if lo_open else v < lo)
    if hi is not None:
        bad = bad or (v >= hi if hi_open else v > hi)
    if bad:
        raise _fail(option, v, unit, f"{what} must be a finite number "
                                     f"{_range_text(lo, hi, lo_open, hi_open, unit)}", hint)
    return v


def check_int_list(values, option: str, what: str, *, lo: int = 1, hi: int | None = None,
                   hint: str | None = None, allow_empty: bool = False) -> list[int]:
    """A list of ints each in [lo, hi] (e.g. --hidden 64,64)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        values = [values]
    out = [check_int(v, option, what, lo=lo, hi=hi, hint=hint) for v in values]
    if not out and not allow_empty:
        raise OptionError(f"{option}: no value given; {what} needs at least one entry"
                          + (f". {hint}" if hint else ""))
    return out


def check_choice(value, option: str, choices) -> str:
    if value not in choices:
        raise OptionError(f"{option} {value!r}: unknown; choose one of "
                          f"{', '.join(map(str, choices))}")
    return value


TOLERANCE = dict(what="the accuracy drop (percentage points) verify allows below the "
                      "reference model", lo=0.0,
                 hint="0 allows no lost sample; 100 never fails on accuracy alone")


def check_tolerance(value, option: str = "--tolerance") -> float:
    """verify's tolerance: a finite number of percentage points >= 0 (NaN would make every
    comparison False, i.e. always PASS)."""
    return check_float(value, option, **TOLERANCE)


def check_threads(threads) -> int | None:
    """torch CPU thread count: None (torch's choice) or an int >= 1."""
    if threads is None:
        return None
    return check_int(threads, "--threads", "torch's CPU thread count", lo=1, hi=4096,
                     hint="Omit it to keep torch's default")


# ----------------------------------------------------------------------------- memory

def memory_limit_gib() -> float:
    """The memory limit in GiB: ``$NEURODELAY_MAX_GIB`` or 8."""
    raw = os.environ.get(MAX_GIB_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_GIB
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise OptionError(f"{MAX_GIB_ENV}={raw!r}: must be a positive number of GiB (the "
                          f"memory limit; default {DEFAULT_MAX_GIB:g})")
    return v


def check_memory(nbytes: float, what: str, how: str) -> None:
    """ResourceLimitError when ``nbytes`` exceeds the limit: ``what`` would need about X
    GiB; ``how`` says how to cap it."""
    limit = memory_limit_gib()
    if nbytes > limit * GIB:
        raise ResourceLimitError(
            f"{what} would need about {nbytes / GIB:,.1f} GiB of memory, more than the limit "
            f"of {limit:g} GiB; nothing was allocated. {how}, or raise the limit with the "
            f"environment variable {MAX_GIB_ENV} (GiB; default {DEFAULT_MAX_GIB:g}) if the "
            f"machine has the memory")


def binned_bytes(steps: int, n_inputs: int) -> int:
    """Bytes of binned float32 data of ``steps`` time steps x ``n_inputs`` channels."""
    return 4 * int(steps) * int(n_inputs)


DIRECT_MAX_WINDOW = 4          # as train/dcls_conv.py: larger windows use the DFT path


def model_memory_bytes(n_inputs: int, hidden, n_outputs: int, window: int, batch: int,
                       steps: int, *, training: bool, learned: bool = True,
                       recurrent_window: int = 0) -> int:
    """Estimated peak bytes of one forward (and backward when ``training``) pass of a
    DelaySNN on a batch of ``batch`` samples padded to ``steps`` time steps.

    Per projection (n_in -> n_out, window W, N = steps + W - 1 points). Training runs in
    float32 (4 bytes); evaluation (the discrete model) computes its synaptic sums in
    float64 (8 bytes, see train/intdelay.py):

    * kernels: the dense (n_out, n_in, W) float32 delay kernel; training learned delays
      also keeps the normalised Gaussian, its argument and the gradient (x4);
    * kernel spectrum (W > 4, the frequency-domain convolution): (N, n_out, n_in)
      (x2 with its gradient when training);
    * DFT matrices (W > 4): about N x (2 steps + W) entries, built in float64;
    * activations: what the backward pass keeps of every layer when training
      (batch x (N n_in + 4 steps n_out): input spectrum, currents, BatchNorm and LIF
      states) plus the largest layer's transient products (batch x 3 N n_out);
      evaluation holds one layer at a time (batch x (N (n_in + 4 n_out) + 4 steps n_out)).

    Recurrent hidden layers (``recurrent_window`` R > 0, neurodelay.train.recurrent): the
    (n, n, R) kernel (x4 training) and the time loop's spike buffer (batch x (steps + R) x
    n); training also keeps the states, spikes and gradients (about 4 batch x steps x n
    more) and the gradient buffer.

    Plus the input batch, batch x steps x n_inputs float32. An estimate (a guard against
    runaway sizes, measured at 0.9-3.5x the real peak), not an exact account.
    """
    b, t, w = int(batch), int(steps), max(1, int(window))
    sizes = [int(n_inputs), *[int(h) for h in hidden], int(n_outputs)]
    n = t + w - 1
    fb = 4 if training else 8
    total = 4 * b * t * sizes[0]
    kept, transient = 0, 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        total += 4 * n_out * n_in * w * (4 if (training and learned) else 1)
        if w > DIRECT_MAX_WINDOW:
            total += fb * n * n_out * n_in * (2 if training else 1)
        if training:
            kept += 4 * b * (n * n_in + 4 * t * n_out)
            transient = max(transient, 4 * b * 3 * n * n_out)
        else:
            transient = max(transient, 8 * b * (n * (n_in + 4 * n_out) + 4 * t * n_out))
    if w > DIRECT_MAX_WINDOW:
        total += 16 * n * (2 * t + w)
    rw = max(0, int(recurrent_window))
    if rw:
        for h in sizes[1:-1]:
            total += 4 * h * h * rw * (4 if training else 1)
            total += (4 * b * (2 * (t + rw) * h + 4 * t * h) if training
                      else 8 * b * (t + rw) * h)
    total += kept + transient
    return int(total)


def check_model_memory(n_inputs: int, hidden, n_outputs: int, window: int, batch: int,
                       steps: int, *, training: bool, learned: bool = True,
                       what: str = "", how: str = "", recurrent_window: int = 0) -> None:
    """:func:`check_memory` of :func:`model_memory_bytes` with a message that names the
    sizes involved."""
    need = model_memory_bytes(n_inputs, hidden, n_outputs, window, batch, steps,
                              training=training, learned=learned,
                              recurrent_window=recurrent_window)
    desc = (f"{what or ('training the model' if training else 'evaluating the model')} "
            f"(layers {'-'.join(str(s) for s in [n_inputs, *hidden, n_outputs])}, delay "
            f"window {window:,} steps) on batches of {batch:,} samples x {steps:,} time steps")
    how = how or ("Use a smaller --max-delay, --batch-size or --hidden, or cut long samples "
                  "with --max-time SECONDS")
    if window > max(1, steps) and window > 2:
        how = (f"The delay window ({window:,} steps) is longer than the longest sample "
               f"({steps:,} steps): delays that long never reach the output. {how}")
    check_memory(need, desc, how)


__all__ = ["check_int", "check_float", "check_int_list", "check_choice", "check_threads",
           "check_tolerance", "TOLERANCE",
           "memory_limit_gib", "check_memory", "binned_bytes", "model_memory_bytes",
           "check_model_memory", "MAX_GIB_ENV", "DEFAULT_MAX_GIB", "LIMIT_HELP"]
