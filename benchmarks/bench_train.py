"""Section ``train``: one learned-delay training step (forward + loss + backward + Adam +
clamp), the paper's formulation (``reference``, ``reference_ftz`` at sigma_min) against
DelaySNN.forward (``neurodelay``), in two sigma regimes, after the same-model check;
peak RSS of 2 steps per variant in its own process."""
from __future__ import annotations

import time

from bench_common import (
    SIG_MIN,
    Trainer,
    build_model,
    check_equal,
    make_batch,
    model_forward,
    spec_shape,
)
from bench_harness import log, memory_probe, time_variants
from bench_reference import ReferenceForward

NAME = "train"


def run(args) -> dict:
    """Every configuration of ``args.train_configs`` (name -> spec)."""
    res = {}
    for k, (name, spec) in enumerate(args.train_configs.items()):
        shape = spec_shape(spec)
        log(f"\n[train] {name}: {shape}, T={spec['T']}, Td={spec['window']}, "
            f"batch {spec['batch']}")
        base = build_model(spec)
        x, y = make_batch(spec)
        entry = {"shape": shape, "T": spec["T"], "window": spec["window"],
                 "batch": spec["batch"], "regimes": {}}
        for regime in ("sigma_max", "sigma_min"):
            entry["regimes"][regime] = _regime(base, spec, regime, x, y, args, fp64=(k == 0))
        entry["speedup"] = min(v["speedup"] for v in entry["regimes"].values())
        if not args.no_memory:
            entry["peak_rss_mb"] = {}
            for variant in ("reference", "neurodelay"):
                entry["peak_rss_mb"][variant] = memory_probe(spec, variant, args.threads)
            m = entry["peak_rss_mb"]
            log(f"  peak RSS (2 steps, own process): reference {m['reference']['peak_mb']:.0f} "
                f"MB, neurodelay {m['neurodelay']['peak_mb']:.0f} MB (process baseline "
                f"{m['neurodelay']['baseline_mb']:.0f} MB)")
        res[name] = entry
    return res


def _regime(base, spec, regime, x, y, args, fp64: bool) -> dict:
    sig = spec["window"] / 2.0 if regime == "sigma_max" else SIG_MIN
    base.set_sigma(sig)
    t0 = time.perf_counter()
    chk = check_equal(base, x, y, fp64=fp64)
    reps = args.reps or spec["reps"][0 if regime == "sigma_max" else 1]
    trainers = [Trainer("reference", base, ReferenceForward(base)),
                Trainer("neurodelay", base, model_forward)]
    if regime == "sigma_min":
        trainers.insert(1, Trainer("reference_ftz", base, ReferenceForward(base), ftz=True))
    tm = time_variants(trainers, x, y, reps)
    r = {"SIG": sig, "sigma": sig + 0.27, "check": chk, **tm,
         "speedup": tm["reference"]["median_s"] / tm["neurodelay"]["median_s"]}
    if "reference_ftz" in tm:
        r["speedup_vs_ftz"] = tm["reference_ftz"]["median_s"] / tm["neurodelay"]["median_s"]
    _log_regime(regime, sig, chk, tm, r, t0)
    return r


def _log_regime(regime, sig, chk, tm, r, t0) -> None:
    c = chk["neurodelay_vs_reference"]
    log(f"  {regime} (sigma {sig + 0.27:.2f}): same loss/grads: "
        f"{'yes' if c['passed'] else 'NO'}; float32: loss rel diff "
        f"{c['loss_rel_diff']:.1e}, grad max rel diff {c['grad_max_rel_diff']:.1e}, "
        f"hidden spike flips {c['hidden_spike_flips']} of {c['hidden_spikes']}")
    if "float64_neurodelay_vs_reference" in chk:
        c64 = chk["float64_neurodelay_vs_reference"]
        log(f"    float64: loss rel diff {c64['loss_rel_diff']:.1e}, grad max rel diff "
            f"{c64['grad_max_rel_diff']:.1e}, spike flips {c64['hidden_spike_flips']}; "
            f"float32 vs float64 grads: reference "
            f"{chk['reference_fp32_vs_fp64']['grad_max_rel_diff']:.1e}, neurodelay "
            f"{chk['neurodelay_fp32_vs_fp64']['grad_max_rel_diff']:.1e}; losses: "
            f"reference {chk['reference_fp32_vs_fp64']['loss_rel_diff']:.1e}, "
            f"neurodelay {chk['neurodelay_fp32_vs_fp64']['loss_rel_diff']:.1e}")
    for n, v in tm.items():
        log(f"    {n:14s} {v['median_s']:8.3f} s/step  {v['samples_per_s']:8.1f} "
            f"samples/s")
    extra = (f", {r['speedup_vs_ftz']:.2f}x vs reference_ftz"
             if "speedup_vs_ftz" in r else "")
    log(f"    speed-up {r['speedup']:.2f}x{extra}  ({time.perf_counter() - t0:.0f} s)")


def record(out: dict, tr: dict) -> None:
    """The section's keys in the result (``train`` and the figures drawn from it)."""
    out["train"] = tr
    out["train_speedup"] = {k: v["speedup"] for k, v in tr.items()}
    for regime in ("sigma_max", "sigma_min"):
        out[f"train_speedup_{regime}"] = {k: v["regimes"][regime]["speedup"]
                                          for k, v in tr.items()}
    out["train_equal_loss_and_grads"] = all(
        r["check"]["neurodelay_vs_reference"]["passed"]
        for v in tr.values() for r in v["regimes"].values())


def summary(out: dict, args) -> list[str]:
    return ["train_speedup (min over sigma regimes): "
            + ", ".join(f"{k} {v:.2f}x" for k, v in out["train_speedup"].items())]
