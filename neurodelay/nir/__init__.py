"""NIR in: import a NIR graph as a neurodelay Network, run it directly, or run it in PyTorch.

* :func:`import_nir` / :func:`import_to_run` / :func:`to_network` -- a NIR graph (delays
  before or after Linear nodes, neurodelay's own per-delay branches, LIF / IF / CubaLIF
  hidden nodes, each optionally with a recurrent loop back to itself, LI / I / CubaLI
  readout) becomes a float :class:`~neurodelay.core.network.Network` (``neurodelay
  import-nir``).
* :func:`execute` / :func:`run_test_file` -- the reference executor, stepping the NIR nodes
  themselves (``neurodelay nir-run``), cycles included (a cycle reads its neuron's output
  of the previous step: :data:`RECURRENCE`).
* :func:`node_map` -- a nirtorch node map with a Delay ring buffer, an Affine that keeps its
  bias and neuron modules of the same discretization (imports torch).

All three share one convention (:data:`CONVENTIONS`) and two discretizations
(:data:`DISCRETIZATION_TEXT`: ``euler``, the default and the exporter's, and ``exp``).
Everything they refuse raises :class:`NirImportError` naming the node and the fix.

Inside this package ``import nir`` is the nir library (absolute imports).
"""
from __future__ import annotations

from neurodelay.errors import NirImportError
from neurodelay.nir.executor import NirRunResult, execute, readout_scores, run_test_file
from neurodelay.nir.graph import (
    CONVENTIONS,
    DEFAULT_MAX_DELAY_STEPS,
    DISCRETIZATION_TEXT,
    DISCRETIZATIONS,
    RECURRENCE,
    read_graph,
)
from neurodelay.nir.importer import ImportResult, import_nir, input_layout, to_network
from neurodelay.nir.run_folder import describe_imported, import_to_run

__all__ = [
    "CONVENTIONS", "DEFAULT_MAX_DELAY_STEPS", "DISCRETIZATIONS", "DISCRETIZATION_TEXT",
    "ImportResult", "NirImportError", "NirRunResult", "RECURRENCE", "describe_imported",
    "execute",
    "import_nir", "import_to_run", "input_layout", "node_map", "read_graph",
    "readout_scores", "run_test_file", "to_network",
]


def node_map(dt: float, discretization: str = "euler", **kw) -> dict:
    """nirtorch node map (see :mod:`neurodelay.nir.torchmap`; imports torch)."""
    from neurodelay.nir.torchmap import node_map as _node_map  # local: torch only when asked

    return _node_map(dt, discretization, **kw)
