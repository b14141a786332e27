"""The hardware-exact model computes exactly what the bit-accurate simulator (and so Lava)
computes: every hidden spike and every readout value, array_equal; breaking one rounding
rule breaks it; gradients reach every latent weight."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodelay import passes
from neurodelay.core.network import Layer, Network
from neurodelay.data.rundata import run_test_data
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.target import arith
from neurodelay.research.sweep import reduce_delays
from neurodelay.sim import bitsim
from neurodelay.train.hwmodel import HwSNN
from neurodelay.train.loaders import float_network

torch.set_num_threads(1)


def random_net(seed, sizes=(12, 16, 10, 4), max_delay=40, cd=0.0):
    rng = np.random.default_rng(seed)
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        w = rng.normal(0, 1.5 / np.sqrt(a), (b, a)) * (rng.random((b, a)) < 0.8)
        layers.append(Layer(weight=w, delay=rng.integers(0, max_delay + 1, (b, a)),
                            bias=rng.normal(0, 0.05, b), decay=float(rng.uniform(0.3, 1.0)),
                            threshold=float(rng.uniform(0.5, 1.5)),
                            kind="li" if last else "lif", name=f"l{k}",
                            current_decay=cd if not last else 0.0))
    return Network(layers)


def counts(seed, B=6, T=30, n=12):
    rng = np.random.default_rng(seed + 99)
    return (rng.poisson(0.8, (B, T, n)) * (rng.random((B, T, n)) < 0.5)).astype(np.float32)


def reference(qnet, x):
    """bitsim on the float time axis: readout v * scale and hidden spikes rows k+1..k+T."""
    T, L = x.shape[1], len(qnet.layers)
    res = bitsim.run(qnet, bitsim.quantize_input(qnet, x), n_steps=T + L, record=True,
                     stats=False)
    u = bitsim.align_to_float(res, T).astype(np.float64) * qnet.layers[-1].scale
    spikes = [res.spikes[k][:, k + 1:k + 1 + T] for k in range(L - 1)]
    return u, spikes


def quantized(net, bits, delay_bits, x, mode="clip"):
    reduced, _ = reduce_delays(net, delay_bits, mode, 62)
    qnet, _ = passes.quantize(reduced, "loihi2", data=x, weight_bits=bits)
    return qnet


def assert_exact(model, qnet, x):
    u_ref, s_ref = reference(qnet, x)
    with torch.no_grad():
        u, spikes = model(torch.from_numpy(x), record=True)
    assert np.array_equal(u.numpy(), u_ref)
    assert len(spikes) == len(s_ref)
    for a, b in zip(spikes, s_ref):
        assert np.array_equal(a.numpy().astype(bool), b)
    return u_ref, s_ref


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("delay_bits", [6, 3])
def test_forward_equals_bitsim_on_random_networks(bits, delay_bits):
    for seed in range(3):
        net = random_net(seed + 10 * bits + delay_bits)
        x = counts(seed)
        qnet = quantized(net, bits, delay_bits, x)
        model = HwSNN(qnet, bits)
        u_ref, s_ref = assert_exact(model, qnet, x)
        assert sum(int(s.sum()) for s in s_ref) > 0          # something spikes
        q2 = model.to_qnetwork()
        for a, b in zip(q2.layers, qnet.layers):           # the integers round-trip
            assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias_mant,
                                                                         b.bias_mant)


def test_forward_equals_bitsim_with_current_decay_and_extremes():
    """du < 4095 (a synaptic current), graded input, and inputs large enough to clip v."""
    net = random_net(3, cd=0.6)
    x = counts(3) * 6
    qnet = quantized(net, 8, 6, x)
    assert qnet.layers[0].du < 4095
    assert_exact(HwSNN(qnet, 8), qnet, x)
    x_big = counts(4) * 400
    assert_exact(HwSNN(qnet, 8), qnet, x_big)


def test_forward_equals_bitsim_on_a_trained_model(trained):
    from neurodelay.data import pad_batch
    from neurodelay.runs import open_run

    r = open_run(trained[0])
    net = float_network(r)
    ds = run_test_data(r)
    x = pad_batch(ds.samples[:40], pad_to=ds.max_steps)
    for bits, dbits in ((8, 6), (4, 3), (2, 3)):
        qnet = quantized(net, bits, dbits, x[:20], mode="coarse")
        assert_exact(HwSNN(qnet, bits), qnet, x)


@pytest.mark.parametrize("rule", ["decay", "threshold", "clip", "wrap"])
def test_breaking_one_rounding_rule_breaks_equality(rule, monkeypatch):
    """Break one rule in the hardware-exact model only (bitsim keeps the true one)."""
    import types

    import neurodelay.train.hwmodel as hm

    broken = types.SimpleNamespace(**vars(fp))
    monkeypatch.setattr(hm, "fp", broken)
    net = random_net(5)
    x = counts(5)
    qnet = quantized(net, 8, 6, x[:2])
    if rule == "decay":            # round to nearest instead of toward zero
        broken.decay = lambda v, keep, bits: torch.round(v * (keep / float(1 << bits)))
    elif rule == "threshold":      # >= instead of >, with membranes exactly at threshold
        class GE(hm._Spike):
            @staticmethod
            def forward(ctx, v, th, scale, alpha):
                ctx.save_for_backward(v)
                ctx.th, ctx.scale, ctx.alpha = th, scale, alpha
                return (v >= th).to(v.dtype)
        monkeypatch.setattr(hm, "_Spike", GE)
        x = np.zeros_like(x)
        x[:, :, 0] = 1
        ql = qnet.layers[0]
        ql.weight[:] = 0
        ql.weight[:, 0] = 128                  # a_in 128 -> u = 128 << 6 = 8192 = 128 << 6
        ql.weight_exp, ql.vth, ql.dv = 0, 128, 4095
        ql.bias_mant[:] = 0
        ql.delay[:] = 0
    elif rule == "clip":           # the readout integrates a bias below the state limit
        broken.clip_voltage = lambda v, a, out=None: v
        ro = qnet.layers[-1]
        ro.dv, ro.bias_exp = 0, 7
        ro.bias_mant[:] = -4096
    else:                          # a current that accumulates past the state limit
        broken.wrap_current = lambda c, a: c
        broken.current_step = lambda u, act, keep, a: fp.current_sum(u, act, keep, a)
        ql = qnet.layers[0]
        ql.du = 0                                  # u keeps 4095/4096 per step
        ql.weight[:] = np.abs(ql.weight)
        ql.weight_exp = 0
        x = counts(5) * 40
    model = HwSNN(qnet, 8)
    u_ref, s_ref = reference(qnet, x)
    with torch.no_grad():
        u, spikes = model(torch.from_numpy(x), record=True)
    same = np.array_equal(u.numpy(), u_ref) and all(
        np.array_equal(a.numpy().astype(bool), b) for a, b in zip(spikes, s_ref))
    assert not same, f"breaking the {rule} rule went unnoticed"
    monkeypatch.undo()                            # and with the true rules: equal again
    assert_exact(HwSNN(qnet, 8), qnet, x)


def test_gradients_reach_every_latent_weight():
    net = random_net(6, max_delay=10)
    x = counts(6, B=8)
    qnet = quantized(net, 4, 6, x)
    model = HwSNN(qnet, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    from neurodelay.train.model import loss_fn
    loss = loss_fn(model(torch.from_numpy(x)), y)
    loss.backward()
    for layer in model.layers:
        g = layer.weight.grad
        assert g is not None and torch.isfinite(g).all() and (g != 0).any(), layer.name
        assert layer.bias.grad is not None and torch.isfinite(layer.bias.grad).all()


def test_fused_voltage_loop_has_the_unfused_gradients():
    """The one-node voltage loop (_HwVoltage) equals plain autograd through the same
    straight-through steps, values and gradients."""
    net = random_net(8, max_delay=8)
    x = torch.from_numpy(counts(8, B=5))
    qnet = quantized(net, 8, 6, counts(8, B=5))
    model = HwSNN(qnet, 8)
    y = torch.tensor([0, 1, 2, 3, 0])
    from neurodelay.train.model import loss_fn

    def grads(unfused: bool):
        model.zero_grad()
        for layer in model.layers:
            layer.neurons_unfused = unfused
        loss = loss_fn(model(x), y)
        loss.backward()
        return float(loss.detach()), [layer.weight.grad.clone() for layer in model.layers]

    l1, g1 = grads(False)
    l2, g2 = grads(True)
    assert l1 == l2
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12) and (a != 0).any()


def test_float_latents_start_at_the_given_integers():
    """Latents initialised from the float weights keep sub-step detail, yet the model
    starts exactly at the quantized network it was given (ties and clips fall back)."""
    net = random_net(9)
    x = counts(9)
    reduced, _ = reduce_delays(net, 6, "clip", 62)
    for rng_mode in ("max", "mse"):
        qnet, _ = passes.quantize(reduced, "loihi2", data=x, weight_bits=3,
                                  weight_range=rng_mode)
        latent = [(L.weight.astype(np.float64), L.bias.astype(np.float64))
                  for L in reduced.layers]
        model = HwSNN(qnet, 3, latent=latent)
        for a, b in zip(model.to_qnetwork().layers, qnet.layers):
            assert np.array_equal(a.weight, b.weight)
            assert np.array_equal(a.bias_mant, b.bias_mant)
        assert not np.array_equal(model.layers[0].weight.detach().numpy(),
                                  HwSNN(qnet, 3).layers[0].weight.detach().numpy())
        assert_exact(model, qnet, x)


def test_an_excitatory_layer_that_turns_mixed_exports_with_its_full_width():
    """9-bit weights (W + 1) on an all-positive layer give num_weight_bits 8; if
    fine-tuning makes that layer mixed, the export needs 9, or Lava truncates one bit and
    the chip no longer computes the fine-tuned model."""
    net = random_net(5)
    net.layers[0].weight = np.abs(net.layers[0].weight)
    x = counts(5)
    qnet = quantized(net, 9, 6, x)
    assert fp.sign_mode(qnet.layers[0].weight) == "excitatory"
    assert qnet.layers[0].num_weight_bits == 8
    model = HwSNN(qnet, 9)
    with torch.no_grad():                           # one synapse turns negative
        lay = model.layers[0]
        i = torch.nonzero(lay.weight > 0)[0]
        lay.weight[tuple(i)] = -3 * lay.step
    out = model.to_qnetwork()
    ql = out.layers[0]
    assert fp.sign_mode(ql.weight) == "mixed" and ql.num_weight_bits == 9
    assert np.array_equal(fp.effective_weights(ql.weight, ql.num_weight_bits, arith(qnet)),
                          ql.weight)
    assert_exact(model, out, x)
