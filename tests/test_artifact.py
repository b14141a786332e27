"""The deployment artifact: computed once, verified as exported, calibrated on training
data only, tamper-evident, refused (and nothing written) when it does not fit."""
import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from neurodelay import data as D
from neurodelay.cli import main
from neurodelay.data import splits
from neurodelay.data.rundata import run_train_data
from neurodelay.deploy.artifact import (
    ArtifactError,
    DeployOptions,
    build_artifact,
    default_folder,
    load_artifact,
    qnet_hash,
)
from neurodelay.errors import FitError
from neurodelay.runs import open_run


@pytest.fixture
def run_copy(trained, files, tmp_path):
    """A copy of the trained run whose data files are copies too (safe to poison)."""
    src, _ = trained
    run = tmp_path / "run"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("deploy"))
    cfg = json.loads((run / "config.json").read_text())
    for split in ("train", "valid", "test"):
        copy = tmp_path / f"{split}.h5"
        shutil.copyfile(cfg["data"][split], copy)
        cfg["data"][split] = str(copy)
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def _poison(path):
    """Rewrite an SHD-layout file so every sample has a burst of 60 spikes per bin."""
    with h5py.File(path, "r") as f:
        n = len(f["labels"])
        labels = f["labels"][()]
        names = [k.decode() for k in f["extra/keys"][()]]
    times = [np.repeat(np.linspace(0, 0.3, 31), 60) for _ in range(n)]
    units = [np.tile(np.arange(60) % 700, 31) for _ in range(n)]
    D.write_shd_file(path, times, units, labels, names)


def test_hash_is_the_content_and_export_is_deterministic(run_copy, tmp_path):
    a = build_artifact(run_copy, out=tmp_path / "a")
    b = build_artifact(run_copy, out=tmp_path / "b")
    assert a.hash == b.hash and a.hash.startswith("sha256:")
    q = load_artifact(tmp_path / "a").qnet
    assert qnet_hash(q) == a.hash
    q.layers[1].weight[0, 0] += 2
    assert qnet_hash(q) != a.hash


def test_verified_hash_equals_exported_hash_when_the_test_set_changes(run_copy, tmp_path):
    r = CliRunner().invoke(main, ["export", str(run_copy), "--target", "loihi2", "--json"])
    assert r.exit_code == 0, r.output
    exported = json.loads(r.stdout)["artifact_hash"]
    cfg = json.loads((run_copy / "config.json").read_text())
    _poison(cfg["data"]["test"])                   # a different test set after export
    r = CliRunner().invoke(main, ["verify", str(run_copy), "--json", "--no-progress",
                                  "--tolerance", "100"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output[r.output.index("{"):])
    assert got["artifact_hash"] == exported
    assert got["artifact"] == str(default_folder(run_copy, DeployOptions()))


def test_calibration_never_reads_test_or_validation_data(run_copy, tmp_path, monkeypatch):
    clean = build_artifact(run_copy, out=tmp_path / "clean")
    cfg = json.loads((run_copy / "config.json").read_text())
    _poison(cfg["data"]["test"])
    _poison(cfg["data"]["valid"])
    poisoned = build_artifact(run_copy, out=tmp_path / "poisoned")
    assert poisoned.hash == clean.hash
    # and those files are not even opened
    seen = []
    real = D.load_binned
    monkeypatch.setattr(splits, "load_binned", lambda p, **kw: seen.append(str(p)) or real(p, **kw))
    build_artifact(run_copy, out=tmp_path / "again")
    assert seen and cfg["data"]["test"] not in seen and cfg["data"]["valid"] not in seen
    rep = json.loads((tmp_path / "again" / "deploy.json").read_text())
    assert rep["calibration"]["source"] == "training split" and rep["calibration"]["n"] == 256


def test_artifact_speaker_split_calibrates_on_training_speakers_only(tmp_path):
    # a file with speakers 0..3; the run holds out 3 (test) and 2 (valid)
    rng = np.random.default_rng(0)
    times, units, labels, speakers = [], [], [], []
    for i in range(80):
        times.append(np.sort(rng.uniform(0, 0.2, 30)))
        units.append(rng.integers(0, 700, 30))
        labels.append(i % 2)
        speakers.append(i % 4)
    f = D.write_shd_file(tmp_path / "d.h5", times, units, labels, ["a", "b"],
                         speakers=speakers)
    from neurodelay import api
    api.train_run(str(tmp_path / "run"), preset="tiny", hidden=[8], epochs=1, batch_size=16,
                  train_file=str(f), test_speakers=[3], valid_speakers=[2],
                  cache_dir=str(tmp_path / "c"), progress=False, log=lambda m: None)
    r = open_run(tmp_path / "run")
    tr = run_train_data(r)
    assert len(tr) == 40 and set(tr.speakers.tolist()) == {0, 1}
    art = build_artifact(r, DeployOptions(calib_samples=1000))
    assert art.report.calibration["n"] == 40


def test_tampered_artifacts_are_refused(run_copy, tmp_path):
    art = build_artifact(run_copy, out=tmp_path / "a")
    with h5py.File(art.path("qnet"), "r+") as f:
        w = f["layers/0/weight"][()]
        w[0, 0] += 2
        f["layers/0/weight"][...] = w
    with pytest.raises(ArtifactError, match="changed after export"):
        load_artifact(art.folder)
    art = build_artifact(run_copy, out=tmp_path / "b")
    with h5py.File(art.path("netx"), "r+") as f:
        w = f["layer/1/weight"][()]
        w[0, 0] += 2
        f["layer/1/weight"][...] = w
    with pytest.raises(ArtifactError, match="does not hold the quantized network"):
        load_artifact(art.folder)
    (art.folder / "deploy.json").write_text("{")
    r = CliRunner().invoke(main, ["verify", "--artifact", str(art.folder), "--no-progress"])
    assert r.exit_code == 1 and "deploy.json: not valid JSON" in r.output
    assert "Traceback" not in r.output


def test_a_network_that_does_not_fit_is_refused_and_nothing_is_written(run_copy, tmp_path):
    from neurodelay.hw.target import config_dir
    text = (config_dir() / "loihi2.toml").read_text()
    small = tmp_path / "small.toml"
    small.write_text(text.replace("neurons_per_core = 8192", "neurons_per_core = 4")
                     .replace("cores_per_chip = 128", "cores_per_chip = 2"))
    with pytest.raises(FitError, match="total cores"):
        build_artifact(run_copy, DeployOptions(target=str(small)), tmp_path / "x" / "y")
    assert not (tmp_path / "x").exists()
    r = CliRunner().invoke(main, ["export", str(run_copy), "--target", str(small), "--out",
                                  str(tmp_path / "z")])
    assert r.exit_code == 1 and "total cores" in r.output and not (tmp_path / "z").exists()
    # a folder that is not an artifact is never overwritten
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not a neurodelay artifact"):
        build_artifact(run_copy, out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_modified_target_file_gets_its_own_folder_and_its_bits(run_copy, tmp_path):
    from neurodelay.hw.target import config_dir
    text = (config_dir() / "loihi2.toml").read_text()
    four = tmp_path / "four.toml"
    four.write_text(text.replace("weight_bits = 8 ", "weight_bits = 4 "))
    opts = DeployOptions(target=str(four))
    folder = default_folder(run_copy, opts)
    assert folder.name.startswith("loihi2-") and folder != default_folder(run_copy,
                                                                          DeployOptions())
    art = build_artifact(run_copy, opts)
    assert art.report.weight_bits == 4
    for L in art.qnet.layers:                 # 4-bit mantissas q * 2**(9-4), |q| <= 7
        assert np.all(L.weight % 32 == 0) and np.abs(L.weight).max() <= 7 * 32
    with pytest.raises(Exception, match="weight bits 8 is outside what target 'loihi2' "
                                        "holds: 2..5"):
        build_artifact(run_copy, DeployOptions(target=str(four), weight_bits=8))


def test_stale_artifact_is_refused_by_verify(run_copy):
    build_artifact(run_copy)
    best = run_copy / "best.pt"
    import torch
    ck = torch.load(best, weights_only=False)
    k = next(k for k in ck["model"] if k.endswith("weight"))
    ck["model"][k] = ck["model"][k] * 1.5
    torch.save(ck, best)
    r = CliRunner().invoke(main, ["verify", str(run_copy), "--no-progress"])
    assert r.exit_code == 1 and "exported from another version" in r.output
