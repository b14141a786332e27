"""CLI: `neurodelay import-nir` writes an imported run that `float_network(open_run(...))`
reads back; `neurodelay nir-run --json` on --input X.npy and on --test-file; bad options
give one-line messages, never tracebacks."""
from __future__ import annotations

import json

import nir
import numpy as np
import pytest
from click.testing import CliRunner

from neurodelay.cli import main
from neurodelay.data.rundata import run_data_config, run_test_data
from neurodelay.exporters.nir import export
from neurodelay.nir import describe_imported, execute, to_network
from neurodelay.runs import open_run
from neurodelay.sim.floatsim import simulate
from neurodelay.train.loaders import float_network


def _invoke(args, ok=True):
    res = CliRunner().invoke(main, [str(a) for a in args])
    out = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert "Traceback" not in out, out
    if ok:
        assert res.exit_code == 0, out
    else:
        assert res.exit_code != 0, out
    return res, out


def _small_graph(seed=0, n_in=7, n_h=9, n_out=3, with_dt=False):
    """A hand-built graph (nir API): Input -> Delay -> Affine -> LIF -> Linear -> LI."""
    rng = np.random.default_rng(seed)
    f = lambda v, n: np.full(n, float(v))  # noqa: E731
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "delay": nir.Delay(delay=rng.integers(0, 4, n_in) * 0.002),
        "fc1": nir.Affine(weight=rng.normal(0, 1.2, (n_h, n_in)), bias=rng.normal(0, .1, n_h)),
        "lif": nir.LIF(tau=f(0.01, n_h), r=f(1.0, n_h), v_leak=f(0, n_h),
                       v_threshold=f(1.0, n_h), v_reset=f(0, n_h)),
        "fc2": nir.Linear(weight=rng.normal(0, 1.0, (n_out, n_h))),
        "li": nir.LI(tau=f(0.02, n_out), r=f(1.0, n_out), v_leak=f(0, n_out)),
        "output": nir.Output(output_type={"output": np.array([n_out])}),
    }
    edges = [("input", "delay"), ("delay", "fc1"), ("fc1", "lif"), ("lif", "fc2"),
             ("fc2", "li"), ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata={"dt": 0.002} if with_dt else {})


def test_import_nir_writes_an_imported_run(tmp_path):
    nir.write(tmp_path / "g.nir", _small_graph())
    run = tmp_path / "run"
    _, out = _invoke(["import-nir", tmp_path / "g.nir", "--dt", 0.002, "--discretization",
                      "exp", "--out", run])
    assert "discretization exp" in out
    r = open_run(run)
    assert r.kind == "imported"
    cfg = r.config
    assert cfg["network"] == "network.h5" and cfg["n_outputs"] == 3
    assert cfg["class_names"] == ["class0", "class1", "class2"]
    src = cfg["source"]
    assert (src["dt"], src["discretization"]) == (0.002, "exp")
    assert len(src["sha256"]) == 64 and src["file"].endswith("g.nir")
    assert src["nir_version"] == nir.version
    dc = run_data_config(r)                                     # a valid DataConfig
    assert (dc.train, dc.dt, dc.n_channels, dc.channel_bin) == ("", 0.002, 700, 100)
    assert not r.has_own_data()
    net = float_network(r)
    direct = to_network(_small_graph(), 0.002, "exp").network
    for a, b in zip(net.layers, direct.layers, strict=True):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.delay, b.delay)
        assert a.decay == b.decay
    assert net.layers[0].delay.max() > 0
    line = describe_imported(cfg)
    assert "g.nir" in line and "dt = 2 ms" in line and "exp" in line and "\n" not in line

    # a second import into the same folder is refused, --overwrite replaces it
    _, out = _invoke(["import-nir", tmp_path / "g.nir", "--dt", 0.002, "--out", run], ok=False)
    assert "not empty" in out and "--overwrite" in out
    _invoke(["import-nir", tmp_path / "g.nir", "--dt", 0.002, "--out", run, "--overwrite",
             "--n-channels", 14, "--channel-bin", 2])
    r = open_run(run)
    assert r.config["source"]["discretization"] == "euler"
    assert (r.config["data"]["n_channels"], r.config["data"]["channel_bin"]) == (14, 2)


def test_import_nir_bad_options_are_messages(tmp_path):
    nir.write(tmp_path / "g.nir", _small_graph())
    (tmp_path / "junk.nir").write_text("junk")
    cases = [
        (["import-nir", tmp_path / "g.nir", "--out", tmp_path / "a"], "--dt SECONDS"),
        (["import-nir", tmp_path / "g.nir", "--dt", 0.0015, "--out", tmp_path / "a"],
         "not a whole number of steps"),
        (["import-nir", tmp_path / "g.nir", "--dt", -1, "--out", tmp_path / "a"],
         "must be a positive number"),
        (["import-nir", tmp_path / "g.nir", "--dt", 0.002, "--discretization", "rk4",
          "--out", tmp_path / "a"], "rk4"),
        (["import-nir", tmp_path / "junk.nir", "--dt", 0.01, "--out", tmp_path / "a"],
         "cannot be read as a NIR graph"),
        (["import-nir", tmp_path / "g.nir", "--dt", 0.002, "--channel-bin", 3,
          "--n-channels", 20, "--out", tmp_path / "a"], "n_channels / channel_bin = 7"),
        (["import-nir", tmp_path / "g.nir", "--dt", 0.02, "--out", tmp_path / "a"],
         "not a whole number of steps|shorter than dt"),
    ]
    for args, msg in cases:
        _, out = _invoke(args, ok=False)
        assert any(m in out for m in msg.split("|")), (args, out)
    assert not (tmp_path / "a" / "config.json").exists()


def test_nir_run_input_json(tmp_path):
    g = _small_graph(seed=1, with_dt=True)
    nir.write(tmp_path / "g.nir", g)
    x = np.random.default_rng(2).poisson(0.8, (6, 25, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    _, out = _invoke(["nir-run", tmp_path / "g.nir", "--input", tmp_path / "x.npy", "--json"])
    got = json.loads(out)
    net = to_network(g, 0.002).network
    ref = simulate(net, x, dtype=np.float64)
    assert got["predictions"] == ref.predictions.tolist()
    np.testing.assert_allclose(got["scores"], ref.scores, atol=1e-6)
    assert got["n"] == 6 and got["steps"] == 25 and got["discretization"] == "euler"
    # one sample (time, inputs) and the exp discretization
    np.save(tmp_path / "x1.npy", x[0])
    _, out = _invoke(["nir-run", tmp_path / "g.nir", "--input", tmp_path / "x1.npy",
                      "--discretization", "exp", "--json"])
    assert json.loads(out)["predictions"] == execute(g, x[:1], 0.002, "exp").predictions.tolist()


def test_nir_run_test_file_json(trained, files, tmp_path):
    from neurodelay.data import pad_batch
    from neurodelay.sim.floatsim import accuracy

    run, _ = trained
    r = open_run(run)
    net = float_network(r)
    export(net, tmp_path / "m.nir")
    _, out = _invoke(["nir-run", tmp_path / "m.nir", "--test-file", files["test_file"],
                      "--cache-dir", files["cache_dir"], "--json"])
    got = json.loads(out)
    ds = run_test_data(r, files["test_file"])
    want = accuracy(net, pad_batch(ds.samples), ds.labels)
    assert got["n"] == len(ds) and got["accuracy"] == pytest.approx(want, abs=1e-12)
    assert (got["n_channels"], got["channel_bin"]) == (net.n_channels, net.channel_bin)
    assert got["accuracy"] > 0.5


def test_nir_run_bad_options_are_messages(tmp_path):
    nir.write(tmp_path / "g.nir", _small_graph())                 # no dt in the metadata
    np.save(tmp_path / "bad.npy", np.zeros((5, 3)))
    (tmp_path / "txt.npy").write_text("no")
    cases = [
        (["nir-run", tmp_path / "g.nir", "--dt", 0.002], "exactly one of --input"),
        (["nir-run", tmp_path / "g.nir", "--input", tmp_path / "bad.npy"], "--dt"),
        (["nir-run", tmp_path / "g.nir", "--dt", 0.002, "--input", tmp_path / "bad.npy"],
         "input must be (batch, time, 7)"),
        (["nir-run", tmp_path / "g.nir", "--dt", 0.002, "--input", tmp_path / "txt.npy"],
         "not a readable .npy array"),
        (["nir-run", tmp_path / "g.nir", "--dt", 0.002, "--test-file",
          tmp_path / "missing.h5"], "file not found"),
        (["nir-run", tmp_path / "g.nir", "--dt", 0.002, "--batch-size", 0,
          "--input", tmp_path / "bad.npy"], "positive integer"),
    ]
    for args, msg in cases:
        _, out = _invoke(args, ok=False)
        assert msg in out, (args, out)
