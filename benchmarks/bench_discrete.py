"""Section ``discrete``: discrete-model inference (no grad) at the SHD shape: conv1d over
the whole window (before) vs intdelay in float32 (the FAST path, model.py's default:
per-epoch validation and `eval`) and with float64 sums (the EXACT path `verify` runs,
DelaySNN.set_discrete_dtype(torch.float64)). Precision against a float64 run of the
conv1d formulation: hidden spike flips and readout error; peak RSS of 2 forwards."""
from __future__ import annotations

import copy
import statistics

import torch
from bench_common import (
    TRAIN_FULL,
    build_model,
    conv1d_forward,
    make_batch,
    model_forward,
    spec_shape,
)
from bench_harness import alternate, log, memory_probe

NAME = "discrete"


def run(args) -> dict:
    spec = dict(TRAIN_FULL["shd_b64"])
    spec["batch"] = 64 if args.quick else 256
    reps = args.reps or (3 if args.quick else 5)
    log(f"\n[discrete] {spec_shape(spec)}, T={spec['T']}, Td={spec['window']}, batch "
        f"{spec['batch']}, random integer delays, no grad")
    model = build_model(spec)
    model.eval()
    m32 = copy.deepcopy(model).set_discrete_dtype(torch.float32)
    m64 = copy.deepcopy(model).set_discrete_dtype(torch.float64)
    x, _ = make_batch(spec, seed=3)
    runs = {"conv1d": lambda rec=None: conv1d_forward(model, x, discrete=True, record=rec),
            "intdelay_f32": lambda rec=None: model_forward(m32, x, discrete=True, record=rec),
            "intdelay_f64": lambda rec=None: model_forward(m64, x, discrete=True, record=rec)}
    outs = {}
    with torch.no_grad():
        for k, fn in runs.items():                 # warm-up + the outputs compared below
            rec = []
            outs[k] = (fn(rec).double(), rec)
        mtruth = copy.deepcopy(model).double()
        rec64 = []
        u64 = conv1d_forward(mtruth, x.double(), discrete=True, record=rec64)
        times, _ = alternate(runs, reps)
    res = {"shape": spec_shape(spec), "T": spec["T"], "window": spec["window"],
           "batch": spec["batch"], "float64_hidden_spikes": [int(s.sum()) for s in rec64]}
    _precision(res, times, outs, u64, rec64, spec["batch"])
    _log(res, runs)
    if not args.no_memory:
        res["peak_rss_mb"] = {v: memory_probe(spec, "discrete_" + v, args.threads)
                              for v in ("conv1d", "intdelay_f32", "intdelay_f64")}
        log("  peak RSS (2 forwards, own process): " + ", ".join(
            f"{k} {m['peak_mb']:.0f} MB" for k, m in res["peak_rss_mb"].items()))
    return res


def _precision(res, times, outs, u64, rec64, batch) -> None:
    """Per variant: times, spike flips and readout error against the float64 run,
    predictions against conv1d; then the speed-ups."""
    from neurodelay.train.model import scores_from_membrane

    pred = lambda u: scores_from_membrane(u).argmax(1)          # noqa: E731
    for k, ts in times.items():
        u, rec = outs[k]
        res[k] = {"median_s": statistics.median(ts), "ms_per_sample":
                  1e3 * statistics.median(ts) / batch, "times_s": [round(t, 4) for t in ts],
                  "hidden_spike_flips_vs_float64": [int((a != b).sum())
                                                    for a, b in zip(rec, rec64)],
                  "readout_max_abs_err_vs_float64": float((u - u64).abs().max()),
                  "same_predictions_as_conv1d": float(
                      (pred(u) == pred(outs["conv1d"][0])).double().mean())}
    res["speedup"] = res["conv1d"]["median_s"] / res["intdelay_f32"]["median_s"]
    res["speedup_float32"] = res["speedup"]
    res["speedup_float64"] = res["conv1d"]["median_s"] / res["intdelay_f64"]["median_s"]
    res["paths"] = {"intdelay_f32": "fast: float32 (default; training, validation, eval)",
                    "intdelay_f64": "exact: float64 sums cast to float32 (verify)"}


def _log(res: dict, runs: dict) -> None:
    for k in runs:
        v = res[k]
        log(f"    {k:13s} {v['median_s']:8.3f} s/batch ({v['ms_per_sample']:.2f} ms/sample)  "
            f"vs float64: spike flips {v['hidden_spike_flips_vs_float64']}, readout max|err| "
            f"{v['readout_max_abs_err_vs_float64']:.1e}")
    log(f"    speed-up vs conv1d: fast path (float32, eval) {res['speedup']:.2f}x, exact path "
        f"(float64 sums, verify) {res['speedup_float64']:.2f}x")


def record(out: dict, ds: dict) -> None:
    out["discrete_forward"] = ds
    out["discrete_forward_speedup"] = ds["speedup"]
    out["discrete_forward_speedup_float32"] = ds["speedup_float32"]
    out["discrete_forward_speedup_float64"] = ds["speedup_float64"]


def summary(out: dict, args) -> list[str]:
    return [f"discrete_forward_speedup: {out['discrete_forward_speedup']:.2f}x (fast path: "
            f"float32, the default, what eval runs), "
            f"{out['discrete_forward_speedup_float64']:.2f}x (exact path: float64 sums, "
            f"what verify runs)"]
