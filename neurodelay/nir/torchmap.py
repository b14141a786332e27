"""A nirtorch node map that runs NIR graphs with delays in PyTorch::

    import nir, nirtorch
    from neurodelay.nir import node_map
    g = nir.read("model.nir")
    net = nirtorch.nir_to_torch(g, node_map(dt=0.01))      # discretization="euler" | "exp"
    state = None
    for t in range(T):                                      # one call = one time step
        y, state = net(x[:, t]) if state is None else net(x[:, t], state)

Same semantics as :mod:`neurodelay.nir.executor` (and so as the importer): a ``Delay``
is a per-channel ring buffer of ``delay/dt`` whole steps, ``Affine`` keeps its bias
(nirtorch 2.6's default Affine mapping drops it), neurons step with the chosen
discretization and NIR's strict ``v > v_threshold``. A spiking node's state is
``NeuronState(v, i_syn, z)``, so its spikes of the last step are ``state[name].z``.

Cycles: nirtorch's interpreter feeds a recurrent edge with its source's output of the
previous step, the one step per cycle of neurodelay's convention, so neurodelay's
exported recurrent graphs (bias-free recurrent Linear nodes) run exactly as in the
executor. nirtorch cuts a cycle at the edge INTO the node it meets first, the executor at
the edge OUT of the neuron: the two differ only when an Affine bias sits on the loop (the
executor adds it from step 0, as snnTorch's RLeaky does; nirtorch from step 1).
"""
from __future__ import annotations

from typing import NamedTuple

import nir
import numpy as np
import torch

from neurodelay.nir.graph import (
    DEFAULT_MAX_DELAY_STEPS,
    check_discretization,
    check_dt,
    check_time_constants,
    delay_steps,
    neuron_factors,
)


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float64))


class NeuronState(NamedTuple):
    v: torch.Tensor
    i_syn: torch.Tensor | None
    z: torch.Tensor | None


class NirAffine(torch.nn.Module):
    """y = W x (+ b): NIR Affine / Linear with the bias loaded."""

    def __init__(self, weight, bias=None):
        super().__init__()
        self.weight = torch.nn.Parameter(_t(weight))
        self.bias = torch.nn.Parameter(_t(bias)) if bias is not None else None

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight, self.bias)


class NirScale(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.register_buffer("scale", _t(scale))

    def forward(self, x):
        return x * self.scale


class NirThreshold(torch.nn.Module):
    def __init__(self, threshold):
        super().__init__()
        self.register_buffer("threshold", _t(threshold))

    def forward(self, x):
        return (x > self.threshold).to(x.dtype)


class NirDelay(torch.nn.Module):
    """y_c[t] = x_c[t - k_c]: a ring buffer of the last max(k) inputs per channel."""

    def __init__(self, steps: np.ndarray):
        super().__init__()
        self.register_buffer("steps", torch.from_numpy(np.asarray(steps, np.int64)))
        self.length = int(steps.max()) + 1 if steps.size else 1

    def forward(self, x, state=None):
        if state is None:
            state = x.new_zeros((self.length - 1, *x.shape))
        hist = torch.cat([x[None], state], dim=0)             # hist[k] = x[t - k]
        idx = self.steps.view(1, *([1] * (x.dim() - 1)), -1).expand(1, *x.shape)
        return hist.gather(0, idx)[0], hist[:-1]


class NirNeuron(torch.nn.Module):
    """One step of a NIR LIF / LI / IF / I / CubaLIF / CubaLI node (module docstring)."""

    def __init__(self, factors: dict):
        super().__init__()
        self.spiking = bool(factors["spiking"])
        self.cuba = factors["current_decay"] is not None
        for key in ("decay", "gain", "bias") + (("current_decay", "current_gain")
                                                if self.cuba else ()) + (
                ("v_threshold", "v_reset") if self.spiking else ()):
            self.register_buffer(key, _t(factors[key]))

    def forward(self, x, state=None):
        v = torch.zeros_like(x) if state is None else state.v
        if self.cuba:
            c = torch.zeros_like(x) if state is None or state.i_syn is None else state.i_syn
            c = self.current_decay * c + self.current_gain * x
            drive = c
        else:
            c, drive = None, x
        v = self.decay * v + self.gain * drive + self.bias
        if not self.spiking:
            return v, NeuronState(v, c, None)
        z = v > self.v_threshold
        v = torch.where(z, self.v_reset.to(v.dtype), v)
        z = z.to(x.dtype)
        return z, NeuronState(v, c, z)


def node_map(dt: float, discretization: str = "euler", *,
             max_delay_steps: int = DEFAULT_MAX_DELAY_STEPS) -> dict:
    """{nir node type: factory} for ``nirtorch.nir_to_torch(graph, node_map(dt))``."""
    dt = check_dt(dt)
    disc = check_discretization(discretization)

    def neuron(node):
        name = f"<{type(node).__name__}>"
        check_time_constants(node, name)
        return NirNeuron(neuron_factors(node, name, dt, disc))

    return {
        nir.Input: lambda node: torch.nn.Identity(),
        nir.Output: lambda node: torch.nn.Identity(),
        nir.Affine: lambda node: NirAffine(node.weight, node.bias),
        nir.Linear: lambda node: NirAffine(node.weight),
        nir.Scale: lambda node: NirScale(node.scale),
        nir.Threshold: lambda node: NirThreshold(node.threshold),
        nir.Delay: lambda node: NirDelay(delay_steps(node, "<Delay>", dt, max_delay_steps)),
        nir.LIF: neuron, nir.LI: neuron, nir.IF: neuron, nir.I: neuron,
        nir.CubaLIF: neuron, nir.CubaLI: neuron,
    }
