"""Section ``infer``: discrete inference of the frozen network (float): floatsim (numpy)
and the PyTorch discrete model (torch_reference: conv1d + spikingjelly; torch_neurodelay:
the model's default fast path; torch_dft: dcls_conv.causal_conv), ms per sample, readout
difference and prediction agreement against torch_reference."""
from __future__ import annotations

import statistics

import numpy as np
import torch
from bench_common import TRAIN_FULL, build_model, dft_forward, make_batch, model_forward
from bench_harness import alternate, log
from bench_reference import ReferenceForward

NAME = "infer"


def run(args) -> dict:
    from neurodelay.sim import floatsim
    from neurodelay.train.freeze import freeze

    spec = dict(TRAIN_FULL["shd_b64"])
    n = 64 if args.quick else 512
    model = build_model(spec)
    model.eval()
    x, _ = make_batch(spec, seed=3, batch=n)
    net = freeze(model)
    ref = ReferenceForward(model)
    log(f"\n[inference] frozen 140-256-256-20 network, {n} samples of 100 steps, batch 256")

    def torch_run(fn):
        outs = []
        with torch.no_grad():
            for i in range(0, n, 256):
                outs.append(fn(model, x[i:i + 256], discrete=True))
        return torch.cat(outs)

    def fsim():
        return np.concatenate([floatsim.simulate(net, x[i:i + 256].numpy()).u
                               for i in range(0, n, 256)])

    runs = {"torch_reference": lambda: torch_run(ref),
            "torch_neurodelay": lambda: torch_run(model_forward),
            "torch_dft": lambda: torch_run(dft_forward), "floatsim": fsim}
    times, outs = alternate(runs, 3, keep=True)
    res = {k: {"s_per_sample": statistics.median(v) / n} for k, v in times.items()}
    _agreement(res, outs, floatsim.readout_scores)
    _log(res, runs)
    return res


def _agreement(res: dict, outs: dict, readout_scores) -> None:
    """Readout difference and prediction agreement of each run against torch_reference."""
    u_ref = outs["torch_reference"].numpy()

    def pred(u):
        return readout_scores(np.asarray(u, np.float64)).argmax(axis=1)

    for k in ("torch_neurodelay", "torch_dft", "floatsim"):
        u = np.asarray(outs[k])
        res[k]["readout_max_abs_diff_vs_torch_reference"] = float(np.abs(u - u_ref).max())
        res[k]["prediction_agreement_vs_torch_reference"] = float(np.mean(pred(u) == pred(u_ref)))


def _log(res: dict, runs: dict) -> None:
    for k in runs:
        extra = ""
        if "readout_max_abs_diff_vs_torch_reference" in res[k]:
            extra = (f"  readout max |diff| {res[k]['readout_max_abs_diff_vs_torch_reference']:.1e}"
                     f", same prediction {res[k]['prediction_agreement_vs_torch_reference']:.2%}")
        log(f"  {k:16s} {res[k]['s_per_sample'] * 1e3:8.3f} ms/sample{extra}")
    log("  (torch_neurodelay = the model's discrete forward on its default fast path: intdelay "
        "in float32 + lif_multistep; torch_dft = dcls_conv.causal_conv on the one-tap kernels "
        "in float32; float32 frequency-domain rounding can flip a spike within ~1e-6 of the "
        "threshold)")


def record(out: dict, res: dict) -> None:
    out["inference"] = res


def summary(out: dict, args) -> list[str]:
    return []
