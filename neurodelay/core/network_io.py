"""The file format of :mod:`neurodelay.core.network`: ``save_network`` / ``load_network``.

File format (``save_network`` / ``load_network``): one HDF5 file, readable with h5py
and numpy alone, no neurodelay needed::

    /                       attrs:
        format          = "neurodelay-network"
        format_version  = 1, or 2 for a network with recurrent layers (int; the lowest
                          version that holds the network, so feed-forward files stay
                          readable by older readers; see SUPPORTED_VERSIONS)
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
            rec_weight  dataset float32 (n_out, n_out)  recurrent weights R_ij (i <- j);
            rec_delay   dataset int32   (n_out, n_out)  their delays >= 1 step
                        (version 2; both present, or both absent: not recurrent)
        kind "quantized":
            weight     dataset int64 (n_out, n_in)   weight mantissas
            delay      dataset int64 (n_out, n_in)
            bias_mant  dataset int64 (n_out,)
            attrs      weight_exp, num_weight_bits, bias_exp, du, dv (ints),
                       scale (float), vth (int; ABSENT when vth is None: never spikes)
            rec_weight  dataset int64 (n_out, n_out)  recurrent weight mantissas (i <- j)
            rec_delay   dataset int64 (n_out, n_out)  their delays >= 1 row
            attrs       rec_weight_exp, rec_num_weight_bits (ints): the recurrent synapse
                        process's own exponent and weight bits
                        (version 2; all four present, or none: not recurrent)

Example without neurodelay::

    import h5py, json
    with h5py.File("net.h5") as f:
        W0 = f["layers/0/weight"][()]; D0 = f["layers/0/delay"][()]
        classes = json.loads(f.attrs["class_names"])
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from neurodelay.core.network import Layer, Network, QLayer, QNetwork
from neurodelay.errors import NetworkError
from neurodelay.fs import atomic_path
from neurodelay.untrusted import open_h5

FORMAT_VERSION = 2                # the newest version written (for recurrent networks)
SUPPORTED_VERSIONS = (1, 2)       # format versions load_network reads
FILE_FORMAT = "neurodelay-network"


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
_RECURRENT_DATA = {"rec_weight": np.float32, "rec_delay": np.int32}   # version 2
_FLOAT_LAYER_ATTRS = ("decay", "threshold", "reset")
_QUANT_LAYER_ATTRS = ("weight_exp", "num_weight_bits", "bias_exp", "du", "dv", "scale")
_QUANT_RECURRENT_DATA = {"rec_weight": np.int64, "rec_delay": np.int64}   # version 2
_QUANT_RECURRENT_ATTRS = ("rec_weight_exp", "rec_num_weight_bits")


def _write_dataset(group, name: str, arr: np.ndarray, dtype) -> None:
    arr = np.ascontiguousarray(arr, dtype=dtype)
    opts = {"compression": "gzip", "compression_opts": 4} if arr.size >= 1024 else {}
    group.create_dataset(name, data=arr, **opts)


def save_network(net: "Network | QNetwork", path) -> Path:
    """Write ``net`` (float or quantized) to one HDF5 file, atomically.

    The file is first written to a temporary file in the same folder and then moved
    over ``path`` (``os.replace``), so readers never see a half-written file.
    The layout is documented in this module's docstring. Returns the path.

    Examples:
        >>> import tempfile
        >>> from neurodelay.core.network import Layer, Network
        >>> from neurodelay.core.network_io import load_network, save_network
        >>> net = Network([Layer(weight=[[0.5, -1.0]], delay=[[3, 0]], bias=[0.0],
        ...                      decay=0.9, kind="li")], dt=0.001)
        >>> path = save_network(net, tempfile.mkdtemp() + "/net.h5")
        >>> load_network(path).layers[0].delay.tolist()
        [[3, 0]]
    """

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
    meta = dict(net.meta)
    if isinstance(net, QNetwork):   # format 1 keeps the bit widths in meta
        meta.update({k: getattr(net, k) for k in ("weight_bits", "delay_bits")
                     if getattr(net, k) is not None})
    meta_json = _to_json(meta, "meta")
    names_json = _to_json([str(c) for c in net.class_names], "class_names")

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["format"] = FILE_FORMAT
            f.attrs["format_version"] = 2 if net.recurrent else 1
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
                    if layer.recurrent:
                        for name, dtype in _RECURRENT_DATA.items():
                            _write_dataset(g, name, getattr(layer, name), dtype)
                else:
                    for name in _QUANT_LAYER_ATTRS:
                        v = getattr(layer, name)
                        g.attrs[name] = float(v) if name == "scale" else int(v)
                    if layer.vth is not None:
                        g.attrs["vth"] = int(layer.vth)
                    if layer.recurrent:
                        for name, dtype in _QUANT_RECURRENT_DATA.items():
                            _write_dataset(g, name, getattr(layer, name), dtype)
                        for name in _QUANT_RECURRENT_ATTRS:
                            g.attrs[name] = int(getattr(layer, name))
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


def _recurrent_present(r: _Reader, group, names: list, version: int) -> bool:
    """Whether the layer group holds recurrent synapses: all of ``names`` (datasets or
    attributes) or none; only in version 2 files."""
    present = [n for n in names if n in group or n in group.attrs]
    if present and version < 2:
        raise r.fail(f"holds {present[0]!r} but the file declares format_version "
                     f"{version}; recurrent layers need version 2")
    if present and len(present) != len(names):
        missing = [n for n in names if n not in present]
        raise r.fail(f"has {', '.join(map(repr, present))} but not "
                     f"{', '.join(map(repr, missing))}; a recurrent layer needs all of them")
    return bool(present)


def _read_layer(path: Path, group, k: int, kind: str, version: int) -> "Layer | QLayer":
    r = _Reader(path, group, f"layers/{k}")
    common = {"kind": r.attr("kind", str), "name": r.attr("name", str)}
    try:
        if kind == "float":
            data = {n: r.dataset(n, dt) for n, dt in _FLOAT_LAYER_DATA.items()}
            scalars = {n: r.attr(n, float) for n in _FLOAT_LAYER_ATTRS}
            scalars["current_decay"] = r.attr("current_decay", float, required=False,
                                              default=0.0)
            if _recurrent_present(r, group, list(_RECURRENT_DATA), version):
                data.update({n: r.dataset(n, dt) for n, dt in _RECURRENT_DATA.items()})
            return Layer(**data, **scalars, **common)
        data = {n: r.dataset(n, dt) for n, dt in _QUANT_LAYER_DATA.items()}
        scalars = {n: r.attr(n, float if n == "scale" else int) for n in _QUANT_LAYER_ATTRS}
        vth = r.attr("vth", int, required=False)
        names = list(_QUANT_RECURRENT_DATA) + list(_QUANT_RECURRENT_ATTRS)
        if _recurrent_present(r, group, names, version):
            data.update({n: r.dataset(n, dt) for n, dt in _QUANT_RECURRENT_DATA.items()})
            scalars.update({n: r.attr(n, int) for n in _QUANT_RECURRENT_ATTRS})
        return QLayer(**data, **scalars, vth=vth, **common)
    except NetworkError as e:
        if str(e).startswith(f"{path}:"):
            raise
        raise r.fail(str(e)) from None


def load_network(path, kind: str | None = None) -> "Network | QNetwork":
    """Read a file written by :func:`save_network`; returns a Network or a QNetwork.

    ``kind`` ("float" or "quantized"), if given, is required to match the file.
    Every problem raises NetworkError naming the file and the place in it.

    Examples:
        >>> import tempfile
        >>> from neurodelay.core.network import Layer, Network
        >>> from neurodelay.core.network_io import load_network, save_network
        >>> net = Network([Layer(weight=[[0.5, -1.0]], delay=[[3, 0]], bias=[0.0],
        ...                      decay=0.9, kind="li")], dt=0.001)
        >>> back = load_network(save_network(net, tempfile.mkdtemp() + "/net.h5"))
        >>> type(back).__name__, back.dt, back.layers[0].weight.tolist()
        ('Network', 0.001, [[0.5, -1.0]])
    """
    path = Path(path)
    if kind not in (None, "float", "quantized"):
        raise NetworkError(f"kind must be None, 'float' or 'quantized', got {kind!r}")
    with open_h5(path, NetworkError, what="network file", unreadable=lambda e: NetworkError(
            f"{path}: not a neurodelay network file (not readable as HDF5: {e})")) as f:
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
        layers = [_read_layer(path, groups[str(k)], k, file_kind, version) for k in range(n_layers)]
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
