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


# ------------------------------------------------------------------ verify figure
@pytest.fixture(scope="module")
def finetuned(runs):
    from neurodelay.train.finetune import FinetuneConfig, finetune

    out = runs / "ft4"
    finetune(runs / "learned", out, FinetuneConfig(weight_bits=4, epochs=1, batch_size=32),
             progress=False, threads=1, log=lambda m: None)
    return out


def test_verify_spikes_finetuned_run_is_spike_for_spike(finetuned):
    """A fine-tuned run's hardware-exact model IS the chip: on the chip's time axis every
    hidden spike and the readout are equal (a row offset of one step would break it), and
    the chip's prediction is the bit-accurate simulator's."""
    from neurodelay.data.batches import pad_batch
    from neurodelay.data.rundata import run_test_data
    from neurodelay.deploy.artifact import DeployOptions, artifact_for
    from neurodelay.runs import open_run
    from neurodelay.sim import bitsim

    d = plots.verify_spikes(finetuned, sample=1)
    assert d["kind"] == "finetuned" and len(d["pytorch"]) == len(d["chip"]) == 1
    assert sum(int(s.sum()) for s in d["pytorch"]) > 0           # something to compare
    for a, b in zip(d["pytorch"], d["chip"]):
        assert a.shape == b.shape and np.array_equal(a, b)
    assert np.array_equal(d["u_pytorch"], d["u_chip"])
    ds = run_test_data(finetuned)
    qnet = artifact_for(open_run(finetuned), DeployOptions()).qnet
    pred, _ = bitsim.predict(qnet, pad_batch([ds.samples[1]]))
    assert d["pred_chip"] == int(pred[0]) and d["label"] == int(ds.labels[1])


def test_verify_spikes_trained_run_pytorch_side_is_the_discrete_model(runs):
    """For a trained run the PyTorch side is the discrete model (= the frozen float
    network's spikes); the chip side is the 8-bit artifact, on the same time axis."""
    from neurodelay.data.batches import pad_batch
    from neurodelay.data.rundata import run_test_data
    from neurodelay.sim.floatsim import simulate
    from neurodelay.train.loaders import float_network

    run = runs / "learned"
    d = plots.verify_spikes(run, sample=0)
    x = pad_batch([run_test_data(run).samples[0]])
    fs = simulate(float_network(run), x, record=True)
    assert np.array_equal(d["pytorch"][0], fs.spikes[0][0].astype(bool))
    assert d["chip"][0].shape == d["pytorch"][0].shape
    # the 8-bit chip follows the float model closely on this tiny task
    assert (d["chip"][0] == d["pytorch"][0]).mean() > 0.9


def test_plot_verify_raster_writes_png(finetuned, runs, tmp_path):
    assert _is_png(plots.plot_verify_raster(finetuned, tmp_path / "v.png", sample=0))
    with pytest.raises(plots.PlotError, match="--sample 999"):
        plots.plot_verify_raster(runs / "learned", tmp_path / "w.png", sample=999)
    assert not (tmp_path / "w.png").exists()


def test_cli_plot_verify(runs):
    from neurodelay.cli import main

    run = runs / "learned"
    r = CliRunner().invoke(main, ["plot", str(run), "--verify", "loihi2"])
    assert r.exit_code == 0, r.output
    assert "verify.png" in r.output and _is_png(run / "plots" / "verify.png")


def test_cli_plot_on_a_finetuned_run(finetuned):
    """A fine-tuned run has no kernels: a clear error, and --verify draws its figure alone
    (was an internal KeyError)."""
    from neurodelay.cli import main

    r = CliRunner().invoke(main, ["plot", str(finetuned)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "a finetuned run has no Gaussian kernels" in r.output and "--verify" in r.output
    r = CliRunner().invoke(main, ["plot", str(finetuned), "--verify", "loihi2"])
    assert r.exit_code == 0, r.output
    assert "wrote 1 figure to" in r.output and _is_png(Path(finetuned) / "plots" / "verify.png")
