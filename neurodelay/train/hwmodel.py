"""Hardware-exact model: a PyTorch module whose forward pass IS the target's integer
arithmetic, so training it trains the network the chip runs.

:class:`HwSNN` holds, per layer, the fixed integer fields of a
:class:`~neurodelay.core.network.QLayer` (delays, weight exponent, decays, threshold,
bias exponent, scale) and LATENT float weights and biases. Its forward pass computes,
in float64 (every value an exact integer; sums stay far below 2**53), exactly what
:mod:`neurodelay.sim.bitsim` computes -- and so what Lava's ``fixed_pt`` models compute --
using the rules of :mod:`neurodelay.hw.fixedpoint` (the one home of the Loihi 2
arithmetic; nothing is re-derived here):

* weight mantissas ``q = clamp(round(w / step), -qmax, qmax)`` (step: one mantissa step
  in float units), stored as ``q * 2**(R+1-b)`` with ``num_weight_bits = b``, so Lava's
  truncation changes nothing, times ``2**weight_exp`` (exact for these weights);
* the synaptic input of every row: the integer-delay operator
  (:func:`neurodelay.train.intdelay.integer_delay_conv`) in float64 with delays ``1 + d``
  (one step of latency per layer), rounded to the exact integer sum, wrapped like the
  accumulator;
* the CUBA LIF, row by row from row 0 in every layer (biases integrate before the first
  input arrives): u (current decay toward zero, state wrap), v (voltage decay toward
  zero, + u + ``bias_mant << bias_exp``, clip), strict threshold ``v > vth << shift``,
  reset to 0; hidden spikes are payload-1 inputs of the next layer;
* the readout membrane at rows L..L+T-1 times the readout scale: the float scores
  ``sum_t softmax`` of the float model (and of bitsim's ``predict``).

Gradients: straight-through estimators for every rounding, truncation, clamp and wrap
(``y = x + (f(x) - x).detach()``: the forward value is exactly f(x)), the ATan surrogate
of the float model for spikes (on the membrane in float units, ``(v - vth<<6) * scale``),
reset detached. Delays, exponents, decays and thresholds stay fixed.

Recurrent layers (a second synapse process from the layer's spikes back to its a_in,
with its own exponent) are stepped row by row with the recurrent input added to a_in
before the current update, in the event order measured against Lava
(:mod:`neurodelay.hw.fixedpoint`); their recurrent weights are latents too.

``to_qnetwork()`` returns the QNetwork of the current integers: bitsim, Lava, the netx
exporter and this module then agree exactly (tests/test_hwmodel.py checks every hidden
spike and every readout value with ``array_equal``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from neurodelay.core.network import QLayer, QNetwork
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.target import arith
from neurodelay.train.intdelay import integer_delay_conv

DTYPE = torch.float64


def ste(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, the gradient of ``x`` in the backward pass."""
    return x + (value - x).detach()


class _Spike(torch.autograd.Function):
    """Heaviside(v > th) with the ATan surrogate (alpha) on (v - th) * scale."""

    @staticmethod
    def forward(ctx, v, th, scale, alpha):
        ctx.save_for_backward(v)
        ctx.th, ctx.scale, ctx.alpha = th, scale, alpha
        return (v > th).to(v.dtype)

    @staticmethod
    def backward(ctx, g):
        (v,) = ctx.saved_tensors
        x = (v - (ctx.th + 0.5)) * ctx.scale
        c = math.pi / 2 * ctx.alpha
        return g * (ctx.alpha / 2 * ctx.scale) / (1 + (c * x) ** 2), None, None, None


_SPIKE_EXACT = _Spike


class _HwVoltage(torch.autograd.Function):
    """The voltage loop of Lava's CUBA LIF in one autograd node (exact forward values,
    STE + surrogate backward), row by row on (B, n) slices:

        h[r] = clip(trunc(v[r-1] * keep / 2**dv_bits) + U[r] + bias) ; s[r] = h[r] > th
        v[r] = h[r] * (1 - s[r])                                    (reset, detached)

    Backward: dh[r] = dS[r] * sg(h[r]) + (dV[r] + f * dh[r+1]) * (1 - s[r]) with
    f = keep / 2**dv_bits (the decay's straight-through slope); dU = dh, dbias = sum dh.
    """

    @staticmethod
    def forward(ctx, U, bias, a, keep, th, scale, alpha):
        R = U.shape[0]
        H = torch.empty_like(U)
        S = torch.empty_like(U)
        V = torch.empty_like(U)
        v = torch.zeros_like(U[0])
        for r in range(R):
            h = fp.clip_voltage(fp.decay(v, keep, a.dv_bits) + U[r] + bias, a)
            s = (h > th).to(U.dtype)
            v = h * (1.0 - s)
            H[r], S[r], V[r] = h, s, v
        ctx.save_for_backward(H, S)
        ctx.f, ctx.th, ctx.scale, ctx.alpha = keep / float(1 << a.dv_bits), th, scale, alpha
        return S, V

    @staticmethod
    def backward(ctx, gS, gV):
        H, S = ctx.saved_tensors
        c = math.pi / 2 * ctx.alpha
        k = ctx.alpha / 2 * ctx.scale
        gH = torch.empty_like(H)
        carry = torch.zeros_like(H[0])
        for r in range(H.shape[0] - 1, -1, -1):
            x = (H[r] - (ctx.th + 0.5)) * ctx.scale
            g = gS[r] * (k / (1.0 + (c * x) ** 2)) + (gV[r] + carry) * (1.0 - S[r])
            gH[r] = g
            carry = g * ctx.f
        return gH, gH.sum(dim=(0, 1)), None, None, None, None, None


class HwLayer(nn.Module):
    """One layer: fixed integer fields + latent float weights and biases."""

    def __init__(self, ql: QLayer, a: fp.Arith, bits: int, gain: float,
                 weight_init: np.ndarray | None = None, bias_init: np.ndarray | None = None,
                 rec_init: np.ndarray | None = None):
        super().__init__()
        self.a, self.bits, self.kind, self.name = a, int(bits), ql.kind, ql.name
        self.qmax = 2 ** (self.bits - 1) - 1
        self.mult = fp.mantissa_multiplier(self.bits, a)
        self.weight_exp, self.bias_exp = int(ql.weight_exp), int(ql.bias_exp)
        self.du, self.dv, self.scale = int(ql.du), int(ql.dv), float(ql.scale)
        self.vth = fp.layer_vth(ql, a)
        self.gain = float(gain)
        if not fp.shift_is_exact(np.array([self.mult]), self.weight_exp):
            raise fp.FixedPointError(f"layer {ql.name!r}: weight_exp {self.weight_exp} would "
                                     f"floor the {self.bits}-bit mantissa sums (Lava shifts "
                                     f"them); this model computes exact multiples only")
        # one mantissa step and one bias step, in float units (what the latents are in)
        self.step = fp.weight_unit(self.weight_exp, a) * self.mult * self.scale * self.gain
        self.bias_step = 2.0 ** self.bias_exp * self.scale
        w0 = self._latent(ql.weight, self.step, weight_init, f"layer {ql.name!r}: weights")
        b0 = ql.bias_mant * self.bias_step
        if bias_init is not None:
            b1 = np.asarray(bias_init, np.float64)
            lo, hi = a.bias_mant_range
            b0 = np.where(np.clip(np.rint(b1 / self.bias_step), lo, hi) == ql.bias_mant,
                          b1, b0)
        self.weight = nn.Parameter(torch.tensor(w0, dtype=DTYPE))
        self.bias = nn.Parameter(torch.tensor(b0, dtype=DTYPE))
        self.register_buffer("delay", torch.as_tensor(ql.delay, dtype=torch.int64).clone())
        self.register_buffer("mask", torch.ones(ql.weight.shape, dtype=DTYPE))
        self.neurons_unfused = False        # True: plain autograd loop (tests compare both)
        self.recurrent = ql.recurrent
        if self.recurrent:
            self._init_recurrent(ql, rec_init)

    def _latent(self, weight, step: float, init, what: str) -> np.ndarray:
        """Latent float weights of integer weights ``weight`` (mantissas x mult): the
        float values the integers were rounded from, when given (``init``: they keep what
        rounding dropped); where they would not round back to the given integers (a tie,
        a clip), the integer value itself, so the start IS the given network."""
        q = weight.astype(np.float64) / self.mult
        if not np.array_equal(q, np.round(q)) or np.abs(q).max(initial=0) > self.qmax:
            raise fp.FixedPointError(f"{what} are not {self.bits}-bit mantissas times "
                                     f"{self.mult}")
        w0 = q * step
        if init is not None:
            w1 = np.asarray(init, np.float64)
            back = np.clip(np.rint(w1 / step), -self.qmax, self.qmax)
            w0 = np.where(back == q, w1, w0)
        return w0

    def _init_recurrent(self, ql: QLayer, rec_init) -> None:
        """The recurrent synapse process: its own exponent, mantissas on the layer's
        scale (spikes in: no input gain), latent float weights like the feed-forward."""
        a = self.a
        self.rec_exp = int(ql.rec_weight_exp)
        if not fp.shift_is_exact(np.array([self.mult]), self.rec_exp):
            raise fp.FixedPointError(f"layer {ql.name!r}: rec_weight_exp {self.rec_exp} "
                                     f"would floor the {self.bits}-bit recurrent sums; this "
                                     f"model computes exact multiples only")
        self.rec_step = fp.weight_unit(self.rec_exp, a) * self.mult * self.scale
        w0 = self._latent(ql.rec_weight, self.rec_step, rec_init,
                          f"layer {ql.name!r}: recurrent weights")
        self.rec_weight = nn.Parameter(torch.tensor(w0, dtype=DTYPE))
        self.register_buffer("rec_delay",
                             torch.as_tensor(ql.rec_delay, dtype=torch.int64).clone())

    def rec_mantissas(self) -> torch.Tensor:
        z = self.rec_weight / self.rec_step
        return ste(z, torch.clamp(torch.round(z), -self.qmax, self.qmax))

    # -------------------------------------------------------------- integers
    def mantissas(self) -> torch.Tensor:
        """q (float64 integers) with the straight-through gradient of weight / step."""
        z = self.weight * self.mask / self.step
        return ste(z, torch.clamp(torch.round(z), -self.qmax, self.qmax))

    def bias_mant(self) -> torch.Tensor:
        lo, hi = self.a.bias_mant_range
        z = self.bias / self.bias_step
        return ste(z, torch.clamp(torch.round(z), lo, hi))

    def _lava_weights(self, mantissas: torch.Tensor, what: str) -> tuple[np.ndarray, int]:
        """(weights = mantissas x mult as int64, Lava's num_weight_bits), refused when
        Lava's truncation at those bits would change them."""
        with torch.no_grad():
            q = mantissas.cpu().numpy().astype(np.int64)
        w = q * self.mult
        nwb = fp.num_weight_bits_for(q, self.bits, self.a)
        if not np.array_equal(fp.effective_weights(w, nwb, self.a), w):
            raise fp.FixedPointError(f"internal: layer {self.name!r}: Lava's truncation "
                                     f"would change the fine-tuned {what}")
        return w, nwb

    def to_qlayer(self) -> QLayer:
        w, nwb = self._lava_weights(self.mantissas(), "weights")
        with torch.no_grad():
            b = self.bias_mant().cpu().numpy().astype(np.int64)
        rec = {}
        if self.recurrent:
            wr, rnwb = self._lava_weights(self.rec_mantissas(), "recurrent weights")
            rec = dict(rec_weight=wr, rec_delay=self.rec_delay.cpu().numpy().copy(),
                       rec_weight_exp=self.rec_exp, rec_num_weight_bits=rnwb)
        return QLayer(weight=w, weight_exp=self.weight_exp, num_weight_bits=nwb,
                      delay=self.delay.cpu().numpy().copy(), bias_mant=b,
                      bias_exp=self.bias_exp,
                      du=self.du, dv=self.dv,
                      vth=None if self.kind == "li" else self.vth, scale=self.scale,
                      kind=self.kind, name=self.name, **rec)

    # -------------------------------------------------------------- dynamics
    def synaptic_input(self, s: torch.Tensor) -> torch.Tensor:
        """a_in (R, B, n_out) for payloads s (R, B, n_in): row r of s arrives 1 + d rows
        later; exact integers (rounded, accumulator wrap), straight-through gradient."""
        w = self.mantissas() * (self.mult * 2.0 ** self.weight_exp)
        y = integer_delay_conv(s.permute(1, 2, 0), w, self.delay + 1)     # (B, n_out, R)
        y = y.permute(2, 0, 1)
        y = ste(y, torch.round(y))
        return ste(y, fp.wrap_bits(y, self.a.accumulator_bits))

    def neurons(self, a_in: torch.Tensor, alpha: float):
        """(spikes (R, B, n), v (R, B, n)) of the CUBA LIF driven by a_in."""
        a = self.a
        # the integers are fixedpoint's; the gradient passes straight through every
        # rounding and wrap: d act / d a_in = 2**current_shift, d u / d u_prev = keep / 2**D
        act = ste(a_in * float(1 << a.current_shift), fp.current_input(a_in, a))
        keep_u = fp.current_keep(self.du, a)
        if keep_u == 0:
            U = ste(act, fp.wrap_current(act, a))
        else:
            f = keep_u / float(1 << a.du_bits)
            rows, u = [], torch.zeros_like(act[0])
            for r in range(act.shape[0]):
                u = ste(u * f + act[r], fp.current_step(u, act[r], keep_u, a))
                rows.append(u)
            U = torch.stack(rows)
        bias = self.bias_mant() * float(2 ** self.bias_exp)
        keep_v = fp.voltage_keep(self.dv, a)
        th = float(fp.threshold(self.vth, a))
        if self.recurrent:
            return self._neurons_recurrent(a_in, bias, keep_v, th, alpha)
        if self.neurons_unfused or _Spike is not _SPIKE_EXACT:   # tests: plain autograd
            return self._neurons_unfused(U, bias, keep_v, th, alpha)
        return _HwVoltage.apply(U, bias, a, keep_v, th, self.scale, alpha)

    def _neurons_recurrent(self, a_ff, bias, keep_v, th, alpha):
        """A recurrent layer row by row, in the event order of
        :mod:`neurodelay.hw.fixedpoint` (and bitsim): a_in[r] = a_ff[r] + what the
        recurrent process sends at row r; u, v, spikes; the spikes of row r reach row
        r + rec_delay (the process's delay rec_delay - 1 plus its one step). The
        recurrent sums are exact (mantissas times 2**(R+1-b), shift exact); plain
        autograd with the same straight-through rules (backpropagation through time).

        One product per row: the spike vectors of rows r - e, one per distinct delay e,
        side by side (B, G n) times the recurrent weights of each delay stacked (G n, n)
        (exact in any summation order: integers times powers of two, far below 2**53)."""
        a = self.a
        R = a_ff.shape[0]
        wr = self.rec_mantissas() * (self.mult * 2.0 ** self.rec_exp)      # (n, n)
        delays = [int(e) for e in torch.unique(self.rec_delay).tolist()]
        # (G n, n): block g = the weights of delay delays[g], transposed (j -> i)
        w_stack = torch.cat([(wr * (self.rec_delay == e).to(DTYPE)).T for e in delays])
        none = torch.zeros_like(a_ff[0])
        keep_u = fp.current_keep(self.du, a)
        fu = keep_u / float(1 << a.du_bits)
        fv = keep_v / float(1 << a.dv_bits)
        u = torch.zeros_like(a_ff[0])
        v = torch.zeros_like(a_ff[0])
        spikes, vs = [], []
        for r in range(R):
            x = a_ff[r]
            if r >= delays[0]:       # a spike of row r - e arrives now (delays e >= 1)
                hist = torch.cat([spikes[r - e] if r >= e else none for e in delays], 1)
                x = x + hist @ w_stack
            x = ste(x, fp.wrap_bits(x, a.accumulator_bits))
            act = ste(x * float(1 << a.current_shift), fp.current_input(x, a))
            if keep_u == 0:
                u = ste(act, fp.wrap_current(act, a))
            else:
                u = ste(u * fu + act, fp.current_step(u, act, keep_u, a))
            v = ste(v * fv, fp.decay(v, keep_v, a.dv_bits)) + u + bias
            v = ste(v, fp.clip_voltage(v, a))
            s = _Spike.apply(v, th, self.scale, alpha)
            v = v * (1.0 - s.detach())
            spikes.append(s)
            vs.append(v)
        return torch.stack(spikes), torch.stack(vs)

    def _neurons_unfused(self, U, bias, keep_v, th, alpha):
        a = self.a
        f = keep_v / float(1 << a.dv_bits)
        v = torch.zeros_like(U[0])
        spikes, vs = [], []
        for r in range(U.shape[0]):
            d = v * f
            v = ste(d, fp.decay(v, keep_v, a.dv_bits)) + U[r] + bias
            v = ste(v, fp.clip_voltage(v, a))
            s = _Spike.apply(v, th, self.scale, alpha)
            v = v * (1.0 - s.detach())
            spikes.append(s)
            vs.append(v)
        return torch.stack(spikes), torch.stack(vs)


class HwSNN(nn.Module):
    """The hardware-exact network (module docstring). Input: counts (B, T, n_in)."""

    def __init__(self, qnet: QNetwork, bits: int, alpha: float = 5.0,
                 latent: list | None = None):
        super().__init__()
        self.a = arith(qnet)
        fp.ensure_fits(qnet, self.a)
        self.target, self.target_spec = qnet.target, qnet.target_spec
        self.dt, self.input_scale = float(qnet.dt), float(qnet.input_scale)
        self.class_names, self.meta = list(qnet.class_names), dict(qnet.meta)
        self.bits, self.alpha = int(bits), float(alpha)
        self.delay_bits = qnet.delay_bits
        latent = latent or [(None, None)] * len(qnet.layers)
        # per layer (weight, bias) or (weight, bias, recurrent weight) latents
        self.layers = nn.ModuleList(
            HwLayer(ql, self.a, bits, self.input_scale if k == 0 else 1.0, *lat[:2],
                    rec_init=lat[2] if len(lat) > 2 else None)
            for k, (ql, lat) in enumerate(zip(qnet.layers, latent)))

    def forward(self, x, discrete: bool = True, record: bool = False):
        """Readout membrane (B, T, C) in float units (= bitsim's v * scale on the float
        time axis) [, hidden spikes per layer (B, T, n) on the float time axis]."""
        dev = self.layers[0].weight.device
        x = torch.as_tensor(x).to(dev)
        B, T, _ = x.shape
        L = len(self.layers)
        R = T + L
        s = torch.zeros(R, B, x.shape[2], dtype=DTYPE, device=dev)
        s[:T] = torch.round(x.to(DTYPE).permute(1, 0, 2) * self.input_scale)
        hidden = []
        for k, layer in enumerate(self.layers):
            spk, v = layer.neurons(layer.synaptic_input(s), self.alpha)
            if k < L - 1:
                hidden.append(spk[k + 1:k + 1 + T].permute(1, 0, 2))
                s = spk
        u = (v[L:L + T] * self.layers[-1].scale).permute(1, 0, 2)
        return (u, hidden) if record else u

    def to_qnetwork(self) -> QNetwork:
        """The QNetwork of the current integers (what is exported)."""
        return QNetwork(layers=[layer.to_qlayer() for layer in self.layers],
                        target=self.target, dt=self.dt, input_scale=self.input_scale,
                        class_names=list(self.class_names),
                        weight_bits=self.bits, delay_bits=self.delay_bits,
                        meta={**self.meta, "hardware_exact": True},
                        target_spec=self.target_spec)

    def latent_state(self) -> list:
        return [(layer.weight.detach().cpu().numpy().copy(),
                 layer.bias.detach().cpu().numpy().copy())
                + ((layer.rec_weight.detach().cpu().numpy().copy(),) if layer.recurrent
                   else ()) for layer in self.layers]

    def parameters_to_train(self) -> list:
        """The latents fine-tuning trains: every layer's weights and biases, and the
        recurrent weights of recurrent layers (delays and exponents stay fixed)."""
        return [p for layer in self.layers for p in
                ((layer.weight, layer.bias) + ((layer.rec_weight,) if layer.recurrent
                                               else ()))]
