"""Hardware-exact fine-tuning: a normal run whose PyTorch model equals the chip, exported
without re-quantizing, 0 Lava mismatches, model selection on validation data only."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from neurodelay.cli import main
from neurodelay.runs import open_run
from neurodelay.train.finetune import FinetuneConfig, finetune
from neurodelay.train.loaders import float_network


@pytest.fixture(scope="module")
def tuned(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "w4d3"
    res = finetune(trained[0], out, FinetuneConfig(weight_bits=4, delay_bits=3, epochs=2,
                                                   batch_size=64), progress=False,
                   threads=1, log=lambda m: None)
    return out, res


def test_finetuned_run_is_a_normal_run_and_equals_the_chip(tuned):
    out, res = tuned
    r = open_run(out)
    assert r.kind == "finetuned" and r.status().finished
    assert res["weight_bits"] == 4 and res["delay_bits"] == 3
    cfg = r.config
    assert cfg["start"]["delay_mode"] in ("clip", "coarse")
    assert {c["mode"] for c in cfg["start"]["candidates"]} == {"clip", "coarse"}
    q = r.qnetwork()
    for L in q.layers:
        assert np.all(L.weight % 32 == 0) and np.abs(L.weight).max() <= 7 * 32   # 4 bits
    res_eval = CliRunner().invoke(main, ["eval", str(out), "--json"])
    assert res_eval.exit_code == 0, res_eval.output
    assert json.loads(res_eval.stdout)["accuracy"] == res["test_accuracy"]
    v = CliRunner().invoke(main, ["verify", str(out), "--lava", "2", "--json", "--no-progress",
                                  "--tolerance", "0"])
    assert v.exit_code == 0, v.output
    got = json.loads(v.stdout)
    assert got["agreement"] == 1.0 and got["quantized_accuracy"] == got["pytorch_accuracy"]
    assert got["reference_exact"] == {"readout_equal": True, "spikes_equal": True}
    assert got["lava_mismatches"] == 0 and got["lava_samples"] == 2
    assert got["calibration"]["source"].startswith("none (fine-tuned")
    # export writes the fine-tuned integers themselves (no re-quantization)
    from neurodelay.deploy.artifact import load_artifact, qnet_hash
    art = load_artifact(got["artifact"])
    assert art.hash == qnet_hash(q)
    rep = json.loads((out / "deploy" / "loihi2" / "deploy.json").read_text())
    assert rep["weight_bits"] == 4 and rep["delay_bits"] == 3
    assert rep["resources"]["memory_formula"].startswith("ceil(synapses * (4 weight + 3 delay")


def test_selection_never_sees_test_data(trained, tmp_path, monkeypatch):
    """The fine-tuned integers do not depend on the test set (only the final report
    evaluates it): training reads no test samples."""
    from neurodelay.data import rundata
    calls = []
    real = rundata.run_test_data
    monkeypatch.setattr(rundata, "run_test_data", lambda run, *a, **k: calls.append(1) or
                        real(run, *a, **k))
    finetune(trained[0], tmp_path / "a", FinetuneConfig(weight_bits=8, delay_bits=6,
                                                        epochs=1), progress=False,
             threads=1, log=lambda m: None)
    assert len(calls) == 1                         # the final test accuracy, nothing else


def test_prune_reduces_synapses_and_memory(trained, tmp_path):
    base = finetune(trained[0], tmp_path / "dense", FinetuneConfig(epochs=2), progress=False,
                    threads=1, log=lambda m: None)
    pr = finetune(trained[0], tmp_path / "pruned", FinetuneConfig(epochs=2, prune=0.5),
                  progress=False, threads=1, log=lambda m: None)
    assert pr["synapses"] <= 0.52 * base["synapses"]
    assert pr["synaptic_memory_bytes"] < 0.55 * base["synaptic_memory_bytes"]
    assert pr["best_epoch"] >= 1                   # only fully pruned networks qualify


def test_resume_equals_uninterrupted(trained, tmp_path):
    fc = FinetuneConfig(weight_bits=4, delay_bits=4, epochs=2)
    full = finetune(trained[0], tmp_path / "full", fc, progress=False, threads=1,
                    log=lambda m: None)
    part = finetune(trained[0], tmp_path / "part", fc, progress=False, threads=1,
                    stop_after_epoch=1, log=lambda m: None)
    assert part == {"finished": False, "epoch": 1}
    res = finetune(None, tmp_path / "part", resume=True, progress=False, threads=1,
                   log=lambda m: None)
    assert res["test_accuracy"] == full["test_accuracy"]
    a, b = open_run(tmp_path / "full").qnetwork(), open_run(tmp_path / "part").qnetwork()
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.weight, lb.weight)


def test_finetune_cli_refuses_bad_options(trained, tmp_path):
    r = CliRunner().invoke(main, ["finetune", str(trained[0]), "--out", str(tmp_path / "x"),
                                  "--delay-bits", "7"])
    assert r.exit_code == 1 and "holds 6 delay bits" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["finetune", str(trained[0]), "--out", str(tmp_path / "y"),
                                  "--weight-bits", "10"])
    assert r.exit_code == 1 and "weight bits 10 is outside" in r.output


def test_an_imported_graph_fine_tunes_with_a_training_file(trained, files, tmp_path):
    """A run without data of its own (import-nir) needs --train-file; then it fine-tunes
    like a trained run and its hardware-exact model equals the chip."""
    run = CliRunner()
    assert run.invoke(main, ["export", str(trained[0]), "--target", "nir", "--out",
                             str(tmp_path / "m.nir")]).exit_code == 0
    assert run.invoke(main, ["import-nir", str(tmp_path / "m.nir"), "--out",
                             str(tmp_path / "imp")]).exit_code == 0
    r = run.invoke(main, ["finetune", str(tmp_path / "imp"), "--out", str(tmp_path / "ft"),
                          "--epochs", "1", "--no-progress"])
    assert r.exit_code == 1 and "--train-file" in r.output
    r = run.invoke(main, ["finetune", str(tmp_path / "imp"), "--out", str(tmp_path / "ft2"),
                          "--epochs", "1", "--weight-bits", "4", "--train-file",
                          files["train_file"], "--no-progress", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "no test split of its own" in r.output
    v = run.invoke(main, ["verify", str(tmp_path / "ft2"), "--test-file", files["test_file"],
                          "--json", "--no-progress", "--tolerance", "100"])
    assert v.exit_code == 0, v.output
    got = json.loads(v.stdout)
    assert got["agreement"] == 1.0
    assert got["reference_exact"] == {"readout_equal": True, "spikes_equal": True}


def test_parent_is_found_from_any_directory_and_after_moving_both(trained, tmp_path,
                                                                  monkeypatch):
    """A fine-tuned run records where its parent is (absolute and relative to itself):
    commands run from another directory, or on both folders moved together, still find it;
    a missing parent is a RunError naming where it looked."""
    import shutil

    from neurodelay.errors import RunError
    work = tmp_path / "work"
    shutil.copytree(trained[0], work / "float")
    monkeypatch.chdir(work)
    finetune("float", "ft", FinetuneConfig(weight_bits=8, delay_bits=6, epochs=1,
                                           batch_size=64), progress=False, threads=1,
             log=lambda m: None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    net = float_network(open_run(work / "ft"))
    assert net.layers[0].weight.shape == float_network(open_run(work / "float")) \
        .layers[0].weight.shape
    moved = tmp_path / "moved"
    shutil.move(str(work), str(moved))
    assert open_run(moved / "ft").parent_path().resolve() == (moved / "float").resolve()
    float_network(open_run(moved / "ft"))
    shutil.rmtree(moved / "float")
    with pytest.raises(RunError, match="fine-tuned from is missing"):
        float_network(open_run(moved / "ft"))


@pytest.mark.parametrize("kw, fragment", [({"epochs": 2.5}, "--epochs 2.5"),
                                          ({"alpha": -1.0}, "--alpha"),
                                          ({"weight_bits": 0}, "--weight-bits 0"),
                                          ({"prune": 1.0}, "--prune"),
                                          ({"seed": -1}, "--seed"),
                                          ({"delay_mode": "round"}, "--delay-mode")])
def test_library_config_validates_like_the_cli(kw, fragment):
    from neurodelay.errors import OptionError
    with pytest.raises(OptionError, match=fragment):
        FinetuneConfig(**kw)
