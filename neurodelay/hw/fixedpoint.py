"""The one home of Loihi 2's integer arithmetic, as Lava's ``fixed_pt`` models compute it.

Every rule below is written once, here, and parameterised by a hardware target
(:class:`neurodelay.hw.target.Target`, read from ``hw_configs/*.toml``). The
bit-accurate simulator (:mod:`neurodelay.sim.bitsim`), the Lava runner
(:mod:`neurodelay.sim.lavarun`), the quantization pass (:mod:`neurodelay.passes`),
the resource report (:mod:`neurodelay.hw.target`), the exporters and the hardware-exact
fine-tuning all call these functions, so they accept and refuse the same networks and
compute the same integers. Sources in lava-nc 0.10 (paths under ``site-packages/lava``)
are named per rule; the facts were measured (docs/loihi2-lava.md).

Symbols: R = ``weight_register_bits`` (8: the width Lava's Dense clips weights to),
W = ``weight_bits`` (the target's weight precision, at most R; 8 on Loihi 2),
D = ``du_bits`` = ``dv_bits`` (12, decays are fractions of 2**D = 4096),
S = ``state_bits`` (24), sh_a = ``current_shift`` (6), sh_v = ``threshold_shift`` (6),
A = ``accumulator_bits`` (32).

Weights (``utils/weightutils.py``): the sign mode is decided from the weights
(``determine_sign_mode``: excitatory if all >= 0, inhibitory if all <= 0, else mixed);
``clip_weights`` clips to -2**R..2**R-1 (mixed), 0..2**R-1 (excitatory) or
-(2**R-1)..0 (inhibitory); ``truncate_weights`` drops ``R - num_weight_bits (+1 if
mixed)`` least significant bits, rounding toward -inf (on the negated matrix for
inhibitory weights): [101, -3] -> [100, -4] with R = num_weight_bits = 8. A
``num_weight_bits`` above ``R (+1 if mixed)`` makes Lava shift by a negative count and
zero every weight: refused here (:class:`FixedPointError`), never reproduced. The
target's precision W caps ``num_weight_bits`` at W (+1 if mixed).

Synapses (``proc/dense/models.py``): the sum of weight x payload of every delay group
is shifted by ``weight_exp`` (left for > 0, arithmetic right = floor for < 0) and
accumulated in an A-bit buffer (two's complement wrap); every synapse process adds
one step of latency, so a delay d arrives 1 + d steps later.

Recurrent synapses and the order of events within a step (measured against Lava: a
LIF, a feed-forward DelayDense and a recurrent DelayDense from the LIF's ``s_out`` back
to its own ``a_in``, ``Loihi2SimCfg(select_tag="fixed_pt")``; tests/test_lava_recurrent.py
re-checks it). A recurrent layer is a SECOND synapse process into the same LIF. Each
process keeps its own ``weight_exp``, ``num_weight_bits`` and sign mode (clip,
truncation and shift above are applied per process, on its own weights), so the
recurrent weights have their own exponent (``QLayer.rec_weight_exp``; the quantizer
puts their mantissas on the layer's scale). The LIF's ``a_in`` port sums what its
processes send (``PyInPortVectorDense.recv`` adds the int32 vectors: an A-bit wrap).
Within Lava step t, in this order:

1. every synapse process sends what it accumulated for step t (its buffer slot 0);
2. the LIF receives ``a_in[t] = ff[t] + rec[t]`` and updates u (so the recurrent input
   passes the current filter exactly like the feed-forward input), then v, then spikes;
3. the recurrent process receives those spikes of step t and adds
   ``shift(W_d @ s[t], rec_weight_exp)`` per delay group d to the slot it sends at step
   ``t + 1 + d``.

So a spike at step t reaches its own layer at step ``t + 1 + d``: the QLayer's recurrent
delay E >= 1 is given to the recurrent DelayDense as ``d = E - 1`` (<= ``max_delay``), and
the float semantics (a spike at float step t arrives at t + E) carry over unchanged.

CUBA LIF (``proc/lif/models.py``, every step, all layers from the first step)::

    u = wrap_S( wrap_A( trunc(u * (2**D - (du + 1)) / 2**D) + wrap_A(a_in << sh_a) ) )
    v = clip_S( trunc(v * (2**D - dv) / 2**D) + u + (bias_mant << bias_exp) )
    spike = v > (vth << sh_v) ;  v = 0 where spike

``trunc`` rounds toward zero; ``wrap_A`` is the A-bit two's-complement wrap of Lava's
integer arithmetic (the shifted input, and the int32 ``+=`` of u); ``wrap_S`` is Lava's
S-bit wrap of u (values above
2**(S-1) lose 2**S, values at or below -2**(S-1) gain it); ``clip_S`` clips v to
+-(2**(S-1) - 1). A non-spiking readout is a LIF with the largest threshold
2**vth_bits - 1.

Field widths (what :func:`check_qlayer` enforces, for every consumer alike): weight
mantissas within the clip range of their sign mode, ``num_weight_bits`` in 1..W (+1
if mixed), ``weight_exp`` in the target's range, delays <= ``max_delay`` (the usable
limit, 62: lava-dl netx clips there; DelayDense itself takes ``max_delay_hardware``,
63), ``bias_mant`` a signed ``bias_mant_bits`` number, ``bias_exp`` in
0..2**bias_exp_bits - 1, du and dv in 0..2**D - 1, vth in 0..2**vth_bits - 1 with
``vth << sh_v`` inside the S-bit state.

lava-dl netx files: the bias exponent is fixed (``netx_bias_exp``, 6), so a netx file
can only carry biases that are multiples of 2**6.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from neurodelay.errors import FixedPointError


@dataclass(frozen=True)
class Arith:
    """The integer constants of one target, derived from its description once."""

    name: str
    weight_bits: int            # W: precision cap (num_weight_bits <= W, +1 if mixed)
    weight_register_bits: int   # R: Lava's Dense clips to R bits and truncates from there
    weight_exp_min: int
    weight_exp_max: int
    du_bits: int                # u keeps (2**du_bits - (du + 1)) / 2**du_bits per step
    dv_bits: int                # v keeps (2**dv_bits - dv) / 2**dv_bits per step
    du_max: int
    dv_max: int
    vth_max: int                # largest threshold mantissa; the readout's threshold
    state_bits: int
    current_shift: int          # a_in << current_shift enters u
    threshold_shift: int        # v is compared with vth << threshold_shift
    accumulator_bits: int       # synaptic buffer width (two's complement wrap)
    input_bits: int             # declared width of a_in (Lava does not enforce it)
    bias_mant_bits: int
    bias_exp_max: int
    netx_bias_exp: int
    max_delay: int
    max_delay_hardware: int

    @property
    def state_max(self) -> int:
        """2**(S-1): u wraps above it, v clips at it minus one."""
        return 1 << (self.state_bits - 1)

    @property
    def v_limit(self) -> int:
        return self.state_max - 1

    @property
    def readout_vth(self) -> int:
        return self.vth_max

    @property
    def bias_mant_range(self) -> tuple[int, int]:
        h = 1 << (self.bias_mant_bits - 1)
        return -h, h - 1

    @property
    def input_limit(self) -> int:
        return (1 << (self.input_bits - 1)) - 1


@lru_cache(maxsize=32)
def arith_from_target(target) -> Arith:
    """The :class:`Arith` of a target description (any object with the fields of
    :class:`neurodelay.hw.target.Target`); looking a target up by name, path or
    QNetwork is :func:`neurodelay.hw.target.arith`."""
    return Arith(
        name=target.name, weight_bits=target.weight_bits,
        weight_register_bits=target.weight_register_bits,
        weight_exp_min=target.weight_exp_min, weight_exp_max=target.weight_exp_max,
        du_bits=target.du_bits, dv_bits=target.dv_bits,
        du_max=(1 << target.du_bits) - 1, dv_max=(1 << target.dv_bits) - 1,
        vth_max=(1 << target.vth_bits) - 1, state_bits=target.state_bits,
        current_shift=target.current_shift, threshold_shift=target.threshold_shift,
        accumulator_bits=target.accumulator_bits, input_bits=target.input_bits,
        bias_mant_bits=target.bias_mant_bits, bias_exp_max=(1 << target.bias_exp_bits) - 1,
        netx_bias_exp=target.netx_bias_exp, max_delay=target.max_delay,
        max_delay_hardware=target.max_delay_hardware)


# ----------------------------------------------------------------------------- weights

def sign_mode(weight) -> str:
    """'excitatory' | 'inhibitory' | 'mixed', Lava's ``determine_sign_mode``."""
    w = np.asarray(weight)
    if w.size == 0 or w.min() >= 0:
        return "excitatory"
    if w.max() <= 0:
        return "inhibitory"
    return "mixed"


def mantissa_range(mode: str, a: Arith) -> tuple[int, int]:
    """The weight values ``clip_weights`` keeps for a sign mode."""
    top = (1 << a.weight_register_bits) - 1
    if mode == "mixed":
        return -(1 << a.weight_register_bits), top
    if mode == "excitatory":
        return 0, top
    return -top, 0


def max_num_weight_bits(mode: str, a: Arith) -> int:
    """Largest ``num_weight_bits`` the target allows for the sign mode (W, +1 if mixed)."""
    return a.weight_bits + (1 if mode == "mixed" else 0)


def num_weight_bits_for(weight, bits: int, a: Arith) -> int:
    """``num_weight_bits`` of a layer whose mantissas have ``bits`` bits: ``bits``, capped
    by what the target allows for the weights' sign mode (an all-positive or all-negative
    layer with bits = W + 1 gets W, which truncates nothing from those mantissas)."""
    return min(int(bits), max_num_weight_bits(sign_mode(weight), a))


def mantissa_multiplier(bits: int, a: Arith) -> int:
    """Stored weight = mantissa * this: ``bits``-bit mantissas fill the top of the
    weight register (2**(R + 1 - bits)), so Lava's truncation keeps them whole."""
    return 1 << (a.weight_register_bits + 1 - int(bits))


def weight_unit(weight_exp: int, a: Arith) -> float:
    """v units (the membrane's integer unit) per unit of stored weight: the synaptic sum
    is shifted by ``weight_exp`` and enters u << ``current_shift``."""
    return 2.0 ** (int(weight_exp) + a.current_shift)


def lava_num_weight_bits_limit(mode: str, a: Arith) -> int:
    """Largest ``num_weight_bits`` Lava computes with (R, +1 if mixed); above it Lava
    shifts by a negative count."""
    return a.weight_register_bits + (1 if mode == "mixed" else 0)


def effective_weights(weight, num_weight_bits: int, a: Arith) -> np.ndarray:
    """The weights Lava's fixed_pt Dense/DelayDense actually multiply with (int64):
    ``clip_weights`` then ``truncate_weights`` for the sign mode of ``weight``."""
    w = np.asarray(weight).astype(np.int64)
    mode = sign_mode(w)
    nwb = int(num_weight_bits)
    top = lava_num_weight_bits_limit(mode, a)
    if not 1 <= nwb <= top:
        raise FixedPointError(
            f"num_weight_bits={nwb} is outside 1..{top} for {mode} weights: Lava would "
            f"shift by a negative count and zero every weight; use at most {top}")
    mixed = int(mode == "mixed")
    if mode == "inhibitory":
        w = -w
    r = a.weight_register_bits
    w = np.clip(w, -(1 << r) * mixed, (1 << r) - 1)
    t = r - nwb + mixed
    w = (w >> t) << t
    return -w if mode == "inhibitory" else w


def shift_sum(acc, weight_exp: int):
    """Lava's shared-exponent shift of an accumulated sum: left for > 0, else an
    arithmetic right shift (floor). Integer arrays."""
    e = int(weight_exp)
    return acc << e if e > 0 else acc >> -e


def shift_is_exact(weight: np.ndarray, weight_exp: int) -> bool:
    """True when every weight is a multiple of 2**-weight_exp (the shift then commutes
    with the sums: no floor rounding)."""
    e = int(weight_exp)
    return e >= 0 or bool(np.all(np.asarray(weight) % (1 << -e) == 0))


def _is_int_array(x) -> bool:
    return isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer)


def wrap_bits(x, bits: int):
    """Two's-complement wrap of integer values to a signed ``bits`` range (int64 numpy
    arrays; or float64 numpy arrays / torch tensors holding integers)."""
    h = 1 << (bits - 1)
    if _is_int_array(x):
        return ((x + h) & ((h << 1) - 1)) - h
    if isinstance(x, np.ndarray):
        return np.mod(x + h, 2.0 * h) - h
    return (x + h).remainder(2.0 * h) - h


# ----------------------------------------------------------------------------- neurons

def current_keep(du: int, a: Arith) -> int:
    """What u keeps per step, in units of 2**-du_bits: 2**du_bits - (du + 1)."""
    return (1 << a.du_bits) - (int(du) + 1)


def voltage_keep(dv: int, a: Arith) -> int:
    """What v keeps per step, in units of 2**-dv_bits: 2**dv_bits - dv."""
    return (1 << a.dv_bits) - int(dv)


def decay(x, keep: int, bits: int):
    """trunc(x * keep / 2**bits): Lava's ``sign(p) * (|p| >> bits)`` with p = x * keep
    (``bits`` = the target's du_bits for u, dv_bits for v).

    Integer numpy arrays use the shift; float64 numpy arrays / torch tensors holding
    integers use trunc(x * (keep / 2**bits)), which is exact there (|x * keep| < 2**53
    and the division is a power of two)."""
    if _is_int_array(x):
        p = x * int(keep)
        return (p + ((p >> 63) & ((1 << bits) - 1))) >> bits
    f = float(keep) / (1 << bits)
    if isinstance(x, np.ndarray):
        return np.trunc(x * f)
    return (x * f).trunc()


def decay_inplace(v: np.ndarray, keep: int, bits: int) -> None:
    """:func:`decay` on a float64 array, in place (the simulator's hot loop)."""
    if keep != 1 << bits:
        v *= float(keep) / (1 << bits)
        np.trunc(v, out=v)


def current_input(a_in, a: Arith, bound: int | None = None):
    """What enters u for synaptic input a_in: ``wrap_A(a_in << current_shift)`` (int64
    arrays; or float64 arrays / torch tensors holding integers). ``bound``: a known bound
    on |a_in|; where ``bound << current_shift`` stays inside the accumulator's range the
    wrap cannot change anything and is skipped (the same values, one pass instead of
    three)."""
    if bound is not None and (int(bound) << a.current_shift) < 1 << (a.accumulator_bits - 1):
        if _is_int_array(a_in):
            return a_in << a.current_shift
        return a_in * float(1 << a.current_shift)
    if _is_int_array(a_in):
        return wrap_bits(a_in << a.current_shift, a.accumulator_bits)
    return wrap_bits(a_in * float(1 << a.current_shift), a.accumulator_bits)


def current_sum(u, act, keep: int, a: Arith):
    """``wrap_A(trunc(u * keep / 2**D) + act)``: the current before its state wrap, with
    act = :func:`current_input` and keep = :func:`current_keep`."""
    return wrap_bits(decay(u, keep, a.du_bits) + act, a.accumulator_bits)


def current_step(u, act, keep: int, a: Arith):
    """One step of the current, ``wrap_S(current_sum(...))``: the one home of the rule
    for the simulator and the hardware-exact model."""
    return wrap_current(current_sum(u, act, keep, a), a)


def wrap_current(c, a: Arith):
    """Lava's S-bit wrap of u: above 2**(S-1) lose 2**S, at or below -2**(S-1) gain it."""
    m = a.state_max
    if isinstance(c, np.ndarray):
        return np.where(c > m, c - 2 * m, np.where(c <= -m, c + 2 * m, c))

    return torch.where(c > m, c - 2 * m, torch.where(c <= -m, c + 2 * m, c))


def clip_voltage(v, a: Arith, out=None):
    """v clipped to +-(2**(S-1) - 1)."""
    if isinstance(v, np.ndarray):
        return np.clip(v, -a.v_limit, a.v_limit, out=out)
    return v.clamp(-a.v_limit, a.v_limit)


def effective_bias(bias_mant, bias_exp: int):
    """bias_mant << bias_exp (right shift for a negative exponent), Lava's scale_bias."""
    b = np.asarray(bias_mant).astype(np.int64)
    e = int(bias_exp)
    return b << e if e >= 0 else b >> -e


def layer_vth(layer, a: Arith) -> int:
    """Threshold mantissa Lava gets: the layer's, or the largest for a readout."""
    return a.readout_vth if layer.kind == "li" or layer.vth is None else int(layer.vth)


def threshold(vth: int, a: Arith) -> int:
    """The v level a neuron must exceed (strictly) to spike: vth << threshold_shift."""
    return int(vth) << a.threshold_shift


# ----------------------------------------------------------------------------- encodings

def decay_to_dv(decay_factor: float, a: Arith) -> int:
    """dv for a float membrane decay (v keeps decay_factor per step), rounded."""
    dv = round((1 << a.dv_bits) * (1.0 - float(decay_factor)))
    return int(min(max(dv, 0), a.dv_max))


def dv_to_decay(dv: int, a: Arith) -> float:
    return voltage_keep(dv, a) / (1 << a.dv_bits)


def current_decay_to_du(current_decay: float, a: Arith) -> int:
    """du for a float synaptic-current decay (u keeps current_decay per step); 0 -> the
    largest du, which clears the current every step."""
    du = round((1 << a.du_bits) * (1.0 - float(current_decay))) - 1
    return int(min(max(du, 0), a.du_max))


def du_to_current_decay(du: int, a: Arith) -> float:
    return current_keep(du, a) / (1 << a.du_bits)


def bias_encoding(bias_units: np.ndarray, a: Arith, exp_min: int) -> tuple[np.ndarray, int, int]:
    """(bias_mant, bias_exp, n_clipped) for biases in units of v: the smallest
    exponent >= exp_min whose mantissas fit, mantissas rounded and clipped."""
    lo, hi = a.bias_mant_range
    b = np.asarray(bias_units, np.float64)
    bmax = float(np.abs(b).max(initial=0))
    e = min(int(exp_min), a.bias_exp_max)
    while e < a.bias_exp_max and bmax / 2 ** e > hi:
        e += 1
    mant = np.rint(b / 2 ** e)
    n_clip = int(np.count_nonzero((mant < lo) | (mant > hi)))
    return np.clip(mant, lo, hi).astype(np.int64), e, n_clip


# ----------------------------------------------------------------------------- checks

def _range(tag: str, what: str, values, lo: int, hi: int) -> list[str]:
    values = np.atleast_1d(np.asarray(values))
    bad = (values < lo) | (values > hi)
    if not bad.any():
        return []
    return [f"{tag}: {what}: values {int(values.min())}..{int(values.max())} outside the "
            f"allowed {lo}..{hi} ({int(bad.sum())} of {values.size})"]


def delay_violations(tag: str, weight, delay, a: Arith) -> list[str]:
    """Synapses (nonzero weight) whose delay exceeds the target's usable maximum."""
    used = np.asarray(weight) != 0
    delays = np.asarray(delay)[used]
    n = int((delays > a.max_delay).sum())
    if not n:
        return []
    if a.max_delay == 0:
        return [f"{tag}: uses synaptic delays (up to {int(delays.max())} steps, {n} synapses "
                f"with delay > 0) but target {a.name!r} has no synaptic delays (max_delay 0): "
                f"use a network without delays or a target with delays"]
    return [f"{tag}: max_delay: {int(delays.max())} > allowed {a.max_delay} ({n} synapses "
            f"above it)"]


def check_qlayer(layer, a: Arith, tag: str = "layer", hidden: bool = False) -> list[str]:
    """Every way ``layer`` (a QLayer) breaks the target's integer format, as messages
    naming the field, the values and the allowed range (empty: it fits)."""
    out = []
    mode = sign_mode(layer.weight)
    lo, hi = mantissa_range(mode, a)
    out += _range(tag, f"weight ({a.weight_register_bits}-bit {mode})", layer.weight, lo, hi)
    out += _range(tag, f"num_weight_bits ({mode} weights)", layer.num_weight_bits, 1,
                  max_num_weight_bits(mode, a))
    out += _range(tag, "weight_exp", layer.weight_exp, a.weight_exp_min, a.weight_exp_max)
    out += delay_violations(tag, layer.weight, layer.delay, a)
    blo, bhi = a.bias_mant_range
    out += _range(tag, f"bias_mant ({a.bias_mant_bits}-bit signed)", layer.bias_mant, blo, bhi)
    out += _range(tag, f"bias_exp ({a.bias_exp_max.bit_length()}-bit)", layer.bias_exp, 0,
                  a.bias_exp_max)
    out += _range(tag, f"du ({a.du_bits}-bit)", layer.du, 0, a.du_max)
    out += _range(tag, f"dv ({a.dv_bits}-bit)", layer.dv, 0, a.dv_max)
    if layer.kind == "lif":
        if layer.vth is None:
            out.append(f"{tag}: a spiking layer needs a threshold (vth is None)")
        else:
            out += _range(tag, f"vth ({a.vth_max.bit_length()}-bit)", layer.vth, 0, a.vth_max)
            if threshold(layer.vth, a) >= a.state_max:
                out.append(f"{tag}: threshold vth << {a.threshold_shift} = "
                           f"{threshold(layer.vth, a)} does not fit the {a.state_bits}-bit "
                           f"state (largest v {a.v_limit})")
    elif hidden:
        out.append(f"{tag}: hidden layers must spike (kind 'lif'), got {layer.kind!r}")
    if getattr(layer, "recurrent", False):
        out += check_recurrent(layer, a, tag)
    return out


def lava_rec_delay(rec_delay):
    """The delays the recurrent DelayDense gets for a layer's recurrent delays E >= 1
    (rows from a spike to its arrival in a_in): E - 1, the process adds one step."""
    return np.asarray(rec_delay).astype(np.int64) - 1


def check_recurrent(layer, a: Arith, tag: str = "layer") -> list[str]:
    """The recurrent synapse process's fields: its own sign mode, mantissa range,
    num_weight_bits and weight_exp, and Lava delays E - 1 within the target's maximum."""
    tag = f"{tag} (recurrent)"
    out = []
    w = layer.rec_weight
    mode = sign_mode(w)
    lo, hi = mantissa_range(mode, a)
    out += _range(tag, f"rec_weight ({a.weight_register_bits}-bit {mode})", w, lo, hi)
    out += _range(tag, f"rec_num_weight_bits ({mode} weights)", layer.rec_num_weight_bits,
                  1, max_num_weight_bits(mode, a))
    out += _range(tag, "rec_weight_exp", layer.rec_weight_exp, a.weight_exp_min,
                  a.weight_exp_max)
    used = np.asarray(w) != 0
    lava_d = lava_rec_delay(layer.rec_delay)[used]
    n = int((lava_d > a.max_delay).sum())
    if n:
        out.append(f"{tag}: rec_delay: {int(lava_d.max()) + 1} > allowed {a.max_delay + 1} "
                   f"(the recurrent DelayDense gets rec_delay - 1 <= max_delay "
                   f"{a.max_delay}; {n} synapses above it)")
    return out


def check_qnet(qnet, a: Arith) -> list[str]:
    """:func:`check_qlayer` for every layer of a QNetwork."""
    out = []
    L = len(qnet.layers)
    for k, layer in enumerate(qnet.layers):
        tag = f"layer {k}" + (f" ({layer.name!r})" if layer.name else "")
        out += check_qlayer(layer, a, tag, hidden=k < L - 1)
    return out


def ensure_fits(qnet, a: Arith, error=FixedPointError, what: str = "") -> None:
    """Raise ``error`` listing every :func:`check_qnet` problem (nothing if it fits)."""
    problems = check_qnet(qnet, a)
    if problems:
        head = what or "the quantized network does not fit its target's integer format"
        raise error(f"{head} ({len(problems)} problem(s)):\n  - " + "\n  - ".join(problems))
