"""Exporters: one module per target, each consuming the frozen network.

This folder is installed as ``neurodelay.exporters`` (see pyproject.toml): the bare
name ``exporters`` belongs to an unrelated PyPI project.

Each exporter module defines ``export(net, out_path, **options) -> dict`` where ``net``
is a :class:`neurodelay.core.network.Network` (float) -- exporters that need integers quantize
it themselves through :mod:`neurodelay.passes` -- and the returned dict is a short report
(paths written, node/process counts). Writes are atomic.
"""
from __future__ import annotations

import importlib

from neurodelay.errors import OptionError

# name -> (module, one-line description). Modules are imported lazily: lava is heavy.
REGISTRY: dict[str, tuple[str, str]] = {
    "nir": ("neurodelay.exporters.nir", "NIR graph (HDF5) with exact per-synapse delays"),
    "loihi2": ("neurodelay.exporters.loihi2",
               "Intel Loihi 2: lava-dl netx HDF5 + Lava process network (fixed point)"),
    "lava_procs": ("neurodelay.exporters.lava_procs",
                   "Lava process network parameters (HDF5): recurrent networks for Loihi 2"),
}


def get_exporter(name: str):
    """Return the ``export`` function of target ``name``."""
    if name not in REGISTRY:
        raise OptionError(f"unknown export target {name!r}; available: "
                          f"{', '.join(sorted(REGISTRY))}")
    return importlib.import_module(REGISTRY[name][0]).export
