"""neurodelay.research.plots: figures of one run (kernels, delay histograms, curves, raster)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from neurodelay.research import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_task):
    from neurodelay import api

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("plots")
    files = tiny_task(tmp / "data")
    opts = dict(train_file=str(files["train"]), test_file=str(files["test"]), hidden=[8],
                epochs=2, batch_size=32, max_delay_ms=50.0, cache_dir=str(tmp / "cache"),
                progress=False, log=lambda m: None)
    api.train_run(tmp / "learned", **opts)
    api.train_run(tmp / "none", delays="none", **opts)
    return tmp


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def test_plot_run_writes_valid_pngs(runs):
    run = runs / "learned"
    paths = plots.plot_run(run)
    assert [p.name for p in paths] == list(plots.PLOT_FILES)
    assert all(p.parent == run / "plots" and _is_png(p) for p in paths)
    assert not list((run / "plots").glob("*.tmp"))


def test_figures_of_a_run_without_delays(runs, tmp_path):
    """Window 1 (no delays): kernels are single taps, every delay is 0."""
    run = runs / "none"
    assert _is_png(plots.plot_kernels(run, tmp_path / "k.png"))
    assert _is_png(plots.plot_delay_histograms(run, tmp_path / "h.png"))
    assert _is_png(plots.plot_training_curves(run, tmp_path / "c.png"))


def test_gaussian_kernel_matches_dcls():
    """The plotted kernel is the kernel DCLS builds for the same position and sigma."""
    from neurodelay.train.model import DCLS_SIG_OFFSET, DelaySynapses

    torch.manual_seed(0)
    syn = DelaySynapses(3, 2, 9, "learned")
    sig = 1.7
    syn.set_sigma(sig - DCLS_SIG_OFFSET)
    conv = syn.conv
    K = conv.DCK(conv.weight, conv.P, conv.SIG).detach().numpy()  # (out, in, window)
    for o in range(2):
        for i in range(3):
            d, k = plots.gaussian_kernel(float(conv.P.detach()[0, o, i]), sig, 9,
                                         float(conv.weight.detach()[o, i, 0]))
            assert list(d) == list(range(9))
            # tap n of the dcls kernel is delay window-1-n
            np.testing.assert_allclose(k, K[o, i, ::-1], rtol=1e-4, atol=1e-6)


def test_gaussian_kernel_narrows_to_the_discrete_tap():
    d, wide = plots.gaussian_kernel(0.2, 4.0, 11, 2.0)
    _, narrow = plots.gaussian_kernel(0.2, 0.5, 11, 2.0)
    assert wide.sum() == pytest.approx(2.0, rel=1e-5)
    assert narrow.max() > 0.7 * 2.0 > wide.max()
    assert d[np.argmax(narrow)] == 11 - 1 - (0 + 11 // 2)   # round(0.2) = 0 -> delay 5


def test_missing_run_parts_are_clear_errors(runs, tmp_path):
    with pytest.raises(plots.PlotError, match="config.json"):
        plots.plot_run(tmp_path)
    with pytest.raises(plots.PlotError, match="sample"):
        plots.plot_raster(runs / "learned", tmp_path / "r.png", sample=10_000)


def test_cli_plot(runs):
    from neurodelay.cli import main

    r = CliRunner().invoke(main, ["plot", str(runs / "learned"), "--sample", "1"])
    assert r.exit_code == 0, r.output
    assert r.output.count("\n") == 1 and "raster.png" in r.output
    r = CliRunner().invoke(main, ["plot", str(runs)])
    assert r.exit_code != 0 and "config.json" in r.output
