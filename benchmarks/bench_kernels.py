"""Section ``kernels``: the hot convolution kernels of a training step, each with its useful
multiply-adds and achieved rate next to this machine's peak, and the cost model of
``dcls_conv.delay_conv`` checked and refitted.

* ``peak``: a large float32 matmul (2048 x 2048 x 2048, torch's BLAS at the run's thread
  count), timed in this run: the rate the CPU reaches on dense work, in multiply-adds/s.
* per layer of the SHD shape 140-256-256-20 (T = 100, Td = 25, batch 64; inputs: Poisson
  counts, density 26 %, for layer 1, binary spikes at 16 % for the others: the densities
  of the ``train`` section's model), sigma 0.5 and 12.8: the spectral forward and backward
  (``causal_conv``), the multi-tap direct forward and kernel gradient (C kernels), and the
  one-tap integer-delay forward (``integer_delay_conv``, native); for each, useful
  multiply-adds = nonzero inputs x fan-out x taps per synapse (the mean span of used taps;
  1 for the one-tap kernel), the achieved rate (useful / time) and its fraction of peak,
  and the path the cost model picks for a training call of that layer; then (where the
  direct kernels apply) the whole ``delay_conv`` training call timed by each method, with
  the set-up the kernel timings leave out, and whether ``auto``'s pick is the faster.
* ``fit``: the cost model's constants refitted on this run (least squares on relative
  error over layer shapes, batches 16 / 64, densities 2-25 %, sigma 0.5), next to the
  constants in use (``dcls_conv.COST_SPECTRAL`` / ``COST_DIRECT``), and how often the
  constants in use pick the faster path on the fitting set.
"""
from __future__ import annotations

import statistics
import time

import torch
from bench_harness import log

NAME = "kernels"
T, WINDOW, SIG_MIN = 100, 25, 0.23
LAYERS = (("layer1", 140, 256, 0.26, True), ("layer2", 256, 256, 0.16, False),
          ("readout", 256, 20, 0.16, False))
FIT_SHAPES = ((140, 256), (256, 256), (256, 20), (512, 512), (512, 35))
FIT_BATCHES = (16, 64)
FIT_DENSITIES = (0.02, 0.08, 0.25)


def _median_time(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _median_backward_time(forward, grad, reps: int) -> float:
    """Median seconds of the backward pass alone: each rep runs ``forward()`` untimed,
    then times ``backward(grad)`` of its output (a difference of two separately timed
    medians can come out near 0 and give absurd rates)."""
    ts = []
    for k in range(reps + 1):
        y = forward()
        t0 = time.perf_counter()
        y.backward(grad)
        if k:
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def peak_rate(reps: int = 3, n: int = 2048) -> dict:
    """Multiply-adds/s of a float32 n x n x n matmul (torch's BLAS, current threads)."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    out = torch.empty(n, n)
    t = _median_time(lambda: torch.mm(a, b, out=out), reps)
    return {"n": n, "median_s": t, "mac_per_s": n ** 3 / t}


def _layer_input(B: int, n_in: int, density: float, counts: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    if counts:           # Poisson counts with P(nonzero) = density
        lam = -torch.log1p(torch.tensor(-density)).item()
        x = torch.poisson(torch.full((T, B, n_in), lam), generator=g)
    else:
        x = (torch.rand(T, B, n_in, generator=g) < density).float()
    return x.permute(1, 2, 0)                 # (B, in, T), time-major like the model's


def _synapses(n_in: int, n_out: int, sig: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_out, n_in, 1, generator=g) * (2.0 / n_in) ** 0.5
    P = (torch.rand(1, n_out, n_in, 1, generator=g) - 0.5) * (WINDOW - 1)
    return w, P, torch.full((1, n_out, n_in, 1), sig)


def _plan_parts(x, w, P, SIG):
    from neurodelay.train import dcls_conv, native

    kernel, gauss = dcls_conv._gauss_kernel_and_taps(w, P, SIG, WINDOW)
    kernel = kernel.detach()
    plan = dcls_conv.tap_plan(gauss, kernel)
    taps = dcls_conv.plan_taps(kernel, plan) if plan is not None else None
    return kernel, plan, taps, native.spikes(x)


def _layer(B, name, n_in, n_out, density, counts, sig, reps, peak) -> dict:
    from neurodelay.train import dcls_conv, native
    from neurodelay.train.intdelay import integer_delay_conv

    x = _layer_input(B, n_in, density, counts, seed=n_in + n_out)
    w, P, SIG = _synapses(n_in, n_out, sig, seed=1)
    kernel, plan, kt, sp = _plan_parts(x, w, P, SIG)
    gy = torch.randn(T, B, n_out, generator=torch.Generator().manual_seed(2)).permute(1, 2, 0)
    nnz = sp.nnz
    taps = plan.taps if plan is not None else float((kernel != 0).sum(-1).float().mean())
    useful = nnz * n_out * taps
    res = {"batch": B, "n_in": n_in, "n_out": n_out, "density": nnz / x.numel(),
           "nnz": nnz, "taps_per_synapse": taps, "useful_macs": useful,
           "width": plan.width if plan is not None else None, "kernels": {}}
    kreq = kernel.clone().requires_grad_()
    xreq = x.clone().requires_grad_(not counts)

    t_f = _median_time(lambda: dcls_conv.causal_conv(x, kernel), reps)
    t_b = _median_backward_time(lambda: dcls_conv.causal_conv(xreq, kreq), gy, reps)
    runs = {"spectral_forward": (t_f, useful),
            "spectral_backward": (t_b, useful * (1 if counts else 2))}
    if plan is not None:
        runs["direct_forward"] = (_median_time(lambda: native.multitap_forward(
            sp, *kt, plan.max_base), reps), useful)
        runs["direct_kernel_grad"] = (_median_time(lambda: native.multitap_kernel_grad(
            gy, sp, plan.base, plan.width, plan.max_base, WINDOW), reps), useful)
    if native.available():
        d = torch.randint(0, WINDOW, (n_out, n_in), generator=torch.Generator().manual_seed(3))
        w2 = w.reshape(n_out, n_in)
        runs["onetap_forward"] = (_median_time(
            lambda: integer_delay_conv(x, w2, d, method="native"), reps), nnz * n_out)
    for k, (t, u) in runs.items():
        res["kernels"][k] = {"median_s": t, "useful_macs": u, "mac_per_s": u / t,
                             "fraction_of_peak": u / t / peak["mac_per_s"]}
    if plan is not None:
        res["cost_model_choice"] = dcls_conv.choose_method(
            B, n_in, n_out, T, WINDOW, nnz, plan.width, not counts, True)
        res["whole_call"] = _whole_call(x, w, P, SIG, gy, counts, reps)
        res["whole_call"]["auto_picks_faster"] = (
            res["cost_model_choice"] == min(("spectral", "direct"),
                                            key=lambda m: res["whole_call"][m]))
    log(f"  {name} {n_in}->{n_out} sigma {sig + 0.27:.2f}: {nnz} nonzero inputs "
        f"({100 * res['density']:.0f} %), {taps:.1f} taps/synapse, useful "
        f"{useful / 1e6:.0f} M multiply-adds; cost model: "
        f"{res.get('cost_model_choice', 'spectral (too wide for the direct kernels)')}")
    for k, v in res["kernels"].items():
        log(f"    {k:20s} {1e3 * v['median_s']:8.2f} ms  {v['mac_per_s'] / 1e9:7.2f} G useful "
            f"MAC/s  ({100 * v['fraction_of_peak']:5.1f} % of peak)")
    if "whole_call" in res:
        wc = res["whole_call"]
        log(f"    whole delay_conv call, forward + backward as in training (kernel from "
            f"weight and P, set-up included): spectral {1e3 * wc['spectral']:.2f} ms, "
            f"direct {1e3 * wc['direct']:.2f} ms; auto's pick is the faster: "
            f"{wc['auto_picks_faster']}")
    return res


def _whole_call(x, w, P, SIG, gy, counts: bool, reps: int) -> dict:
    """Seconds of one training call of dcls_conv.delay_conv by each method: the Gaussian
    kernel from (weight, P), the path's set-up, forward and backward to weight, P and
    (hidden layers) x; the two methods alternate, median of ``reps`` rounds. What
    choose_method's DIRECT_MARGIN is checked against."""
    from neurodelay.train import dcls_conv

    xr = x.clone().requires_grad_(not counts)
    wr, Pr = w.clone().requires_grad_(), P.clone().requires_grad_()
    wrt = (wr, Pr) if counts else (xr, wr, Pr)

    def call(method):
        y = dcls_conv.delay_conv(xr, wr, Pr, SIG, WINDOW, method=method)
        torch.autograd.grad(y, wrt, gy)

    times = {"spectral": [], "direct": []}
    for k in range(reps + 1):
        for m in (("spectral", "direct") if k % 2 else ("direct", "spectral")):
            t0 = time.perf_counter()
            call(m)
            if k:
                times[m].append(time.perf_counter() - t0)
    return {m: statistics.median(v) for m, v in times.items()}


def _fit_point(n_in, n_out, B, density, reps):
    from neurodelay.train import dcls_conv, native

    x = _layer_input(B, n_in, density, False, seed=7)
    w, P, SIG = _synapses(n_in, n_out, SIG_MIN, seed=8)
    kernel, plan, kt, sp = _plan_parts(x, w, P, SIG)
    gy = torch.randn(T, B, n_out).permute(1, 2, 0)
    t_s = _median_time(lambda: dcls_conv.causal_conv(x, kernel), reps)
    t_d = 0.5 * (_median_time(lambda: native.multitap_forward(
        sp, *kt, plan.max_base), reps) + _median_time(
        lambda: native.multitap_kernel_grad(gy, sp, plan.base, plan.width, plan.max_base,
                                            WINDOW), reps))
    return {"n_in": n_in, "n_out": n_out, "batch": B, "density": density, "nnz": sp.nnz,
            "width": plan.width, "spectral_s": t_s, "direct_s": t_d,
            "spectral_features": dcls_conv.spectral_features(B, n_in, n_out, T, WINDOW),
            "direct_features": dcls_conv.direct_features(B, n_in, n_out, T, WINDOW, sp.nnz,
                                                         plan.width)}


def _lstsq_rel(rows, times) -> list[float]:
    """Nonnegative-ish least squares of times ~ rows @ c on relative error (columns with
    a negative solution are dropped and the rest refitted)."""
    keep = list(range(len(rows[0])))
    while True:
        a = torch.tensor([[r[j] / t for j in keep] for r, t in zip(rows, times)],
                         dtype=torch.float64)
        c = torch.linalg.lstsq(a, torch.ones(len(rows), 1, dtype=torch.float64)).solution
        c = c.flatten().tolist()
        if all(v >= 0 for v in c) or len(keep) == 1:
            out = [0.0] * len(rows[0])
            for j, v in zip(keep, c):
                out[j] = max(v, 0.0)
            return out
        keep = [j for j, v in zip(keep, c) if v >= 0] or keep[:1]


def fit(reps: int) -> dict:
    from neurodelay.train import dcls_conv

    pts = [_fit_point(ni, no, B, d, reps) for ni, no in FIT_SHAPES for B in FIT_BATCHES
           for d in FIT_DENSITIES]
    cs = _lstsq_rel([p["spectral_features"] for p in pts], [p["spectral_s"] for p in pts])
    cd = _lstsq_rel([p["direct_features"] for p in pts], [p["direct_s"] for p in pts])
    right = 0
    for p in pts:           # one pass each: which is faster, and does the model agree?
        pred_dir = dcls_conv._cost(dcls_conv.COST_DIRECT, p["direct_features"])
        pred_spec = dcls_conv._cost(dcls_conv.COST_SPECTRAL, p["spectral_features"])
        right += (pred_dir < pred_spec) == (p["direct_s"] < p["spectral_s"])
    res = {"points": pts, "fitted_spectral": cs, "fitted_direct": cd,
           "in_use_spectral": list(dcls_conv.COST_SPECTRAL),
           "in_use_direct": list(dcls_conv.COST_DIRECT),
           "in_use_picks_faster_pass": f"{right} of {len(pts)}"}
    log(f"  cost model refitted on {len(pts)} points: COST_SPECTRAL = ({cs[0]:.3g}, "
        f"{cs[1]:.3g}), COST_DIRECT = ({cd[0]:.3g}, {cd[1]:.3g}); in use: "
        f"{tuple(dcls_conv.COST_SPECTRAL)}, {tuple(dcls_conv.COST_DIRECT)}; the constants "
        f"in use pick the faster pass in {right} of {len(pts)}")
    return res


def run(args) -> dict:
    reps = args.reps or 3
    B = 16 if args.quick else 64
    log(f"\n[kernels] hot kernels at the SHD shape, batch {B}, T {T}, Td {WINDOW}, "
        f"{torch.get_num_threads()} thread(s)")
    peak = peak_rate()
    log(f"  peak: float32 matmul {peak['n']}^3 in {1e3 * peak['median_s']:.1f} ms = "
        f"{peak['mac_per_s'] / 1e9:.1f} G MAC/s")
    res = {"peak": peak, "layers": {}}
    for sig, regime in ((SIG_MIN, "sigma_min"), (WINDOW / 2.0, "sigma_max")):
        for name, n_in, n_out, density, counts in LAYERS:
            res["layers"][f"{name}_{regime}"] = _layer(B, name, n_in, n_out, density, counts,
                                                      sig, reps, peak)
    if not args.quick:
        res["fit"] = fit(reps)
    return res


def record(out: dict, res: dict) -> None:
    out["kernels"] = res
    out["peak_mac_per_s"] = res["peak"]["mac_per_s"]


def summary(out: dict, args) -> list[str]:
    k = out["kernels"]
    lines = [f"peak (float32 matmul): {k['peak']['mac_per_s'] / 1e9:.1f} G MAC/s"]
    for name, lay in k["layers"].items():
        parts = ", ".join(f"{n} {100 * v['fraction_of_peak']:.1f} %"
                          for n, v in lay["kernels"].items())
        lines.append(f"  {name}: useful MACs / time as % of peak: {parts}")
    whole = [lay["whole_call"] for lay in k["layers"].values() if "whole_call" in lay]
    if whole:
        lines.append(f"  whole delay_conv calls: auto picks the faster method in "
                     f"{sum(w['auto_picks_faster'] for w in whole)} of {len(whole)}")
    return lines
