"""Deployment passes: pure functions ``network -> (network, report)``.

* :func:`prune`         magnitude pruning (K synapses per neuron, or a sparsity fraction)
* :func:`check_delays`  integer delays must fit the target (raise, or clip and report)
* :func:`quantize`      float :class:`Network` -> integer :class:`QNetwork` for Lava/Loihi 2
* :func:`run_passes`    check_delays -> (prune) -> quantize, collecting the reports

No pass changes its input. ``data`` is ``(x_padded, labels)`` or ``x_padded`` alone
(inputs only: used for activity statistics, no accuracy). With labels a report also
gives the accuracy before / after (float networks: :func:`neurodelay.sim.floatsim.accuracy`; quantized
ones: the bit-accurate :func:`neurodelay.sim.bitsim.predict`).

Quantization (the exact relation; the integer rules are :mod:`neurodelay.hw.fixedpoint`)
-------------------------------------------------------------------------------------
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

Lava runs every layer from its first step; layer l's float step t is Lava row t + l + 1,
and during rows 0..l a layer integrates only its bias (see bitsim). With nonzero biases
this adds a small, documented difference at the start of every sample.
"""
from __future__ import annotations

from neurodelay.errors import DelayRangeError, PassError, QuantizationError

import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from neurodelay.core.network import Layer, Network, QLayer, QNetwork
from neurodelay.hw import fixedpoint as fp
from neurodelay.hw.target import arith

VTH_MIN_PREFERRED = 16          # quantization policy: raise the exponent while vth < this
READOUT_HEADROOM = 0.5          # ... and keep the readout membrane within this share of v


# ----------------------------------------------------------------------------- reports

@dataclass
class PassReport:
    """What a pass changed. ``layers``: one dict per layer; ``changes``: totals."""

    name: str
    changes: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"[{self.name}] " + ", ".join(f"{k}={v}" for k, v in self.changes.items())]
        for d in self.layers:
            lines.append("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in d.items()))
        if self.accuracy_before is not None:
            lines.append(f"  accuracy {self.accuracy_before:.4f} -> {self.accuracy_after:.4f}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class QuantReport:
    """Per-layer quantization choices and, with data, headroom and accuracy."""

    target: str
    weight_bits: int
    input_scale: float
    layers: list = field(default_factory=list)
    accuracy_float: float | None = None
    accuracy_quant: float | None = None
    agreement: float | None = None        # fraction of equal float / bitsim predictions
    warnings: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"[quantize] target={self.target} weight_bits={self.weight_bits} "
                 f"input_scale={self.input_scale}"]
        for d in self.layers:
            lines.append("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in d.items()))
        if self.accuracy_float is not None:
            lines.append(f"  accuracy float {self.accuracy_float:.4f} -> bit-accurate "
                         f"{self.accuracy_quant:.4f}")
        if self.agreement is not None:
            lines.append(f"  float and bit-accurate predictions agree on "
                         f"{self.agreement:.4f} of the samples")
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def _tag(k: int, layer) -> str:
    return f"layer {k}" + (f" ({layer.name!r})" if layer.name else "")


def _check_data(net_in: int, data):
    """(x (N, T, n_in), labels (N,) or None) from data = (x, labels) or x alone."""
    if data is None:
        return None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, labels = data
    else:
        x, labels = data, None
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != net_in or x.shape[0] == 0:
        raise PassError(f"data must be (x_padded (N, T, {net_in}), labels (N,)) or x alone; "
                        f"got x of shape {x.shape}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (x.shape[0],):
            raise PassError(f"data labels must have shape ({x.shape[0]},), got "
                            f"{labels.shape}")
    return x, labels


def _accuracy(net, data) -> float | None:
    if data is None or data[1] is None:
        return None
    x, labels = data
    if isinstance(net, QNetwork):
        from neurodelay.sim import bitsim
        return bitsim.accuracy(net, x, labels)
    from neurodelay.sim import floatsim
    return floatsim.accuracy(net, x, labels)


# ----------------------------------------------------------------------------- prune

def prune(net: Network, *, k_per_neuron: int | None = None, sparsity: float | None = None,
          scope: str = "layer", data=None) -> tuple[Network, PassReport]:
    """Magnitude pruning. Give exactly one of:

    k_per_neuron  keep the K largest-|w| synapses of every postsynaptic neuron (rows of
                  each weight matrix; neurons with fewer nonzero synapses keep them all;
                  ties go to the lower input index)
    sparsity      fraction of weights set to zero: per layer (scope="layer", default) or
                  over all weights of the network by one magnitude cut (scope="global")
    """
    if not isinstance(net, Network):
        raise PassError(f"prune expects a float Network, got {type(net).__name__}")
    if (k_per_neuron is None) == (sparsity is None):
        raise PassError("prune: give exactly one of k_per_neuron=K or sparsity=fraction")
    if scope not in ("layer", "global"):
        raise PassError(f"prune: scope must be 'layer' or 'global', got {scope!r}")
    data = _check_data(net.n_in, data)
    if k_per_neuron is not None:
        k = int(k_per_neuron)
        if k < 1 or k != k_per_neuron:
            raise PassError(f"prune: k_per_neuron must be a positive integer, got "
                            f"{k_per_neuron}")
        masks = [_topk_rows(layer.weight, k) for layer in net.layers]
        how = {"k_per_neuron": k}
    else:
        s = float(sparsity)
        if not 0.0 <= s < 1.0:
            raise PassError(f"prune: sparsity must be in [0, 1), got {sparsity}")
        how = {"sparsity": s, "scope": scope}
        if scope == "layer":
            masks = [_keep_largest(np.abs(l.weight).ravel(), s).reshape(l.weight.shape)
                     for l in net.layers]
        else:
            allw = np.concatenate([np.abs(l.weight).ravel() for l in net.layers])
            keep = _keep_largest(allw, s)
            masks, o = [], 0
            for l in net.layers:
                masks.append(keep[o:o + l.weight.size].reshape(l.weight.shape))
                o += l.weight.size
    layers, rows = [], []
    for k, (layer, m) in enumerate(zip(net.layers, masks)):
        w = np.where(m, layer.weight, 0).astype(np.float32)
        layers.append(replace(layer, weight=w, delay=layer.delay.copy(),
                              bias=layer.bias.copy()))
        rows.append({"layer": k, "name": layer.name, "synapses_before": layer.n_synapses,
                     "synapses_after": int(np.count_nonzero(w)),
                     "max_fan_in_after": int(np.count_nonzero(w, axis=1).max(initial=0))})
    out = replace(net, layers=layers, meta=dict(net.meta))
    before = sum(r["synapses_before"] for r in rows)
    after = sum(r["synapses_after"] for r in rows)
    rep = PassReport("prune", {**how, "synapses_before": before, "synapses_after": after,
                               "removed": before - after}, rows,
                     _accuracy(net, data), _accuracy(out, data))
    return out, rep


def _topk_rows(w: np.ndarray, k: int) -> np.ndarray:
    """Mask keeping the k largest |w| nonzero entries of every row (stable ties)."""
    a = np.abs(w)
    order = np.argsort(-a, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(w.shape[1])[None].repeat(w.shape[0], 0), 1)
    return (rank < k) & (a > 0)


def _keep_largest(a: np.ndarray, sparsity: float) -> np.ndarray:
    """Mask keeping the round((1 - sparsity) * size) largest entries of a (stable ties)."""
    n_keep = int(round((1.0 - sparsity) * a.size))
    keep = np.zeros(a.size, bool)
    if n_keep:
        keep[np.argsort(-a, kind="stable")[:n_keep]] = True
    return keep & (a > 0)


# ----------------------------------------------------------------------------- delays

def check_delays(net, max_delay: int | None = None, *, clip: bool = False,
                 data=None, target=None) -> tuple[Any, PassReport]:
    """Check that every synapse's integer delay is in 0..max_delay.

    max_delay defaults to the target's ``max_delay`` (hw_configs/). Synapses with
    a zero weight do not count; their delays are set to 0 in the returned network (no
    effect on its behaviour; reported as ``unused_delays_zeroed``).
    Too-long delays raise :class:`DelayRangeError` naming each layer, the number of
    offending synapses, the largest delay and the fix -- unless ``clip=True``: then they
    are clipped to max_delay and the report gives the count (and, with data, the
    accuracy before / after). Works on Network and QNetwork.
    """
    if max_delay is None:
        max_delay = _target(target).max_delay
    max_delay = int(max_delay)
    if max_delay < 0:
        raise PassError(f"max_delay must be >= 0, got {max_delay}")
    if not isinstance(net, (Network, QNetwork)):
        raise PassError(f"check_delays expects a Network or QNetwork, got "
                        f"{type(net).__name__}")
    data = _check_data(net.layers[0].n_in, data)
    rows, problems, layers = [], [], []
    n_clipped = n_zeroed = 0
    for k, layer in enumerate(net.layers):
        used = layer.weight != 0
        d = layer.delay
        over = used & (d > max_delay)
        unused_long = (~used) & (d > max_delay)
        n_over = int(over.sum())
        big = int(d[used].max()) if used.any() else 0
        rows.append({"layer": k, "name": layer.name, "max_delay": big,
                     "over_limit": n_over})
        if n_over:
            problems.append(f"{_tag(k, layer)}: {n_over} synapse(s) with delay > "
                            f"{max_delay} (largest {big})")
        new_d = d.copy()
        new_d[unused_long] = 0
        n_zeroed += int(unused_long.sum())
        if clip:
            new_d[over] = max_delay
            n_clipped += n_over
            rows[-1]["clipped"] = n_over
        layers.append(replace(layer, delay=new_d))
    if problems and not clip:
        raise DelayRangeError(
            "delays exceed the target's maximum of " f"{max_delay} steps:\n  - "
            + "\n  - ".join(problems)
            + f"\nfix: pass --clip-delays (clip=True) to clip them to {max_delay} and see "
              f"the accuracy cost, or retrain with a max delay of at most {max_delay} steps")
    out = replace(net, layers=layers, meta=dict(net.meta))
    rep = PassReport("check_delays", {"max_delay": max_delay, "clipped": n_clipped,
                                      "unused_delays_zeroed": n_zeroed}, rows)
    if n_clipped:
        rep.notes.append(f"clipped {n_clipped} synapse delay(s) to {max_delay}")
        rep.accuracy_before, rep.accuracy_after = _accuracy(net, data), _accuracy(out, data)
    return out, rep


DELAY_MODES = ("clip", "coarse")


def used_delay_max(net) -> int:
    """Largest delay over synapses with a nonzero weight (0 if none)."""
    return max((int(lay.delay[lay.weight != 0].max(initial=0)) for lay in net.layers),
               default=0)


def reduce_delays(net, delay_bits: int, mode: str, target_max: int
                  ) -> tuple[Any, PassReport]:
    """Delays that fit ``delay_bits`` bits (values 0 .. 2**b - 1, never above target_max).

    ``clip``: delays above ``m = min(2**b - 1, target_max)`` become m; shorter ones stay
    exact. ``coarse``: the range is kept at a coarser resolution: with D the largest used
    delay and ``k = ceil(D / (2**b - 1))`` steps per unit, every delay d becomes
    ``k * floor(d / k + 1/2)`` (its stored value fits b bits; the hardware needs a k-step
    delay unit), then is clipped to the largest multiple of k within target_max (so every
    delay stays a whole number of units). The report's ``changes`` give mode,
    delay_bits, max_delay (largest allowed), delay_step (k; 1 for clip), delays_changed
    (used synapses whose delay changed) and largest_delay (after).
    """
    if mode not in DELAY_MODES:
        raise PassError(f"delay mode must be one of {DELAY_MODES}, got {mode!r}")
    b = int(delay_bits)
    if not 1 <= b <= 16:
        raise PassError(f"delay bits {b} out of range; use 1..16 (b bits hold delays "
                        f"0..2**b - 1)")
    step = 1
    if mode == "clip":
        limit = min(2 ** b - 1, int(target_max))
        out, _ = check_delays(net, limit, clip=True)
    else:
        step = max(1, math.ceil(used_delay_max(net) / (2 ** b - 1)))
        layers = []
        for lay in net.layers:
            d = lay.delay.astype(np.int64)
            d = (2 * d + step) // (2 * step) * step          # k * floor(d / k + 1/2)
            layers.append(replace(lay, delay=d.astype(lay.delay.dtype)))
        limit = min(step * (2 ** b - 1), int(target_max) // step * step)
        out, _ = check_delays(replace(net, layers=layers, meta=dict(net.meta)),
                              limit, clip=True)
    changed = sum(int(np.count_nonzero((a.delay != c.delay) & (a.weight != 0)))
                  for a, c in zip(net.layers, out.layers))
    return out, PassReport("reduce_delays", {
        "mode": mode, "delay_bits": b, "max_delay": int(limit), "delay_step": int(step),
        "delays_changed": changed, "largest_delay": used_delay_max(out)})


# ----------------------------------------------------------------------------- quantize

def _target(target):
    """A hardware Target from None (Loihi 2), a Target, a name or a TOML path."""
    from neurodelay.hw.target import load_target

    if target is None:
        target = "loihi2"
    if isinstance(target, dict):
        raise PassError("target must be a hardware target (a name from hw_configs/, a .toml "
                        "path or a neurodelay.hw.target.Target), not a dict of parameters; "
                        "write the parameters into a target file")
    return load_target(target)


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
    from neurodelay.sim import floatsim
    L = len(net.layers)
    max_syn, max_u = [0.0] * L, [0.0] * L
    for b0 in range(0, len(x), batch_size):
        h = np.asarray(x[b0:b0 + batch_size], np.float64)
        for k, layer in enumerate(net.layers):
            S = floatsim.synaptic_sum(layer, h, np.float64)       # what a_in carries
            max_syn[k] = max(max_syn[k], float(np.abs(S).max(initial=0)))
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


def _quantize_layer(k: int, layer: Layer, a: fp.Arith, b: int, bias_exp_min: int,
                    gain: float, act: _Activity | None, warn: list,
                    weight_range: str = "max") -> tuple[QLayer, dict]:
    """One layer's integer fields and report row (see the module docstring)."""
    tag = _tag(k, layer)
    if layer.kind == "lif" and layer.reset != 0.0:
        raise QuantizationError(f"{tag}: reset={layer.reset}, but Lava's LIF resets v to 0; "
                                f"retrain with reset 0")
    qmax = 2 ** (b - 1) - 1
    mult = fp.mantissa_multiplier(b, a)
    e_lo = max(a.weight_exp_min, -(a.weight_register_bits + 1 - b))   # keeps the shift exact
    e_hi = max(a.weight_exp_max, 0)
    vth_max = min(a.vth_max, a.v_limit >> a.threshold_shift)
    th_unit = float(1 << a.threshold_shift)
    th_in = fp.weight_unit(0, a)                  # v units per unit of a_in
    readout_v_target = READOUT_HEADROOM * a.state_max
    w_eff = layer.weight.astype(np.float64) / gain
    # the range the mantissas span: the largest weight ("max": nothing clipped) or the
    # range with the least squared error ("mse": outliers clipped, finer steps)
    wmax = float(np.abs(w_eff).max(initial=0)) if weight_range == "max" else \
        mse_range(w_eff, qmax)

    def per_unit(e):                       # v units per mantissa step
        return fp.weight_unit(e, a) * mult

    def choose(e):
        """(scale, vth, ok) for exponent e."""
        if layer.kind == "lif":
            theta = layer.threshold
            if wmax > 0:
                scale0 = wmax / (qmax * per_unit(e))
                # + 0.02: float32 weights carry ~1e-7 relative error; a vth that is
                # integral up to that error is taken (|q| then exceeds qmax by < 0.2)
                vth = int(math.floor((theta / scale0 - 1.0) / th_unit + 0.02))
            else:
                vth = 1 << 16                  # no weights: any mid-range threshold
            ok = VTH_MIN_PREFERRED <= vth <= vth_max
            vth_c = min(max(vth, 1), vth_max)
            scale = theta / (th_unit * vth_c + 1.0)
        else:
            vth_c = None
            scale = wmax / (qmax * per_unit(e)) if wmax > 0 else 1.0
            ok = True
            if act is not None and act.max_u[k] > 0:
                ok = act.max_u[k] / scale <= readout_v_target
        if act is not None and ok and act.max_syn[k] > 0:
            # a_in = (sum of mantissa * payload) shifted = |W x| / (2**sh_a * scale)
            ok = act.max_syn[k] / (th_in * scale) <= a.input_limit
        return scale, vth_c, ok

    order = list(range(0, e_lo - 1, -1)) + list(range(1, e_hi + 1))
    if layer.kind == "lif" and wmax > 0:
        # a too-small vth is fixed by raising e, a too-large one (or data limits) by lowering
        scale0 = wmax / (qmax * per_unit(0))
        if (layer.threshold / scale0 - 1.0) / th_unit < VTH_MIN_PREFERRED:
            order = list(range(0, e_hi + 1)) + list(range(-1, e_lo - 1, -1))
    chosen = None
    for e in order:
        scale, vth, ok = choose(e)
        if ok:
            chosen = (e, scale, vth)
            break
    coarsened = False
    if chosen is None:
        e = e_lo
        scale, vth, _ = choose(e)
        if layer.kind == "lif":
            if vth >= vth_max:
                coarsened = True
            elif vth < VTH_MIN_PREFERRED:
                warn.append(f"{tag}: the threshold is small next to the largest weight "
                            f"(vth mantissa {vth}); threshold resolution is coarse")
        else:
            need = act.max_u[k] / readout_v_target * 1.05 if act is not None else scale
            if need > scale:
                scale, coarsened = need, True
        a_in_peak = (act.max_syn[k] / (th_in * scale)) if act is not None else 0
        if a_in_peak > a.input_limit:
            warn.append(f"{tag}: the synaptic input a_in reaches {a_in_peak:.0f} on the "
                        f"data, above the {a.input_bits}-bit width the target declares "
                        f"({a.input_limit}); Lava's simulation does not enforce it, "
                        f"hardware may")
        chosen = (e, scale, vth)
    e, scale, vth = chosen
    q = np.rint(w_eff / (per_unit(e) * scale))
    n_clip = int(np.count_nonzero(np.abs(q) > qmax))
    q = np.clip(q, -qmax, qmax).astype(np.int64)
    if coarsened:
        warn.append(f"{tag}: no weight exponent fits; the scale was coarsened (mantissas "
                    f"use {int(np.abs(q).max(initial=0))} of {qmax} levels)")
    if n_clip and weight_range == "max":
        warn.append(f"{tag}: {n_clip} weight(s) clipped to the {b}-bit mantissa range")
    bias_mant, bias_exp, n_bclip = fp.bias_encoding(
        layer.bias.astype(np.float64) / scale, a, bias_exp_min)
    if n_bclip:
        warn.append(f"{tag}: {n_bclip} bias value(s) exceed the {a.bias_mant_bits}-bit "
                    f"mantissa with exponent {a.bias_exp_max} and were clipped")
    dv = fp.decay_to_dv(layer.decay, a)
    du = fp.current_decay_to_du(layer.current_decay, a)
    nwb = fp.num_weight_bits_for(q, b, a)
    ql = QLayer(weight=q * mult, weight_exp=e, num_weight_bits=nwb, delay=layer.delay.copy(),
                bias_mant=bias_mant, bias_exp=bias_exp, du=du, dv=dv,
                vth=vth if layer.kind == "lif" else a.readout_vth, scale=scale,
                kind=layer.kind, name=layer.name)
    row = {"layer": k, "name": layer.name, "kind": layer.kind, "scale": scale,
           "weight_exp": e, "num_weight_bits": nwb,
           "mantissa_min": int(q.min(initial=0)), "mantissa_max": int(q.max(initial=0)),
           "mantissa_limit": qmax,
           "weights_zeroed": int(np.count_nonzero((q == 0) & (layer.weight != 0))),
           "weights_clipped": n_clip, "vth": ql.vth, "dv": dv, "du": du,
           "bias_exp": bias_exp, "bias_clipped": n_bclip}
    if layer.kind == "lif":
        row["threshold_v"] = fp.threshold(vth, a) + 1
    return ql, row


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
    """
    if not isinstance(net, Network):
        raise PassError(f"quantize expects a float Network, got {type(net).__name__}")
    if weight_range not in WEIGHT_RANGES:
        raise PassError(f"weight_range must be one of {WEIGHT_RANGES}, got {weight_range!r}")
    tgt = _target(target)
    a = arith(tgt)
    b = weight_precision(tgt, weight_bits)
    bias_exp_min = a.netx_bias_exp if bias_exp_min is None else int(bias_exp_min)
    input_scale = float(input_scale)
    if not (input_scale > 0 and math.isfinite(input_scale)):
        raise PassError(f"input_scale must be a positive number, got {input_scale}")
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
                    meta={**net.meta, "quantized_from": "float network", "weight_bits": b,
                          "weight_range": weight_range},
                    target_spec=tgt.to_dict())
    fp.ensure_fits(qnet, a, QuantizationError,
                   f"the quantized network does not fit target {tgt.name!r}")
    rep = QuantReport(tgt.name, b, input_scale, rows, warnings=warn)
    for k, ql in enumerate(qnet.layers):         # Lava's truncation must change nothing
        if not np.array_equal(fp.effective_weights(ql.weight, ql.num_weight_bits, a),
                              ql.weight):
            raise QuantizationError(f"internal: {_tag(k, ql)} weights would be changed "
                                    f"by Lava's truncation")
    if data is not None:
        _measure(net, qnet, data, rep)
    for w in rep.warnings:
        warnings.warn(w, stacklevel=2)
    return qnet, rep


def _measure(net: Network, qnet: QNetwork, data, rep: QuantReport) -> None:
    """Fill headroom/overflow columns and accuracies from a bit-accurate run on data."""
    from neurodelay.sim import bitsim, floatsim
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


# ----------------------------------------------------------------------------- pipeline

def run_passes(net: Network, target=None, *, clip_delays: bool = False,
               k_per_neuron: int | None = None, sparsity: float | None = None,
               data=None, weight_bits: int | None = None, input_scale: float = 1.0,
               bias_exp_min: int | None = None) -> tuple[QNetwork, list]:
    """check_delays -> (prune, if k_per_neuron or sparsity) -> quantize; returns the
    QNetwork and the list of reports in order."""
    tgt = _target(target)
    net, r1 = check_delays(net, tgt.max_delay, clip=clip_delays, data=data)
    reports = [r1]
    if k_per_neuron is not None or sparsity is not None:
        net, r2 = prune(net, k_per_neuron=k_per_neuron, sparsity=sparsity, data=data)
        reports.append(r2)
    qnet, r3 = quantize(net, tgt, data=data, weight_bits=weight_bits,
                        input_scale=input_scale, bias_exp_min=bias_exp_min)
    reports.append(r3)
    return qnet, reports
