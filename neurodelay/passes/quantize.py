"""Quantization: float :class:`Network` -> integer :class:`QNetwork` for Lava / Loihi 2.

The exact relation (the integer rules are :mod:`neurodelay.hw.fixedpoint`)
--------------------------------------------------------------------------
The target (a ``hw_configs/*.toml`` description) is the truth: every width, shift and
range below is read from it, and ``weight_bits`` may only narrow what it holds. Per
layer, with W = the target's ``weight_bits`` (its precision, 8 on Loihi 2), R = its
``weight_register_bits`` (Lava clips mixed-sign weights to -2**R..2**R-1; 8) and b = the
precision used (default W; at most W + 1 for mixed signs; at least 2, ternary):

* mantissa ``q`` in ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` (symmetric: an all-negative layer
  would otherwise be clipped by Lava's inhibitory mode); the QLayer stores
  ``weight = q * 2**(R+1-b)`` with ``num_weight_bits = b``, so Lava's truncation (which
  drops ``R + 1 - b`` LSBs in mixed mode, one fewer otherwise) leaves it unchanged:
  for b = 8 on Loihi 2 the weights are the even numbers -254..254;
* ``weight_exp = e <= 0`` with ``-e <= R + 1 - b``, so the right shift of every sum of
  such weights is exact (no floor rounding);
* the current keeps ``current_decay`` of the float layer (du; 0 -> u = a_in << sh_a every
  step) and v gains ``2**sh_a * 2**e * weight * payload`` per synapse and step. The float
  value of one unit of v is the layer's ``scale``, hence

      w_float / g  =  2**sh_a * 2**e * 2**(R+1-b) * q * scale     (g = input_scale for
                                                                   layer 0, else 1)
* the float model spikes on ``u >= threshold``, Lava on ``v > vth << sh_v``. The scale is
  chosen so that ``threshold / scale = 2**sh_v * vth + 1`` exactly; then for the integer
  v, ``v >= threshold / scale  <=>  v > vth << sh_v``: the threshold mapping itself adds
  no error; only weight/bias rounding and Lava's decay truncation remain.
  vth = floor((threshold / scale0 - 1) / 2**sh_v) where scale0 is the finest scale that
  keeps every |q| <= 2**(b-1) - 1, so the chosen scale is >= scale0 (no overflow); vth is
  capped so that ``vth << sh_v`` fits the state.
* bias: v += bias_mant << bias_exp every step, ``bias_mant = round(b / scale / 2**bias_exp)``
  with the smallest bias_exp >= bias_exp_min that fits the mantissa. The default
  bias_exp_min is the target's ``netx_bias_exp`` (6): every bias is then a multiple of 64,
  exactly what a lava-dl NetX file can carry; its rounding error (<= 32 units of v per
  step) is below a quarter of one 8-bit weight step (128 units).
* decays: ``dv`` and ``du`` from the float decays (rounded; v decays by (2**D - dv) / 2**D,
  truncated toward zero).
* the exponent e starts at 0 and is lowered (down to ``-(R + 1 - b)`` or the target
  minimum) while vth would exceed its width or, with data, the largest input a_in would
  exceed the declared input width or (readout) the membrane would use more than half of
  the state range; it is raised (up to the target maximum) while vth < 16. If no
  exponent fits, the scale is coarsened (fewer mantissa levels) and the report warns.
* the readout (kind "li") becomes a LIF with the largest threshold (never reached: the
  report gives its headroom, max |v| / 2**(S-1), and warns if the data saturate it).

Recurrent layers (a spiking layer's own spikes back to its a_in, delays E >= 1): a
second synapse process with its OWN exponent (Lava's Dense/DelayDense shift, clip and
truncate per process, and the LIF's a_in port sums the processes' outputs; see
:mod:`neurodelay.hw.fixedpoint`). Its mantissas use the layer's scale (the unit of v
the feed-forward weights and the threshold fixed) at the same precision b, and its
exponent e_r is the lowest in ``-(R + 1 - b)..max`` (finest grid, shift exact) whose
mantissas hold the largest recurrent weight: ``R_float = 2**sh_a * 2**e_r * 2**(R+1-b) *
q_r * scale``. Its delays stay E (the process gets E - 1, must be <= max_delay).

Lava runs every layer from its first step; layer l's float step t is Lava row t + l + 1,
and during rows 0..l a layer integrates only its bias (see bitsim). With nonzero biases
this adds a small, documented difference at the start of every sample.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from neurodelay.core.network import Layer, Network, QLayer, QNetwork
from neurodelay.errors import PassError, QuantizationError
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.target import arith
from neurodelay.passes.delays import check_delays
from neurodelay.passes.reports import QuantReport, _check_data, _tag, _target
from neurodelay.sim import bitsim, floatsim

VTH_MIN_PREFERRED = 16          # quantization policy: raise the exponent while vth < this
READOUT_HEADROOM = 0.5          # ... and keep the readout membrane within this share of v


def weight_precision(target, weight_bits: int | None = None) -> int:
    """The weight precision (signed bits) to quantize with on ``target``: its own
    ``weight_bits`` by default; a request may narrow it (down to 2, ternary) but never
    exceed what the target's weight format holds (weight_bits + 1 for mixed signs)."""
    t = _target(target)
    top = fp.max_num_weight_bits(t.sign_mode, arith(t))
    if weight_bits is None:
        return int(t.weight_bits)
    b = int(weight_bits)
    if not 2 <= b <= top:
        raise QuantizationError(
            f"weight bits {b} is outside what target {t.name!r} holds: 2..{top} "
            f"({t.weight_bits}-bit {t.sign_mode} weights in {t.source}); the target file "
            f"is the truth, a weight-bits option may only narrow it")
    return b


@dataclass
class _Activity:
    """Float activity statistics per layer from data (for choosing exponents)."""

    max_syn: list          # max |W x| per layer (before the current filter, without bias)
    max_u: list            # max |u| per layer (membrane)


def _float_activity(net: Network, x: np.ndarray, batch_size: int = 128) -> _Activity:
    """Max |synaptic input| and max |membrane| per layer of the float model on x (float64,
    in chunks of batch_size samples)."""
    L = len(net.layers)
    max_syn, max_u = [0.0] * L, [0.0] * L
    for b0 in range(0, len(x), batch_size):
        h = np.asarray(x[b0:b0 + batch_size], np.float64)
        for k, layer in enumerate(net.layers):
            S = floatsim.synaptic_sum(layer, h, np.float64)       # what a_in carries
            max_syn[k] = max(max_syn[k], float(np.abs(S).max(initial=0)))
            if layer.recurrent:       # max_syn: the feed-forward part of a_in
                u, s = floatsim.recurrent_dynamics(layer, S.copy())
            else:
                u, s = floatsim.neuron_dynamics(layer, floatsim.filter_current(layer, S))
            max_u[k] = max(max_u[k], float(np.abs(u).max(initial=0)))
            if s is not None:
                h = s.astype(np.float64)
    return _Activity(max_syn, max_u)


WEIGHT_RANGES = ("max", "mse")


def mse_range(w: np.ndarray, qmax: int, n: int = 64) -> float:
    """The clipping range c (0 < c <= max|w|) whose uniform grid of 2*qmax + 1 levels,
    step c / qmax, gives the smallest squared rounding + clipping error on the weights."""
    w = np.abs(np.asarray(w, np.float64)).ravel()
    w = w[w > 0]
    if w.size == 0:
        return 0.0
    top = float(w.max())
    best, best_err = top, np.inf
    for c in np.linspace(top / n, top, n):
        s = c / qmax
        err = float(np.sum((np.minimum(np.rint(w / s), qmax) * s - w) ** 2))
        if err < best_err:
            best, best_err = float(c), err
    return best


@dataclass(frozen=True)
class _Grid:
    """One layer's quantization problem: the target's limits at precision b and the
    weights (divided by the input gain) to place on the mantissa grid."""

    k: int
    layer: Layer
    tag: str
    a: fp.Arith
    act: _Activity | None
    qmax: int                       # largest mantissa, 2**(b-1) - 1
    mult: int                       # stored weight = mantissa * mult
    e_lo: int                       # weight_exp range that keeps the shift exact
    e_hi: int
    vth_max: int                    # vth << threshold_shift must fit the state
    th_unit: float                  # 2**threshold_shift
    th_in: float                    # v units per unit of a_in
    readout_v_target: float
    w_eff: np.ndarray
    wmax: float                     # the range the mantissas span

    @classmethod
    def build(cls, k: int, layer: Layer, a: fp.Arith, b: int, gain: float,
              act: _Activity | None, weight_range: str) -> "_Grid":
        qmax = 2 ** (b - 1) - 1
        w_eff = layer.weight.astype(np.float64) / gain
        # the range the mantissas span: the largest weight ("max": nothing clipped) or the
        # range with the least squared error ("mse": outliers clipped, finer steps)
        wmax = float(np.abs(w_eff).max(initial=0)) if weight_range == "max" else \
            mse_range(w_eff, qmax)
        return cls(k=k, layer=layer, tag=_tag(k, layer), a=a, act=act, qmax=qmax,
                   mult=fp.mantissa_multiplier(b, a),
                   e_lo=max(a.weight_exp_min, -(a.weight_register_bits + 1 - b)),
                   e_hi=max(a.weight_exp_max, 0),
                   vth_max=min(a.vth_max, a.v_limit >> a.threshold_shift),
                   th_unit=float(1 << a.threshold_shift), th_in=fp.weight_unit(0, a),
                   readout_v_target=READOUT_HEADROOM * a.state_max, w_eff=w_eff, wmax=wmax)

    def per_unit(self, e: int) -> float:
        """v units per mantissa step at weight exponent e."""
        return fp.weight_unit(e, self.a) * self.mult

    def choose(self, e: int) -> tuple[float, int | None, bool]:
        """(scale, vth, ok) for exponent e; ok: vth and, with data, a_in and the readout
        membrane are within their limits."""
        scale, vth, ok = self._fit_lif(e) if self.layer.kind == "lif" else self._fit_readout(e)
        act, k = self.act, self.k
        if act is not None and ok and act.max_syn[k] > 0:
            # a_in = (sum of mantissa * payload) shifted = |W x| / (2**sh_a * scale)
            ok = act.max_syn[k] / (self.th_in * scale) <= self.a.input_limit
        return scale, vth, ok

    def _fit_lif(self, e: int) -> tuple[float, int, bool]:
        theta = self.layer.threshold
        if self.wmax > 0:
            scale0 = self.wmax / (self.qmax * self.per_unit(e))
            # + 0.02: float32 weights carry ~1e-7 relative error; a vth that is
            # integral up to that error is taken (|q| then exceeds qmax by < 0.2)
            vth = int(math.floor((theta / scale0 - 1.0) / self.th_unit + 0.02))
        else:
            vth = 1 << 16                  # no weights: any mid-range threshold
        ok = VTH_MIN_PREFERRED <= vth <= self.vth_max
        vth_c = min(max(vth, 1), self.vth_max)
        return theta / (self.th_unit * vth_c + 1.0), vth_c, ok

    def _fit_readout(self, e: int) -> tuple[float, None, bool]:
        scale = self.wmax / (self.qmax * self.per_unit(e)) if self.wmax > 0 else 1.0
        ok = True
        if self.act is not None and self.act.max_u[self.k] > 0:
            ok = self.act.max_u[self.k] / scale <= self.readout_v_target
        return scale, None, ok

    def exponent_order(self) -> list[int]:
        """The exponents to try, in order: 0 first, then down (finer) and up; for a LIF
        whose vth would be too small at 0, up first."""
        order = list(range(0, self.e_lo - 1, -1)) + list(range(1, self.e_hi + 1))
        if self.layer.kind == "lif" and self.wmax > 0:
            # a too-small vth is fixed by raising e, a too-large one (or data limits) by
            # lowering
            scale0 = self.wmax / (self.qmax * self.per_unit(0))
            if (self.layer.threshold / scale0 - 1.0) / self.th_unit < VTH_MIN_PREFERRED:
                order = list(range(0, self.e_hi + 1)) + list(range(-1, self.e_lo - 1, -1))
        return order


def _choose_exponent(g: _Grid, warn: list) -> tuple[int, float, int | None, bool]:
    """(weight_exp, scale, vth, coarsened): the first exponent that fits, else the finest
    one with a coarsened scale (or a warning)."""
    for e in g.exponent_order():
        scale, vth, ok = g.choose(e)
        if ok:
            return e, scale, vth, False
    return _fallback(g, warn)


def _fallback(g: _Grid, warn: list) -> tuple[int, float, int | None, bool]:
    """No exponent fits: the finest one; a readout's scale is coarsened to keep its
    membrane in range, a LIF's vth is capped (coarsened) or warned about."""
    e = g.e_lo
    scale, vth, _ = g.choose(e)
    coarsened = False
    act, k, a = g.act, g.k, g.a
    if g.layer.kind == "lif":
        if vth >= g.vth_max:
            coarsened = True
        elif vth < VTH_MIN_PREFERRED:
            warn.append(f"{g.tag}: the threshold is small next to the largest weight "
                        f"(vth mantissa {vth}); threshold resolution is coarse")
    else:
        need = act.max_u[k] / g.readout_v_target * 1.05 if act is not None else scale
        if need > scale:
            scale, coarsened = need, True
    a_in_peak = (act.max_syn[k] / (g.th_in * scale)) if act is not None else 0
    if a_in_peak > a.input_limit:
        warn.append(f"{g.tag}: the synaptic input a_in reaches {a_in_peak:.0f} on the "
                    f"data, above the {a.input_bits}-bit width the target declares "
                    f"({a.input_limit}); Lava's simulation does not enforce it, "
                    f"hardware may")
    return e, scale, vth, coarsened


def _mantissas(g: _Grid, e: int, scale: float, coarsened: bool, b: int, weight_range: str,
               warn: list) -> tuple[np.ndarray, int]:
    """(q, n_clip): the weight mantissas (int64, clipped to +-qmax) and how many were
    clipped."""
    q = np.rint(g.w_eff / (g.per_unit(e) * scale))
    n_clip = int(np.count_nonzero(np.abs(q) > g.qmax))
    q = np.clip(q, -g.qmax, g.qmax).astype(np.int64)
    if coarsened:
        warn.append(f"{g.tag}: no weight exponent fits; the scale was coarsened (mantissas "
                    f"use {int(np.abs(q).max(initial=0))} of {g.qmax} levels)")
    if n_clip and weight_range == "max":
        warn.append(f"{g.tag}: {n_clip} weight(s) clipped to the {b}-bit mantissa range")
    return q, n_clip


def _bias(g: _Grid, scale: float, bias_exp_min: int, warn: list) -> tuple:
    """(bias_mant, bias_exp, n_clipped) of the layer's bias in units of v."""
    a = g.a
    bias_mant, bias_exp, n_bclip = fp.bias_encoding(
        g.layer.bias.astype(np.float64) / scale, a, bias_exp_min)
    if n_bclip:
        warn.append(f"{g.tag}: {n_bclip} bias value(s) exceed the {a.bias_mant_bits}-bit "
                    f"mantissa with exponent {a.bias_exp_max} and were clipped")
    return bias_mant, bias_exp, n_bclip


def _quantize_layer(k: int, layer: Layer, a: fp.Arith, b: int, bias_exp_min: int,
                    gain: float, act: _Activity | None, warn: list,
                    weight_range: str = "max") -> tuple[QLayer, dict]:
    """One layer's integer fields and report row (see the module docstring)."""
    if layer.kind == "lif" and layer.reset != 0.0:
        raise QuantizationError(f"{_tag(k, layer)}: reset={layer.reset}, but Lava's LIF "
                                f"resets v to 0; retrain with reset 0")
    g = _Grid.build(k, layer, a, b, gain, act, weight_range)
    e, scale, vth, coarsened = _choose_exponent(g, warn)
    q, n_clip = _mantissas(g, e, scale, coarsened, b, weight_range, warn)
    bias_mant, bias_exp, n_bclip = _bias(g, scale, bias_exp_min, warn)
    dv = fp.decay_to_dv(layer.decay, a)
    du = fp.current_decay_to_du(layer.current_decay, a)
    nwb = fp.num_weight_bits_for(q, b, a)
    rec, rec_row = _recurrent(g, scale, b, weight_range, warn) if layer.recurrent else ({}, {})
    ql = QLayer(weight=q * g.mult, weight_exp=e, num_weight_bits=nwb, delay=layer.delay.copy(),
                bias_mant=bias_mant, bias_exp=bias_exp, du=du, dv=dv,
                vth=vth if layer.kind == "lif" else a.readout_vth, scale=scale,
                kind=layer.kind, name=layer.name, **rec)
    row = {"layer": k, "name": layer.name, "kind": layer.kind, "scale": scale,
           "weight_exp": e, "num_weight_bits": nwb,
           "mantissa_min": int(q.min(initial=0)), "mantissa_max": int(q.max(initial=0)),
           "mantissa_limit": g.qmax,
           "weights_zeroed": int(np.count_nonzero((q == 0) & (layer.weight != 0))),
           "weights_clipped": n_clip, "vth": ql.vth, "dv": dv, "du": du,
           "bias_exp": bias_exp, "bias_clipped": n_bclip}
    if layer.kind == "lif":
        row["threshold_v"] = fp.threshold(vth, a) + 1
    row.update(rec_row)
    return ql, row


def _recurrent(g: _Grid, scale: float, b: int, weight_range: str,
               warn: list) -> tuple[dict, dict]:
    """The recurrent synapse process of a layer whose scale (v units) the feed-forward
    weights and the threshold fixed: its own exponent, the finest exact one (lowest, >=
    g.e_lo) whose b-bit mantissa grid holds the recurrent weights (module docstring);
    mantissas ``round(R / (2**sh_a * 2**e_r * 2**(R+1-b) * scale))``. Returns the QLayer
    fields and the report columns."""
    a = g.a
    R = g.layer.rec_weight.astype(np.float64)       # spikes in: no input gain
    rmax = float(np.abs(R).max(initial=0)) if weight_range == "max" else mse_range(R, g.qmax)
    e = g.e_hi
    for cand in range(g.e_lo, g.e_hi + 1):
        if rmax == 0 or np.rint(rmax / (g.per_unit(cand) * scale)) <= g.qmax:
            e = cand
            break
    q = np.rint(R / (g.per_unit(e) * scale))
    n_clip = int(np.count_nonzero(np.abs(q) > g.qmax))
    q = np.clip(q, -g.qmax, g.qmax).astype(np.int64)
    if n_clip and weight_range == "max":
        warn.append(f"{g.tag}: {n_clip} recurrent weight(s) clipped to the {b}-bit mantissa "
                    f"range (even at the largest exponent {e})")
    nwb = fp.num_weight_bits_for(q, b, a)
    fields = {"rec_weight": q * g.mult, "rec_delay": g.layer.rec_delay.copy(),
              "rec_weight_exp": e, "rec_num_weight_bits": nwb}
    row = {"rec_weight_exp": e, "rec_num_weight_bits": nwb,
           "rec_mantissa_min": int(q.min(initial=0)), "rec_mantissa_max": int(q.max(initial=0)),
           "rec_weights_zeroed": int(np.count_nonzero((q == 0) & (R != 0))),
           "rec_weights_clipped": n_clip}
    return fields, row


def quantize(net: Network, target=None, *, data=None, weight_bits: int | None = None,
             input_scale: float = 1.0, bias_exp_min: int | None = None,
             weight_range: str = "max") -> tuple[QNetwork, QuantReport]:
    """Quantize a float network to a target's integer fields (module docstring).

    target: None (Loihi 2), a target name or TOML path, or a Target. Its description is
    stored in the QNetwork (``target_spec``), so every consumer simulates and checks the
    same arithmetic. weight_bits: the precision, default the target's; it may only
    narrow what the target holds (:func:`weight_precision`). input_scale: graded input =
    round(count * it). bias_exp_min: smallest bias exponent (default the target's
    ``netx_bias_exp``, which a lava-dl netx file carries exactly; 0 gives a finer bias
    for direct Lava processes only). weight_range: "max" (default: the mantissas span
    the largest weight, nothing is clipped) or "mse" (per layer, the range with the least
    squared rounding + clipping error, :func:`mse_range`; better at few bits; the clipped
    count is in the report).
    With data=(x_padded, labels) (calibration data: never test data): exponents are
    chosen from the float activity, and the report gives per-layer headroom / overflow
    counters from the bit-accurate simulator and float vs bit-accurate accuracy. Raises
    DelayRangeError if delays exceed the target (run check_delays with clip=True first),
    QuantizationError if the result would not fit the target.

    Examples:
        The float network of :class:`~neurodelay.core.network.Network`'s example, on
        Loihi 2's integers:

        >>> from neurodelay.core.network import Layer, Network
        >>> hidden = Layer(weight=[[1.0, 1.0]], delay=[[2, 0]], bias=[0.0], decay=0.5,
        ...                threshold=1.5)
        >>> readout = Layer(weight=[[1.0]], delay=[[0]], bias=[0.0], decay=0.9, kind="li")
        >>> net = Network([hidden, readout], dt=0.01, n_channels=2, channel_bin=1)
        >>> from neurodelay.passes import quantize
        >>> qnet, report = quantize(net, "loihi2")
        >>> qnet.layers[0].delay.tolist(), qnet.weight_bits
        ([[2, 0]], 8)
    """
    if not isinstance(net, Network):
        raise PassError(f"quantize expects a float Network, got {type(net).__name__}")
    if weight_range not in WEIGHT_RANGES:
        raise PassError(f"weight_range must be one of {WEIGHT_RANGES}, got {weight_range!r}")
    tgt = _target(target)
    a = arith(tgt)
    b = weight_precision(tgt, weight_bits)
    bias_exp_min = a.netx_bias_exp if bias_exp_min is None else int(bias_exp_min)
    input_scale = _check_input_scale(input_scale)
    check_delays(net, tgt.max_delay)                       # raises if delays do not fit
    data = _check_data(net.n_in, data)
    act = _float_activity(net, data[0]) if data is not None else None
    warn: list[str] = []
    qlayers, rows = [], []
    for k, layer in enumerate(net.layers):
        gain = input_scale if k == 0 else 1.0
        ql, row = _quantize_layer(k, layer, a, b, bias_exp_min, gain, act, warn,
                                  weight_range)
        qlayers.append(ql)
        rows.append(row)
    qnet = QNetwork(layers=qlayers, target=tgt.name, dt=net.dt, input_scale=input_scale,
                    class_names=list(net.class_names),
                    weight_bits=b,
                    meta={**net.meta, "quantized_from": "float network",
                          "weight_range": weight_range},
                    target_spec=tgt.to_dict())
    fp.ensure_fits(qnet, a, QuantizationError,
                   f"the quantized network does not fit target {tgt.name!r}")
    rep = QuantReport(tgt.name, b, input_scale, rows, warnings=warn)
    _check_truncation(qnet, a)
    if data is not None:
        _measure(net, qnet, data, rep)
    for w in rep.warnings:
        warnings.warn(w, stacklevel=2)
    return qnet, rep


def _check_input_scale(input_scale) -> float:
    input_scale = float(input_scale)
    if not (input_scale > 0 and math.isfinite(input_scale)):
        raise PassError(f"input_scale must be a positive number, got {input_scale}")
    return input_scale


def _check_truncation(qnet: QNetwork, a: fp.Arith) -> None:
    """Lava's weight truncation must change nothing (else an internal error)."""
    for k, ql in enumerate(qnet.layers):
        if not np.array_equal(fp.effective_weights(ql.weight, ql.num_weight_bits, a),
                              ql.weight):
            raise QuantizationError(f"internal: {_tag(k, ql)} weights would be changed "
                                    f"by Lava's truncation")
        if ql.recurrent and not np.array_equal(
                fp.effective_weights(ql.rec_weight, ql.rec_num_weight_bits, a), ql.rec_weight):
            raise QuantizationError(f"internal: {_tag(k, ql)} recurrent weights would be "
                                    f"changed by Lava's truncation")


def _measure(net: Network, qnet: QNetwork, data, rep: QuantReport) -> None:
    """Fill headroom/overflow columns and accuracies from a bit-accurate run on data."""
    x, labels = data
    T, L = x.shape[1], len(qnet.layers)
    res = bitsim.run(qnet, bitsim.quantize_input(qnet, x), n_steps=T + L, stats=True)
    for row, st, layer in zip(rep.layers, res.stats, qnet.layers):
        vmax = max(abs(st["v_max"]), abs(st["v_min"]))
        row.update({"headroom": vmax / res.state_max, "max_abs_a_in": st["max_abs_a_in"],
                    "u_wraps": st["u_wraps"], "v_clips": st["v_clips"]})
        tag = _tag(row["layer"], layer)
        if st["u_wraps"]:
            rep.warnings.append(f"{tag}: the current u wrapped {st['u_wraps']} time(s) on "
                                f"the data")
        if st["v_clips"]:
            rep.warnings.append(f"{tag}: v was clipped at the state limit {st['v_clips']} "
                                f"time(s) on the data")
        if layer.kind == "li" and st["spikes"]:
            rep.warnings.append(f"{tag}: the readout membrane saturated (reached its "
                                f"largest threshold) {st['spikes']} time(s) on the data; "
                                f"use a smaller input_scale or fewer weight bits")
    u = bitsim.align_to_float(res, T).astype(np.float64) * qnet.layers[-1].scale
    pred_q = bitsim.readout_scores(u).argmax(axis=1)
    _, pred_f = floatsim.predict(net, x)
    rep.agreement = float(np.mean(pred_f == pred_q))
    if labels is not None:
        rep.accuracy_float = float(np.mean(pred_f == labels))
        rep.accuracy_quant = float(np.mean(pred_q == labels))
