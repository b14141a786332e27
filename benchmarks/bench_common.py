"""What the sections share: shapes, models and inputs, the forwards compared, a trainer
for one variant, and the same-model check (loss and gradients) run before any timing."""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from bench_harness import BenchmarkError
from bench_reference import ReferenceForward

SIG_MIN = 0.23
LOSS_RTOL = 1e-5          # |loss_a - loss_b| / |loss_b|
GRAD_RTOL = 1e-4          # max over parameters of max|g_a - g_b| / max|g_b|
LOSS_RTOL64, GRAD_RTOL64 = 1e-9, 1e-7
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


def spec_shape(spec: dict) -> str:
    return f"{spec['n_inputs']}-{'-'.join(map(str, spec['hidden']))}-{spec['n_outputs']}"


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


# ============================================================================ forwards
# Every forward: (model, x, discrete=False, record=None) -> readout membrane (B, T, out);
# ``record`` (a list) receives the hidden spikes, time-major (T, B, C).
def model_forward(model, x, discrete: bool = False, record: list | None = None):
    """DelaySNN.forward as model.py has it now (dcls_conv for learned delays, intdelay for
    one delay per synapse, lif_multistep): the ``neurodelay`` variant."""
    if record is None:
        return model(x, discrete=discrete)
    u, spikes = model(x, discrete=discrete, record=True)
    record.extend(sp.permute(1, 0, 2) for sp in spikes)           # back to (T, B, C)
    return u


fast_forward = model_forward      # the name tests/test_dcls_conv_lif.py uses for it


def conv1d_forward(model, x, discrete: bool = False, record: list | None = None):
    """DelaySNN.forward as it was before neurodelay.train.intdelay: every synapse with one
    integer delay (fixed-random / none, and the discrete model) through F.conv1d over the
    whole window with the one-tap kernel, learned delays through dcls_conv.delay_conv,
    lif.lif_multistep for the neurons. The baseline of the fixed-delay benchmarks."""
    from neurodelay.train.dcls_conv import delay_conv

    def syn_fwd(syn, h):
        if discrete or syn.mode != "learned":
            return F.conv1d(F.pad(h, (syn.window - 1, 0)), syn.discrete_kernel())
        return delay_conv(h, syn.conv.weight, syn.conv.P, syn.conv.SIG, syn.window)

    return _manual_forward(model, x, syn_fwd, record)


def dft_forward(model, x, discrete: bool = True, record: list | None = None):
    """The discrete model with its one-tap kernels through dcls_conv.causal_conv (the
    frequency domain, float32) and lif_multistep: the inference section's torch_dft."""
    from neurodelay.train.dcls_conv import causal_conv

    return _manual_forward(model, x, lambda syn, h: causal_conv(h, syn.discrete_kernel()),
                           record)


def _manual_forward(model, x, syn_fwd, record):
    from neurodelay.train.lif import lif_multistep

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


# ============================================================================ training
class Trainer:
    """One variant: its own model copy, optimizers (train.build_optim) and forward; a
    step is what neurodelay.train.trainer does per batch (forward + loss + backward +
    Adam + clamp)."""

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
        with ftz(self.ftz):
            loss = loss_fn(self.forward(self.model, x, record=spikes), y)
            loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters()
                 if p.grad is not None}
        return float(loss.detach()), grads, spikes

    def step(self, x, y) -> float:
        from neurodelay.train.model import loss_fn

        with ftz(self.ftz):
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


class ftz:
    """torch.set_flush_denormal(True) inside the block when ``on`` (the calling thread
    only)."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        if self.on:
            torch.set_flush_denormal(True)

    def __exit__(self, *exc):
        if self.on:
            torch.set_flush_denormal(False)


# ============================================================================ same model?
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


def _ok(c: dict, loss_rtol: float, grad_rtol: float) -> bool:
    return c["loss_rel_diff"] <= loss_rtol and c["grad_max_rel_diff"] <= grad_rtol


def _f32_loss_ok(c: dict, new_vs_64: dict, old_vs_64: dict) -> bool:
    """The float32 losses agree (LOSS_RTOL), or the new one is no further from the
    float64 truth than the old one."""
    return (c["loss_rel_diff"] <= LOSS_RTOL
            or new_vs_64["loss_rel_diff"] <= old_vs_64["loss_rel_diff"])


def check_equal(base, x, y, fp64: bool) -> dict:
    """Are the two variants (ReferenceForward and model_forward) the same model? One step
    each from identical parameters, input and dropout masks.

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
    fast = Trainer("neurodelay", base, model_forward).loss_and_grads(x, y, seed=123)
    c = compare(fast, ref)
    out = {"neurodelay_vs_reference": c}
    f32_ok = _ok(c, LOSS_RTOL, GRAD_RTOL)
    if fp64 or not f32_ok:
        b64 = copy.deepcopy(base).double()
        r64 = Trainer("reference64", b64, ReferenceForward(b64)).loss_and_grads(
            x.double(), y, seed=123)
        f64 = Trainer("neurodelay64", b64, model_forward).loss_and_grads(x.double(), y,
                                                                         seed=123)
        c64 = compare(f64, r64)
        out["float64_neurodelay_vs_reference"] = c64
        out["reference_fp32_vs_fp64"] = compare(ref, r64)
        out["neurodelay_fp32_vs_fp64"] = compare(fast, r64)
        ok64 = _ok(c64, LOSS_RTOL64, GRAD_RTOL64)
        # float32 may differ only through spike flips, and only by a little in the loss
        # (or by no more than the reference's own distance from the float64 truth)
        c["passed"] = ok64 and _f32_loss_ok(c, out["neurodelay_fp32_vs_fp64"],
                                            out["reference_fp32_vs_fp64"]) and (
            f32_ok or sum(c["hidden_spike_flips"]) > 0)
        c["float64_passed"] = ok64
    else:
        c["passed"] = True
    return out


def check_pair(base, fwd_new, fwd_old, x, y) -> dict:
    """check_equal for any two forwards (new vs old) of one model: loss and gradients of
    one step from identical parameters, input and dropout masks; when float32 differs
    beyond LOSS_RTOL / GRAD_RTOL, float64 decides (as in check_equal)."""
    old = Trainer("old", base, fwd_old).loss_and_grads(x, y, seed=123)
    new = Trainer("new", base, fwd_new).loss_and_grads(x, y, seed=123)
    c = compare(new, old)
    f32_ok = _ok(c, LOSS_RTOL, GRAD_RTOL)
    c["passed"] = f32_ok
    if not f32_ok:
        b64 = copy.deepcopy(base).double()
        o64 = Trainer("old64", b64, fwd_old).loss_and_grads(x.double(), y, seed=123)
        n64 = Trainer("new64", b64, fwd_new).loss_and_grads(x.double(), y, seed=123)
        c64 = compare(n64, o64)
        ok64 = _ok(c64, LOSS_RTOL64, GRAD_RTOL64)
        c["float64"] = c64
        c["new_fp32_vs_fp64"] = compare(new, o64)
        c["old_fp32_vs_fp64"] = compare(old, o64)
        c["passed"] = ok64 and _f32_loss_ok(c, c["new_fp32_vs_fp64"],
                                            c["old_fp32_vs_fp64"]) and (
            sum(c["hidden_spike_flips"]) > 0)
    return c
