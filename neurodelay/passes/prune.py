"""Magnitude pruning: K synapses per neuron, or a sparsity fraction."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from neurodelay.core.network import Network
from neurodelay.errors import PassError
from neurodelay.passes.reports import PassReport, _accuracy, _check_data


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
