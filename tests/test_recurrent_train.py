"""Training recurrent layers with learned delays (issue 21): the layer's time loop, its
gradients, freeze -> floatsim equality, resume, the CLI flags and the recurrent ablation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from neurodelay import api
from neurodelay.cli import main
from neurodelay.errors import OptionError
from neurodelay.train.model import DelaySNN, ModelConfig, count_parameters, loss_fn
from neurodelay.train.recurrent import (
    RecurrentSynapses,
    recurrent_gauss_kernel,
    recurrent_lif,
)

torch.set_num_threads(1)
TAU, TH, ALPHA = 2.0, 1.0, 5.0


class _Spike(torch.autograd.Function):
    """Heaviside forward, the ATan surrogate (spikingjelly's, alpha 5) backward."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * (ALPHA / 2) / (1 + (math.pi / 2 * ALPHA * z) ** 2)


def loop_layer(cur, weight, delay, tau=TAU, th=TH):
    """The recurrent LIF layer written directly: x_i[t] = cur_i[t] + sum_j w_ij
    s_j[t - d_ij] (integer delays >= 1), u = (1 - 1/tau) u + x, spike u >= th, reset 0
    (detached). cur (T, B, n) -> spikes (T, B, n); autograd through plain ops."""
    T, B, n = cur.shape
    v = torch.zeros(B, n, dtype=cur.dtype)
    out = []
    for t in range(T):
        x = cur[t]
        rec = torch.zeros(B, n, dtype=cur.dtype)
        for i in range(n):
            for j in range(n):
                d = int(delay[i, j])
                if t - d >= 0:
                    rec = rec + torch.nn.functional.one_hot(
                        torch.tensor(i), n).to(cur.dtype) * weight[i, j] * out[t - d][:, j:j + 1]
        h = v - v / tau + x + rec
        s = _Spike.apply(h - th)
        out.append(s)
        v = h * (1 - s.detach())
    return torch.stack(out)


def loop_layer_kernel(cur, kernel, tau=TAU, th=TH):
    """The same with a dense kernel (n, n, W), tap k = delay W - k."""
    T, B, n = cur.shape
    W = kernel.shape[2]
    v = torch.zeros(B, n, dtype=cur.dtype)
    out = []
    for t in range(T):
        x = cur[t]
        for e in range(1, W + 1):
            if t - e >= 0:
                x = x + out[t - e] @ kernel[:, :, W - e].t()
        h = v - v / tau + x
        s = _Spike.apply(h - th)
        out.append(s)
        v = h * (1 - s.detach())
    return torch.stack(out)


def _set_delays(rec: RecurrentSynapses, delays: torch.Tensor) -> None:
    with torch.no_grad():
        rec.P.copy_((rec.window - delays.to(rec.P.dtype)) - rec.window // 2)


def _cur(T, B, n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(T, B, n, generator=g, dtype=dtype) * 0.7 + 0.45)


# --------------------------------------------------------------------------- the layer
@pytest.mark.parametrize("window", [1, 4, 7])
def test_training_forward_at_sigma_to_zero_equals_integer_delay_loop(window):
    """Training mode (Gaussian kernel, gradient enabled) with integer positions and sigma
    -> 0 is the layer with integer delays, step by step; so is the discrete model."""
    n, T, B = 5, 20, 3
    g = torch.Generator().manual_seed(window)
    mode = "learned" if window > 1 else "one-step"
    rec = RecurrentSynapses(n, window, mode, g).double()
    d = torch.randint(1, window + 1, (n, n), generator=g)
    _set_delays(rec, d)
    assert torch.equal(rec.integer_delays(), d)
    rec.sigma_offset = 0.0          # sigma = |SIG|: 1e-3, every neighbouring tap exactly 0
    rec.set_sigma(1e-3)
    cur = _cur(T, B, n, seed=window).requires_grad_()
    s_train = rec(cur, TAU, TH, ALPHA, discrete=False)
    assert s_train.requires_grad
    with torch.no_grad():
        s_disc = rec(cur, TAU, TH, ALPHA, discrete=True)
        want = loop_layer(cur, rec.weight.detach(), d)
    assert 0 < int(want.sum()) < want.numel()
    assert torch.equal(s_train.detach(), want) and torch.equal(s_disc, want)
    # the recurrent synapses matter here: without them the spikes differ
    with torch.no_grad():
        ff_only = loop_layer(cur, torch.zeros(n, n, dtype=torch.float64), d)
    assert not torch.equal(ff_only, want)


def test_backward_equals_autograd_through_a_direct_loop():
    """The hand-written backward of the time loop (current, kernel) against autograd
    through the direct loop with the same surrogate, float64."""
    n, T, B, W = 6, 16, 3, 5
    g = torch.Generator().manual_seed(3)
    cur = _cur(T, B, n, seed=4).requires_grad_()
    k = (torch.randn(n, n, W, generator=g, dtype=torch.float64) * 0.4).requires_grad_()
    w_out = torch.randn(T, B, n, generator=g, dtype=torch.float64)
    s1 = recurrent_lif(cur, k, TAU, TH, ALPHA)
    s2 = loop_layer_kernel(cur, k)
    assert torch.equal(s1, s2) and 0 < int(s1.sum()) < s1.numel()
    g1 = torch.autograd.grad((s1 * w_out).sum(), [cur, k])
    g2 = torch.autograd.grad((s2 * w_out).sum(), [cur, k])
    for a, b in zip(g1, g2):
        assert float(b.abs().max()) > 0
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_kernel_gradients_finite_differences_at_large_sigma():
    """weight and position -> Gaussian kernel (what the layer's gradient flows through):
    finite differences at a large sigma, float64."""
    g = torch.Generator().manual_seed(5)
    n, W = 4, 9
    w = torch.randn(n, n, generator=g, dtype=torch.float64, requires_grad=True)
    p = ((torch.rand(n, n, generator=g, dtype=torch.float64) - 0.5) * 6).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: recurrent_gauss_kernel(a, b, 3.0, W),
                                    (w, p), eps=1e-6, atol=1e-8)


def test_gradients_reach_recurrent_weights_and_delay_positions():
    """A training step of a recurrent model: every recurrent weight tensor and position
    tensor gets a finite, nonzero gradient; its direction equals finite differences of
    the loss w.r.t. the kernel contracted with the kernel's position derivative."""
    cfg = ModelConfig(n_inputs=6, n_outputs=3, hidden=[7, 5], max_delay_steps=5,
                      recurrent=True, recurrent_max_delay_steps=4, dropout=0.0)
    torch.manual_seed(0)
    m = DelaySNN(cfg, seed=0).double()
    m.set_sigma(2.0)
    g = torch.Generator().manual_seed(1)
    x = torch.poisson(torch.full((4, 20, 6), 0.6, dtype=torch.float64), generator=g)
    y = torch.tensor([0, 1, 2, 0])
    m.train()
    loss = loss_fn(m(x), y)
    loss.backward()
    for r in m.recurrent_synapses():
        for p in (r.weight, r.P):
            assert p.grad is not None and torch.isfinite(p.grad).all()
            assert float(p.grad.abs().max()) > 0
    # directional derivative along P of layer 0 by the chain rule through the kernel:
    # the layer's kernel gradient (checked against autograd above) times dK/dP (finite
    # differences), equal to the autograd P gradient
    r = m.recurrent_synapses()[0]
    direction = torch.randn(r.P.shape, generator=g, dtype=torch.float64)
    eps = 1e-6
    with torch.no_grad():
        kp = recurrent_gauss_kernel(r.weight, r.P + eps * direction, r.sigma, r.window)
        km = recurrent_gauss_kernel(r.weight, r.P - eps * direction, r.sigma, r.window)
    dk = (kp - km) / (2 * eps)
    # the kernel gradient of this layer: rerun with the kernel as a leaf
    m.zero_grad()
    k_leaf = r.kernel(False).detach().requires_grad_()
    orig = r.kernel_and_taps
    r.kernel_and_taps = lambda discrete: (k_leaf, None)     # noqa: E731
    try:
        loss2 = loss_fn(m(x), y)
        loss2.backward()
    finally:
        r.kernel_and_taps = orig
    assert math.isclose(loss2.item(), loss.item(), rel_tol=1e-12)
    fd = float((k_leaf.grad * dk).sum())
    m.zero_grad()
    loss_fn(m(x), y).backward()
    ad = float((r.P.grad * direction).sum())
    assert abs(ad) > 1e-8 and math.isclose(ad, fd, rel_tol=1e-5)


# --------------------------------------------------------------------------- counts
def test_parameter_counts_include_recurrent_synapses():
    base = dict(n_inputs=10, n_outputs=3, hidden=[8, 6], max_delay_steps=5)
    ff = ModelConfig(**base)
    for mode, per in (("learned", 2), ("fixed-random", 1), ("one-step", 1)):
        cfg = ModelConfig(**base, recurrent=True, recurrent_delays=mode)
        want = count_parameters(ff) + per * (8 * 8 + 6 * 6)
        assert count_parameters(cfg) == want
        counts = DelaySNN(cfg).count_parameters()
        assert counts["total"] == want and counts["recurrent_weights"] == 100
        assert counts["recurrent_delays"] == (100 if mode == "learned" else 0)
        trainable = sum(p.numel() for p in DelaySNN(cfg).parameters() if p.requires_grad)
        assert trainable == want


@pytest.mark.parametrize("mode", ["learned", "fixed-random", "one-step"])
def test_optimizer_trains_recurrent_weights_and_learned_positions(mode):
    from neurodelay.train.trainer import TrainConfig, build_optim

    m = DelaySNN(ModelConfig(n_inputs=6, n_outputs=3, hidden=[5, 4], max_delay_steps=5,
                             recurrent=True, recurrent_delays=mode))
    opt_w, _, opt_p, _ = build_optim(m, TrainConfig(epochs=2))
    w_ids = {id(p) for g in opt_w.param_groups for p in g["params"]}
    p_ids = {id(p) for g in opt_p.param_groups for p in g["params"]}
    for r in m.recurrent_synapses():
        assert id(r.weight) in w_ids
        assert (id(r.P) in p_ids) == (mode == "learned")
    with pytest.raises(OptionError, match="only a recurrent model"):
        api.check_options(match_feedforward=True)


def test_non_learned_recurrent_delays():
    g = torch.Generator().manual_seed(0)
    fr = RecurrentSynapses(9, 6, "fixed-random", g)
    d = fr.integer_delays()
    assert not fr.P.requires_grad and int(d.min()) >= 1 and int(d.max()) <= 6
    assert len(torch.unique(d)) > 2
    one = RecurrentSynapses(9, 6, "one-step", g)
    assert one.window == 1 and torch.equal(one.integer_delays(), torch.ones(9, 9,
                                                                            dtype=torch.int64))


# --------------------------------------------------------------------------- trained
@pytest.fixture(scope="module")
def rec_run(work, data):
    out = work / "rec"
    res = api.train_run(str(out), preset="tiny", hidden=[16, 12], epochs=3, batch_size=16,
                        seed=2, recurrent=True, recurrent_max_delay_ms=60.0,
                        train_file=str(data["train"]), test_file=str(data["test"]),
                        progress=False, log=lambda m: None)
    return out, res


def test_freeze_carries_recurrent_synapses_and_floatsim_equals_pytorch(rec_run):
    """floatsim on the frozen network == the PyTorch discrete model on its exact float64
    path: not one hidden spike differs (float64 and float32 floatsim)."""
    from neurodelay.data import pad_batch
    from neurodelay.data.rundata import run_test_data
    from neurodelay.sim import floatsim
    from neurodelay.train.loaders import float_network, load_model

    out, res = rec_run
    assert res["finished"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["recurrent"] and cfg["model"]["recurrent_max_delay_steps"] == 6
    assert cfg["parameters"]["recurrent_weights"] == 16 * 16 + 12 * 12
    model, net = load_model(out), float_network(out)
    for layer, r in zip(net.layers[:-1], model.recurrent_synapses()):
        assert layer.recurrent
        assert np.array_equal(layer.rec_weight, r.weight.detach().numpy())
        assert np.array_equal(layer.rec_delay, r.integer_delays().numpy())
        assert layer.rec_delay.min() >= 1 and layer.rec_delay.max() <= 6
    assert not net.layers[-1].recurrent
    ds = run_test_data(out)
    x = pad_batch(ds.samples, pad_to=ds.max_steps)
    model.set_discrete_dtype(torch.float64)
    with torch.no_grad():
        u, spikes = model(torch.from_numpy(x), discrete=True, record=True)
    n_spikes = sum(int(s.sum()) for s in spikes)
    assert n_spikes > 0
    for dtype in (np.float64, np.float32):
        fs = floatsim.simulate(net, x, record=True, dtype=dtype)
        flips = sum(int(np.count_nonzero(a.numpy().astype(bool) != b))
                    for a, b in zip(spikes, fs.spikes))
        assert flips == 0, (dtype, flips, n_spikes)
        assert float(np.abs(fs.u - u.numpy()).max()) < 1e-4
    # eval (the fast float32 path) predicts what floatsim predicts
    ev = api.evaluate_run(out)
    assert ev.accuracy == pytest.approx(res["test_accuracy"])
    assert ev.accuracy == floatsim.accuracy(net, x, ds.labels)


def test_recurrent_synapses_change_the_frozen_network(rec_run):
    """Dropping the recurrent synapses of the frozen network changes its spikes (they
    are really simulated)."""
    from dataclasses import replace

    from neurodelay.data import pad_batch
    from neurodelay.data.rundata import run_test_data
    from neurodelay.sim import floatsim
    from neurodelay.train.loaders import float_network

    out, _ = rec_run
    net = float_network(out)
    ds = run_test_data(out)
    x = pad_batch(ds.samples, pad_to=ds.max_steps)
    ff = replace(net, layers=[replace(lay, rec_weight=None, rec_delay=None)
                              for lay in net.layers])
    a = floatsim.simulate(net, x, record=True).spikes[0]
    b = floatsim.simulate(ff, x, record=True).spikes[0]
    assert not np.array_equal(a, b)


def test_export_of_a_recurrent_run_writes_the_lava_process_file(rec_run):
    out, _ = rec_run
    # issue 22: a recurrent run exports to Loihi 2 as a Lava process network file (no
    # netx file: netx cannot carry recurrent delays); tests/test_verify_recurrent.py
    # verifies such folders against Lava
    r = CliRunner().invoke(main, ["export", str(out), "--target", "loihi2"])
    assert r.exit_code == 0, r.output
    folder = out / "deploy" / "loihi2"
    assert (folder / "network.lava.h5").exists() and not (folder / "network.netx.h5").exists()
    r = CliRunner().invoke(main, ["inspect", str(out)])
    assert r.exit_code == 0, r.output
    assert "recurrent" in r.output


def test_resume_of_a_recurrent_run_equals_uninterrupted(work, data):
    from neurodelay.data import DataConfig
    from neurodelay.train.loaders import load_model
    from neurodelay.train.trainer import TrainConfig, train

    kw = dict(preset="tiny", hidden=[10], epochs=3, batch_size=16, seed=4, recurrent=True,
              recurrent_max_delay_ms=40.0, train_file=str(data["train"]),
              test_file=str(data["test"]), progress=False, log=lambda m: None)
    full = api.train_run(str(work / "rfull"), **kw)
    cfg = json.loads((work / "rfull" / "config.json").read_text())
    mc, tc, dc = (ModelConfig(**cfg["model"]), TrainConfig(**cfg["train"]),
                  DataConfig(**cfg["data"]))
    part = train(work / "rpart", mc, tc, dc, progress=False, stop_after_epoch=1,
                 log=lambda m: None)
    assert part == {"finished": False, "epoch": 1}
    # a resume that would change the recurrent settings is refused
    with pytest.raises(OptionError, match="--recurrent-delays"):
        api.train_run(str(work / "rpart"), resume=True, recurrent_delays="one-step",
                      progress=False)
    with pytest.raises(OptionError, match="--recurrent-max-delay"):
        api.train_run(str(work / "rpart"), resume=True, recurrent_max_delay_ms=50.0,
                      progress=False)
    resumed = api.train_run(str(work / "rpart"), resume=True, recurrent=True,
                            recurrent_max_delay_ms=40.0, progress=False)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa
                       for line in (work / p / "metrics.jsonl").read_text().splitlines()]
    assert strip("rfull") == strip("rpart")
    a, b = load_model(work / "rfull"), load_model(work / "rpart")
    assert any(k.startswith("recurrent.") for k in a.state_dict())
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize("args, match", [
    (["--recurrent", "--recurrent-max-delay", "0"], "--recurrent-max-delay 0"),
    (["--recurrent", "--recurrent-max-delay", "10"], "at least 2"),
    (["--recurrent-delays", "one-step"], "add --recurrent"),
    (["--recurrent-max-delay", "50"], "add --recurrent"),
    (["--recurrent", "--recurrent-delays", "one-step", "--recurrent-max-delay", "50"],
     "one-step"),
    (["--recurrent", "--recurrent-delays", "sometimes"], "sometimes"),
])
def test_cli_flags_are_validated(work, args, match):
    r = CliRunner().invoke(main, ["train", "--out", str(work / "never"), *args])
    assert r.exit_code != 0
    assert match in r.output, r.output
    assert not (work / "never").exists()


def test_check_options_api():
    with pytest.raises(OptionError, match="add --recurrent"):
        api.check_options(recurrent_delays="learned")
    with pytest.raises(OptionError, match="out of range"):
        api.check_options(recurrent=True, recurrent_max_delay_ms=-5.0)
    api.check_options(recurrent=True, recurrent_delays="fixed-random",
                      recurrent_max_delay_ms=10.0)      # a 1-step window: fixed delays 1
    api.check_options(recurrent=True, recurrent_delays="one-step")


# --------------------------------------------------------------------------- ablate
def test_ablate_recurrent_variants_matched_counts(work, data):
    from neurodelay.research import study

    out = work / "rabl"
    opts = dict(train_file=str(data["train"]), test_file=str(data["test"]), hidden=[12],
                epochs=1, batch_size=32, max_delay_ms=50.0, threads=1)
    lines = []
    res = study.run_ablation(out, 1, models=list(study.RECURRENT_MODELS), progress=False,
                             log=lines.append, recurrent_max_delay_ms=40.0, **opts)
    assert [r["model"] for r in res] == list(study.RECURRENT_MODELS)
    cfgs = {m: json.loads((out / m / "seed0" / "config.json").read_text())
            for m in study.RECURRENT_MODELS}
    ref = cfgs["learned"]["parameters"]["total"]
    assert not cfgs["learned"]["model"]["recurrent"]
    assert cfgs["learned"]["model"]["hidden"] == [12]
    for m, mode in (("recurrent", "learned"), ("recurrent-fixed-random", "fixed-random"),
                    ("recurrent-one-step", "one-step")):
        c = cfgs[m]
        assert c["model"]["recurrent"] and c["model"]["recurrent_delays"] == mode
        assert study.model_key(c) == m
        assert c["model"]["hidden"][0] <= 12                    # narrowed to parity
        assert mode != "learned" or c["model"]["hidden"][0] < 12
        assert abs(c["parameters"]["total"] - ref) <= 0.1 * ref
        assert c["model"]["recurrent_max_delay_steps"] == (None if mode == "one-step" else 4)
    narrowed = [line for line in lines if "narrowed" in line]
    assert len(narrowed) == 3 and all(f"{ref:,} feed-forward" in line for line in narrowed)
    rep = study.report(out)
    for m in study.RECURRENT_MODELS:
        assert study.model_label(m) in rep["markdown"]


def test_ablate_cli_recurrent_max_delay_needs_recurrent(work, data):
    r = CliRunner().invoke(main, ["ablate", "--out", str(work / "ab2"), "--seeds", "1",
                                  "--recurrent-max-delay", "40",
                                  "--train-file", str(data["train"])])
    assert r.exit_code != 0 and "--recurrent" in r.output
