"""DelaySNN: the DCLS synapse, the discrete model (Eq. 6), schedules and masks."""
import math

import numpy as np
import pytest
import torch

from neurodelay.train.model import (
    SIG_MIN,
    DelaySNN,
    DelaySynapses,
    ModelConfig,
    count_parameters,
    loss_fn,
    sigma_schedule,
    widen_for_parameter_parity,
)
from neurodelay.train.trainer import TrainConfig, build_optim

torch.set_num_threads(1)


def eq6_loop(x, w, d):
    """I_i[t] = sum_j w_ij x_j[t - d_ij], x (B, n_in, T) -> (B, n_out, T), plain loops."""
    b, n_in, t = x.shape
    n_out = w.shape[0]
    out = np.zeros((b, n_out, t))
    for i in range(n_out):
        for j in range(n_in):
            dij = int(d[i, j])
            if dij < t:
                out[:, i, dij:] += w[i, j] * x[:, j, : t - dij]
    return out


def set_delays(syn: DelaySynapses, delays: torch.Tensor):
    """Put the dcls positions so that the synapses have these integer delays."""
    with torch.no_grad():
        centre = syn.window - 1 - delays.to(torch.float32)
        syn.conv.P.copy_((centre - syn.window // 2).reshape(syn.conv.P.shape))


@pytest.mark.parametrize("window", [25, 10, 7])
def test_discrete_synapse_is_eq6(window):
    g = torch.Generator().manual_seed(1)
    n_in, n_out, b, t = 9, 6, 3, 40
    syn = DelaySynapses(n_in, n_out, window, "learned")
    d = torch.randint(0, window, (n_out, n_in), generator=g)
    set_delays(syn, d)
    assert torch.equal(syn.integer_delays(), d)
    x = (torch.rand(b, n_in, t, generator=g) < 0.3).float() * torch.randint(1, 4, (b, n_in, t),
                                                                             generator=g)
    got = syn(x, discrete=True).detach().numpy()
    ref = eq6_loop(x.numpy(), syn.weight_matrix().numpy(), d.numpy())
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_gaussian_kernel_converges_to_eq6_as_sigma_shrinks():
    """dcls 'gauss' with integer positions and the smallest sigma ~ one tap per synapse."""
    g = torch.Generator().manual_seed(2)
    n_in, n_out, window = 5, 4, 11
    syn = DelaySynapses(n_in, n_out, window, "learned")
    d = torch.randint(0, window, (n_out, n_in), generator=g)
    set_delays(syn, d)
    x = torch.rand(2, n_in, 30, generator=g)
    exact = syn(x, discrete=True)
    errs = []
    for sig in (3.0, 1.0, 0.3, 0.0):  # effective sigma = sig + 0.27
        syn.set_sigma(sig)
        errs.append(float((syn(x, discrete=False) - exact).abs().max().detach()))
    assert errs == sorted(errs, reverse=True), errs
    # effective sigma 0.27: neighbours get exp(-0.5/0.27^2) ~ 1e-3 of the weight
    assert errs[-1] < 5e-3 * float(exact.detach().abs().max())
    assert errs[0] > 10 * errs[-1]


def test_position_convention_matches_dcls():
    """method.md: for Td=25, P=+12 is delay 0 and delay = Td//2 - P."""
    syn = DelaySynapses(1, 1, 25, "learned")
    for p, delay in [(12.0, 0), (0.0, 12), (-12.0, 24), (3.4, 9)]:
        with torch.no_grad():
            syn.conv.P.fill_(p)
        assert int(syn.integer_delays()) == delay
        # and the dcls Gaussian kernel really peaks at that delay
        syn.set_sigma(0.0)
        x = torch.zeros(1, 1, 40)
        x[0, 0, 5] = 1.0
        y = syn(x, discrete=False)[0, 0]
        assert int(y.abs().argmax()) == 5 + delay


def test_positions_receive_gradients():
    torch.manual_seed(0)
    cfg = ModelConfig(n_inputs=20, n_outputs=4, hidden=[16], max_delay_steps=7, dropout=0.0)
    m = DelaySNN(cfg)
    m.set_sigma(2.0)
    x = (torch.rand(4, 25, 20) < 0.3).float()
    loss = loss_fn(m(x, discrete=False), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for syn in m.all_synapses():
        assert syn.conv.P.grad is not None
        assert float(syn.conv.P.grad.abs().sum()) > 0
        assert float(syn.conv.weight.grad.abs().sum()) > 0


def test_sigma_schedule_values():
    s0, epochs = 12.5, 40
    vals = [sigma_schedule(e, epochs, s0) for e in range(epochs)]
    assert vals[0] == pytest.approx(s0)
    assert vals[10] == pytest.approx(SIG_MIN)  # reaches the minimum at epochs//4
    alpha = (SIG_MIN / s0) ** (1 / 10)
    assert vals[5] == pytest.approx(s0 * alpha ** 5)
    assert all(a > b for a, b in zip(vals[:10], vals[1:11]))
    assert all(v == SIG_MIN for v in vals[10:])
    assert all(sigma_schedule(e, epochs, s0, "constant") == SIG_MIN for e in range(epochs))
    with pytest.raises(ValueError):
        sigma_schedule(0, 10, s0, "linear")


def test_optimizer_groups_and_schedules():
    cfg = ModelConfig(n_inputs=10, n_outputs=3, hidden=[8], max_delay_steps=5)
    m = DelaySNN(cfg)
    tc = TrainConfig(epochs=8, batch_size=4)
    opt_w, sched_w, opt_p, sched_p = build_optim(m, tc)
    assert opt_p.param_groups[0]["lr"] == pytest.approx(0.1)      # 100 x 1e-3
    assert opt_p.param_groups[0]["weight_decay"] == 0.0
    assert opt_w.param_groups[0]["weight_decay"] == pytest.approx(1e-5)
    assert opt_w.param_groups[1]["weight_decay"] == 0.0           # BatchNorm
    lrs_w, lrs_p = [], []
    for _ in range(tc.epochs):
        lrs_w.append(opt_w.param_groups[0]["lr"])
        lrs_p.append(opt_p.param_groups[0]["lr"])
        opt_w.step(), opt_p.step()
        sched_w.step(), sched_p.step()
    # OneCycle (as the reference uses it): starts at max_lr/25, peaks near 5e-3, anneals
    assert lrs_w[0] == pytest.approx(5e-3 / 25)
    assert 0.95 * 5e-3 < max(lrs_w) <= 5e-3
    assert int(np.argmax(lrs_w)) in (2, 3) and lrs_w[-1] < lrs_w[0]
    expected_p = [0.1 * (1 + math.cos(math.pi * e / tc.epochs)) / 2 for e in range(tc.epochs)]
    np.testing.assert_allclose(lrs_p, expected_p, rtol=1e-6)        # cosine annealing


def test_masks_hold_after_optimizer_steps():
    torch.manual_seed(0)
    k = 3
    cfg = ModelConfig(n_inputs=12, n_outputs=4, hidden=[10, 10], max_delay_steps=5,
                      connections=k, dropout=0.0)
    m = DelaySNN(cfg, seed=3)
    tc = TrainConfig(epochs=2, batch_size=4)
    opt_w, _, opt_p, _ = build_optim(m, tc)
    x = (torch.rand(8, 20, 12) < 0.4).float()
    y = torch.randint(0, 4, (8,))
    for _ in range(3):
        opt_w.zero_grad(), opt_p.zero_grad()
        loss_fn(m(x, discrete=False), y).backward()
        opt_w.step(), opt_p.step()
        m.after_step()
    for syn in m.all_synapses():
        w = syn.conv.weight.detach().reshape(syn.n_out, syn.n_in)
        assert torch.all((w != 0).sum(1) == k)
        assert torch.all(w[syn.mask.reshape(syn.n_out, syn.n_in) == 0] == 0)
        lo, hi = syn.position_bounds
        p = syn.conv.P.detach()
        assert float(p.min()) >= lo and float(p.max()) <= hi
    assert m.count_parameters()["weights"] == k * (10 + 10 + 4)


def test_ablation_models():
    base = ModelConfig(n_inputs=140, n_outputs=20, hidden=[64, 64], max_delay_steps=11)
    none = ModelConfig(**{**base.to_dict(), "delays": "none"})
    wide = widen_for_parameter_parity(none, base)
    assert wide[0] > 64
    widened = ModelConfig(**{**none.to_dict(), "hidden": wide})
    assert count_parameters(widened) >= count_parameters(base)
    assert count_parameters(widened) < 1.05 * count_parameters(base)
    m = DelaySNN(widened)
    assert all(int(s.integer_delays().max()) == 0 for s in m.all_synapses())
    fixed = DelaySNN(ModelConfig(**{**base.to_dict(), "delays": "fixed-random"}))
    d = fixed.synapses[0].integer_delays()
    assert int(d.max()) > 5 and not fixed.synapses[0].conv.P.requires_grad
    assert DelaySNN(base).count_parameters()["total"] == count_parameters(base)


@pytest.mark.parametrize("sig", [5.0, SIG_MIN])
def test_fast_training_path_equals_dcls_spikingjelly_reference(sig):
    """The default (fast) training forward/backward is the paper's formulation."""
    torch.manual_seed(0)
    cfg = ModelConfig(n_inputs=30, n_outputs=5, hidden=[24, 24], max_delay_steps=9,
                      dropout=0.0)
    m = DelaySNN(cfg)
    m.set_sigma(sig)
    m.train()
    x = (torch.rand(6, 40, 30) < 0.2).float() * 2
    y = torch.randint(0, 5, (6,))
    grads = []
    for ref in (True, False):
        m.zero_grad()
        u = m(x, discrete=False, reference=ref)
        loss = loss_fn(u, y)
        loss.backward()
        grads.append((loss.item(), u.detach().clone(),
                      [p.grad.clone() for p in m.parameters() if p.grad is not None]))
    (l_ref, u_ref, g_ref), (l_fast, u_fast, g_fast) = grads
    assert l_fast == pytest.approx(l_ref, rel=1e-5)
    assert torch.allclose(u_fast, u_ref, atol=1e-4, rtol=1e-4)
    assert len(g_ref) == len(g_fast) == 2 * 3 + 2 * 2  # weights+positions x3, BN x2
    for a, b in zip(g_ref, g_fast):
        assert torch.allclose(a, b, atol=1e-5 + 1e-3 * float(a.abs().max())), (a - b).abs().max()


# --------------------------------------------------------------------------- integer delays
@pytest.mark.parametrize("delays", ["fixed-random", "none"])
def test_fixed_delay_training_path_equals_conv1d_reference(delays):
    """Fixed delays train through intdelay (float32): same loss and gradients as the
    paper's conv1d formulation (reference=True)."""
    torch.manual_seed(1)
    cfg = ModelConfig(n_inputs=30, n_outputs=5, hidden=[24, 24], max_delay_steps=9,
                      dropout=0.0, delays=delays, connections=12)
    m = DelaySNN(cfg, seed=2)
    m.train()
    x = (torch.rand(6, 40, 30) < 0.2).float() * 2
    y = torch.randint(0, 5, (6,))
    out = []
    for ref in (True, False):
        m.zero_grad()
        loss = loss_fn(m(x, discrete=False, reference=ref), y)
        loss.backward()
        out.append((loss.item(), [p.grad.clone() for p in m.parameters() if p.grad is not None]))
    (l_ref, g_ref), (l_new, g_new) = out
    assert l_new == pytest.approx(l_ref, rel=1e-5)
    assert len(g_ref) == len(g_new) == 3 + 2 * 2          # weights x3, BN x2 (no positions)
    for a, b in zip(g_ref, g_new):
        assert torch.allclose(a, b, atol=1e-6 + 1e-4 * float(a.abs().max()))


def test_discrete_path_precision_setting():
    """Discrete synapses: float32 sums (the fast path, default) or float64 sums cast back
    (the exact path), both Eq. 6; a float64 model keeps float64 whatever discrete_dtype
    says."""
    assert DelaySynapses.discrete_dtype == torch.float32
    g = torch.Generator().manual_seed(3)
    syn = DelaySynapses(40, 16, 25, "learned")
    d = torch.randint(0, 25, (16, 40), generator=g)
    set_delays(syn, d)
    x = (torch.rand(3, 40, 60, generator=g) < 0.3).float()
    ref = eq6_loop(x.double().numpy(), syn.weight_matrix().double().numpy(), d.numpy())
    with torch.no_grad():
        y32 = syn(x, discrete=True)
        syn.discrete_dtype = torch.float64
        y64 = syn(x, discrete=True)
        y_old = syn(x, discrete=True, reference=True)
        syn_d = DelaySynapses(40, 16, 25, "learned").double()
        syn_d.load_state_dict(syn.state_dict())
        syn_d.discrete_dtype = torch.float32
        y_d = syn_d(x.double(), discrete=True)
    assert y64.dtype == y32.dtype == torch.float32 and y_d.dtype == torch.float64
    err = {k: float(np.abs(v.double().numpy() - ref).max())
           for k, v in (("64", y64), ("32", y32), ("old", y_old), ("d", y_d))}
    assert err["64"] <= err["old"] + 1e-12       # float64 then cast: never worse than conv1d
    assert err["64"] < 5e-7 and err["32"] < 5e-6 and err["d"] < 1e-12
    assert err["32"] > err["64"]                 # the two paths really differ


def test_set_discrete_dtype_reaches_every_synapse():
    m = DelaySNN(ModelConfig(n_inputs=6, n_outputs=3, hidden=[5, 4], max_delay_steps=5))
    assert {s.discrete_dtype for s in m.all_synapses()} == {torch.float32}
    assert m.set_discrete_dtype(torch.float64) is m
    assert len(m.all_synapses()) == 3
    assert {s.discrete_dtype for s in m.all_synapses()} == {torch.float64}
    assert DelaySynapses.discrete_dtype == torch.float32     # instances only
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        m.set_discrete_dtype(torch.float16)


def _discrete_runs(model, x):
    """(u, hidden spikes) of the fast path (float32: training, eval), the exact path
    (float64 sums: verify), the old conv1d path and a float64 model (the truth)."""
    import copy

    with torch.no_grad():
        model.set_discrete_dtype(torch.float32)
        fast = model(x, discrete=True, record=True)
        model.set_discrete_dtype(torch.float64)
        exact = model(x, discrete=True, record=True)
        model.set_discrete_dtype(torch.float32)
        old = model(x, discrete=True, record=True, reference=True)
        m64 = copy.deepcopy(model).double()
        truth = m64(x.double(), discrete=True, record=True, reference=True)
    return fast, exact, old, truth


def _check_same_discrete_model(model, x) -> dict:
    """Exact path: the old conv1d path's predictions, and its hidden spikes as far as
    float32 rounding lets conv1d be right. Fast path: the same predictions as both, and at
    most a rounding-level share of hidden spikes flipped. Returns the flip counts."""
    from neurodelay.train.model import scores_from_membrane

    runs = _discrete_runs(model, x)
    (u_fast, s_fast), (u_ex, s_ex), (u_old, s_old), (u_64, s_64) = runs
    pred = lambda u: scores_from_membrane(u.double()).argmax(1)  # noqa: E731
    assert torch.equal(pred(u_ex), pred(u_old))
    n_spikes = sum(int(s.sum()) for s in s_64)
    assert n_spikes > 0                                         # hidden layers do spike
    for a, b, t in zip(s_ex, s_old, s_64):
        # the exact path agrees with the float64 model wherever the old one does: any
        # difference between them is the old path's own float32 rounding
        assert not bool(((a != b) & (b == t)).any())
        assert int((a != t).sum()) <= int((b != t).sum())
    assert float((u_ex.double() - u_64).abs().max()) <= \
        float((u_old.double() - u_64).abs().max()) + 1e-6
    assert float((u_ex - u_old).abs().max()) < 1e-4
    # the fast path: what per-epoch validation and `eval` report
    assert torch.equal(pred(u_fast), pred(u_ex))
    assert torch.equal(pred(u_fast), pred(u_old))
    flips = [int((a != t).sum()) for a, t in zip(s_fast, s_64)]
    assert sum(flips) <= max(2, 1e-5 * n_spikes), flips
    if sum(flips) == 0:
        assert float((u_fast.double() - u_64).abs().max()) < 1e-4
    return {"fast_flips": flips, "hidden_spikes": n_spikes}


def _dtypes_seen(monkeypatch):
    """Record the dtype of every integer_delay_conv call DelaySynapses makes."""
    import neurodelay.train.model as M

    seen = []
    real = M.integer_delay_conv

    def spy(x, w, d, **kw):
        seen.append(x.dtype)
        return real(x, w, d, **kw)

    monkeypatch.setattr(M, "integer_delay_conv", spy)
    return seen


def test_trained_model_discrete_predictions_and_spikes_unchanged(trained, monkeypatch):
    """Evaluation of a trained model: the exact and the fast path give the old conv1d
    path's predictions; `eval` (trainer.predict) runs the fast float32 path and predicts
    exactly what the exact float64 path predicts."""
    from neurodelay.data import pad_batch
    from neurodelay.data.rundata import run_test_data
    from neurodelay.train.loaders import load_model
    from neurodelay.train.trainer import predict

    out, res = trained
    model = load_model(out)
    ds = run_test_data(out)
    x = torch.from_numpy(pad_batch(ds.samples, pad_to=ds.max_steps))
    _check_same_discrete_model(model, x)
    # what `neurodelay eval` reports: the fast path, same predictions as the exact one
    model = load_model(out)
    seen = _dtypes_seen(monkeypatch)
    pred, scores = predict(model, ds)
    assert seen and set(seen) == {torch.float32}
    assert float((pred == ds.labels).mean()) == pytest.approx(res["test_accuracy"])
    seen.clear()
    pred64, scores64 = predict(model.set_discrete_dtype(torch.float64), ds)
    assert seen and set(seen) == {torch.float64}
    assert np.array_equal(pred, pred64)
    assert np.abs(scores - scores64).max() < 1e-3


def test_verify_reference_runs_the_exact_path(trained, monkeypatch):
    """verify's PyTorch reference is the model on its float64 discrete path."""
    from neurodelay.data import pad_batch
    from neurodelay.data.rundata import run_test_data
    from neurodelay.deploy import verify
    from neurodelay.runs import open_run

    out, _ = trained
    name, model, path = verify._reference_model(open_run(out))
    assert {s.discrete_dtype for s in model.all_synapses()} == {torch.float64}
    assert path == verify.PYTORCH_PATH_EXACT
    seen = _dtypes_seen(monkeypatch)
    ds = run_test_data(out)
    verify._forward(model, pad_batch(ds.samples[:4], pad_to=ds.max_steps))
    assert seen and set(seen) == {torch.float64}


SHARED_DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.slow
def test_sshd_tiny_discrete_predictions_unchanged(tmp_path):
    """shd preset on sshd_tiny.h5 (2 epochs, small hidden layers): on the test speakers
    the exact path, the fast path (what `eval` runs) and the old conv1d path predict the
    same."""
    path = SHARED_DATA / "sshd_tiny.h5"
    if not path.exists():
        pytest.skip(f"{path} is absent (the SSHD stand-in data of ../shared/data)")
    from neurodelay import api
    from neurodelay.data import pad_batch
    from neurodelay.data.rundata import run_test_data
    from neurodelay.train.loaders import load_model
    from neurodelay.train.model import scores_from_membrane
    from neurodelay.train.trainer import predict

    out = tmp_path / "run"
    api.train_run(str(out), preset="shd", train_file=str(path), test_speakers=[20, 21, 22, 23],
                  hidden=[48, 48], epochs=2, batch_size=32, seed=0, progress=False,
                  log=lambda m: None, cache_dir=str(tmp_path / "cache"))
    model = load_model(out)
    assert model.cfg.max_delay_steps == 25
    ds = run_test_data(out)
    assert len(ds) >= 20
    _check_same_discrete_model(model, torch.from_numpy(pad_batch(ds.samples,
                                                                 pad_to=ds.max_steps)))
    # eval's fast path (trainer.predict) predicts what the exact path and conv1d predict
    pred, _ = predict(model.set_discrete_dtype(torch.float32), ds)
    pred64, _ = predict(model.set_discrete_dtype(torch.float64), ds)
    with torch.no_grad():
        u_old = model(torch.from_numpy(pad_batch(ds.samples, pad_to=ds.max_steps)),
                      discrete=True, reference=True)
    pred_old = scores_from_membrane(u_old.double()).argmax(1).numpy()
    assert np.array_equal(pred, pred64) and np.array_equal(pred, pred_old)
