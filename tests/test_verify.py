"""`neurodelay verify / inspect / export` on a trained model (fixtures in conftest.py)."""
import json

import h5py
import nir
import numpy as np
import pytest
from click.testing import CliRunner

from neurodelay.cli import main
from neurodelay.data.rundata import run_test_data
from neurodelay.deploy.artifact import load_artifact
from neurodelay.deploy.verify import PYTORCH_PATH_EXACT, verify_run


@pytest.fixture(scope="module")
def verified(trained, tmp_path_factory):
    out, _ = trained
    # tolerance 100: a pass must not hinge on one of 150 low-margin samples (the accuracy
    # bound with real margin is asserted below)
    return verify_run(out, "loihi2", lava=1, tolerance=100, progress=False, log=lambda m: None)


def test_verify_float_and_quantized_agree_with_pytorch(verified, trained):
    from neurodelay.data import pad_batch
    from neurodelay.runs import open_run
    from neurodelay.sim import bitsim

    r = verified.to_dict()
    assert r["n"] == 150 and r["passed"] and r["problems"] == []
    assert r["pytorch_path"] == PYTORCH_PATH_EXACT      # the exact float64 path, said so
    # exact: the frozen float network computes the PyTorch discrete model (float32 order
    # only; on this model not one hidden spike flips)
    assert r["float_agreement"] == 1.0 and r["float_accuracy"] == r["pytorch_accuracy"]
    assert r["float_max_readout_diff"] <= 1e-4
    # exact: the quantized accuracy is the artifact's network on the bit-accurate simulator
    art = load_artifact(r["artifact"])
    ds = run_test_data(open_run(trained[0]))
    pred, _ = bitsim.predict(art.qnet, pad_batch(ds.samples, pad_to=ds.max_steps))
    assert r["quantized_accuracy"] == float(np.mean(pred == ds.labels))
    assert r["artifact_hash"] == art.hash == json.loads(
        (art.folder / "deploy.json").read_text())["artifact_hash"]
    # bounded with margin: 8-bit weights and the chip's bias pre-roll change a few
    # low-margin predictions of this small model (measured 145-149 of 150 agree)
    assert r["agreement"] >= 0.90
    assert abs(r["quantized_accuracy"] - r["pytorch_accuracy"]) <= 0.06
    assert r["synaptic_memory_bytes"] > 0 and r["resources"]["fits"]
    assert r["calibration"]["source"] == "training split" and r["calibration"]["n"] == 256


def test_verify_lava_cross_check_runs_the_exported_netx_file(verified):
    r = verified.to_dict()
    assert r["lava_samples"] == 1 and r["lava_mismatches"] == 0
    assert r["lava_identical_predictions"] is True
    assert r["lava_source"] == f"netx file {verified.artifact}/network.netx.h5"
    assert r["lava_s_per_sample"] > r["sim_s_per_sample"] > 0


def test_verify_cli_json_and_tolerance_exit_code(trained):
    out, _ = trained
    r = CliRunner().invoke(main, ["verify", str(out), "--json", "--no-progress",
                                  "--tolerance", "100"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output[r.output.index("{"):])
    for key in ("float_accuracy", "quantized_accuracy", "agreement", "n", "artifact_hash",
                "pytorch_accuracy", "passed", "synaptic_memory_bytes", "resources"):
        assert key in got
    # 2-bit weights wreck the model: the accuracy drop exceeds a 0 pp tolerance -> exit 1
    r = CliRunner().invoke(main, ["verify", str(out), "--no-progress", "--weight-bits", "2",
                                  "--tolerance", "0"])
    assert r.exit_code == 1, r.output
    assert "FAIL" in r.output and "pp below the reference" in r.output


def test_target_without_delays_is_refused(trained):
    out, _ = trained
    r = CliRunner().invoke(main, ["verify", str(out), "--target", "nodelay", "--no-progress"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "target 'nodelay' has no synaptic delays" in r.output
    assert not (out / "deploy" / "nodelay").exists()
    r = CliRunner().invoke(main, ["inspect", str(out), "--target", "nodelay"])
    assert r.exit_code == 0 and "has no synaptic delays" in r.output
    r = CliRunner().invoke(main, ["inspect", str(out), "--target", "loihi2", "--json"])
    rep = json.loads(r.output)
    assert rep["fits"] and rep["totals"]["synaptic_memory_bytes"] > 0


def test_export_cli_writes_one_artifact_and_nir(trained, tmp_path):
    out, _ = trained
    art_dir = tmp_path / "art"
    r = CliRunner().invoke(main, ["export", str(out), "--target", "loihi2", "--out",
                                  str(art_dir)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in art_dir.iterdir()) == [
        "README.txt", "deploy.json", "model.nir", "model.quantized.nir", "network.lava.h5",
        "network.netx.h5", "network.qnet.h5"]
    with h5py.File(art_dir / "network.netx.h5") as f:
        assert f["layer/0/type"][()] == b"input"
        assert "delay" in f["layer/1"]
    rep = json.loads((art_dir / "deploy.json").read_text())
    assert rep["artifact_hash"] in r.output and rep["weight_bits"] == 8
    assert rep["calibration"]["source"] == "training split"
    assert {"weight_exp", "scale", "headroom"} <= set(rep["layers"][0])
    for f in ("model.nir", "model.quantized.nir"):
        kinds = {type(n).__name__ for n in nir.read(art_dir / f).nodes.values()}
        assert {"Delay", "LIF", "LI", "Affine"} <= kinds
    r = CliRunner().invoke(main, ["export", str(out), "--target", "nir", "--out",
                                  str(tmp_path / "m.nir")])
    assert r.exit_code == 0, r.output
    assert "Delay" in {type(n).__name__ for n in nir.read(tmp_path / "m.nir").nodes.values()}
    # verify --artifact takes any artifact folder and reports its hash
    r = CliRunner().invoke(main, ["verify", "--artifact", str(art_dir), "--no-progress",
                                  "--json", "--tolerance", "100"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{"):])["artifact_hash"] == rep["artifact_hash"]


def test_tolerance_is_counted_in_whole_samples():
    from neurodelay.deploy.verify import drop_exceeds
    assert not drop_exceeds(2, 400, 0.5)           # 0.875 -> 0.870: exactly 0.5 pp
    assert drop_exceeds(3, 400, 0.5)
    assert not drop_exceeds(-5, 400, 0.0) and drop_exceeds(1, 150, 0.0)


@pytest.mark.parametrize("drop, words", [(0.2, "0.20 pp below the reference"),
                                         (-0.2, "0.20 pp above the reference"),
                                         (0.0, "is equal to the reference")])
def test_verdict_line_says_above_or_below(verified, drop, words):
    import dataclasses

    from neurodelay.deploy.verify import format_verify
    text = format_verify(dataclasses.replace(verified, accuracy_drop_pp=drop))
    verdict = [line for line in text.splitlines() if line.startswith(("PASS", "FAIL"))][0]
    assert words in verdict and "-0.20" not in verdict, verdict
