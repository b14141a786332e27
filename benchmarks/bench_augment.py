#!/usr/bin/env python
"""Section ``augment``: what ``--augment`` costs a training step.

    ./.venv/bin/python benchmarks/bench_augment.py [--quick] [--threads N] [--json]

A learned-delay training step (as neurodelay.train.trainer: forward + loss + backward +
Adam + clamp) at sigma min (the fastest step, so the largest relative overhead) on the
SHD shape, without augmentation and with each setting below; the augmented variants time
the augmentation of the batch plus the step (a fresh generator per step, as in training).
Variants alternate (A B C, C B A, ...); medians are reported, with the ratio to the
unaugmented step and the augmentation's own time over a plain step (the steadier figure on
a shared machine). Goal (issue 25): every ratio <= 1.1. The CPU model is recorded.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_harness as H  # noqa: E402

if __name__ == "__main__":
    OMP_WAIT_POLICY, BLAS_THREADS = H.early_env(sys.argv[1:])
else:
    OMP_WAIT_POLICY, BLAS_THREADS = H.current_env()

import torch  # noqa: E402
from bench_common import (  # noqa: E402
    SIG_MIN,
    TRAIN_FULL,
    TRAIN_QUICK,
    Trainer,
    build_model,
    make_batch,
    model_forward,
    spec_shape,
)
from bench_harness import log  # noqa: E402

NAME = "augment"
SETTINGS = ("reference", "shift", "blend", "noise", "reference,shift,blend,noise")
CONFIGS_FULL = ("shd_b64", "shd_b256")
CONFIGS_QUICK = ("shd_b16",)


def run(args) -> dict:
    from neurodelay.train.augment import Augmenter, batch_generator

    res = {}
    allc = {**TRAIN_FULL, **TRAIN_QUICK}
    for name in (CONFIGS_QUICK if args.quick else CONFIGS_FULL):
        spec = allc[name]
        log(f"\n[augment] {name}: {spec_shape(spec)}, T={spec['T']}, Td={spec['window']}, "
            f"batch {spec['batch']}, sigma min")
        model = build_model(spec)
        model.set_sigma(SIG_MIN)
        x, y = make_batch(spec)
        tr = Trainer("step", model, model_forward)
        tr.step(x, y)                                   # warm-up
        augs = {s: Augmenter(s, window=spec["window"], n_classes=spec["n_outputs"])
                for s in SETTINGS}

        def variant(setting):
            def go(r):
                t0 = time.perf_counter()
                if setting is None:
                    xa, ya = x, y
                else:
                    xa, ya = augs[setting](x, y, batch_generator(0, 0, r, x.device))
                t_aug = time.perf_counter() - t0
                return t_aug, t_aug + tr.step(xa, ya)
            return go

        runs = {"none": variant(None), **{s: variant(s) for s in SETTINGS}}
        times = {k: [] for k in runs}
        aug_only = {k: [] for k in runs}
        reps = args.reps or (5 if spec["batch"] <= 64 else 3)
        for r in range(reps):
            for k in (runs if r % 2 == 0 else list(runs)[::-1]):
                ta, tt = runs[k](r)
                times[k].append(tt)
                aug_only[k].append(ta)
        base = statistics.median(times["none"])
        entry = {"shape": spec_shape(spec), "batch": spec["batch"], "reps": reps}
        for k in runs:
            med = statistics.median(times[k])
            entry[k] = {"median_step_s": round(med, 4),
                        "median_augment_s": round(statistics.median(aug_only[k]), 5),
                        "ratio_to_none": round(med / base, 3),
                        # the augmentation alone over the plain step: less noisy than the
                        # ratio of two step times on a shared machine
                        "augment_over_step": round(statistics.median(aug_only[k]) / base, 4)}
            log(f"    {k:30s} {med:7.3f} s/step  x{med / base:.3f}; augmentation "
                f"{entry[k]['median_augment_s'] * 1000:6.1f} ms = "
                f"{entry[k]['augment_over_step']:.1%} of a plain step")
        res[name] = entry
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--omp-wait-policy", default="passive")
    ap.add_argument("--blas-threads", default="1")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.json:
        H.set_log_stream(sys.stderr)
    info = H.run_info(args.quick, OMP_WAIT_POLICY, BLAS_THREADS)
    out = {**info, "cpu_model": _cpu_model(), "augment": run(args)}
    worst = max(v[k]["ratio_to_none"] for v in out["augment"].values() for k in SETTINGS)
    cost = max(v[k]["augment_over_step"] for v in out["augment"].values() for k in SETTINGS)
    out["augment_worst_ratio"], out["augment_worst_cost"] = worst, cost
    log(f"\nworst augmented step / plain step: {worst:.3f}; worst augmentation time / plain "
        f"step: {cost:.1%} (goal: step ratio <= 1.1)")
    if args.json:
        print(json.dumps(out, indent=2, default=H.json_default))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
