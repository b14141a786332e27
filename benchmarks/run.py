#!/usr/bin/env python
"""neurodelay benchmarks: training steps, Lava verification, discrete inference, epochs.

    ./.venv/bin/python benchmarks/run.py [--json] [--quick] [--threads N] [--only ...]

Everything that is compared is measured side by side in one run (repetitions of the
variants alternate A B B A ...; medians are reported), because the machine may be shared.

1. Training step (forward + loss + backward + Adam, as neurodelay.train.trainer does it) at the
   SHD shape 140-256-256-20 (T = 100, Td = 25, batch 64 and 256) and the SSC shape
   140-512-512-35 (Td = 31, batch 128):
     reference      the paper's formulation: dcls Dcls1d 'gauss' on the left-padded input
                    + spikingjelly multi-step LIFNode (built here, independent of model.py)
     reference_ftz  the same with torch.set_flush_denormal(True) (sigma_min only; FTZ
                    acts on the calling thread only)
     neurodelay     DelaySNN.forward if model.py uses neurodelay.train.fastconv, else this
                    file's wrapper doing exactly what the proposed model.py patch does
   Both start from the same parameters (deep copies of one DelaySNN). Two sigma regimes:
   sigma_max (SIG = Td/2, the schedule's start) and sigma_min (SIG = 0.23 -> sigma 0.5,
   the last three quarters of the epochs). Before timing, one step of each variant
   from identical parameters, input and dropout masks is compared: loss and every
   gradient (max |diff| / max |reference|); for the first configuration also against a
   float64 reference, to show the float32 rounding noise both variants carry.
   Peak memory: peak RSS of a subprocess per (configuration, variant) running 2 steps.
2. Verification: bitsim (bit-accurate simulator) vs Lava fixed_pt on the same random
   quantized 140-256-256-20 network and inputs (spike-exact check on the Lava samples),
   seconds per sample for both, and the time bitsim takes for an SHD-size test set
   (2,264 samples of 100 steps; measured in full mode, extrapolated with --quick).
3. Discrete inference of the frozen network (float): floatsim (numpy) vs the PyTorch
   discrete model: reference (conv1d + spikingjelly), neurodelay (the model's discrete
   forward on its default fast path: intdelay in float32) and dft (fastconv.causal_conv
   + fast LIF, float32).
4. Fixed delays (section ``fixed``): one ``--delays fixed-random`` training step at the SHD
   shape (batch 64 and 256): intdelay (model.py now) vs conv1d over the whole window with
   the one-tap kernel (model.py before neurodelay.train.intdelay, ``conv1d_forward``),
   and the learned-delay step of the same architecture (fastconv, sigma_min); loss and
   gradients of intdelay vs conv1d compared first; peak RSS of each.
5. Discrete forward (section ``discrete``): discrete-model inference (no grad) at the SHD
   shape, batch 256: conv1d vs intdelay in float32 (the fast path: the default, what
   validation and eval run) and with float64 sums (the exact path verify runs), with
   hidden spike flips and readout error against a float64 run; peak RSS of each.
6. Epochs (section ``epoch``): a whole shd-preset schedule (default 4 epochs: sigma
   Td/2 -> 0.5 in the first quarter, discrete validation after every epoch) on a subset
   of ../shared/data/sshd_train.h5 (synthetic counts of the same shape when absent),
   neurodelay (fastconv training + intdelay validation) vs the paper's formulation
   (dcls + spikingjelly under flush-to-zero + conv1d validation, the model's
   reference=True path), epochs alternating; per-epoch times; peak RSS of each.
7. Verify end to end (section ``verify_e2e``): ``verify_run(run, "loihi2")`` without Lava
   on an SHD-size test set (2,264 samples x 100 steps, written from sshd_train.h5) with a
   140-256-256-20 model trained here (shd preset, 5 epochs on sshd_train.h5): the whole
   call and its stages (artifact, PyTorch, float sim, bit-accurate sim). Skipped, with
   the reason in the JSON, when ../shared/data is absent; --quick runs a tiny version.

``--json`` prints one JSON object on stdout (log lines go to stderr) with at least
``train_speedup`` (per configuration: the smaller of the two sigma regimes' speed-ups),
``sim_speedup_vs_lava``, ``shd_testset_verify_s``, ``fixed_delay_train_speedup``,
``fixed_vs_learned_step``, ``discrete_forward_speedup`` (fast path; ``_float64``: exact
path), ``epoch_speedup`` and ``verify_end_to_end_s``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _flag(argv, name):
    """Value of ``--name V`` / ``--name=V`` in argv (None if absent)."""
    val = None
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            val = argv[i + 1]
        elif a.startswith(name + "="):
            val = a.split("=", 1)[1]
    return val


def _early_env(argv) -> tuple[str, str]:
    """Thread settings that must be in the environment before numpy/torch load.

    OMP_WAIT_POLICY (--omp-wait-policy, default PASSIVE): with the default spinning
    policy, 2 torch threads on a machine where other processes also run wait in
    barriers for a descheduled thread; measured 8-10x slower steps for both variants,
    i.e. noise. PASSIVE costs little on a quiet machine.
    OPENBLAS_NUM_THREADS (--blas-threads, default 1; numpy's BLAS, used by bitsim,
    floatsim and Lava): 2 OpenBLAS threads under the same load made a batched numpy
    matmul 40x slower (2 vs 78 GFLOP/s). Values already in the environment are kept
    unless the flag is given.
    """
    pol = _flag(argv, "--omp-wait-policy")
    if pol is not None:
        if pol.upper() not in ("PASSIVE", "ACTIVE", "DEFAULT"):
            sys.exit(f"--omp-wait-policy must be passive, active or default, got {pol!r}")
        if pol.upper() == "DEFAULT":
            os.environ.pop("OMP_WAIT_POLICY", None)
        else:
            os.environ["OMP_WAIT_POLICY"] = pol.upper()
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    blas = _flag(argv, "--blas-threads")
    if blas is not None:
        if not blas.isdigit() or int(blas) < 1:
            sys.exit(f"--blas-threads must be a positive integer, got {blas!r}")
        os.environ["OPENBLAS_NUM_THREADS"] = blas
    else:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return os.environ.get("OMP_WAIT_POLICY", "default"), os.environ["OPENBLAS_NUM_THREADS"]


if __name__ == "__main__":
    OMP_WAIT_POLICY, BLAS_THREADS = _early_env(sys.argv[1:])
else:  # imported (tests): leave the environment alone
    OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY", "default")
    BLAS_THREADS = os.environ.get("OPENBLAS_NUM_THREADS", "default")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SIG_MIN = 0.23
LOSS_RTOL = 1e-5          # |loss_a - loss_b| / |loss_b|
GRAD_RTOL = 1e-4          # max over parameters of max|g_a - g_b| / max|g_b|
SHD_TEST_SAMPLES = 2264

TRAIN_FULL = {
    "shd_b64": dict(n_inputs=140, hidden=[256, 256], n_outputs=20, window=25, T=100, batch=64,
                    reps=(5, 3)),
    "shd_b256": dict(n_inputs=140, hidden=[256, 256], n_outputs=20, window=25, T=100,
                     batch=256, reps=(3, 2)),
    "ssc_b128": dict(n_inputs=140, hidden=[512, 512], n_outputs=35, window=31, T=100,
                     batch=128, reps=(3, 2)),
}
TRAIN_QUICK = {
    "shd_b16": dict(n_inputs=140, hidden=[256, 256], n_outputs=20, window=25, T=100, batch=16,
                    reps=(3, 3)),
}

SECTIONS = ("train", "verify", "infer", "fixed", "discrete", "epoch", "verify_e2e")

_LOG_STREAM = sys.stdout


def log(msg: str = "") -> None:
    print(msg, file=_LOG_STREAM, flush=True)


class BenchmarkError(RuntimeError):
    """A benchmark could not run (missing module, failed subprocess)."""


# ============================================================================ models
def build_model(spec: dict, seed: int = 0, delays: str = "learned"):
    from neurodelay.train.model import DelaySNN, ModelConfig

    cfg = ModelConfig(n_inputs=spec["n_inputs"], n_outputs=spec["n_outputs"],
                      hidden=list(spec["hidden"]), max_delay_steps=spec["window"],
                      delays=delays)
    torch.manual_seed(seed)
    return DelaySNN(cfg, seed=seed)


def make_batch(spec: dict, seed: int = 1, batch: int | None = None):
    """Binned-count-like input (Poisson, mean 0.3 per bin) and random labels."""
    g = torch.Generator().manual_seed(seed)
    b = spec["batch"] if batch is None else batch
    x = torch.poisson(torch.full((b, spec["T"], spec["n_inputs"]), 0.3), generator=g)
    y = torch.randint(0, spec["n_outputs"], (b,), generator=g)
    return x, y


def model_uses_fastconv() -> bool:
    """True when model.py itself calls neurodelay.train.fastconv (the proposed patch applied)."""
    import neurodelay.train.model as M

    return hasattr(M, "delay_conv") and hasattr(M, "lif_multistep")


def _sj_lif(tau: float, threshold: float, alpha: float):
    from spikingjelly.activation_based import neuron, surrogate

    return neuron.LIFNode(tau=tau, decay_input=False, v_threshold=threshold, v_reset=0.0,
                          surrogate_function=surrogate.ATan(alpha=alpha), detach_reset=True,
                          step_mode="m", store_v_seq=True)


class ReferenceForward:
    """The paper's formulation on a DelaySNN's parameters: dcls conv + spikingjelly LIF.

    Written out here (not DelaySNN.forward) so it stays the reference after model.py
    switches to the fast path. Uses the model's Dcls1d modules, BatchNorms and dropouts.
    """

    def __init__(self, model):
        c = model.cfg
        self.hidden = [_sj_lif(c.tau, c.threshold, c.surrogate_alpha) for _ in model.synapses]
        self.readout = _sj_lif(c.tau, 1e9, c.surrogate_alpha)

    def __call__(self, model, x, discrete: bool = False, record: list | None = None):
        for node in (*self.hidden, self.readout):
            node.reset()
        b, t, _ = x.shape
        h = x.transpose(1, 2)
        for syn, bn, lif, drop in zip(model.synapses, model.norms, self.hidden, model.drops):
            cur = _ref_syn(syn, h, discrete).permute(2, 0, 1)
            c = cur.shape[-1]
            cur = bn(cur.reshape(t * b, c)).reshape(t, b, c)
            s = lif(cur)
            if record is not None:
                record.append(s.detach())
            h = drop(s).permute(1, 2, 0)
        cur = _ref_syn(model.readout_synapses, h, discrete).permute(2, 0, 1)
        self.readout(cur)
        return self.readout.v_seq.permute(1, 0, 2)


def _ref_syn(syn, h, discrete):
    xp = F.pad(h, (syn.window - 1, 0))
    if discrete or syn.mode != "learned":
        return F.conv1d(xp, syn.discrete_kernel())
    return syn.conv(xp)


def model_forward(model, x, discrete: bool = False, record: list | None = None):
    """DelaySNN.forward as model.py has it now (hidden spikes recorded time-major)."""
    if record is None:
        return model(x, discrete=discrete)
    u, spikes = model(x, discrete=discrete, record=True)
    record.extend(sp.permute(1, 0, 2) for sp in spikes)           # back to (T, B, C)
    return u


def conv1d_forward(model, x, discrete: bool = False, record: list | None = None):
    """DelaySNN.forward as it was before neurodelay.train.intdelay: every synapse with one
    integer delay (fixed-random / none, and the discrete model) through F.conv1d over the
    whole window with the one-tap kernel, learned delays through fastconv.delay_conv,
    fastconv.lif_multistep for the neurons. The baseline of the fixed-delay benchmarks."""
    from neurodelay.train.fastconv import delay_conv, lif_multistep

    def syn_fwd(syn, h):
        if discrete or syn.mode != "learned":
            return F.conv1d(F.pad(h, (syn.window - 1, 0)), syn.discrete_kernel())
        return delay_conv(h, syn.conv.weight, syn.conv.P, syn.conv.SIG, syn.window)

    return _manual_forward(model, x, syn_fwd, record)


def _manual_forward(model, x, syn_fwd, record):
    from neurodelay.train.fastconv import lif_multistep

    alpha = model.cfg.surrogate_alpha
    b, t, _ = x.shape
    h = x.transpose(1, 2)
    for syn, bn, lif, drop in zip(model.synapses, model.norms, model.neurons, model.drops):
        cur = syn_fwd(syn, h).permute(2, 0, 1)
        c = cur.shape[-1]
        cur = bn(cur.reshape(t * b, c)).reshape(t, b, c)
        s = lif_multistep(cur, lif.tau, lif.v_threshold, alpha)
        if record is not None:
            record.append(s.detach())
        h = drop(s).permute(1, 2, 0)
    cur = syn_fwd(model.readout_synapses, h).permute(2, 0, 1)
    _, v = lif_multistep(cur, model.readout.tau, model.readout.v_threshold, alpha,
                         return_v=True)
    return v.permute(1, 0, 2)


def fast_forward(model, x, discrete: bool = False, record: list | None = None,
                 discrete_dft: bool = False):
    """DelaySNN.forward with the proposed model.py patch (neurodelay.train.fastconv).

    Without the patch, this file's wrapper: the discrete (evaluation) model through
    conv1d. ``discrete_dft`` runs the discrete model's one-tap kernels through
    fastconv.causal_conv instead (inference benchmark only).
    """
    if model_uses_fastconv() and not discrete_dft:
        return model_forward(model, x, discrete=discrete, record=record)
    from neurodelay.train.fastconv import causal_conv, delay_conv

    def syn_fwd(syn, h):
        if discrete_dft:
            return causal_conv(h, syn.discrete_kernel())
        if discrete or syn.mode != "learned":
            return F.conv1d(F.pad(h, (syn.window - 1, 0)), syn.discrete_kernel())
        return delay_conv(h, syn.conv.weight, syn.conv.P, syn.conv.SIG, syn.window)

    return _manual_forward(model, x, syn_fwd, record)


# ============================================================================ training
class Trainer:
    """One variant: its own model copy, optimizers (train.build_optim) and forward."""

    def __init__(self, name: str, base, forward, ftz: bool = False):
        from neurodelay.train.trainer import TrainConfig, build_optim

        self.name, self.forward, self.ftz = name, forward, ftz
        self.model = copy.deepcopy(base)
        self.model.train()
        self.opt_w, _, self.opt_p, _ = build_optim(self.model, TrainConfig())

    def loss_and_grads(self, x, y, seed: int):
        from neurodelay.train.model import loss_fn

        self.model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)                       # same dropout masks in every variant
        spikes = []
        with _ftz(self.ftz):
            loss = loss_fn(self.forward(self.model, x, record=spikes), y)
            loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters()
                 if p.grad is not None}
        return float(loss.detach()), grads, spikes

    def step(self, x, y) -> float:
        from neurodelay.train.model import loss_fn

        with _ftz(self.ftz):
            t0 = time.perf_counter()
            loss = loss_fn(self.forward(self.model, x), y)
            self.opt_w.zero_grad(set_to_none=True)
            if self.opt_p is not None:
                self.opt_p.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_w.step()
            if self.opt_p is not None:
                self.opt_p.step()
            self.model.after_step()
            return time.perf_counter() - t0


class _ftz:
    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        if self.on:
            torch.set_flush_denormal(True)

    def __exit__(self, *exc):
        if self.on:
            torch.set_flush_denormal(False)


def compare(a: tuple, b: tuple) -> dict:
    """Loss, gradient and hidden-spike differences of a = (loss, grads, spikes) against b."""
    la, ga, sa = a
    lb, gb, sb = b
    worst, worst_name = 0.0, None
    for name, g in gb.items():
        if name not in ga:
            raise BenchmarkError(f"gradient of {name} missing in one variant")
        scale = float(g.abs().max())
        d = float((ga[name].double() - g.double()).abs().max()) / max(scale, 1e-30)
        if d > worst:
            worst, worst_name = d, name
    flips = [int((p != q).sum()) for p, q in zip(sa, sb)]
    return {"loss_a": la, "loss_b": lb, "loss_rel_diff": abs(la - lb) / max(abs(lb), 1e-30),
            "grad_max_rel_diff": worst, "worst_param": worst_name,
            "hidden_spike_flips": flips, "hidden_spikes": [int(q.sum()) for q in sb]}


LOSS_RTOL64, GRAD_RTOL64 = 1e-9, 1e-7


def check_equal(base, x, y, fp64: bool) -> dict:
    """Are the two variants the same model? One step each from identical parameters,
    input and dropout masks.

    float32: loss within LOSS_RTOL and every gradient within GRAD_RTOL. A membrane within
    float32 rounding (~1e-7) of the threshold can make one variant spike where the other
    does not (the summation order differs); such a flip moves some gradients by more than
    GRAD_RTOL. So when float32 gradients differ, or ``fp64``, both variants are also run
    in float64, where rounding is ~1e-16 and the gradients must agree to GRAD_RTOL64:
    that decides "same model". The float64 reference is also the truth against which
    the float32 rounding noise of both variants is reported, and when the two float32
    losses differ by more than LOSS_RTOL (spike flips), the new variant still passes if
    its float32 loss is no further from that truth than the reference's (the flips are
    then the reference's own rounding).
    """
    ref = Trainer("reference", base, ReferenceForward(base)).loss_and_grads(x, y, seed=123)
    fast = Trainer("neurodelay", base, fast_forward).loss_and_grads(x, y, seed=123)
    c = compare(fast, ref)
    out = {"neurodelay_vs_reference": c}
    f32_ok = c["loss_rel_diff"] <= LOSS_RTOL and c["grad_max_rel_diff"] <= GRAD_RTOL
    if fp64 or not f32_ok:
        b64 = copy.deepcopy(base).double()
        r64 = Trainer("reference64", b64, ReferenceForward(b64)).loss_and_grads(
            x.double(), y, seed=123)
        f64 = Trainer("neurodelay64", b64, fast_forward).loss_and_grads(x.double(), y, seed=123)
        c64 = compare(f64, r64)
        out["float64_neurodelay_vs_reference"] = c64
        out["reference_fp32_vs_fp64"] = compare(ref, r64)
        out["neurodelay_fp32_vs_fp64"] = compare(fast, r64)
        ok64 = c64["loss_rel_diff"] <= LOSS_RTOL64 and c64["grad_max_rel_diff"] <= GRAD_RTOL64
        # float32 may differ only through spike flips, and only by a little in the loss
        # (or by no more than the reference's own distance from the float64 truth)
        c["passed"] = ok64 and _f32_loss_ok(c, out["neurodelay_fp32_vs_fp64"],
                                            out["reference_fp32_vs_fp64"]) and (
            f32_ok or sum(c["hidden_spike_flips"]) > 0)
        c["float64_passed"] = ok64
    else:
        c["passed"] = True
    return out


def _f32_loss_ok(c: dict, new_vs_64: dict, old_vs_64: dict) -> bool:
    """The float32 losses agree (LOSS_RTOL), or the new one is no further from the
    float64 truth than the old one."""
    return (c["loss_rel_diff"] <= LOSS_RTOL
            or new_vs_64["loss_rel_diff"] <= old_vs_64["loss_rel_diff"])


def check_pair(base, fwd_new, fwd_old, x, y) -> dict:
    """check_equal for any two forwards (new vs old) of one model: loss and gradients of
    one step from identical parameters, input and dropout masks; when float32 differs
    beyond LOSS_RTOL / GRAD_RTOL, float64 decides (as in check_equal)."""
    old = Trainer("old", base, fwd_old).loss_and_grads(x, y, seed=123)
    new = Trainer("new", base, fwd_new).loss_and_grads(x, y, seed=123)
    c = compare(new, old)
    f32_ok = c["loss_rel_diff"] <= LOSS_RTOL and c["grad_max_rel_diff"] <= GRAD_RTOL
    c["passed"] = f32_ok
    if not f32_ok:
        b64 = copy.deepcopy(base).double()
        o64 = Trainer("old64", b64, fwd_old).loss_and_grads(x.double(), y, seed=123)
        n64 = Trainer("new64", b64, fwd_new).loss_and_grads(x.double(), y, seed=123)
        c64 = compare(n64, o64)
        ok64 = c64["loss_rel_diff"] <= LOSS_RTOL64 and c64["grad_max_rel_diff"] <= GRAD_RTOL64
        c["float64"] = c64
        c["new_fp32_vs_fp64"] = compare(new, o64)
        c["old_fp32_vs_fp64"] = compare(old, o64)
        c["passed"] = ok64 and _f32_loss_ok(c, c["new_fp32_vs_fp64"],
                                            c["old_fp32_vs_fp64"]) and (
            sum(c["hidden_spike_flips"]) > 0)
    return c


def time_variants(trainers: list, x, y, reps: int) -> dict:
    """Alternate the variants (A B C, C B A, ...); no separate warm-up: the equality
    check just ran every variant's forward and backward at these shapes."""
    times = {tr.name: [] for tr in trainers}
    for r in range(reps):
        order = trainers if r % 2 == 0 else trainers[::-1]
        for tr in order:
            times[tr.name].append(tr.step(x, y))
    b = x.shape[0]
    return {n: {"median_s": statistics.median(ts), "samples_per_s": b / statistics.median(ts),
                "times_s": [round(t, 4) for t in ts]} for n, ts in times.items()}


def train_benchmarks(configs: dict, args) -> dict:
    res = {}
    for k, (name, spec) in enumerate(configs.items()):
        shape = f"{spec['n_inputs']}-{'-'.join(map(str, spec['hidden']))}-{spec['n_outputs']}"
        log(f"\n[train] {name}: {shape}, T={spec['T']}, Td={spec['window']}, "
            f"batch {spec['batch']}")
        base = build_model(spec)
        x, y = make_batch(spec)
        entry = {"shape": shape, "T": spec["T"], "window": spec["window"],
                 "batch": spec["batch"], "regimes": {}}
        for regime in ("sigma_max", "sigma_min"):
            sig = spec["window"] / 2.0 if regime == "sigma_max" else SIG_MIN
            base.set_sigma(sig)
            t0 = time.perf_counter()
            chk = check_equal(base, x, y, fp64=(k == 0))
            reps = args.reps or spec["reps"][0 if regime == "sigma_max" else 1]
            trainers = [Trainer("reference", base, ReferenceForward(base)),
                        Trainer("neurodelay", base, fast_forward)]
            if regime == "sigma_min":
                trainers.insert(1, Trainer("reference_ftz", base, ReferenceForward(base),
                                           ftz=True))
            tm = time_variants(trainers, x, y, reps)
            r = {"SIG": sig, "sigma": sig + 0.27, "check": chk, **tm,
                 "speedup": tm["reference"]["median_s"] / tm["neurodelay"]["median_s"]}
            if "reference_ftz" in tm:
                r["speedup_vs_ftz"] = (tm["reference_ftz"]["median_s"]
                                       / tm["neurodelay"]["median_s"])
            entry["regimes"][regime] = r
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


# ---------------------------------------------------------------------------- memory
def _status_mb(key: str) -> float:
    """VmRSS (current) or VmHWM (peak) of this process in MB, from /proc/self/status.

    (getrusage's ru_maxrss is not used: Linux carries the parent's peak over fork+exec.)
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise BenchmarkError(f"/proc/self/status has no {key} line (Linux only)")


def memory_probe(spec: dict, variant: str, threads: int) -> dict:
    """Peak RSS of a fresh process doing 2 training steps of ``variant`` (sigma_max)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_probe",
           json.dumps({"spec": spec, "variant": variant}), "--threads", str(threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), timeout=900)
    if p.returncode != 0:
        raise BenchmarkError(f"memory probe {variant} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


PROBE_VARIANTS = ("reference", "neurodelay", "learned", "fixed_conv1d", "fixed_intdelay",
                  "discrete_conv1d", "discrete_intdelay_f64", "discrete_intdelay_f32",
                  "epoch_reference", "epoch_neurodelay")


def _probe_main(arg: str) -> None:
    """What one variant needs at its peak, in a fresh process:
    training variants: 2 steps (reference / neurodelay at SIG = Td/2, learned at SIG_MIN,
    fixed_* with fixed random delays); discrete_*: 2 no-grad discrete forwards;
    epoch_*: 2 training steps + 1 discrete validation forward of the same batch, through
    the model's own paths (reference=True: dcls + spikingjelly + conv1d)."""
    d = json.loads(arg)
    spec, variant = d["spec"], d["variant"]
    if variant not in PROBE_VARIANTS:
        raise BenchmarkError(f"unknown probe variant {variant!r}")
    x, y = make_batch(spec)
    if variant.startswith("discrete_"):
        model = build_model(spec)
        model.eval()
        model.set_discrete_dtype(torch.float64 if variant == "discrete_intdelay_f64"
                                 else torch.float32)
        fwd = conv1d_forward if variant == "discrete_conv1d" else model_forward
        baseline = _status_mb("VmRSS")
        with torch.no_grad():
            for _ in range(2):
                fwd(model, x, discrete=True)
    elif variant.startswith("epoch_"):
        ref = variant == "epoch_reference"
        base = build_model(spec)
        base.set_sigma(SIG_MIN)
        tr = Trainer(variant, base, lambda m, xb, record=None: m(xb, reference=ref), ftz=ref)
        del base
        baseline = _status_mb("VmRSS")
        for _ in range(2):
            tr.step(x, y)
        tr.model.eval()
        with torch.no_grad(), _ftz(ref):
            tr.model(x, discrete=True, reference=ref)
    else:
        base = build_model(spec, delays="fixed-random" if variant.startswith("fixed_")
                           else "learned")
        base.set_sigma(SIG_MIN if variant == "learned" else spec["window"] / 2.0)
        fwd = {"reference": ReferenceForward(base), "neurodelay": fast_forward,
               "learned": model_forward, "fixed_conv1d": conv1d_forward,
               "fixed_intdelay": model_forward}[variant]
        tr = Trainer(variant, base, fwd)
        del base
        baseline = _status_mb("VmRSS")
        for _ in range(2):
            tr.step(x, y)
    peak = _status_mb("VmHWM")
    print(json.dumps({"peak_mb": peak, "baseline_mb": baseline, "peak_minus_baseline_mb":
                      peak - baseline}))


# ============================================================================ verification
def random_qnet(sizes, seed: int = 0, max_delay: int = 24):
    """Random integer network shaped like a quantized SHD model (8-bit mixed weights,
    delays 0..max_delay, LIF decay of tau = 1.005 steps, current cleared each step)."""
    from neurodelay.deploy.network import QLayer, QNetwork

    rng = np.random.default_rng(seed)
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        w = rng.integers(-128, 128, (b, a))
        layers.append(QLayer(weight=w, weight_exp=0, num_weight_bits=8,
                             delay=rng.integers(0, max_delay + 1, (b, a)),
                             bias_mant=np.zeros(b, np.int64), bias_exp=0, du=4095, dv=4076,
                             vth=None if last else 400, scale=1.0 / 64,
                             kind="li" if last else "lif", name=f"fc{k}"))
    return QNetwork(layers, target="loihi2")


def verify_benchmark(args) -> dict:
    from neurodelay.sim import bitsim

    sizes = (140, 256, 256, 20)
    qnet = random_qnet(sizes)
    T = 100
    n_lava = args.lava_samples if args.lava_samples is not None else (1 if args.quick else 3)
    n_sim = 256 if args.quick else SHD_TEST_SAMPLES
    rng = np.random.default_rng(5)
    counts = rng.poisson(0.3, (n_sim, T, sizes[0])).astype(np.int64)
    n_steps = bitsim.steps_needed(qnet, T)
    log(f"\n[verify] random quantized {'-'.join(map(str, sizes))} network, {T}-step samples, "
        f"{n_steps} Lava rows each")
    out = {"network": "-".join(map(str, sizes)), "T": T, "n_steps": n_steps}

    # bitsim on many samples (the first n_lava of them are also run in Lava)
    t0 = time.perf_counter()
    sim = bitsim.run(qnet, counts, n_steps=n_steps)
    sim_s = time.perf_counter() - t0
    out["bitsim_samples"] = n_sim
    out["bitsim_s_per_sample"] = sim_s / n_sim
    out["shd_testset_verify_s"] = sim_s / n_sim * SHD_TEST_SAMPLES
    out["shd_testset_verify_measured"] = n_sim == SHD_TEST_SAMPLES
    log(f"  bitsim: {n_sim} samples in {sim_s:.2f} s = {sim_s / n_sim * 1e3:.2f} ms/sample; "
        f"SHD test set ({SHD_TEST_SAMPLES} samples): {out['shd_testset_verify_s']:.1f} s "
        f"({'measured' if out['shd_testset_verify_measured'] else 'extrapolated'})")
    if n_lava <= 0:
        return out
    try:
        from neurodelay.sim import lavarun
    except ImportError as e:
        out["lava_error"] = f"neurodelay.sim.lavarun unavailable: {e}"
        log(f"  Lava: skipped ({out['lava_error']})")
        return out
    lava = lavarun.run_lava(qnet, counts[:n_lava], n_steps)
    t0 = time.perf_counter()
    sim_few = bitsim.run(qnet, counts[:n_lava], n_steps=n_steps, record=True)
    few_s = (time.perf_counter() - t0) / n_lava
    mism = int(sum(int((a.astype(bool) != np.asarray(b).astype(bool)).sum())
                   for a, b in zip(lava["spikes"], sim_few.spikes)))
    mism += int((np.asarray(lava["v"]) != np.asarray(sim.v[:n_lava])).sum())
    out.update({
        "lava_samples": n_lava, "lava_s_per_sample": lava["s_per_sample"],
        "lava_compile_s": lava["compile_s"], "bitsim_s_per_sample_on_lava_samples": few_s,
        "spike_exact": mism == 0, "mismatches": mism,
        "lava_spikes_per_layer": [int(s.sum()) for s in lava["spikes"]],
        "sim_speedup_vs_lava": lava["s_per_sample"] / out["bitsim_s_per_sample"],
    })
    log(f"  Lava fixed_pt: {n_lava} sample(s), {lava['s_per_sample']:.2f} s/sample "
        f"(+ {lava['compile_s']:.1f} s compile); spike-exact: "
        f"{'yes' if mism == 0 else f'NO ({mism} mismatches)'} "
        f"(spikes per layer {out['lava_spikes_per_layer']})")
    log(f"  bitsim speed-up vs Lava per sample: {out['sim_speedup_vs_lava']:.0f}x "
        f"(bitsim on the {n_lava} Lava sample(s) alone: {few_s * 1e3:.1f} ms/sample)")
    return out


# ============================================================================ inference
def inference_benchmark(args) -> dict:
    from neurodelay.sim import floatsim
    from neurodelay.deploy.freeze import freeze

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

    def dft(m, xb, discrete):
        return fast_forward(m, xb, discrete=discrete, discrete_dft=True)

    runs = {"torch_reference": lambda: torch_run(ref),
            "torch_neurodelay": lambda: torch_run(fast_forward),
            "torch_dft": lambda: torch_run(dft), "floatsim": fsim}
    times = {k: [] for k in runs}
    outs = {}
    for r in range(3):
        for k in (runs if r % 2 == 0 else list(runs)[::-1]):
            t0 = time.perf_counter()
            outs[k] = runs[k]()
            times[k].append(time.perf_counter() - t0)
    res = {k: {"s_per_sample": statistics.median(v) / n} for k, v in times.items()}
    u_ref = outs["torch_reference"].numpy()

    def pred(u):
        return floatsim.readout_scores(np.asarray(u, np.float64)).argmax(axis=1)

    for k in ("torch_neurodelay", "torch_dft", "floatsim"):
        u = np.asarray(outs[k])
        res[k]["readout_max_abs_diff_vs_torch_reference"] = float(np.abs(u - u_ref).max())
        res[k]["prediction_agreement_vs_torch_reference"] = float(np.mean(pred(u) == pred(u_ref)))
    for k in runs:
        extra = ""
        if "readout_max_abs_diff_vs_torch_reference" in res[k]:
            extra = (f"  readout max |diff| {res[k]['readout_max_abs_diff_vs_torch_reference']:.1e}"
                     f", same prediction {res[k]['prediction_agreement_vs_torch_reference']:.2%}")
        log(f"  {k:16s} {res[k]['s_per_sample'] * 1e3:8.3f} ms/sample{extra}")
    log("  (torch_neurodelay = the model's discrete forward on its default fast path: intdelay "
        "in float32 + lif_multistep; torch_dft = fastconv.causal_conv on the one-tap kernels "
        "in float32; float32 frequency-domain rounding can flip a spike within ~1e-6 of the "
        "threshold)")
    return res


# ============================================================================ fixed delays
FIXED_FULL = ("shd_b64", "shd_b256")
FIXED_QUICK = ("shd_b16",)


def _spec_shape(spec: dict) -> str:
    return f"{spec['n_inputs']}-{'-'.join(map(str, spec['hidden']))}-{spec['n_outputs']}"


def fixed_delay_benchmarks(args) -> dict:
    """One training step with fixed random integer delays (``--delays fixed-random``):
    intdelay (model.py now) vs conv1d over the whole window (model.py before), and the
    learned-delay step (fastconv, SIG_MIN) of the same architecture for comparison."""
    res = {}
    allc = {**TRAIN_FULL, **TRAIN_QUICK}
    for name in (FIXED_QUICK if args.quick else FIXED_FULL):
        spec = allc[name]
        log(f"\n[fixed] {name}: {_spec_shape(spec)}, T={spec['T']}, Td={spec['window']}, "
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
        entry = {"shape": _spec_shape(spec), "T": spec["T"], "window": spec["window"],
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
        res[name] = entry
    return res


def _git_commit() -> str | None:
    """The checkout's commit, with " (modified)" when tracked files differ from it; None
    outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


def _native_status() -> str:
    """Which integer-delay path `auto` takes here: the compiled kernels, or the
    frequency-domain fallback and why (neurodelay.train.native)."""
    try:
        from neurodelay.train import native
    except ImportError:                       # a checkout from before the kernels
        return "frequency domain (no neurodelay.train.native in this checkout)"
    return native.status().describe()


# ============================================================================ discrete forward
def discrete_benchmark(args) -> dict:
    """Discrete-model inference (no grad): conv1d over the whole window (before) vs
    intdelay in float32 (the FAST path, model.py's default: per-epoch validation and
    `eval`) and with float64 sums (the EXACT path `verify` runs,
    DelaySNN.set_discrete_dtype(torch.float64)). Precision against a float64 run of the
    conv1d formulation: hidden spike flips and readout error."""
    spec = dict(TRAIN_FULL["shd_b64"])
    spec["batch"] = 64 if args.quick else 256
    reps = args.reps or (3 if args.quick else 5)
    log(f"\n[discrete] {_spec_shape(spec)}, T={spec['T']}, Td={spec['window']}, batch "
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
        times = {k: [] for k in runs}
        for r in range(reps):
            for k in (runs if r % 2 == 0 else list(runs)[::-1]):
                t0 = time.perf_counter()
                runs[k]()
                times[k].append(time.perf_counter() - t0)
    from neurodelay.train.model import scores_from_membrane

    pred = lambda u: scores_from_membrane(u).argmax(1)          # noqa: E731
    res = {"shape": _spec_shape(spec), "T": spec["T"], "window": spec["window"],
           "batch": spec["batch"], "float64_hidden_spikes": [int(s.sum()) for s in rec64]}
    for k, ts in times.items():
        u, rec = outs[k]
        res[k] = {"median_s": statistics.median(ts), "ms_per_sample":
                  1e3 * statistics.median(ts) / spec["batch"], "times_s": [round(t, 4) for t in ts],
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
    for k in runs:
        v = res[k]
        log(f"    {k:13s} {v['median_s']:8.3f} s/batch ({v['ms_per_sample']:.2f} ms/sample)  "
            f"vs float64: spike flips {v['hidden_spike_flips_vs_float64']}, readout max|err| "
            f"{v['readout_max_abs_err_vs_float64']:.1e}")
    log(f"    speed-up vs conv1d: fast path (float32, eval) {res['speedup']:.2f}x, exact path "
        f"(float64 sums, verify) {res['speedup_float64']:.2f}x")
    if not args.no_memory:
        res["peak_rss_mb"] = {v: memory_probe(spec, "discrete_" + v, args.threads)
                              for v in ("conv1d", "intdelay_f32", "intdelay_f64")}
        log("  peak RSS (2 forwards, own process): " + ", ".join(
            f"{k} {m['peak_mb']:.0f} MB" for k, m in res["peak_rss_mb"].items()))
    return res


# A full paper-faithful SHD run: 150 epochs, SHD's 8,156 training samples, its 2,264-sample
# test set as validation after every epoch, ~100 steps per sample (dt 10 ms, 1 s).
SHD_FULL_RUN = {"epochs": 150, "train_samples": 8156, "valid_samples": 2264, "steps": 100}


def shd_extrapolation(ep: dict) -> dict:
    """The wall time of a full SHD run (SHD_FULL_RUN) for both variants of the epoch
    section's result ``ep``, scaled linearly in samples and steps from the measured mean
    epoch: training x (8,156 / n_train) x (100 / mean padded T), validation x
    (2,264 / n_valid) x (100 / validation T). An extrapolation, labelled as such."""
    f = SHD_FULL_RUN
    out = {"what": (f"extrapolated, not measured: {f['epochs']} epochs of {f['train_samples']:,} "
                    f"training samples and {f['valid_samples']:,} validation samples of "
                    f"{f['steps']} steps, scaled linearly in samples and steps from the "
                    f"measured mean epoch of the epoch section")}
    hours = {}
    for v in ("reference", "neurodelay"):
        r = ep[v]
        train = (r["mean_train_s"] * f["train_samples"] / ep["n_train"]
                 * f["steps"] / r["mean_padded_T"])
        valid = (r["mean_valid_s"] * f["valid_samples"] / ep["n_valid"]
                 * f["steps"] / ep["valid_T"])
        hours[v] = f["epochs"] * (train + valid) / 3600
        out[v] = {"train_s_per_epoch": round(train, 1), "valid_s_per_epoch": round(valid, 1),
                  "epoch_s": round(train + valid, 1), "run_h": round(hours[v], 2)}
    out["ratio"] = round(hours["reference"] / hours["neurodelay"], 2)
    return out


# ============================================================================ epochs
SSHD_TRAIN = ROOT.parent / "shared" / "data" / "sshd_train.h5"
EPOCH_VALID_SPEAKERS = (20, 21, 22, 23)


def _epoch_data(n_train: int, n_valid: int, path: Path):
    """(train batches(epoch) -> iterator, validation batches list, description).

    SSHD (sshd_train.h5, binned like the shd preset: 140 channels, 10 ms) when present:
    a fixed random subset of the training speakers and of speakers 20-23 for validation;
    batches padded like the trainer (training: to the batch's longest sample,
    validation: to the set's longest). Otherwise synthetic Poisson counts (mean 0.3)
    of the same shape, T = 100, 20 classes."""
    from neurodelay import data as D

    g = np.random.default_rng(0)
    if path.exists():
        ds = D.load_binned(str(path), channel_bin=5, dt=0.01, progress=False)
        held = np.isin(ds.speakers, EPOCH_VALID_SPEAKERS)
        tr_idx = g.permutation(np.flatnonzero(~held))[:n_train]
        va_idx = g.permutation(np.flatnonzero(held))[:n_valid]
        train, valid = ds.subset(np.sort(tr_idx)), ds.subset(np.sort(va_idx))
        desc = (f"{path.name}: {len(train)} training samples (speakers other than "
                f"{list(EPOCH_VALID_SPEAKERS)}), {len(valid)} validation samples (those "
                f"speakers)")

        def batches(epoch, batch):
            return D.iterate_batches(train, batch, shuffle=True, seed=0, epoch=epoch)

        vb = list(D.iterate_batches(valid, 256, shuffle=False, pad_to=valid.max_steps))
        return batches, vb, desc, len(train), len(valid)
    T = 100
    xs = torch.poisson(torch.full((n_train + n_valid, T, 140), 0.3),
                       generator=torch.Generator().manual_seed(0))
    ys = torch.from_numpy(g.integers(0, 20, n_train + n_valid))

    def batches(epoch, batch):
        order = torch.from_numpy(np.random.default_rng(epoch).permutation(n_train))
        for a in range(0, n_train, batch):
            idx = order[a:a + batch]
            yield xs[idx], ys[idx]

    vb = [(xs[n_train + a:n_train + a + 256], ys[n_train + a:n_train + a + 256])
          for a in range(0, n_valid, 256)]
    return batches, vb, (f"synthetic Poisson counts ({path} absent): {n_train} training, "
                         f"{n_valid} validation samples of {T} steps"), n_train, n_valid


def epoch_benchmark(args) -> dict:
    """A whole shd-preset schedule (sigma Td/2 -> 0.5 over the first quarter, OneCycle /
    cosine per epoch, discrete validation after every epoch), mirroring
    neurodelay.train.trainer: neurodelay (fastconv training, intdelay validation) vs the
    paper's formulation (dcls + spikingjelly training under flush-to-zero as the trainer's
    --reference-kernels does, conv1d validation: the model's reference=True path).
    Epochs alternate between the variants (A B, B A, ...)."""
    from neurodelay.train.model import loss_fn, scores_from_membrane, sigma_schedule
    from neurodelay.train.presets import preset
    from neurodelay.train.trainer import TrainConfig, build_optim

    p = preset("shd")
    epochs = args.epoch_epochs or (2 if args.quick else 4)
    n_train, n_valid = (128, 64) if args.quick else (1024, 256)
    if args.epoch_samples:
        n_train = args.epoch_samples
    batch = 64 if args.quick else p["batch_size"]
    batches, vbatches, desc, n_train, n_valid = _epoch_data(n_train, n_valid, SSHD_TRAIN)
    spec = dict(TRAIN_FULL["shd_b256"])
    from neurodelay.train.model import DelaySNN, ModelConfig

    mc = ModelConfig(n_inputs=140, n_outputs=20, hidden=list(p["hidden"]),
                     max_delay_steps=int(round(p["max_delay_ms"] / p["dt_ms"])),
                     tau=p["tau_ms"] / p["dt_ms"], dropout=p["dropout"])
    torch.manual_seed(0)
    base = DelaySNN(mc, seed=0)
    tc = TrainConfig(epochs=epochs, batch_size=batch)
    log(f"\n[epoch] shd preset {_spec_shape({'n_inputs': 140, 'hidden': p['hidden'], 'n_outputs': 20})}"
        f", Td={mc.window}, batch {batch}, {epochs} epochs; data: {desc}")

    class V:
        def __init__(self, name, ref):
            self.name, self.ref = name, ref
            self.model = copy.deepcopy(base)
            self.opt_w, self.sched_w, self.opt_p, self.sched_p = build_optim(self.model, tc)
            self.epochs = []

    variants = [V("reference", True), V("neurodelay", False)]
    torch.set_flush_denormal(False)
    for e in range(epochs):
        sig = sigma_schedule(e, epochs, mc.sigma0)
        for v in (variants if e % 2 == 0 else variants[::-1]):
            m = v.model
            m.set_sigma(sig)
            m.train()
            torch.manual_seed(1000 + e)                   # same dropout masks in both
            steps, t_steps = 0, []
            with _ftz(v.ref):
                t0 = time.perf_counter()
                for x, y in batches(e, batch):
                    loss = loss_fn(m(x, discrete=False, reference=v.ref), y)
                    v.opt_w.zero_grad(set_to_none=True)
                    if v.opt_p is not None:
                        v.opt_p.zero_grad(set_to_none=True)
                    loss.backward()
                    v.opt_w.step()
                    if v.opt_p is not None:
                        v.opt_p.step()
                    m.after_step()
                    steps += 1
                    t_steps.append(int(x.shape[1]))
                t_train = time.perf_counter() - t0
                v.sched_w.step()
                if v.sched_p is not None:
                    v.sched_p.step()
                m.eval()
                t0 = time.perf_counter()
                correct = 0
                with torch.no_grad():
                    for x, y in vbatches:
                        u = m(x, discrete=True, reference=v.ref)
                        correct += int((scores_from_membrane(u).argmax(1) == y).sum())
                t_valid = time.perf_counter() - t0
            v.epochs.append({"epoch": e + 1, "sigma": sig + 0.27, "train_s": t_train,
                             "valid_s": t_valid, "total_s": t_train + t_valid,
                             "steps": steps, "mean_padded_T": float(np.mean(t_steps)),
                             "valid_acc": correct / n_valid, "last_loss": loss.item()})
            log(f"  epoch {e + 1}/{epochs} {v.name:10s} sigma {sig + 0.27:5.2f}: train "
                f"{t_train:7.2f} s ({steps} steps), validation {t_valid:6.2f} s, valid acc "
                f"{correct / n_valid:.3f}")
    torch.set_flush_denormal(False)
    res = {"data": desc, "n_train": n_train, "n_valid": n_valid, "epochs": epochs,
           "batch": batch, "valid_T": int(vbatches[0][0].shape[1]) if vbatches else None}
    for v in variants:
        ep = v.epochs
        res[v.name] = {"per_epoch": ep, "total_s": sum(r["total_s"] for r in ep),
                       "mean_epoch_s": statistics.mean(r["total_s"] for r in ep),
                       "mean_train_s": statistics.mean(r["train_s"] for r in ep),
                       "mean_valid_s": statistics.mean(r["valid_s"] for r in ep),
                       "mean_padded_T": statistics.mean(r["mean_padded_T"] for r in ep)}
    res["speedup"] = res["reference"]["total_s"] / res["neurodelay"]["total_s"]
    res["train_speedup"] = (res["reference"]["mean_train_s"]
                            / res["neurodelay"]["mean_train_s"])
    res["valid_speedup"] = (res["reference"]["mean_valid_s"]
                            / max(res["neurodelay"]["mean_valid_s"], 1e-9))
    log(f"  whole schedule: reference {res['reference']['total_s']:.1f} s, neurodelay "
        f"{res['neurodelay']['total_s']:.1f} s -> {res['speedup']:.2f}x (training "
        f"{res['train_speedup']:.2f}x, validation {res['valid_speedup']:.2f}x)")
    if res["valid_T"]:
        res["full_shd_run_extrapolated"] = x = shd_extrapolation(res)
        log(f"  full SHD run ({x['what']}): neurodelay {x['neurodelay']['run_h']:.1f} h, "
            f"paper {x['reference']['run_h']:.1f} h")
    if not args.no_memory:
        mspec = {**spec, "batch": batch}
        res["peak_rss_mb"] = {v: memory_probe(mspec, "epoch_" + v, args.threads)
                              for v in ("reference", "neurodelay")}
        log("  peak RSS (2 steps + 1 validation batch, own process): " + ", ".join(
            f"{k} {m['peak_mb']:.0f} MB" for k, m in res["peak_rss_mb"].items()))
    return res


# ============================================================================ verify end to end
SSHD_TINY = ROOT.parent / "shared" / "data" / "sshd_tiny.h5"
E2E_GOAL_S = 60.0
E2E_TEST_SPEAKERS = [20, 21, 22, 23]
E2E_VALID_SPEAKERS = [18, 19]
E2E_MAX_TIME = 1.0                 # s: <= 100 steps at the shd preset's dt of 10 ms


def _write_e2e_test_file(src: Path, dst: Path, n: int, seed: int = 0) -> dict:
    """An SHD-layout test file of ``n`` samples: the samples of ``src`` in a seeded random
    order, cycled when ``n`` exceeds them, every spike at or after E2E_MAX_TIME cut."""
    import h5py

    from neurodelay.data import write_shd_file

    with h5py.File(src, "r") as f:
        times, units = f["spikes/times"][:], f["spikes/units"][:]
        labels = np.asarray(f["labels"][:])
        keys = [k.decode() if isinstance(k, bytes) else str(k) for k in f["extra/keys"][:]]
        speakers = np.asarray(f["extra/speaker"][:]) if "extra/speaker" in f else None
    idx = np.resize(np.random.default_rng(seed).permutation(len(labels)), n)
    t_out, u_out, cut = [], [], 0
    for i in idx:
        t = np.asarray(times[i], np.float64)
        keep = t < E2E_MAX_TIME
        cut += int(not keep.all())
        t_out.append(t[keep])
        u_out.append(np.asarray(units[i])[keep])
    write_shd_file(dst, t_out, u_out, labels[idx], keys,
                   speakers[idx] if speakers is not None else None)
    held = (int(np.isin(speakers[idx], E2E_TEST_SPEAKERS).sum())
            if speakers is not None else None)
    return {"samples": int(n), "source": src.name, "distinct_source_samples":
            int(len(np.unique(idx))), "samples_cut_at_max_time": cut,
            "samples_of_held_out_speakers": held}


def verify_end_to_end_benchmark(args) -> dict:
    """Issue #9's figure: `verify_run(run, "loihi2")` (no Lava) end to end on an SHD-size
    test set (2,264 samples x 100 steps) with a TRAINED 140-256-256-20 model: the shd
    preset trained here for a few epochs on ../shared/data/sshd_train.h5 (speakers 20-23
    test, 18-19 validation, max_time 1 s, batch 64). The test file cycles through the
    samples of sshd_train.h5 (seeded order) cut at 1 s, so the run's training speakers are
    part of it: its accuracies time the path, they do not measure the model. Reports the
    whole call and the stages VerifyResult.seconds holds. --quick: a tiny version (1
    epoch on sshd_tiny.h5, 128 test samples), not the goal figure."""
    import tempfile

    from neurodelay import api
    from neurodelay.deploy.verify import verify_run

    src = SSHD_TINY if args.quick else SSHD_TRAIN
    epochs = args.e2e_epochs or (1 if args.quick else 5)
    n_test = 128 if args.quick else SHD_TEST_SAMPLES
    log(f"\n[verify_e2e] verify_run(run, 'loihi2') without Lava: shd preset "
        f"140-256-256-20 trained {epochs} epoch(s) on {src.name}, {n_test} test samples"
        + (" (--quick: tiny version, not the goal figure)" if args.quick else ""))
    if not src.exists():
        reason = (f"{src} is absent (the SSHD stand-in data of ../shared/data): no data to "
                  f"train the model on, section skipped")
        log(f"  SKIPPED: {reason}")
        return {"skipped": True, "reason": reason, "verify_end_to_end_s": None}
    quiet = lambda m: None                                   # noqa: E731
    with tempfile.TemporaryDirectory(prefix="neurodelay_e2e_") as tmp:
        tmp = Path(tmp)
        run_dir = tmp / "run"
        t0 = time.perf_counter()
        res = api.train_run(str(run_dir), preset="shd", train_file=str(src),
                            test_speakers=E2E_TEST_SPEAKERS, valid_speakers=E2E_VALID_SPEAKERS,
                            max_time=E2E_MAX_TIME, epochs=epochs, batch_size=64, seed=0,
                            progress=False, log=quiet, cache_dir=str(tmp / "cache"))
        t_train = time.perf_counter() - t0
        test_file = tmp / "test_2264.h5"
        data = _write_e2e_test_file(src, test_file, n_test)
        log(f"  trained in {t_train:.0f} s (test accuracy of its own split "
            f"{res.get('test_accuracy', float('nan')):.3f}); test file: {data}")
        t0 = time.perf_counter()
        r = verify_run(str(run_dir), "loihi2", test_file=str(test_file), lava=0,
                       progress=False, log=quiet)
        whole = time.perf_counter() - t0
    sec = {k: float(v) for k, v in r.seconds.items()}
    out = {"quick": args.quick, "data": data, "train_epochs": epochs, "train_s": t_train,
           "run_test_accuracy": res.get("test_accuracy"), "model": "140-256-256-20",
           "n": r.n, "steps": r.steps, "verify_end_to_end_s": whole, "stages_s": sec,
           "other_s": whole - sum(sec.values()), "pytorch_path": r.pytorch_path,
           "pytorch_accuracy": r.pytorch_accuracy, "float_accuracy": r.float_accuracy,
           "quantized_accuracy": r.quantized_accuracy, "agreement": r.agreement,
           "float_hidden_spike_flips": r.float_hidden_spike_flips,
           "float_hidden_spikes": r.float_hidden_spikes, "passed": r.passed,
           "torch_threads": torch.get_num_threads(), "goal_s": E2E_GOAL_S}
    if not args.quick:
        out["meets_goal"] = whole < E2E_GOAL_S
    log(f"  verify_run: {whole:.1f} s end to end for {r.n} samples x {r.steps} steps "
        f"(artifact {sec['artifact']:.1f} s, PyTorch {sec['pytorch']:.1f} s [{r.pytorch_path}]"
        f", float sim {sec['float_sim']:.1f} s, bit-accurate sim {sec['bit_sim']:.1f} s, "
        f"other (data, comparisons) {out['other_s']:.1f} s); goal < {E2E_GOAL_S:.0f} s")
    log(f"  accuracies (the file holds training samples): PyTorch {r.pytorch_accuracy:.3f}, "
        f"float {r.float_accuracy:.3f}, quantized {r.quantized_accuracy:.3f}; hidden spike "
        f"flips PyTorch vs float sim {r.float_hidden_spike_flips} of {r.float_hidden_spikes:,}")
    if not args.quick and r.steps != 100:
        log(f"  note: the test set has {r.steps} steps, not 100")
    return out


# ============================================================================ main
def main(argv=None) -> int:
    global _LOG_STREAM
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--quick", action="store_true", help="small sizes (about 2 minutes)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help="comma list of sections: " + ", ".join(SECTIONS))
    ap.add_argument("--configs", default=None,
                    help="comma list of training configurations (default: all of the mode)")
    ap.add_argument("--reps", type=int, default=None, help="timed steps per variant")
    ap.add_argument("--lava-samples", type=int, default=None,
                    help="samples run through Lava (default 3, --quick 1; 0 skips Lava)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    ap.add_argument("--epoch-epochs", type=int, default=None,
                    help="epochs of the epoch section's schedule (default 4, --quick 2)")
    ap.add_argument("--epoch-samples", type=int, default=None,
                    help="training samples of the epoch section (default 1024, --quick 128)")
    ap.add_argument("--e2e-epochs", type=int, default=None,
                    help="training epochs of the verify_e2e model (default 5, --quick 1)")
    ap.add_argument("--omp-wait-policy", default=None,
                    help="passive (default), active or default: OMP_WAIT_POLICY for torch's "
                         "OpenMP threads (read before torch is imported)")
    ap.add_argument("--blas-threads", default=None,
                    help="OPENBLAS_NUM_THREADS for numpy (bitsim, floatsim, Lava); default 1")
    ap.add_argument("--extrapolate", metavar="FILE.json", default=None,
                    help="measure nothing: print the full-SHD-run extrapolation from the "
                         "epoch section of a saved --json result")
    ap.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.extrapolate:
        try:
            saved = json.loads(Path(args.extrapolate).read_text())
            ep = saved["epoch"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            ap.error(f"--extrapolate: {args.extrapolate} is not a saved result with an "
                     f"epoch section ({type(e).__name__}: {e})")
        print(json.dumps(shd_extrapolation(ep), indent=2))
        return 0
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    # as the CLI does (NEURODELAY_MALLOC=default measures with glibc's own settings);
    # before the probes too, so their peak memory is what the CLI's would be
    from neurodelay.alloc import allocator_status, tune_allocator

    tune_allocator()
    if args._probe is not None:
        _probe_main(args._probe)
        return 0
    if args.json:
        _LOG_STREAM = sys.stderr
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    bad = sections - set(SECTIONS)
    if bad:
        ap.error(f"--only: unknown section(s) {sorted(bad)}; use {', '.join(SECTIONS)}")
    for opt in ("epoch_epochs", "epoch_samples", "e2e_epochs"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            ap.error(f"--{opt.replace('_', '-')} must be >= 1")
    configs = TRAIN_QUICK if args.quick else TRAIN_FULL
    if args.configs:
        allc = {**TRAIN_FULL, **TRAIN_QUICK}
        names = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = [c for c in names if c not in allc]
        if unknown:
            ap.error(f"--configs: unknown {unknown}; known: {sorted(allc)}")
        configs = {c: allc[c] for c in names}

    t_start = time.perf_counter()
    out = {"torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
           "python": platform.python_version(), "cpu_count": os.cpu_count(),
           "load_average_at_start": list(os.getloadavg()), "quick": args.quick,
           "omp_wait_policy": OMP_WAIT_POLICY, "openblas_threads": BLAS_THREADS,
           "allocator": allocator_status(),
           "integer_delay_operator": _native_status(),
           "git_commit": _git_commit(),
           "neurodelay_variant": ("model.py (uses fastconv)" if model_uses_fastconv()
                                  else "benchmarks wrapper (model.py not patched yet)")}
    log(f"neurodelay benchmarks at commit {out['git_commit']}: torch {torch.__version__}, "
        f"{out['torch_threads']} torch "
        f"threads (OMP_WAIT_POLICY {OMP_WAIT_POLICY}), {BLAS_THREADS} OpenBLAS thread(s), "
        f"{os.cpu_count()} CPUs, load average {out['load_average_at_start'][0]:.1f}; "
        f"allocator {out['allocator']}; "
        f"integer-delay operator: {out['integer_delay_operator']}; "
        f"neurodelay variant = {out['neurodelay_variant']}")
    if "train" in sections:
        tr = train_benchmarks(configs, args)
        out["train"] = tr
        out["train_speedup"] = {k: v["speedup"] for k, v in tr.items()}
        for regime in ("sigma_max", "sigma_min"):
            out[f"train_speedup_{regime}"] = {k: v["regimes"][regime]["speedup"]
                                              for k, v in tr.items()}
        out["train_equal_loss_and_grads"] = all(
            r["check"]["neurodelay_vs_reference"]["passed"]
            for v in tr.values() for r in v["regimes"].values())
    if "verify" in sections:
        vb = verify_benchmark(args)
        out["verify"] = vb
        out["sim_speedup_vs_lava"] = vb.get("sim_speedup_vs_lava")
        out["shd_testset_verify_s"] = vb["shd_testset_verify_s"]
    if "infer" in sections:
        out["inference"] = inference_benchmark(args)
    if "fixed" in sections:
        fx = fixed_delay_benchmarks(args)
        out["fixed_delay"] = fx
        out["fixed_delay_train_speedup"] = {k: v["speedup"] for k, v in fx.items()}
        out["fixed_vs_learned_step"] = {k: v["fixed_vs_learned"] for k, v in fx.items()}
        out["fixed_delay_equal_loss_and_grads"] = all(
            v["check_intdelay_vs_conv1d"]["passed"] for v in fx.values())
    if "discrete" in sections:
        ds = discrete_benchmark(args)
        out["discrete_forward"] = ds
        out["discrete_forward_speedup"] = ds["speedup"]
        out["discrete_forward_speedup_float32"] = ds["speedup_float32"]
        out["discrete_forward_speedup_float64"] = ds["speedup_float64"]
    if "epoch" in sections:
        ep = epoch_benchmark(args)
        out["epoch"] = ep
        out["epoch_speedup"] = ep["speedup"]
    if "verify_e2e" in sections:
        ve = verify_end_to_end_benchmark(args)
        out["verify_end_to_end"] = ve
        out["verify_end_to_end_s"] = ve["verify_end_to_end_s"]
        if ve.get("skipped"):
            out["verify_end_to_end_skipped"] = ve["reason"]
    out["load_average_at_end"] = list(os.getloadavg())
    out["total_s"] = time.perf_counter() - t_start
    log(f"\ntotal {out['total_s']:.0f} s")
    if "train_speedup" in out:
        log("train_speedup (min over sigma regimes): "
            + ", ".join(f"{k} {v:.2f}x" for k, v in out["train_speedup"].items()))
    if "fixed_delay_train_speedup" in out:
        log("fixed_delay_train_speedup (intdelay vs conv1d): "
            + ", ".join(f"{k} {v:.2f}x" for k, v in out["fixed_delay_train_speedup"].items())
            + "; learned step / fixed step: "
            + ", ".join(f"{k} {v:.2f}" for k, v in out["fixed_vs_learned_step"].items()))
    if "discrete_forward_speedup" in out:
        log(f"discrete_forward_speedup: {out['discrete_forward_speedup']:.2f}x (fast path: "
            f"float32, the default, what eval runs), "
            f"{out['discrete_forward_speedup_float64']:.2f}x (exact path: float64 sums, "
            f"what verify runs)")
    if "epoch_speedup" in out:
        log(f"epoch_speedup (whole schedule incl. validation): {out['epoch_speedup']:.2f}x")
    if "verify_e2e" in sections:
        ve = out["verify_end_to_end"]
        log("verify_end_to_end_s: " + (f"skipped ({ve['reason']})" if ve.get("skipped") else
                                       f"{ve['verify_end_to_end_s']:.1f} s for {ve['n']} "
                                       f"samples x {ve['steps']} steps"
                                       + (" (--quick tiny version)" if args.quick else "")))
    if args.json:
        print(json.dumps(out, indent=1, default=_json_default))
    return 0


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    sys.exit(main())
