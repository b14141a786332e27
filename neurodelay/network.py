"""The hardware-neutral deployable network: plain numpy arrays, no torch.

Two concepts, each a small validated dataclass:

* :class:`Network` / :class:`Layer` -- the float network ``freeze(model)`` produces
  (BatchNorm folded, connectivity mask applied, integer delays).
* :class:`QNetwork` / :class:`QLayer` -- the same network in a target's integer
  fixed-point fields (what the bit-accurate simulator and the Lava exporter consume).

Float semantics (time steps t = 0..T-1, x^0 = binned input counts, shape (B, T, n_in)):

    I_i[t] = sum_j W_ij * x_j[t - D_ij] + b_i          (x[t] = 0 for t < 0)
    u_i[t] = decay * u_i[t-1] + I_i[t]                  (u[-1] = 0)
    kind "lif":  s_i[t] = u_i[t] >= threshold ; u_i[t] = reset where s_i[t]
    kind "li" :  never spikes (the readout); its membrane u[t] is the output

    score_c = sum_t softmax_c(u_readout[t]) ;  prediction = argmax_c score_c

Every sample is simulated for the T steps it is given (callers pad with zeros).

Integer semantics (Lava Loihi 2 ``fixed_pt`` CUBA LIF + Dense/DelayDense) are in
:mod:`neurodelay.bitsim`; a QLayer holds exactly the fields Lava's processes take.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT_VERSION = 1
KINDS = ("lif", "li")


class NetworkError(ValueError):
    """A network description is malformed (wrong shape, dtype or range)."""


def _as(arr, dtype, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != ndim:
        raise NetworkError(f"{name}: expected a {ndim}-D array, got shape {a.shape}")
    if np.issubdtype(np.dtype(dtype), np.floating):
        if not np.issubdtype(a.dtype, np.number):
            raise NetworkError(f"{name}: expected numbers, got dtype {a.dtype}")
        a = a.astype(dtype)
        if not np.all(np.isfinite(a)):
            raise NetworkError(f"{name}: contains NaN or infinite values")
    else:
        if not (np.issubdtype(a.dtype, np.integer)
                or (a.size and np.all(np.asarray(a) == np.round(a)))
                or a.size == 0):
            raise NetworkError(f"{name}: expected integers, got dtype {a.dtype}")
        a = a.astype(dtype)
    return a


@dataclass
class Layer:
    """One synaptic projection + its postsynaptic neurons (float)."""

    weight: np.ndarray            # (n_out, n_in) float32, mask applied, BN folded
    delay: np.ndarray             # (n_out, n_in) int32 >= 0, in time steps
    bias: np.ndarray              # (n_out,) float32, added to I every step
    decay: float                  # u[t] = decay * u[t-1] + I[t]
    threshold: float = float("inf")  # spike when u >= threshold ("lif" only)
    reset: float = 0.0            # membrane value after a spike
    kind: str = "lif"             # "lif" spiking, "li" non-spiking readout
    name: str = ""

    def __post_init__(self):
        tag = f"layer {self.name!r}" if self.name else "layer"
        self.weight = _as(self.weight, np.float32, f"{tag} weight", 2)
        self.delay = _as(self.delay, np.int32, f"{tag} delay", 2)
        self.bias = _as(self.bias, np.float32, f"{tag} bias", 1)
        if self.delay.shape != self.weight.shape:
            raise NetworkError(f"{tag}: delay shape {self.delay.shape} != weight shape "
                               f"{self.weight.shape}")
        if self.bias.shape != (self.weight.shape[0],):
            raise NetworkError(f"{tag}: bias shape {self.bias.shape} != ({self.weight.shape[0]},)")
        if self.delay.size and self.delay.min() < 0:
            raise NetworkError(f"{tag}: negative delays ({int((self.delay < 0).sum())} synapses)")
        if self.kind not in KINDS:
            raise NetworkError(f"{tag}: kind must be one of {KINDS}, got {self.kind!r}")
        self.decay = float(self.decay)
        if not 0.0 <= self.decay <= 1.0:
            raise NetworkError(f"{tag}: decay must be in [0, 1], got {self.decay}")
        self.threshold = float(self.threshold)
        if self.kind == "lif" and not (np.isfinite(self.threshold) and self.threshold > 0):
            raise NetworkError(f"{tag}: a spiking layer needs a finite positive threshold, "
                               f"got {self.threshold}")
        self.reset = float(self.reset)

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_synapses(self) -> int:
        return int(np.count_nonzero(self.weight))


@dataclass
class Network:
    """A feedforward delay SNN, ready for passes and export."""

    layers: list[Layer]
    dt: float = 0.01                  # seconds per time step
    n_channels: int = 700             # raw input channels before binning
    channel_bin: int = 5              # raw channels summed per input
    class_names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.layers:
            raise NetworkError("network has no layers")
        for k, (a, b) in enumerate(zip(self.layers[:-1], self.layers[1:])):
            if b.n_in != a.n_out:
                raise NetworkError(f"layer {k + 1} ({b.name!r}) takes {b.n_in} inputs but "
                                   f"layer {k} ({a.name!r}) has {a.n_out} neurons")
        for k, layer in enumerate(self.layers[:-1]):
            if layer.kind != "lif":
                raise NetworkError(f"hidden layer {k} ({layer.name!r}) must be 'lif'")
        if not self.dt > 0:
            raise NetworkError(f"dt must be positive, got {self.dt}")
        if self.class_names and len(self.class_names) != self.layers[-1].n_out:
            raise NetworkError(f"{len(self.class_names)} class names for "
                               f"{self.layers[-1].n_out} output neurons")

    @property
    def n_in(self) -> int:
        return self.layers[0].n_in


@dataclass
class QLayer:
    """One layer in Loihi-2-style integer fields (see neurodelay.bitsim for semantics).

    weight        int (n_out, n_in): the weight mantissas handed to Lava's Dense
    weight_exp    shared exponent: accumulated sum is shifted by weight_exp (Lava Dense)
    num_weight_bits  bits Lava's Dense keeps (it drops LSBs for mixed-sign weights)
    delay         int (n_out, n_in) >= 0 per-synapse delays in steps
    bias_mant, bias_exp   per-neuron bias: v += bias_mant << bias_exp every step
    du, dv        12-bit decays (du = 4095 clears the current every step)
    vth           17-bit threshold mantissa; spike when v > vth << 6 (None: never spikes)
    scale         float value of one unit of v (v_float ~= v_int * scale), used to
                  descale the readout membrane and to report
    """

    weight: np.ndarray
    weight_exp: int
    num_weight_bits: int
    delay: np.ndarray
    bias_mant: np.ndarray
    bias_exp: int
    du: int
    dv: int
    vth: int | None
    scale: float
    kind: str = "lif"
    name: str = ""

    def __post_init__(self):
        tag = f"quantized layer {self.name!r}" if self.name else "quantized layer"
        self.weight = _as(self.weight, np.int64, f"{tag} weight", 2)
        self.delay = _as(self.delay, np.int64, f"{tag} delay", 2)
        self.bias_mant = _as(self.bias_mant, np.int64, f"{tag} bias_mant", 1)
        if self.delay.shape != self.weight.shape:
            raise NetworkError(f"{tag}: delay shape {self.delay.shape} != weight shape "
                               f"{self.weight.shape}")
        if self.bias_mant.shape != (self.weight.shape[0],):
            raise NetworkError(f"{tag}: bias_mant shape {self.bias_mant.shape} != "
                               f"({self.weight.shape[0]},)")
        if self.delay.size and self.delay.min() < 0:
            raise NetworkError(f"{tag}: negative delays")
        for nm in ("du", "dv"):
            v = int(getattr(self, nm))
            if not 0 <= v <= 4095:
                raise NetworkError(f"{tag}: {nm}={v} outside the 12-bit range 0..4095")
            setattr(self, nm, v)
        if self.kind not in KINDS:
            raise NetworkError(f"{tag}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "lif":
            if self.vth is None or not 0 <= int(self.vth) < 2 ** 17:
                raise NetworkError(f"{tag}: vth={self.vth} outside the 17-bit range")
            self.vth = int(self.vth)
        self.weight_exp = int(self.weight_exp)
        self.num_weight_bits = int(self.num_weight_bits)
        self.bias_exp = int(self.bias_exp)
        self.scale = float(self.scale)

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class QNetwork:
    """A quantized network for one hardware target."""

    layers: list[QLayer]
    target: str
    dt: float = 0.01
    input_scale: float = 1.0          # graded input spike = round(count * input_scale)
    class_names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.layers:
            raise NetworkError("quantized network has no layers")
        for k, (a, b) in enumerate(zip(self.layers[:-1], self.layers[1:])):
            if b.n_in != a.n_out:
                raise NetworkError(f"quantized layer {k + 1} takes {b.n_in} inputs but "
                                   f"layer {k} has {a.n_out} neurons")
