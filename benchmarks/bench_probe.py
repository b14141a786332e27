"""The peak-RSS probe's child side: ``bench.py --_probe '{"spec": ..., "variant": ...}'``
runs one variant in a fresh process and prints {"peak_mb", "baseline_mb",
"peak_minus_baseline_mb"} (bench_harness.memory_probe starts it and reads that line)."""
from __future__ import annotations

import json

import torch
from bench_common import (
    SIG_MIN,
    Trainer,
    build_model,
    conv1d_forward,
    ftz,
    make_batch,
    model_forward,
)
from bench_harness import BenchmarkError, status_mb
from bench_reference import ReferenceForward

PROBE_VARIANTS = ("reference", "neurodelay", "learned", "fixed_conv1d", "fixed_intdelay",
                  "discrete_conv1d", "discrete_intdelay_f64", "discrete_intdelay_f32",
                  "epoch_reference", "epoch_neurodelay")


def _discrete(spec, variant, x) -> float:
    """2 no-grad discrete forwards; returns the baseline RSS (MB) before them."""
    model = build_model(spec)
    model.eval()
    model.set_discrete_dtype(torch.float64 if variant == "discrete_intdelay_f64"
                             else torch.float32)
    fwd = conv1d_forward if variant == "discrete_conv1d" else model_forward
    baseline = status_mb("VmRSS")
    with torch.no_grad():
        for _ in range(2):
            fwd(model, x, discrete=True)
    return baseline


def _epoch(spec, variant, x, y) -> float:
    """2 training steps + 1 discrete validation forward of the same batch, through the
    model's own paths (reference=True: dcls + spikingjelly + conv1d, under FTZ)."""
    ref = variant == "epoch_reference"
    base = build_model(spec)
    base.set_sigma(SIG_MIN)
    tr = Trainer(variant, base, lambda m, xb, record=None: m(xb, reference=ref), ftz=ref)
    del base
    baseline = status_mb("VmRSS")
    for _ in range(2):
        tr.step(x, y)
    tr.model.eval()
    with torch.no_grad(), ftz(ref):
        tr.model(x, discrete=True, reference=ref)
    return baseline


def _train(spec, variant, x, y) -> float:
    """2 training steps: reference / neurodelay at SIG = Td/2, learned at SIG_MIN,
    fixed_* with fixed random delays."""
    base = build_model(spec, delays="fixed-random" if variant.startswith("fixed_")
                       else "learned")
    base.set_sigma(SIG_MIN if variant == "learned" else spec["window"] / 2.0)
    fwd = {"reference": ReferenceForward(base), "neurodelay": model_forward,
           "learned": model_forward, "fixed_conv1d": conv1d_forward,
           "fixed_intdelay": model_forward}[variant]
    tr = Trainer(variant, base, fwd)
    del base
    baseline = status_mb("VmRSS")
    for _ in range(2):
        tr.step(x, y)
    return baseline


def probe_main(arg: str) -> None:
    """What one variant needs at its peak, in a fresh process (see the helpers above)."""
    d = json.loads(arg)
    spec, variant = d["spec"], d["variant"]
    if variant not in PROBE_VARIANTS:
        raise BenchmarkError(f"unknown probe variant {variant!r}")
    x, y = make_batch(spec)
    if variant.startswith("discrete_"):
        baseline = _discrete(spec, variant, x)
    elif variant.startswith("epoch_"):
        baseline = _epoch(spec, variant, x, y)
    else:
        baseline = _train(spec, variant, x, y)
    peak = status_mb("VmHWM")
    print(json.dumps({"peak_mb": peak, "baseline_mb": baseline, "peak_minus_baseline_mb":
                      peak - baseline}))
