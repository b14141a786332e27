"""The runnable examples in the docstrings of the public calls the docs list (the API
reference, docs/api/) are executed, so they cannot rot; the same as
``pytest --doctest-modules`` on these modules. Each module must have examples (a module
whose examples were all removed fails here instead of passing silently)."""
from __future__ import annotations

import doctest
import importlib
import tempfile

import pytest

# module -> the number of its docstrings with examples, at least
MODULES = {
    "neurodelay.api": 2,
    "neurodelay.core.network": 2,
    "neurodelay.core.network_io": 2,
    "neurodelay.sim.floatsim": 1,
    "neurodelay.sim.bitsim": 2,
    "neurodelay.passes.quantize": 1,
    "neurodelay.deploy.artifact": 1,
    "neurodelay.deploy.verify": 1,
    "neurodelay.nir.run_folder": 1,
    "neurodelay.exporters.nir": 1,
    "neurodelay.train.finetune": 1,
    "neurodelay.research.run_report": 1,
    "neurodelay.research.sweep": 1,
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.setenv("NEURODELAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NEURODELAY_PROGRESS", "never")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # the examples' mkdtemp()
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    tests = [t for t in finder.find(module, name) if t.examples]
    assert len(tests) >= MODULES[name], \
        f"{name}: {len(tests)} docstrings with examples, expected {MODULES[name]}"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    res = runner.summarize(verbose=False)
    assert res.failed == 0, f"{name}: {res.failed} of {res.attempted} examples failed (above)"
