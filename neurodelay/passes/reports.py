"""What a pass reports, and the data checks passes share."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from neurodelay.core.network import QNetwork
from neurodelay.errors import PassError
from neurodelay.hw.target import load_target
from neurodelay.sim import bitsim, floatsim


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
        return bitsim.accuracy(net, x, labels)
    return floatsim.accuracy(net, x, labels)


def _target(target):
    """A hardware Target from None (Loihi 2), a Target, a name or a TOML path."""

    if target is None:
        target = "loihi2"
    if isinstance(target, dict):
        raise PassError("target must be a hardware target (a name from hw_configs/, a .toml "
                        "path or a neurodelay.hw.target.Target), not a dict of parameters; "
                        "write the parameters into a target file")
    return load_target(target)
