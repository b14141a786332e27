"""Shared fixtures: one small model trained once per test session on the embedded task."""
from pathlib import Path

import numpy as np
import pytest

from neurodelay import api
from neurodelay.data import write_shd_file


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




N_CLASSES = 3


def _write_tiny_task(folder: Path, seed: int = 0) -> dict:
    """Small SHD-layout train/test files: 3 classes, a burst of units at a class-specific time."""
    rng = np.random.default_rng(seed)
    files = {}
    for split, n in (("train", 60), ("test", 30)):
        times, units, labels = [], [], []
        for i in range(n):
            c = i % N_CLASSES
            t_burst = 0.03 + 0.04 * c + rng.uniform(0, 0.01, 40)
            u_burst = rng.integers(0, 200, 40)
            t_noise = rng.uniform(0, 0.15, 20)
            u_noise = rng.integers(0, 700, 20)
            t = np.concatenate([t_burst, t_noise])
            order = np.argsort(t)
            times.append(t[order])
            units.append(np.concatenate([u_burst, u_noise])[order])
            labels.append(c)
        files[split] = write_shd_file(folder / f"{split}.h5", times, units, labels,
                                      [f"c{k}" for k in range(N_CLASSES)])
    return files



@pytest.fixture(scope="module")
def work(tmp_path_factory, request):
    """A folder for the module; the binned-data cache of every command goes below it
    and the caller's NEURODELAY_* settings do not leak in (tests/cli_checks.py)."""
    from cli_checks import own_environment

    name = request.module.__name__.rsplit(".", 1)[-1]
    with own_environment(tmp_path_factory.mktemp(name)) as root:
        yield root


@pytest.fixture(scope="module")
def data(work, tiny_task):
    """3-class train (60 samples) / test (30) files of the tiny task, ~15 steps each."""
    return {k: Path(v) for k, v in tiny_task(work / "data").items()}


@pytest.fixture(scope="session")
def tiny_task():
    """Writer of a very small 3-class SHD-layout train/test pair (study and plot tests)."""
    return _write_tiny_task


def pytest_collection_modifyitems(config, items):
    """Tests marked ``@pytest.mark.cuda`` need a CUDA device: elsewhere (CI) they are
    skipped with the printed reason "no CUDA device" (-ra shows it)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device (torch.cuda.is_available() is False)")
    for item in marked:
        item.add_marker(skip)
