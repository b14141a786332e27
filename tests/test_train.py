"""Training on the embedded task, exact resume, freeze == PyTorch discrete model, CLI."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from neurodelay import api
from neurodelay.cli import main
from neurodelay.core.network_io import load_network, save_network
from neurodelay.data import pad_batch
from neurodelay.data.rundata import run_test_data
from neurodelay.sim.floatsim import simulate
from neurodelay.train.loaders import float_network, load_model
from neurodelay.train.model import scores_from_membrane

torch.set_num_threads(1)


def test_training_learns_the_embedded_task(trained):
    out, res = trained
    assert res["finished"]
    # 10 classes: chance is 0.10; a no-delay network cannot exceed ~0.5 on this task
    assert res["test_accuracy"] > 0.6, res
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert metrics[0]["sigma"] > metrics[-1]["sigma"] == pytest.approx(0.5)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["hidden"] == [32, 32] and cfg["train"]["seed"] == 1
    assert cfg["splits"]["test"] == 150


def test_freeze_matches_pytorch_discrete_model(trained):
    out, _ = trained
    model = load_model(out)
    net = float_network(out)
    ds = run_test_data(out)
    x = pad_batch(ds.samples, pad_to=ds.max_steps)
    with torch.no_grad():
        u_torch = model(torch.from_numpy(x), discrete=True).numpy()
    sim = simulate(net, x)
    assert np.abs(sim.u - u_torch).max() <= 1e-4
    pred_torch = scores_from_membrane(torch.from_numpy(u_torch)).argmax(1).numpy()
    assert np.array_equal(sim.predictions, pred_torch)
    # BN really was folded (non-trivial bias) and delays are integers within the window
    assert np.abs(net.layers[0].bias).max() > 1e-3
    assert net.layers[0].delay.max() <= model.cfg.window - 1
    assert net.class_names[:2] == ["order0-fwd", "order0-rev"]


def test_frozen_network_file_round_trip(trained, tmp_path):
    out, _ = trained
    net = float_network(out)
    path = save_network(net, tmp_path / "net.h5")
    back = load_network(path)
    for a, b in zip(net.layers, back.layers):
        assert np.array_equal(a.weight, b.weight) and np.array_equal(a.delay, b.delay)


def test_resume_equals_uninterrupted_run(tmp_path, files):
    kw = dict(preset="tiny", hidden=[8], epochs=3, batch_size=128, seed=5, progress=False,
              log=lambda m: None)
    full = api.train_run(str(tmp_path / "full"), **kw, **files)
    # interrupted after epoch 1 (as if killed), then resumed
    from neurodelay.data import DataConfig
    from neurodelay.train.model import ModelConfig
    from neurodelay.train.trainer import TrainConfig, train
    cfg = json.loads((tmp_path / "full" / "config.json").read_text())
    mc, tc, dc = (ModelConfig(**cfg["model"]), TrainConfig(**cfg["train"]),
                  DataConfig(**cfg["data"]))
    part = train(tmp_path / "part", mc, tc, dc, progress=False, stop_after_epoch=1,
                 log=lambda m: None)
    assert part == {"finished": False, "epoch": 1}
    from neurodelay.errors import RunError
    with pytest.raises(RunError, match="--resume"):
        train(tmp_path / "part", mc, tc, dc, progress=False, log=lambda m: None)
    resumed = api.train_run(str(tmp_path / "part"), resume=True, progress=False)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    m_full = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    m_part = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(l).items() if k != "seconds"}
                           for l in lines]
    assert strip(m_full) == strip(m_part)
    a, b = load_model(tmp_path / "full"), load_model(tmp_path / "part")
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k


def test_same_seed_same_numbers_other_seed_differs(tmp_path, files):
    kw = dict(preset="tiny", hidden=[8], epochs=1, batch_size=256, progress=False,
              log=lambda m: None, **files)
    r1 = api.train_run(str(tmp_path / "a"), seed=3, **kw)
    r2 = api.train_run(str(tmp_path / "b"), seed=3, **kw)
    api.train_run(str(tmp_path / "c"), seed=4, **kw)
    l = lambda p: json.loads((tmp_path / p / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert l("a") == l("b") and r1["test_accuracy"] == r2["test_accuracy"]
    assert l("a") != l("c")


def test_cli_eval_json_and_help(trained):
    out, res = trained
    r = CliRunner().invoke(main, ["eval", str(out), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got == {"accuracy": pytest.approx(res["test_accuracy"]), "n": 150, "finished": True}
    r = CliRunner().invoke(main, ["train", "--help"])
    assert r.exit_code == 0 and "--delays" in r.output and "--test-speakers" in r.output


def test_cli_train_errors_are_specific(tmp_path):
    r = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "x"), "--train-file",
                                  str(tmp_path / "missing.h5")])
    assert r.exit_code != 0
    assert "missing.h5" in r.output
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file")
    r = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "y"), "--train-file", str(bad),
                                  "--test-speakers", "1", "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 1 and "bad.h5" in r.output and "not an HDF5 file" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(main, ["eval", str(tmp_path)])
    assert r.exit_code != 0 and "neurodelay train" in r.output


SSHD_TINY = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "sshd_tiny.h5"


@pytest.mark.slow
def test_cli_train_shd_preset_on_sshd_with_speaker_split(tmp_path):
    if not SSHD_TINY.exists():
        pytest.skip(f"{SSHD_TINY} is absent (the SSHD stand-in data of ../shared/data)")
    r = CliRunner().invoke(main, [
        "train", "--preset", "shd", "--train-file", str(SSHD_TINY), "--test-speakers", "20-23",
        "--hidden", "16,16", "--epochs", "1", "--batch-size", "64", "--no-progress",
        "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["max_delay_steps"] == 25 and cfg["model"]["n_inputs"] == 140
    assert cfg["model"]["n_outputs"] == 20
    assert any("TEST set stands in for validation" in n for n in cfg["splits"]["notes"])
    assert "discrete test accuracy" in r.output


def test_dataset_ssc_selects_the_ssc_preset(tmp_path, tiny_task):
    """`--dataset ssc` without --preset trains with the SSC recipe (it used to fall back to
    SHD's: the dataset was dropped before the preset was chosen)."""
    import shutil

    files = tiny_task(tmp_path / "src")
    d = tmp_path / "ssc"
    d.mkdir()
    for split, name in (("train", "ssc_train.h5"), ("train", "ssc_valid.h5"),
                        ("test", "ssc_test.h5")):
        shutil.copy(files[split], d / name)
    r = CliRunner().invoke(main, ["train", "--dataset", "ssc", "--data-dir", str(d),
                                  "--hidden", "8", "--epochs", "1", "--no-progress",
                                  "--cache-dir", str(tmp_path / "c"), "--out",
                                  str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["max_delay_steps"] == 31 and cfg["model"]["dropout"] == 0.25
    assert cfg["train"]["batch_size"] == 128


def test_option_errors_name_the_option_in_library_and_cli(tmp_path, files):
    """One validation for notebook and CLI: the same OptionError text, nothing written."""
    from neurodelay.errors import OptionError

    for kw, args, text in [
            (dict(dropout=1.5), ["--dropout", "1.5"], "--dropout 1.5: out of range"),
            (dict(tau_ms=5.0), ["--tau", "5"], "--tau 5 ms: out of range"),
            (dict(channel_bin=3), ["--channel-bin", "3"], "--channel-bin 3: out of range"),
            (dict(max_delay_ms=10.0), ["--max-delay", "10"], "window of 1 step")]:
        with pytest.raises(OptionError, match=text) as e:
            api.train_run(str(tmp_path / "lib"), progress=False, log=lambda m: None,
                          hidden=[8], epochs=1, **kw, **files)
        r = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "cli"),
                                      "--train-file", files["train_file"], "--test-file",
                                      files["test_file"], "--cache-dir", files["cache_dir"],
                                      *args])
        assert r.exit_code == 1 and f"Error: {e.value}" in r.output, r.output
        assert not (tmp_path / "lib").exists() and not (tmp_path / "cli").exists()
    with pytest.raises(OptionError, match="--threads 0"):
        api.train_run(str(tmp_path / "lib"), threads=0, **files)
    with pytest.raises(OptionError, match="unknown option epoch;"):
        api.check_options(epoch=3)
