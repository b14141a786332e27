"""Section ``fixed``: one ``--delays fixed-random`` training step: DelaySNN.forward
(``intdelay``: integer_delay_conv) vs conv1d over the whole window with the one-tap kernel
(``conv1d``: the path before neurodelay.train.intdelay), and the learned-delay step
(dcls_conv, SIG_MIN) of the same architecture for comparison; loss and gradients of
intdelay vs conv1d checked first; peak RSS of 2 steps of each in its own process."""
from __future__ import annotations

import time

from bench_common import (
    SIG_MIN,
    TRAIN_FULL,
    TRAIN_QUICK,
    Trainer,
    build_model,
    check_pair,
    conv1d_forward,
    make_batch,
    model_forward,
    spec_shape,
)
from bench_harness import log, memory_probe, time_variants

NAME = "fixed"
FIXED_FULL = ("shd_b64", "shd_b256")
FIXED_QUICK = ("shd_b16",)


def run(args) -> dict:
    res = {}
    allc = {**TRAIN_FULL, **TRAIN_QUICK}
    for name in (FIXED_QUICK if args.quick else FIXED_FULL):
        res[name] = _config(name, allc[name], args)
    return res


def _config(name: str, spec: dict, args) -> dict:
    log(f"\n[fixed] {name}: {spec_shape(spec)}, T={spec['T']}, Td={spec['window']}, "
        f"batch {spec['batch']}, fixed random delays")
    t0 = time.perf_counter()
    fixed = build_model(spec, delays="fixed-random")
    learned = build_model(spec)
    learned.set_sigma(SIG_MIN)
    x, y = make_batch(spec)
    chk = check_pair(fixed, model_forward, conv1d_forward, x, y)
    trainers = [Trainer("conv1d", fixed, conv1d_forward),
                Trainer("intdelay", fixed, model_forward),
                Trainer("learned", learned, model_forward)]
    trainers[2].step(x, y)                      # warm-up (the check ran the other two)
    reps = args.reps or (5 if spec["batch"] <= 64 else 3)
    tm = time_variants(trainers, x, y, reps)
    entry = {"shape": spec_shape(spec), "T": spec["T"], "window": spec["window"],
             "batch": spec["batch"], "check_intdelay_vs_conv1d": chk, **tm,
             "speedup": tm["conv1d"]["median_s"] / tm["intdelay"]["median_s"],
             "fixed_vs_learned": tm["learned"]["median_s"] / tm["intdelay"]["median_s"]}
    log(f"  same loss/grads as conv1d: {'yes' if chk['passed'] else 'NO'} (loss rel diff "
        f"{chk['loss_rel_diff']:.1e}, grad max rel diff {chk['grad_max_rel_diff']:.1e}, "
        f"hidden spike flips {chk['hidden_spike_flips']})")
    for n, v in tm.items():
        log(f"    {n:10s} {v['median_s']:8.3f} s/step  {v['samples_per_s']:8.1f} samples/s")
    log(f"    speed-up vs conv1d {entry['speedup']:.2f}x; learned step / fixed step "
        f"{entry['fixed_vs_learned']:.2f}  ({time.perf_counter() - t0:.0f} s)")
    if not args.no_memory:
        entry["peak_rss_mb"] = {v: memory_probe(spec, v, args.threads)
                                for v in ("fixed_conv1d", "fixed_intdelay", "learned")}
        log("  peak RSS (2 steps, own process): " + ", ".join(
            f"{k} {m['peak_mb']:.0f} MB" for k, m in entry["peak_rss_mb"].items()))
    return entry


def record(out: dict, fx: dict) -> None:
    out["fixed_delay"] = fx
    out["fixed_delay_train_speedup"] = {k: v["speedup"] for k, v in fx.items()}
    out["fixed_vs_learned_step"] = {k: v["fixed_vs_learned"] for k, v in fx.items()}
    out["fixed_delay_equal_loss_and_grads"] = all(
        v["check_intdelay_vs_conv1d"]["passed"] for v in fx.values())


def summary(out: dict, args) -> list[str]:
    return ["fixed_delay_train_speedup (intdelay vs conv1d): "
            + ", ".join(f"{k} {v:.2f}x" for k, v in out["fixed_delay_train_speedup"].items())
            + "; learned step / fixed step: "
            + ", ".join(f"{k} {v:.2f}" for k, v in out["fixed_vs_learned_step"].items())]
