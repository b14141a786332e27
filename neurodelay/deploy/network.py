"""The hardware-neutral deployable network: plain numpy arrays, no torch.

Two concepts, each a small validated dataclass:

* :class:`Network` / :class:`Layer` -- the float network ``freeze(model)`` produces
  (BatchNorm folded, connectivity mask applied, integer delays).
* :class:`QNetwork` / :class:`QLayer` -- the same network in a target's integer
  fixed-point fields (what the bit-accurate simulator and the Lava exporter consume).

Float semantics (time steps t = 0..T-1, x^0 = binned input counts, shape (B, T, n_in)):

    J_i[t] = current_decay * J_i[t-1] + sum_j W_ij * x_j[t - D_ij]   (x[t] = 0 for t < 0)
    u_i[t] = decay * u_i[t-1] + J_i[t] + b_i            (u[-1] = J[-1] = 0)
    kind "lif":  s_i[t] = u_i[t] >= threshold ; u_i[t] = reset where s_i[t]
    kind "li" :  never spikes (the readout); its membrane u[t] is the output

    score_c = sum_t softmax_c(u_readout[t]) ;  prediction = argmax_c score_c

Every sample is simulated for the T steps it is given (callers pad with zeros).

Integer semantics (Lava Loihi 2 ``fixed_pt`` CUBA LIF + Dense/DelayDense) are in
:mod:`neurodelay.sim.bitsim`; a QLayer holds exactly the fields Lava's processes take.

File format (``save_network`` / ``load_network``): one HDF5 file, readable with h5py
and numpy alone, no neurodelay needed::

    /                       attrs:
        format          = "neurodelay-network"
        format_version  = 1                     (int; see SUPPORTED_VERSIONS)
        kind            = "float" | "quantized"
        n_layers        = int
        dt              = float, seconds per time step
        class_names     = JSON string: list of str (may be "[]")
        meta            = JSON string: object (free-form provenance)
        kind "float" only:      n_channels = int, channel_bin = int
        kind "quantized" only:  target = str, input_scale = float,
                                target_spec = JSON object (optional): every field of the
                                target description (hw_configs/*.toml) it was made for
    /layers/<k>             one group per layer, k = "0", "1", ... in order
        attrs (both kinds):  kind = "lif" | "li", name = str
        kind "float":
            weight   dataset float32 (n_out, n_in)
            delay    dataset int32   (n_out, n_in), time steps >= 0
            bias     dataset float32 (n_out,)
            attrs    decay, threshold (inf for "li"), reset      (floats)
                     current_decay (float; absent in older files: 0)
        kind "quantized":
            weight     dataset int64 (n_out, n_in)   weight mantissas
            delay      dataset int64 (n_out, n_in)
            bias_mant  dataset int64 (n_out,)
            attrs      weight_exp, num_weight_bits, bias_exp, du, dv (ints),
                       scale (float), vth (int; ABSENT when vth is None: never spikes)

Example without neurodelay::

    import h5py, json
    with h5py.File("net.h5") as f:
        W0 = f["layers/0/weight"][()]; D0 = f["layers/0/delay"][()]
        classes = json.loads(f.attrs["class_names"])
"""
from __future__ import annotations

from neurodelay.errors import NeurodelayError

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurodelay._io import atomic_path
from neurodelay.untrusted import check_h5

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)         # format versions load_network reads
FILE_FORMAT = "neurodelay-network"
KINDS = ("lif", "li")


class NetworkError(NeurodelayError, ValueError):
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


class _WeightShape:
    """n_in / n_out of a layer with a (n_out, n_in) weight matrix."""

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class Layer(_WeightShape):
    """One synaptic projection + its postsynaptic neurons (float)."""

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
        self.current_decay = float(self.current_decay)
        if not 0.0 <= self.current_decay < 1.0:
            raise NetworkError(f"{tag}: current_decay must be in [0, 1), got "
                               f"{self.current_decay}")
        self.threshold = float(self.threshold)
        if self.kind == "lif" and not (np.isfinite(self.threshold) and self.threshold > 0):
            raise NetworkError(f"{tag}: a spiking layer needs a finite positive threshold, "
                               f"got {self.threshold}")
        self.reset = float(self.reset)

    @property
    def n_synapses(self) -> int:
        return int(np.count_nonzero(self.weight))


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
        """Synapses with a nonzero weight (mantissa), all layers."""
        return sum(int(np.count_nonzero(layer.weight)) for layer in self.layers)

    def _summary(self, title: str, details) -> str:
        sizes = " -> ".join([str(self.n_in)] + [str(lay.n_out) for lay in self.layers])
        lines = [f"{title}: {sizes}; {len(self.layers)} layers, {self.n_neurons} neurons, "
                 f"{self.n_synapses} synapses, dt = {self.dt * 1000:g} ms"]
        lines += [_layer_line(k, lay, details(lay)) for k, lay in enumerate(self.layers)]
        return "\n".join(lines)


@dataclass
class Network(_Layers):
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
    return (f"  layer {k}{name} [{layer.kind}]: {layer.n_in} -> {layer.n_out} neurons, "
            f"{n_syn} synapses ({n_syn / max(layer.weight.size, 1):.1%} dense), "
            f"delays {lo}..{hi} steps, {extra}")


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

    def __post_init__(self):
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


# ----------------------------------------------------------------------------- file I/O

def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _to_json(value, what: str) -> str:
    try:
        return json.dumps(value, default=_json_default, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise NetworkError(f"cannot save {what}: {e}; keep it to str/int/float/bool/list/"
                           f"dict/numpy values") from None


_FLOAT_LAYER_DATA = {"weight": np.float32, "delay": np.int32, "bias": np.float32}
_QUANT_LAYER_DATA = {"weight": np.int64, "delay": np.int64, "bias_mant": np.int64}
_FLOAT_LAYER_ATTRS = ("decay", "threshold", "reset")
_QUANT_LAYER_ATTRS = ("weight_exp", "num_weight_bits", "bias_exp", "du", "dv", "scale")


def _write_dataset(group, name: str, arr: np.ndarray, dtype) -> None:
    arr = np.ascontiguousarray(arr, dtype=dtype)
    opts = {"compression": "gzip", "compression_opts": 4} if arr.size >= 1024 else {}
    group.create_dataset(name, data=arr, **opts)


def save_network(net: "Network | QNetwork", path) -> Path:
    """Write ``net`` (float or quantized) to one HDF5 file, atomically.

    The file is first written to a temporary file in the same folder and then moved
    over ``path`` (``os.replace``), so readers never see a half-written file.
    The layout is documented in this module's docstring. Returns the path.
    """
    import h5py

    if isinstance(net, Network):
        kind = "float"
    elif isinstance(net, QNetwork):
        kind = "quantized"
    else:
        raise NetworkError(f"save_network expects a Network or QNetwork, got "
                           f"{type(net).__name__}")
    path = Path(path)
    if not path.parent.is_dir():
        raise NetworkError(f"cannot save to {path}: folder {path.parent} does not exist")
    meta_json = _to_json(dict(net.meta), "meta")
    names_json = _to_json([str(c) for c in net.class_names], "class_names")

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["format"] = FILE_FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["kind"] = kind
            f.attrs["n_layers"] = len(net.layers)
            f.attrs["dt"] = float(net.dt)
            f.attrs["class_names"] = names_json
            f.attrs["meta"] = meta_json
            if kind == "float":
                f.attrs["n_channels"] = int(net.n_channels)
                f.attrs["channel_bin"] = int(net.channel_bin)
            else:
                f.attrs["target"] = str(net.target)
                f.attrs["input_scale"] = float(net.input_scale)
                if net.target_spec:
                    f.attrs["target_spec"] = _to_json(dict(net.target_spec), "target_spec")
            layers = f.create_group("layers")
            for k, layer in enumerate(net.layers):
                g = layers.create_group(str(k))
                g.attrs["kind"] = layer.kind
                g.attrs["name"] = layer.name
                data = _FLOAT_LAYER_DATA if kind == "float" else _QUANT_LAYER_DATA
                for name, dtype in data.items():
                    _write_dataset(g, name, getattr(layer, name), dtype)
                if kind == "float":
                    for name in _FLOAT_LAYER_ATTRS:
                        g.attrs[name] = float(getattr(layer, name))
                    g.attrs["current_decay"] = float(layer.current_decay)
                else:
                    for name in _QUANT_LAYER_ATTRS:
                        v = getattr(layer, name)
                        g.attrs[name] = float(v) if name == "scale" else int(v)
                    if layer.vth is not None:
                        g.attrs["vth"] = int(layer.vth)
    return path


def _str_attr(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _str_attr(value.item())
    return str(value)


class _Reader:
    """Reads attributes/datasets of one HDF5 object, naming file and place in errors."""

    def __init__(self, path: Path, obj, where: str):
        self.path, self.obj, self.where = path, obj, where

    def fail(self, msg: str) -> NetworkError:
        return NetworkError(f"{self.path}: {self.where}: {msg}")

    def attr(self, name: str, conv, required: bool = True, default=None):
        if name not in self.obj.attrs:
            if required:
                raise self.fail(f"missing attribute {name!r}; the file is incomplete or was "
                                f"not written by save_network")
            return default
        raw = self.obj.attrs[name]
        try:
            if conv is str:
                return _str_attr(raw)
            arr = np.asarray(raw)
            if arr.size != 1:
                raise ValueError("not a scalar")
            value = arr.reshape(()).item()
            if conv is int:
                if isinstance(value, (bytes, str)) or float(value) != int(value):
                    raise ValueError("not an integer")
                return int(value)
            if isinstance(value, (bytes, str)):
                raise ValueError("not a number")
            return conv(value)
        except (TypeError, ValueError, OverflowError):
            raise self.fail(f"attribute {name!r} must be a {conv.__name__} scalar, "
                            f"got {raw!r}") from None

    def json_attr(self, name: str, expect: type):
        text = self.attr(name, str)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise self.fail(f"attribute {name!r} is not valid JSON ({e})") from None
        if not isinstance(value, expect):
            raise self.fail(f"attribute {name!r} must be a JSON {expect.__name__}, "
                            f"got {type(value).__name__}")
        return value

    def dataset(self, name: str, dtype) -> np.ndarray:
        import h5py

        if name not in self.obj:
            raise self.fail(f"missing dataset {name!r}")
        ds = self.obj[name]
        if not isinstance(ds, h5py.Dataset):
            raise self.fail(f"{name!r} is a {type(ds).__name__}, expected a dataset")
        want_float = np.issubdtype(np.dtype(dtype), np.floating)
        ok = (np.issubdtype(ds.dtype, np.number) if want_float
              else np.issubdtype(ds.dtype, np.integer))
        if not ok:
            raise self.fail(f"dataset {name!r} has dtype {ds.dtype}, expected "
                            f"{'numbers' if want_float else 'integers'} ({np.dtype(dtype)})")
        return ds[()]


def _read_layer(path: Path, group, k: int, kind: str) -> "Layer | QLayer":
    r = _Reader(path, group, f"layers/{k}")
    common = {"kind": r.attr("kind", str), "name": r.attr("name", str)}
    try:
        if kind == "float":
            data = {n: r.dataset(n, dt) for n, dt in _FLOAT_LAYER_DATA.items()}
            scalars = {n: r.attr(n, float) for n in _FLOAT_LAYER_ATTRS}
            scalars["current_decay"] = r.attr("current_decay", float, required=False,
                                              default=0.0)
            return Layer(**data, **scalars, **common)
        data = {n: r.dataset(n, dt) for n, dt in _QUANT_LAYER_DATA.items()}
        scalars = {n: r.attr(n, float if n == "scale" else int) for n in _QUANT_LAYER_ATTRS}
        vth = r.attr("vth", int, required=False)
        return QLayer(**data, **scalars, vth=vth, **common)
    except NetworkError as e:
        if str(e).startswith(f"{path}:"):
            raise
        raise r.fail(str(e)) from None


def load_network(path, kind: str | None = None) -> "Network | QNetwork":
    """Read a file written by :func:`save_network`; returns a Network or a QNetwork.

    ``kind`` ("float" or "quantized"), if given, is required to match the file.
    Every problem raises NetworkError naming the file and the place in it.
    """
    import h5py

    path = Path(path)
    if kind not in (None, "float", "quantized"):
        raise NetworkError(f"kind must be None, 'float' or 'quantized', got {kind!r}")
    if not path.is_file():
        raise NetworkError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise NetworkError(f"{path}: not a neurodelay network file (not readable as HDF5: "
                           f"{e})") from None
    with f:
        check_h5(f, path, NetworkError, what="network file")
        r = _Reader(path, f, "file")
        fmt = _str_attr(f.attrs["format"]) if "format" in f.attrs else None
        if fmt != FILE_FORMAT:
            raise NetworkError(f"{path}: not a neurodelay network file (attribute 'format' "
                               f"is {fmt!r}, expected {FILE_FORMAT!r})")
        version = r.attr("format_version", int)
        if version not in SUPPORTED_VERSIONS:
            raise NetworkError(f"{path}: format_version {version} is not supported; this "
                               f"neurodelay reads version(s) "
                               f"{', '.join(map(str, SUPPORTED_VERSIONS))}"
                               + ("; upgrade neurodelay" if version > FORMAT_VERSION else ""))
        file_kind = r.attr("kind", str)
        if file_kind not in ("float", "quantized"):
            raise r.fail(f"attribute 'kind' is {file_kind!r}, expected 'float' or "
                         f"'quantized'")
        if kind is not None and kind != file_kind:
            raise NetworkError(f"{path}: holds a {file_kind} network, expected a {kind} one")
        n_layers = r.attr("n_layers", int)
        if "layers" not in f or not isinstance(f["layers"], h5py.Group):
            raise r.fail("missing group 'layers'")
        groups = f["layers"]
        expected = [str(k) for k in range(n_layers)]
        extra = sorted(set(groups.keys()) - set(expected))
        if extra:
            raise r.fail(f"unexpected entries under 'layers': {extra} (n_layers = {n_layers})")
        for name in expected:
            if name not in groups:
                raise r.fail(f"missing group 'layers/{name}' (n_layers = {n_layers})")
        layers = [_read_layer(path, groups[str(k)], k, file_kind) for k in range(n_layers)]
        common = {"dt": r.attr("dt", float),
                  "class_names": r.json_attr("class_names", list),
                  "meta": r.json_attr("meta", dict)}
        try:
            if file_kind == "float":
                return Network(layers=layers, n_channels=r.attr("n_channels", int),
                               channel_bin=r.attr("channel_bin", int), **common)
            spec = r.json_attr("target_spec", dict) if "target_spec" in f.attrs else None
            return QNetwork(layers=layers, target=r.attr("target", str),
                            input_scale=r.attr("input_scale", float), target_spec=spec,
                            **common)
        except NetworkError as e:
            if str(e).startswith(f"{path}:"):
                raise
            raise NetworkError(f"{path}: {e}") from None
