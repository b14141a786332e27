#!/usr/bin/env python
"""The figures of issue 20 on one GPU, side by side with the reference on the same device.

    python benchmarks/gpu_check.py --device cuda --json-out $OUT/gpu_check.json
    python benchmarks/gpu_check.py --device cpu --small      # the same code, CPU, small sizes

benchmarks/gpu_check.sh runs it (with the cuda-marked tests first). Sections:

1. ``train``: a learned-delay training step (forward + loss + backward + Adam + clamp, as
   neurodelay.train.trainer) of the reference formulation (dcls Dcls1d 'gauss' + spikingjelly
   LIFNode: bench_reference) against neurodelay (DelaySNN.forward), at the SHD b256 and SSC
   b128 shapes, sigma max and sigma min, after the same loss/gradient check as the CPU
   benchmark (bench_common.check_equal). Also timed: neurodelay with
   dcls_conv.DEVICE_CONV = "conv1d" (cuDNN instead of the spectral path) and with TF32
   allowed, so the device choice can be made from measurements. Peak GPU memory of each.
2. ``fixed``: a fixed-random-delay step, conv1d over the window (the reference) against
   intdelay with DEVICE_METHOD "fft" and "conv1d"; loss/gradients checked (check_pair).
3. ``epoch``: shd-preset epochs on sshd_train.h5 (speakers 20-23 test, 18-19 validation,
   discrete validation every epoch), the trainer's own loop; the last epoch's train and
   validation times and the extrapolation to a 150-epoch SHD-size run (8,156 training,
   2,264 validation samples; an extrapolation, labelled as such); peak GPU memory.
4. ``cpu_vs_device``: the trained model of section 3, discrete predictions, scores and
   hidden spikes on the CPU and on the device: how many flip (and the largest score
   difference: float32 summation order).

Every timing synchronises the device before and after a step; variants alternate.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import neurodelay  # first: bench_harness puts the checkout on sys.path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from bench_common import (  # noqa: E402
    SIG_MIN,
    TRAIN_FULL,
    Trainer,
    build_model,
    check_equal,
    check_pair,
    conv1d_forward,
    make_batch,
    model_forward,
    spec_shape,
)
from bench_reference import ReferenceForward  # noqa: E402

from neurodelay import devices  # noqa: E402
from neurodelay.train import dcls_conv, intdelay  # noqa: E402

SMALL = {"shd_small": dict(n_inputs=140, hidden=[64, 64], n_outputs=20, window=25, T=60,
                           batch=16)}
FULL = {k: TRAIN_FULL[k] for k in ("shd_b256", "ssc_b128")}
GOALS = {"learned": 3.0, "fixed": 5.0, "run_minutes": 5.0}


def log(msg=""):
    print(msg, flush=True)


class _switch:
    """Set module attribute ``name`` to ``value`` inside the block."""

    def __init__(self, mod, name, value):
        self.mod, self.name, self.value = mod, name, value

    def __enter__(self):
        self.old = getattr(self.mod, self.name)
        setattr(self.mod, self.name, self.value)

    def __exit__(self, *exc):
        setattr(self.mod, self.name, self.old)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _timed_step(tr, x, y, dev, ctx):
    with ctx():
        devices.synchronize(dev)
        t0 = time.perf_counter()
        tr.step(x, y)
        devices.synchronize(dev)
        return time.perf_counter() - t0


def time_variants(variants, x, y, dev, reps):
    """variants: name -> (Trainer, context factory). One warm-up step each, then ``reps``
    alternating rounds; median seconds per step and peak device memory of a step."""
    out = {}
    for name, (tr, ctx) in variants.items():
        _timed_step(tr, x, y, dev, ctx)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        _timed_step(tr, x, y, dev, ctx)
        out[name] = {"times": [], "peak_mib": devices.peak_memory_mib(dev)}
    for r in range(reps):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            tr, ctx = variants[name]
            out[name]["times"].append(_timed_step(tr, x, y, dev, ctx))
    for v in out.values():
        v["median_s"] = statistics.median(v["times"])
        v["samples_per_s"] = x.shape[0] / v["median_s"]
    return out


def _ctx(*switches):
    """A context factory: every (module, name, value) of ``switches`` set inside."""
    class _all:
        def __enter__(self):
            self.s = [_switch(*sw) for sw in switches]
            for s in self.s:
                s.__enter__()

        def __exit__(self, *exc):
            for s in reversed(self.s):
                s.__exit__(*exc)
    return _all


def _cudnn_conv(x, kernel):
    """dcls_conv.causal_conv through F.conv1d (cuDNN on a GPU): DEVICE_CONV "conv1d",
    forced on every device for the comparison."""
    import torch.nn.functional as F

    return F.conv1d(F.pad(x, (kernel.shape[2] - 1, 0)), kernel)


def _tf32():
    return devices.precision(torch.device("cuda"), tf32=True) if torch.cuda.is_available() \
        else _nothing()


def _check_line(c):
    return (f"same loss/grads: {'yes' if c['passed'] else 'NO'} (loss rel diff "
            f"{c['loss_rel_diff']:.1e}, grad max rel diff {c['grad_max_rel_diff']:.1e}, "
            f"hidden spike flips {c['hidden_spike_flips']})")


def section_train(configs, dev, reps):
    res = {}
    for k, (name, spec) in enumerate(configs.items()):
        log(f"\n[train] {name}: {spec_shape(spec)}, T={spec['T']}, Td={spec['window']}, "
            f"batch {spec['batch']}, on {dev}")
        base = build_model(spec).to(dev)
        x, y = (t.to(dev) for t in make_batch(spec))
        entry = {"shape": spec_shape(spec), "batch": spec["batch"], "regimes": {}}
        for regime in ("sigma_max", "sigma_min"):
            sig = spec["window"] / 2.0 if regime == "sigma_max" else SIG_MIN
            base.set_sigma(sig)
            chk = check_equal(base, x, y, fp64=(k == 0))
            c = chk["neurodelay_vs_reference"]
            variants = {
                "reference": (Trainer("reference", base, ReferenceForward(base)), _nothing),
                "neurodelay": (Trainer("neurodelay", base, model_forward), _nothing),
                "neurodelay_conv1d": (Trainer("neurodelay", base, model_forward),
                                      _ctx((dcls_conv, "causal_conv", _cudnn_conv))),
            }
            if dev.type == "cuda":
                variants["neurodelay_tf32"] = (Trainer("neurodelay", base, model_forward),
                                               _tf32)
            tm = time_variants(variants, x, y, dev, reps)
            sp = {n: tm["reference"]["median_s"] / v["median_s"] for n, v in tm.items()}
            entry["regimes"][regime] = {"sigma": sig + 0.27, "check": c, "times": tm,
                                        "speedup": sp}
            log(f"  {regime} (sigma {sig + 0.27:.2f}): {_check_line(c)}")
            for n, v in tm.items():
                mem = f"  peak {v['peak_mib']:.0f} MiB" if v["peak_mib"] is not None else ""
                log(f"    {n:18s} {v['median_s'] * 1e3:9.2f} ms/step  {v['samples_per_s']:9.1f}"
                    f" samples/s  {sp[n]:6.2f}x the reference{mem}")
        best = min(r["speedup"]["neurodelay"] for r in entry["regimes"].values())
        entry["speedup_min"] = best
        log(f"  learned-delay step: {best:.2f}x the reference (min over sigma; goal >= "
            f"{GOALS['learned']:.0f}x: {'met' if best >= GOALS['learned'] else 'NOT met'})")
        res[name] = entry
    return res


def section_fixed(configs, dev, reps):
    res = {}
    for name, spec in configs.items():
        log(f"\n[fixed] {name}: {spec_shape(spec)}, batch {spec['batch']}, fixed random "
            f"delays, on {dev}")
        fixed = build_model(spec, delays="fixed-random").to(dev)
        x, y = (t.to(dev) for t in make_batch(spec))
        with _switch(intdelay, "general_method", lambda d: "fft"):
            chk = check_pair(fixed, model_forward, conv1d_forward, x, y)
        log(f"  intdelay vs conv1d: {_check_line(chk)}")
        variants = {
            "reference_conv1d": (Trainer("conv1d", fixed, conv1d_forward), _nothing),
            # the method forced on every device (on the CPU too, instead of the C kernels)
            "intdelay_fft": (Trainer("fft", fixed, model_forward),
                             _ctx((intdelay, "general_method", lambda d: "fft"))),
            "intdelay_conv1d": (Trainer("conv1d", fixed, model_forward),
                                _ctx((intdelay, "general_method", lambda d: "conv1d"))),
        }
        tm = time_variants(variants, x, y, dev, reps)
        sp = {n: tm["reference_conv1d"]["median_s"] / v["median_s"] for n, v in tm.items()}
        for n, v in tm.items():
            log(f"    {n:18s} {v['median_s'] * 1e3:9.2f} ms/step  {sp[n]:6.2f}x the reference")
        best = sp["intdelay_" + intdelay.DEVICE_METHOD]
        log(f"  fixed-delay step (DEVICE_METHOD {intdelay.DEVICE_METHOD!r}): {best:.2f}x the "
            f"reference (goal >= {GOALS['fixed']:.0f}x: "
            f"{'met' if best >= GOALS['fixed'] else 'NOT met'})")
        res[name] = {"check": chk, "times": tm, "speedup": sp}
    return res


def section_epoch(train_file: Path, dev, work: Path, small: bool):
    from neurodelay import api
    from neurodelay.data import load_splits
    from neurodelay.train import trainer as T

    log(f"\n[epoch] shd preset on {train_file.name}, on {dev}")
    dc = api.resolve_data(train_file=str(train_file), test_speakers=[20, 21, 22, 23],
                          valid_speakers=[18, 19], cache_dir=str(work / "cache"))
    splits = load_splits(dc, progress=False)
    over = dict(hidden=[32, 32], batch_size=32) if small else {}
    mc, tc = api.make_configs(dc, preset="shd", n_classes=splits.train.n_classes,
                              log=lambda m: None, **over)
    n_epochs = 1 if small else 2
    run = work / "shd_epoch"
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    T.train(run, mc, tc, dc, device=str(dev), progress=False, log=log,
            stop_after_epoch=n_epochs)
    wall = time.perf_counter() - t0
    peak = devices.peak_memory_mib(dev)
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    from neurodelay.train.loaders import load_model

    model = load_model(run, "checkpoint").to(dev)
    devices.synchronize(dev)
    tv = time.perf_counter()
    with devices.precision(dev):
        acc = T.accuracy(model, splits.valid, tc.eval_batch_size)
    devices.synchronize(dev)
    valid_s = time.perf_counter() - tv
    last = metrics[-1]["seconds"]
    train_s = max(last - valid_s, 1e-9)
    n_tr, n_va = len(splits.train), len(splits.valid)
    epoch_full = train_s * 8156 / n_tr + valid_s * 2264 / n_va
    run_min = 150 * epoch_full / 60
    log(f"  {n_epochs} epoch(s) in {wall:.1f} s wall (first includes start-up); last epoch "
        f"{last:.2f} s = train ~{train_s:.2f} s ({n_tr} samples) + discrete validation "
        f"{valid_s:.2f} s ({n_va} samples, accuracy {acc:.3f})")
    log(f"  extrapolated (not measured): a 150-epoch SHD-size run (8,156 training, 2,264 "
        f"validation samples, sample lengths as here) ~{run_min:.1f} min (goal < "
        f"{GOALS['run_minutes']:.0f} min: {'met' if run_min < GOALS['run_minutes'] else 'NOT met'})")
    if peak is not None:
        log(f"  peak GPU memory of training: {peak:.0f} MiB")
    return {"epochs": metrics, "wall_s": wall, "last_epoch_s": last, "valid_s": valid_s,
            "train_s": train_s, "n_train": n_tr, "n_valid": n_va, "valid_accuracy": acc,
            "run_150_epochs_min_extrapolated": run_min, "peak_mib": peak,
            "run": str(run)}, model, splits


@torch.no_grad()
def section_cpu_vs_device(model, ds, dev, batch=256):
    from neurodelay.data import iterate_batches
    from neurodelay.train.model import scores_from_membrane

    log(f"\n[cpu_vs_device] discrete model of the epoch section, {len(ds)} validation "
        f"samples: CPU vs {dev}")
    cpu = copy.deepcopy(model).to("cpu").eval()
    gpu = model.to(dev).eval()
    flips = spikes = hidden_flips = 0
    worst = 0.0
    with devices.precision(dev):
        for x, _ in iterate_batches(ds, batch, shuffle=False, pad_to=ds.max_steps):
            uc, sc = cpu(x, discrete=True, record=True)
            ug, sg = gpu(x.to(dev), discrete=True, record=True)
            a, b = scores_from_membrane(uc), scores_from_membrane(ug).cpu()
            flips += int((a.argmax(1) != b.argmax(1)).sum())
            worst = max(worst, float((a - b).abs().max()))
            for p, q in zip(sc, sg):
                hidden_flips += int((p != q.cpu()).sum())
                spikes += int(p.sum())
    log(f"  predictions that differ: {flips} of {len(ds)}; hidden spikes that differ: "
        f"{hidden_flips} of {spikes}; largest score difference {worst:.2e}")
    if flips or hidden_flips:
        log("  (why: the device sums in another order, float32 rounding ~1e-7 relative; a "
            "membrane within that of the threshold spikes on one and not the other)")
    return {"prediction_flips": flips, "n": len(ds), "hidden_spike_flips": hidden_flips,
            "hidden_spikes": spikes, "max_score_diff": worst}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--small", action="store_true",
                    help="small shapes and a small model (a CPU run of the whole script)")
    ap.add_argument("--train-file", type=Path, default=Path(".gpudata/sshd_train.h5"))
    ap.add_argument("--reps", type=int, default=None, help="timed steps per variant")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json-out", type=Path, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = devices.resolve_device(a.device)
    info = devices.describe_device(dev)
    log(f"neurodelay {neurodelay.__file__}")
    log(f"torch {torch.__version__}, {devices.device_line(info)}; precision: float32, TF32 "
        f"off (except the *_tf32 variant); DEVICE_CONV {dcls_conv.DEVICE_CONV!r}, "
        f"DEVICE_METHOD {intdelay.DEVICE_METHOD!r}")
    configs = SMALL if a.small else FULL
    reps = a.reps or (2 if a.small else 5)
    out = {"device": info, "small": a.small}
    t0 = time.perf_counter()
    with devices.precision(dev):
        out["train"] = section_train(configs, dev, reps)
        out["fixed"] = section_fixed(configs, dev, reps)
    log(f"\n(train + fixed sections: {time.perf_counter() - t0:.0f} s)")
    if a.train_file.exists():
        with tempfile.TemporaryDirectory() as work:
            ep, model, splits = section_epoch(a.train_file, dev, Path(work), a.small)
            out["epoch"] = ep
            out["cpu_vs_device"] = section_cpu_vs_device(model, splits.valid, dev)
    else:
        log(f"\n[epoch] skipped: no {a.train_file} (copy sshd_train.h5 there)")
    log("\nsummary:")
    for name, e in out["train"].items():
        log(f"  learned-delay step {name}: {e['speedup_min']:.2f}x the reference "
            f"(min over sigma max/min)")
    for name, e in out["fixed"].items():
        log(f"  fixed-delay step {name}: fft {e['speedup']['intdelay_fft']:.2f}x, conv1d "
            f"{e['speedup']['intdelay_conv1d']:.2f}x the reference")
    if "epoch" in out:
        log(f"  150-epoch SHD-size run (extrapolated): "
            f"{out['epoch']['run_150_epochs_min_extrapolated']:.1f} min; CPU vs device "
            f"prediction flips {out['cpu_vs_device']['prediction_flips']}")
    log(f"  total {time.perf_counter() - t0:.0f} s")
    if a.json_out:
        a.json_out.write_text(json.dumps(out, indent=1, default=str))
        log(f"wrote {a.json_out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
