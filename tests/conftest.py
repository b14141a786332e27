"""Shared fixtures: one small model trained once per test session on the embedded task."""
import pytest
import torch

from neurodelay import api

@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def files(tmp_path_factory, cache):
    """The embedded timing task, with fewer samples (same generator)."""
    from neurodelay.data import make_synthetic

    p = make_synthetic(tmp_path_factory.mktemp("syn"), seed=0,
                       sizes={"train": 800, "valid": 150, "test": 150})
    return dict(train_file=str(p["train"]), valid_file=str(p["valid"]),
                test_file=str(p["test"]), cache_dir=cache)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, files):
    """A small model trained for a test-sized budget on the embedded timing task."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    res = api.train_run(str(out), preset="tiny", hidden=[32, 32], epochs=6, batch_size=32,
                        seed=1, progress=False, log=lambda m: None, **files)
    return out, res


