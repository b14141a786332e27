"""Section ``recurrent``: the recurrent training step (``--recurrent``, learned recurrent
delays, window Td = the feed-forward one) next to the feed-forward learned-delay step at
the same hidden size and data shape (140-256-256-20, T = 100, Td = 25), at sigma_max
(SIG = Td/2) and sigma_min (SIG = 0.23 -> sigma 0.5), variants alternating; the
recurrent step on the torch time loop (``RecurrentSynapses.method = "torch"``, the path
before the compiled loop of neurodelay/train/recurrent_kernels.c) at sigma_min; the
one-step recurrent model (a plain recurrent SNN) at sigma_min; and the discrete recurrent
forward of the frozen network (floatsim) next to the PyTorch discrete model's. A third
regime, ``sigma_min_rate4``, times the feed-forward and recurrent steps at sigma_min with
the hidden BatchNorm biases of both models set to LOW_RATE_BN_BIAS (hidden firing rates
~4 %, closer to a trained network's than the untrained ~17 %). Before the
timings of each regime, the compiled loop and the torch loop are checked to be the same
model: one step each from identical parameters, input and dropout masks, loss and every
gradient compared (float32; in float64 too when float32 rounding flipped spikes). Records
the CPU model, thread count and the hidden layers' firing rates (the event-driven loop's
work grows with them; the machine may be shared: the load average is in the header).
Target (issue 21): a recurrent step at most 2x a feed-forward step at sigma_min.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
from bench_common import (
    GRAD_RTOL,
    GRAD_RTOL64,
    LOSS_RTOL,
    LOSS_RTOL64,
    SIG_MIN,
    Trainer,
    _ok,
    build_model,
    compare,
    make_batch,
    model_forward,
)
from bench_harness import alternate, log, time_variants

NAME = "recurrent"
FULL = dict(n_inputs=140, hidden=[256, 256], n_outputs=20, window=25, T=100, batch=64,
            reps=(3, 3))
# the third regime: hidden BatchNorm bias -0.8 -> hidden firing rates ~4 % (instead of the
# untrained network's ~17 %), the event-driven loop's work scales with them
LOW_RATE_BN_BIAS = -0.8
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


def with_loop(base, method: str):
    """A copy of the recurrent model whose time loops run by ``method``."""
    m = copy.deepcopy(base)
    for r in m.recurrent_synapses():
        r.method = method
    return m


def loop_equality(rec, x, y) -> dict:
    """The compiled loop against the torch loop on the same model (module docstring)."""
    runs = {meth: Trainer(meth, with_loop(rec, meth), model_forward).loss_and_grads(
        x, y, seed=123) for meth in ("native", "torch")}
    c = compare(runs["native"], runs["torch"])
    out = {"native_vs_torch_loop": c}
    ok = _ok(c, LOSS_RTOL, GRAD_RTOL)
    if not ok:
        r64 = copy.deepcopy(rec).double()
        runs64 = {meth: Trainer(meth, with_loop(r64, meth), model_forward).loss_and_grads(
            x.double(), y, seed=123) for meth in ("native", "torch")}
        c64 = compare(runs64["native"], runs64["torch"])
        out["float64_native_vs_torch_loop"] = c64
        ok = _ok(c64, LOSS_RTOL64, GRAD_RTOL64)
    out["same_model"] = ok
    return out


def with_bn_bias(model, bias: float):
    """A copy of the model whose hidden BatchNorm biases are ``bias`` (the same change in
    the feed-forward and the recurrent model): lower hidden firing rates, as in trained
    networks, at the same shapes and work for the feed-forward step."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for bn in m.norms:
            bn.bias.fill_(bias)
    return m


def firing_rates(model, x) -> list[float]:
    """The hidden layers' firing rates of a training-mode forward (on a copy: it would
    update the model's BatchNorm statistics)."""
    m = copy.deepcopy(model).train()
    with torch.no_grad():
        _, sp = m(x, discrete=False, record=True)
    return [round(float(s.float().mean()), 4) for s in sp]


def run(args) -> dict:
    spec = dict(QUICK if args.quick else FULL)
    if args.reps:
        spec["reps"] = (args.reps, args.reps)
    x, y = make_batch(spec)
    ff, rec, one = build_model(spec), build_recurrent(spec), build_recurrent(spec, "one-step")
    from neurodelay.train.recurrent import native_status

    loop = native_status().describe()
    log(f"\n[recurrent] 140-256-256-20, T={spec['T']}, Td={spec['window']} (recurrent "
        f"window {spec['window']}), batch {spec['batch']}; CPU {cpu_model()}, "
        f"{torch.get_num_threads()} torch threads; recurrent time loop: {loop}")
    res = {"shape": "140-256-256-20", "T": spec["T"], "window": spec["window"],
           "batch": spec["batch"], "cpu_model": cpu_model(),
           "torch_threads": torch.get_num_threads(), "recurrent_loop": loop, "regimes": {}}
    regimes = (("sigma_max", spec["window"] / 2.0, None), ("sigma_min", SIG_MIN, None),
               ("sigma_min_rate4", SIG_MIN, LOW_RATE_BN_BIAS))
    for regime, sig, bias in regimes:
        for m in (ff, rec, one):
            m.set_sigma(sig)
        f_m, r_m = (ff, rec) if bias is None else (with_bn_bias(ff, bias),
                                                   with_bn_bias(rec, bias))
        eq = loop_equality(r_m, x, y)
        rates = firing_rates(r_m, x)
        log(f"  {regime}: compiled loop vs torch loop: loss rel diff "
            f"{eq['native_vs_torch_loop']['loss_rel_diff']:.2e}, worst gradient rel diff "
            f"{eq['native_vs_torch_loop']['grad_max_rel_diff']:.2e}"
            + (f" (float64: {eq['float64_native_vs_torch_loop']['grad_max_rel_diff']:.2e})"
               if "float64_native_vs_torch_loop" in eq else "")
            + f" -> same model: {eq['same_model']}; hidden firing rates {rates}")
        trainers = [Trainer("feedforward", f_m, model_forward),
                    Trainer("recurrent", r_m, model_forward)]
        if regime == "sigma_min":
            trainers.append(Trainer("recurrent_torch_loop", with_loop(rec, "torch"),
                                    model_forward))
            trainers.append(Trainer("recurrent_one_step", one, model_forward))
        for tr in trainers:                       # warm-up (caches, allocator)
            tr.step(x, y)
        tm = time_variants(trainers, x, y, spec["reps"][0 if regime == "sigma_max" else 1])
        ratio = tm["recurrent"]["median_s"] / tm["feedforward"]["median_s"]
        r = {"SIG": sig, "sigma": sig + 0.27, "hidden_bn_bias": bias, "loop_equality": eq,
             "hidden_firing_rates": rates, **tm, "recurrent_over_feedforward": ratio}
        if "recurrent_one_step" in tm:
            r["one_step_over_feedforward"] = (tm["recurrent_one_step"]["median_s"]
                                              / tm["feedforward"]["median_s"])
        if "recurrent_torch_loop" in tm:
            r["torch_loop_over_compiled_loop"] = (tm["recurrent_torch_loop"]["median_s"]
                                                  / tm["recurrent"]["median_s"])
        res["regimes"][regime] = r
        log(f"  {regime} (sigma {sig + 0.27:.2f}"
            + (f", hidden BatchNorm bias {bias} in both models" if bias is not None else "")
            + "):")
        for n, v in tm.items():
            log(f"    {n:20s} {v['median_s']:8.3f} s/step  {v['samples_per_s']:8.1f} samples/s")
        log(f"    recurrent / feed-forward: {ratio:.2f}x (target <= 2x at sigma_min)")
        if "torch_loop_over_compiled_loop" in r:
            log(f"    torch loop / compiled loop (recurrent step): "
                f"{r['torch_loop_over_compiled_loop']:.2f}x")
    res["discrete"] = _discrete(rec, spec, args)
    res["target_met"] = res["regimes"]["sigma_min"]["recurrent_over_feedforward"] <= 2.0
    res["same_model"] = all(r["loop_equality"]["same_model"] for r in res["regimes"].values())
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
