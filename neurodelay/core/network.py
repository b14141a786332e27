"""The hardware-neutral deployable network: plain numpy arrays, no torch.

Two concepts, each a small validated dataclass:

* :class:`Network` / :class:`Layer` -- the float network ``freeze(model)`` produces
  (BatchNorm folded, connectivity mask applied, integer delays).
* :class:`QNetwork` / :class:`QLayer` -- the same network in a target's integer
  fixed-point fields (what the bit-accurate simulator and the Lava exporter consume).

Float semantics (time steps t = 0..T-1, x^0 = binned input counts, shape (B, T, n_in)):

    J_i[t] = current_decay * J_i[t-1] + sum_j W_ij * x_j[t - D_ij]   (x[t] = 0 for t < 0)
                                      + sum_j R_ij * s_j[t - E_ij]   (recurrent layers only)
    u_i[t] = decay * u_i[t-1] + J_i[t] + b_i            (u[-1] = J[-1] = 0)
    kind "lif":  s_i[t] = u_i[t] >= threshold ; u_i[t] = reset where s_i[t]
    kind "li" :  never spikes (the readout); its membrane u[t] is the output

    score_c = sum_t softmax_c(u_readout[t]) ;  prediction = argmax_c score_c

A recurrent layer (``rec_weight`` R and ``rec_delay`` E, both (n_out, n_out), set) also
feeds its own spikes back: neuron j's spike at step t reaches neuron i at step t + E_ij,
E_ij >= 1 (a spike never arrives in the step that fired it), and adds R_ij to the same
synaptic sum as the feed-forward input. Only spiking ("lif") layers can be recurrent.

Every sample is simulated for the T steps it is given (callers pad with zeros).

Integer semantics (Lava Loihi 2 ``fixed_pt`` CUBA LIF + Dense/DelayDense) are in
:mod:`neurodelay.sim.bitsim`; a QLayer holds exactly the fields Lava's processes take.

The file format is in :mod:`neurodelay.core.network_io`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurodelay.errors import NetworkError

KINDS = ("lif", "li")


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


class _WeightShape:
    """n_in / n_out, recurrence and synapse count of a layer with a (n_out, n_in) weight
    matrix and optional recurrent weights ``rec_weight`` (n_out, n_out)."""

    @property
    def recurrent(self) -> bool:
        """Whether the layer has recurrent synapses (rec_weight / rec_delay)."""
        return self.rec_weight is not None

    def _recurrent_arrays(self, tag: str, weight_dtype, delay_dtype) -> None:
        """rec_weight / rec_delay as arrays, checked: (n_out, n_out), delays >= 1, and a
        spiking layer (what a float and a quantized recurrent layer share)."""
        self.rec_weight = _as(self.rec_weight, weight_dtype, f"{tag} rec_weight", 2)
        self.rec_delay = _as(self.rec_delay, delay_dtype, f"{tag} rec_delay", 2)
        n = int(np.asarray(self.weight).shape[0])
        for name in ("rec_weight", "rec_delay"):
            if getattr(self, name).shape != (n, n):
                raise NetworkError(f"{tag}: {name} shape {getattr(self, name).shape} != "
                                   f"({n}, {n}) (recurrent synapses connect the layer's "
                                   f"{n} neurons to each other)")
        if self.rec_delay.size and self.rec_delay.min() < 1:
            raise NetworkError(f"{tag}: {int((self.rec_delay < 1).sum())} recurrent delays "
                               f"< 1 step; a spike reaches its own layer one step later at "
                               f"the earliest")
        if self.kind != "lif":
            raise NetworkError(f"{tag}: only a spiking ('lif') layer can be recurrent, this "
                               f"one is {self.kind!r}")

    @property
    def n_synapses(self) -> int:
        """Synapses with a nonzero weight, feed-forward and recurrent."""
        rec = int(np.count_nonzero(self.rec_weight)) if self.recurrent else 0
        return int(np.count_nonzero(self.weight)) + rec

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class Layer(_WeightShape):
    """One synaptic projection + its postsynaptic neurons (float).

    Examples:
        One neuron that needs input 0 two steps before input 1 (the synapse from input 0
        has a delay of 2 steps), and a non-spiking readout:

        >>> from neurodelay.core.network import Layer, Network
        >>> hidden = Layer(weight=[[1.0, 1.0]], delay=[[2, 0]], bias=[0.0], decay=0.5,
        ...                threshold=1.5)
        >>> readout = Layer(weight=[[1.0]], delay=[[0]], bias=[0.0], decay=0.9, kind="li")
        >>> net = Network([hidden, readout], dt=0.01, n_channels=2, channel_bin=1)
        >>> hidden.n_in, hidden.n_out, hidden.n_synapses
        (2, 1, 2)
    """

    weight: np.ndarray            # (n_out, n_in) float32, mask applied, BN folded
    delay: np.ndarray             # (n_out, n_in) int32 >= 0, in time steps
    bias: np.ndarray              # (n_out,) float32, added to I every step
    decay: float                  # u[t] = decay * u[t-1] + J[t] + b
    threshold: float = float("inf")  # spike when u >= threshold ("lif" only)
    reset: float = 0.0            # membrane value after a spike
    kind: str = "lif"             # "lif" spiking, "li" non-spiking readout
    name: str = ""
    # synaptic current J[t] = current_decay * J[t-1] + W x (a current-based "CUBA"
    # neuron: Loihi's du, NIR's CubaLIF); 0 = the input enters u directly (DCLS models)
    current_decay: float = 0.0
    # recurrent synapses i <- j within the layer (both (n_out, n_out), or both None):
    # weight R_ij (0 = no synapse) and delay E_ij >= 1 steps (see the module docstring)
    rec_weight: np.ndarray | None = None
    rec_delay: np.ndarray | None = None

    def __post_init__(self):
        tag = f"layer {self.name!r}" if self.name else "layer"
        self.weight = _as(self.weight, np.float32, f"{tag} weight", 2)
        self.delay = _as(self.delay, np.int32, f"{tag} delay", 2)
        self.bias = _as(self.bias, np.float32, f"{tag} bias", 1)
        if self.delay.shape != self.weight.shape:
            raise NetworkError(f"{tag}: delay shape {self.delay.shape} != weight shape "
                               f"{self.weight.shape}")
        self._check_recurrent(tag)
        if self.bias.shape != (self.weight.shape[0],):
            raise NetworkError(f"{tag}: bias shape {self.bias.shape} != ({self.weight.shape[0]},)")
        if self.delay.size and self.delay.min() < 0:
            raise NetworkError(f"{tag}: negative delays ({int((self.delay < 0).sum())} synapses)")
        if self.kind not in KINDS:
            raise NetworkError(f"{tag}: kind must be one of {KINDS}, got {self.kind!r}")
        self.decay = float(self.decay)
        if not 0.0 <= self.decay <= 1.0:
            raise NetworkError(f"{tag}: decay must be in [0, 1], got {self.decay}")
        self.current_decay = float(self.current_decay)
        if not 0.0 <= self.current_decay < 1.0:
            raise NetworkError(f"{tag}: current_decay must be in [0, 1), got "
                               f"{self.current_decay}")
        self.threshold = float(self.threshold)
        if self.kind == "lif" and not (np.isfinite(self.threshold) and self.threshold > 0):
            raise NetworkError(f"{tag}: a spiking layer needs a finite positive threshold, "
                               f"got {self.threshold}")
        self.reset = float(self.reset)

    def _check_recurrent(self, tag: str) -> None:
        if (self.rec_weight is None) != (self.rec_delay is None):
            raise NetworkError(f"{tag}: rec_weight and rec_delay go together (one of them "
                               f"is None)")
        if self.rec_weight is None:
            return
        self._recurrent_arrays(tag, np.float32, np.int32)



class _Layers:
    """What a float and a quantized network share: counts and a summary."""

    layers: list

    @property
    def n_in(self) -> int:
        return self.layers[0].n_in

    @property
    def n_neurons(self) -> int:
        """Neurons in all layers (inputs not counted)."""
        return sum(layer.n_out for layer in self.layers)

    @property
    def n_synapses(self) -> int:
        """Synapses with a nonzero weight (mantissa), all layers (recurrent ones too)."""
        return sum(layer.n_synapses for layer in self.layers)

    @property
    def recurrent(self) -> bool:
        """Whether any layer has recurrent synapses."""
        return any(layer.recurrent for layer in self.layers)

    def _summary(self, title: str, details) -> str:
        sizes = " -> ".join([str(self.n_in)] + [str(lay.n_out) for lay in self.layers])
        lines = [f"{title}: {sizes}; {len(self.layers)} layers, {self.n_neurons} neurons, "
                 f"{self.n_synapses} synapses, dt = {self.dt * 1000:g} ms"]
        lines += [_layer_line(k, lay, details(lay)) for k, lay in enumerate(self.layers)]
        return "\n".join(lines)


@dataclass
class Network(_Layers):
    """A delay SNN (feed-forward, or with recurrent hidden layers), ready for passes and
    export.

    Examples:
        >>> from neurodelay.core.network import Layer, Network
        >>> hidden = Layer(weight=[[1.0, 1.0]], delay=[[2, 0]], bias=[0.0], decay=0.5,
        ...                threshold=1.5)
        >>> readout = Layer(weight=[[1.0]], delay=[[0]], bias=[0.0], decay=0.9, kind="li")
        >>> net = Network([hidden, readout], dt=0.01, n_channels=2, channel_bin=1)
        >>> print(net.summary())  # doctest: +ELLIPSIS
        Network (float): 2 -> 1 -> 1; 2 layers, 2 neurons, 3 synapses, dt = 10 ms
        ...
    """

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

    def summary(self) -> str:
        """A few human-readable lines: sizes, synapses and delay range per layer."""
        return self._summary("Network (float)", lambda lay: (
            f"decay {lay.decay:.4g}, threshold {lay.threshold:.4g}"
            + (f", current decay {lay.current_decay:.4g}" if lay.current_decay else "")))


def _delay_range(weight: np.ndarray, delay: np.ndarray) -> tuple[int, int]:
    """(min, max) delay over synapses with a nonzero weight; (0, 0) if there are none."""
    used = delay[weight != 0]
    return (int(used.min()), int(used.max())) if used.size else (0, 0)


def _layer_line(k: int, layer, extra: str) -> str:
    lo, hi = _delay_range(layer.weight, layer.delay)
    n_syn = int(np.count_nonzero(layer.weight))
    name = f" {layer.name!r}" if layer.name else ""
    line = (f"  layer {k}{name} [{layer.kind}]: {layer.n_in} -> {layer.n_out} neurons, "
            f"{n_syn} synapses ({n_syn / max(layer.weight.size, 1):.1%} dense), "
            f"delays {lo}..{hi} steps, {extra}")
    if layer.recurrent:
        rlo, rhi = _delay_range(layer.rec_weight, layer.rec_delay)
        n_rec = int(np.count_nonzero(layer.rec_weight))
        line += (f"; recurrent: {n_rec} synapses "
                 f"({n_rec / max(layer.rec_weight.size, 1):.1%} dense), delays {rlo}..{rhi}")
    return line


@dataclass
class QLayer(_WeightShape):
    """One layer in Loihi-2-style integer fields (see neurodelay.sim.bitsim for semantics).

    weight        int (n_out, n_in): the weight mantissas handed to Lava's Dense
    weight_exp    shared exponent: accumulated sum is shifted by weight_exp (Lava Dense)
    num_weight_bits  bits Lava's Dense keeps (it drops LSBs for mixed-sign weights)
    delay         int (n_out, n_in) >= 0 per-synapse delays in steps
    bias_mant, bias_exp   per-neuron bias: v += bias_mant << bias_exp every step
    du, dv        current / voltage decays (du = 2**du_bits - 1 clears the current)
    vth           threshold mantissa; spike when v > vth << (the target's threshold
                  shift) (None: never spikes)

    Field widths are the target's and are checked by neurodelay.hw.fixedpoint, not here.
    scale         float value of one unit of v (v_float ~= v_int * scale), used to
                  descale the readout membrane and to report

    Recurrent synapses (all four set, or all None; spiking layers only): a second
    synapse process (Lava DelayDense) from the layer's own spikes back to its own a_in,
    with its OWN shared exponent and weight-bit setting (Lava's sign mode, clip,
    truncation and shift are per synapse process; the two processes' outputs are summed
    in the LIF's a_in port, see neurodelay.hw.fixedpoint):

    rec_weight    int (n_out, n_out): recurrent weight mantissas i <- j
    rec_delay     int (n_out, n_out) >= 1: a spike of j at row r reaches i's a_in at row
                  r + rec_delay (as the float Layer's rec_delay); the Lava DelayDense gets
                  rec_delay - 1 (its own one step of latency makes up the rest)
    rec_weight_exp, rec_num_weight_bits   the recurrent process's weight_exp and
                  num_weight_bits
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
    rec_weight: np.ndarray | None = None
    rec_delay: np.ndarray | None = None
    rec_weight_exp: int | None = None
    rec_num_weight_bits: int | None = None

    def __post_init__(self):
        tag = f"quantized layer {self.name!r}" if self.name else "quantized layer"
        self._check_recurrent(tag)
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
        for nm in ("du", "dv"):            # widths: the target's (neurodelay.hw.fixedpoint)
            v = int(getattr(self, nm))
            if v < 0:
                raise NetworkError(f"{tag}: {nm}={v} must be >= 0")
            setattr(self, nm, v)
        if self.kind not in KINDS:
            raise NetworkError(f"{tag}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "lif":
            if self.vth is None or int(self.vth) < 0:
                raise NetworkError(f"{tag}: a spiking layer needs a threshold vth >= 0, got "
                                   f"{self.vth}")
            self.vth = int(self.vth)
        self.weight_exp = int(self.weight_exp)
        self.num_weight_bits = int(self.num_weight_bits)
        self.bias_exp = int(self.bias_exp)
        self.scale = float(self.scale)

    _REC = ("rec_weight", "rec_delay", "rec_weight_exp", "rec_num_weight_bits")

    def _check_recurrent(self, tag: str) -> None:
        given = [n for n in self._REC if getattr(self, n) is not None]
        if not given:
            return
        if len(given) != len(self._REC):
            missing = [n for n in self._REC if n not in given]
            raise NetworkError(f"{tag}: recurrent fields go together: "
                               f"{', '.join(given)} given, {', '.join(missing)} missing")
        self._recurrent_arrays(tag, np.int64, np.int64)
        self.rec_weight_exp = int(self.rec_weight_exp)
        self.rec_num_weight_bits = int(self.rec_num_weight_bits)



@dataclass
class QNetwork(_Layers):
    """A quantized network for one hardware target."""

    layers: list[QLayer]
    target: str
    dt: float = 0.01
    input_scale: float = 1.0          # graded input spike = round(count * input_scale)
    class_names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    # the full description of the target it was quantized for (Target.to_dict()), so
    # the file says which integer arithmetic it assumes; None: the built-in `target`
    target_spec: dict | None = None
    # the weight precision and delay bits it was quantized to (None: the target's). Files
    # of format 1 keep them in ``meta`` (see network_io); here they are fields.
    weight_bits: int | None = None
    delay_bits: int | None = None

    def __post_init__(self):
        self.meta = dict(self.meta)
        for key in ("weight_bits", "delay_bits"):
            if key in self.meta:
                value = self.meta.pop(key)
                if getattr(self, key) is None and value is not None:
                    setattr(self, key, int(value))
        if not self.layers:
            raise NetworkError("quantized network has no layers")
        for k, (a, b) in enumerate(zip(self.layers[:-1], self.layers[1:])):
            if b.n_in != a.n_out:
                raise NetworkError(f"quantized layer {k + 1} takes {b.n_in} inputs but "
                                   f"layer {k} has {a.n_out} neurons")

    def summary(self) -> str:
        """A few human-readable lines: sizes, synapses and delay range per layer."""
        return self._summary(f"QNetwork (target {self.target!r})", lambda lay: (
            f"weight_exp {lay.weight_exp}, du {lay.du}, dv {lay.dv}, vth {lay.vth}"))
