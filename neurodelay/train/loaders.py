"""A run folder's PyTorch model and float network, rebuilt for each run kind.

``trained``    the DelaySNN of ``best.pt`` (or ``checkpoint.pt``); its float network is
               that model frozen (:func:`neurodelay.train.freeze.freeze`).
``finetuned``  the hardware-exact HwSNN of its ``qnet.h5``; its float network is its
               parent run's.
``imported``   no PyTorch model; its float network is ``network.h5``.

Every checkpoint is read through :func:`neurodelay.runs.load_checkpoint` (the safe
loader: tensors and plain data only).
"""
from __future__ import annotations

from pathlib import Path

import torch

from neurodelay.core.network import Network
from neurodelay.errors import RunError
from neurodelay.hw.target import target_of
from neurodelay.runs import load_checkpoint, open_run, require_keys
from neurodelay.train.freeze import freeze
from neurodelay.train.hwmodel import HwSNN
from neurodelay.train.model import DelaySNN, ModelConfig


def load_model(run, which: str = "best") -> torch.nn.Module:
    """The run's PyTorch model in eval mode: the trained DelaySNN (``best.pt`` by
    default), or a fine-tuned run's hardware-exact model."""
    run = open_run(run)
    if run.kind == "finetuned":
        return load_finetuned(run)
    if run.kind != "trained":
        raise RunError(f"{run.path}: a {run.kind} run has no PyTorch model")
    path = run.file(f"{which}.pt")
    if not path.exists():
        raise RunError(f"{path}: no such checkpoint ({run.status().describe()}; is "
                       f"{run.path} a `neurodelay train` run that finished at least one "
                       f"epoch?)")
    ck = load_checkpoint(path, f"{which} model")
    require_keys(ck, ("model",), str(path))
    try:
        mc = ModelConfig(**(ck.get("model_config") or run.config["model"]))
        model = DelaySNN(mc, seed=int(run.config["train"]["seed"]))
        model.load_state_dict(ck["model"])
    except (TypeError, KeyError, RuntimeError, ValueError) as e:
        raise RunError(f"{path}: does not fit the model of {run.file('config.json')} "
                       f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
    model.eval()
    return model


def load_finetuned(run) -> HwSNN:
    """The hardware-exact model of a fine-tuned run (its best integers), in eval mode."""
    run = open_run(run)
    if run.kind != "finetuned":
        raise RunError(f"{run.path}: not a fine-tuned run")
    qnet = run.qnetwork()
    bits = qnet.weight_bits if qnet.weight_bits is not None else target_of(qnet).weight_bits
    model = HwSNN(qnet, int(bits))
    model.eval()
    return model


def float_network(run) -> Network:
    """The float :class:`~neurodelay.core.network.Network` of the run (trained: frozen
    best.pt; imported: network.h5; fine-tuned: its parent's)."""
    run = open_run(run)
    if run.kind == "trained":
        d = run.config["data"]
        return freeze(load_model(run), dt=d["dt"], class_names=run.class_names,
                      n_channels=d["n_channels"], channel_bin=d["channel_bin"],
                      meta={"run": str(run.path)})
    if run.kind == "imported":
        return run.imported_network()
    return float_network(open_run(Path(run.parent_path())))
