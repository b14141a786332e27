"""Section ``recurrent``: the recurrent training step (``--recurrent``, learned recurrent
delays, window Td = the feed-forward one) next to the feed-forward learned-delay step at
the same hidden size and data shape (140-256-256-20, T = 100, Td = 25), at sigma_max
(SIG = Td/2) and sigma_min (SIG = 0.23 -> sigma 0.5), variants alternating; the
one-step recurrent model (a plain recurrent SNN) at sigma_min; and the discrete recurrent
forward of the frozen network (floatsim) next to the PyTorch discrete model's. Records the
CPU model and thread count (the machine may be shared: the load average is in the
header). Target (issue 21): a recurrent step at most 2x a feed-forward step at sigma_min.
"""
from __future__ import annotations

import statistics
import time

import torch
from bench_common import SIG_MIN, Trainer, build_model, make_batch, model_forward
from bench_harness import alternate, log, time_variants

NAME = "recurrent"
FULL = dict(n_inputs=140, hidden=[256, 256], n_outputs=20, window=25, T=100, batch=64,
            reps=(3, 3))
QUICK = dict(n_inputs=140, hidden=[256, 256], n_outputs=20, window=25, T=100, batch=16,
             reps=(2, 3))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def build_recurrent(spec: dict, mode: str = "learned", seed: int = 0):
    from neurodelay.train.model import DelaySNN, ModelConfig

    cfg = ModelConfig(n_inputs=spec["n_inputs"], n_outputs=spec["n_outputs"],
                      hidden=list(spec["hidden"]), max_delay_steps=spec["window"],
                      recurrent=True, recurrent_delays=mode)
    torch.manual_seed(seed)
    return DelaySNN(cfg, seed=seed)


def run(args) -> dict:
    spec = dict(QUICK if args.quick else FULL)
    if args.reps:
        spec["reps"] = (args.reps, args.reps)
    x, y = make_batch(spec)
    ff, rec, one = build_model(spec), build_recurrent(spec), build_recurrent(spec, "one-step")
    log(f"\n[recurrent] 140-256-256-20, T={spec['T']}, Td={spec['window']} (recurrent "
        f"window {spec['window']}), batch {spec['batch']}; CPU {cpu_model()}, "
        f"{torch.get_num_threads()} torch threads")
    res = {"shape": "140-256-256-20", "T": spec["T"], "window": spec["window"],
           "batch": spec["batch"], "cpu_model": cpu_model(),
           "torch_threads": torch.get_num_threads(), "regimes": {}}
    for regime in ("sigma_max", "sigma_min"):
        sig = spec["window"] / 2.0 if regime == "sigma_max" else SIG_MIN
        for m in (ff, rec, one):
            m.set_sigma(sig)
        trainers = [Trainer("feedforward", ff, model_forward),
                    Trainer("recurrent", rec, model_forward)]
        if regime == "sigma_min":
            trainers.append(Trainer("recurrent_one_step", one, model_forward))
        for tr in trainers:                       # warm-up (caches, allocator)
            tr.step(x, y)
        tm = time_variants(trainers, x, y, spec["reps"][0 if regime == "sigma_max" else 1])
        ratio = tm["recurrent"]["median_s"] / tm["feedforward"]["median_s"]
        r = {"SIG": sig, "sigma": sig + 0.27, **tm, "recurrent_over_feedforward": ratio}
        if "recurrent_one_step" in tm:
            r["one_step_over_feedforward"] = (tm["recurrent_one_step"]["median_s"]
                                              / tm["feedforward"]["median_s"])
        res["regimes"][regime] = r
        log(f"  {regime} (sigma {sig + 0.27:.2f}):")
        for n, v in tm.items():
            log(f"    {n:20s} {v['median_s']:8.3f} s/step  {v['samples_per_s']:8.1f} samples/s")
        log(f"    recurrent / feed-forward: {ratio:.2f}x (target <= 2x at sigma_min)")
    res["discrete"] = _discrete(rec, spec, args)
    res["target_met"] = res["regimes"]["sigma_min"]["recurrent_over_feedforward"] <= 2.0
    return res


def _discrete(model, spec: dict, args) -> dict:
    """The frozen recurrent network on floatsim vs the PyTorch discrete model, ms/sample,
    hidden spike flips of floatsim (float32) against the exact float64 path."""
    import numpy as np

    from neurodelay.sim import floatsim
    from neurodelay.train.freeze import freeze

    model.eval()
    n = 32 if args.quick else 256
    x, _ = make_batch(spec, seed=3, batch=n)
    net = freeze(model)

    def torch_run():
        with torch.no_grad():
            return model(x, discrete=True)

    def fsim():
        return floatsim.simulate(net, x.numpy()).u

    times, _ = alternate({"torch_discrete": torch_run, "floatsim": fsim}, 3, keep=True)
    out = {k: {"ms_per_sample": 1e3 * statistics.median(v) / n} for k, v in times.items()}
    model.set_discrete_dtype(torch.float64)
    t0 = time.perf_counter()
    with torch.no_grad():
        _, sp = model(x, discrete=True, record=True)
    out["torch_exact_float64"] = {"ms_per_sample": 1e3 * (time.perf_counter() - t0) / n}
    model.set_discrete_dtype(torch.float32)
    fs = floatsim.simulate(net, x.numpy(), record=True)
    out["floatsim_hidden_spike_flips_vs_exact"] = int(sum(
        np.count_nonzero(a.numpy().astype(bool) != b) for a, b in zip(sp, fs.spikes)))
    out["hidden_spikes"] = int(sum(int(b.sum()) for b in fs.spikes))
    out["samples"] = n
    log(f"  discrete recurrent forward ({n} samples of {spec['T']} steps):")
    for k in ("torch_discrete", "torch_exact_float64", "floatsim"):
        log(f"    {k:20s} {out[k]['ms_per_sample']:8.3f} ms/sample")
    log(f"    floatsim (float32) vs the exact path: "
        f"{out['floatsim_hidden_spike_flips_vs_exact']} of {out['hidden_spikes']} hidden "
        f"spikes differ")
    return out


def record(out: dict, res: dict) -> None:
    out["recurrent"] = res
    out["recurrent_over_feedforward_step"] = {
        k: v["recurrent_over_feedforward"] for k, v in res["regimes"].items()}


def summary(out: dict, args) -> list[str]:
    r = out["recurrent_over_feedforward_step"]
    return ["recurrent / feed-forward training step: "
            + ", ".join(f"{k} {v:.2f}x" for k, v in r.items())
            + f" (target <= 2x at sigma_min: {'met' if out['recurrent']['target_met'] else 'not met'})"]
