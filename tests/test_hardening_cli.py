"""Hardening review of 8889c09: options and inputs that were silently misread.

One test (or family) per finding, driven through the CLI (``click.testing.CliRunner`` on
``neurodelay.cli.main``) and, where the finding names one, the library call. Every
refusal is checked the same way (:func:`refused`): exit status 1, an ``Error:`` message
naming the problem, no exception escaping the command and no "Traceback".

1. ``verify --tolerance nan`` passed every run (NaN never exceeds anything).
2. ``train --resume`` with other options silently ignored them.
3. ``nir-run --input`` with no time steps printed a made-up prediction.
4. ``--hidden 16,,16`` read as 16,16 (empty list items dropped).
5. ``--test-speakers 5-2`` (a reversed, empty range) said "no test data".
6. An infinite tau in a NIR graph was reported with another neuron's tau.

Needs no data outside the repository: a tiny SHD-layout task is written with
``neurodelay.data.write_shd_file`` and NIR graphs with nir's own API.
"""
from __future__ import annotations

import math
import shutil

import nir
import numpy as np
import pytest
from cli_checks import cli, refused

from neurodelay import api
from neurodelay.data import write_shd_file
from neurodelay.errors import NeurodelayError, OptionError


# ------------------------------------------------------------------------------ fixtures
def _task(folder):
    """3 classes, 4 speakers, a class-specific burst time; 48 train / 24 test samples."""
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 48), ("test", 24)):
        times, units, labels, speakers = [], [], [], []
        for i in range(n):
            c = i % 3
            t = np.sort(np.concatenate([0.02 + 0.03 * c + rng.uniform(0, 0.01, 20),
                                        rng.uniform(0, 0.1, 10)]))
            times.append(t)
            units.append(rng.integers(0, 700, t.size))
            labels.append(c)
            speakers.append(i % 4)
        out[split] = str(write_shd_file(folder / f"{split}.h5", times, units, labels,
                                        ["a", "b", "c"], speakers=speakers))
    return out


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return _task(tmp_path_factory.mktemp("task"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, task):
    """A finished 1-epoch run (hidden [4], 50 ms delays), trained in about a second."""
    root = tmp_path_factory.mktemp("hardening")
    out = root / "run"
    api.train_run(str(out), train_file=task["train"], test_file=task["test"], hidden=[4],
                  epochs=1, batch_size=16, max_delay_ms=50.0, cache_dir=str(root / "cache"),
                  progress=False, log=lambda m: None)
    return out


def _graph(hidden_node, n_in=3, n_h=4, n_out=2):
    nodes = {
        "input": nir.Input(input_type=np.array([n_in])),
        "fc1": nir.Linear(weight=np.full((n_h, n_in), 0.5)),
        "lif": hidden_node,
        "fc2": nir.Linear(weight=np.full((n_out, n_h), 0.5)),
        "li": nir.LI(tau=np.full(n_out, 0.02), r=np.ones(n_out), v_leak=np.zeros(n_out)),
        "output": nir.Output(output_type=np.array([n_out])),
    }
    edges = [("input", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "li"),
             ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def _lif(tau):
    n = len(tau)
    return nir.LIF(tau=np.asarray(tau, float), r=np.ones(n), v_leak=np.zeros(n),
                   v_threshold=np.ones(n))


# ------------------------------------------------------------- 1. verify --tolerance nan
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_verify_refuses_a_non_finite_tolerance(run, value):
    out = refused(cli("verify", run, "--tolerance", value, "--no-progress"),
                  f"--tolerance {value}", "finite number >= 0")
    assert "PASS" not in out


def test_verify_run_and_drop_exceeds_refuse_nan_tolerance(run):
    from neurodelay.deploy.verify import drop_exceeds, verify_run

    with pytest.raises(OptionError, match="--tolerance nan"):
        verify_run(run, tolerance=math.nan, progress=False, log=lambda m: None)
    with pytest.raises(OptionError, match="--tolerance nan"):
        drop_exceeds(3, 10, math.nan)
    with pytest.raises(OptionError, match="--tolerance inf"):
        drop_exceeds(3, 10, math.inf)
    assert drop_exceeds(3, 10, 0.5) and not drop_exceeds(3, 10, 30.0)


# --------------------------------------------------------- 2. --resume with other options
def test_resume_refuses_changed_options(run, task, tmp_path):
    out = refused(cli("train", "--resume", "--out", run, "--epochs", "50", "--lr", "0.5",
                      "--hidden", "32", "--no-progress"),
                  "--resume", "exactly as configured", "--epochs 50 (the run has 1)",
                  "--lr 0.5 (the run has 0.001)", "--hidden 32 (the run has 4)")
    assert "resuming" not in out
    # options equal to the run's (and --threads / --no-progress) are accepted
    r_ = shutil.copytree(run, tmp_path / "r")
    r = cli("train", "--resume", "--out", r_, "--epochs", "1", "--hidden", "4",
            "--max-delay", "50", "--train-file", task["train"], "--threads", "1",
            "--no-progress")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output


def test_resume_library_refuses_changed_options(run):
    with pytest.raises(OptionError, match=r"--epochs 50 \(the run has 1\)"):
        api.train_run(str(run), resume=True, epochs=50, progress=False, log=lambda m: None)
    with pytest.raises(OptionError, match=r"--seed 7 \(the run has 0\)"):
        api.train_run(str(run), resume=True, seed=7, progress=False, log=lambda m: None)


# -------------------------------------------------------- 3. nir-run: no time steps etc.
@pytest.mark.parametrize("case", ["no steps", "negative", "nan", "empty file"])
def test_nir_run_refuses_inputs_without_steps_or_bad_values(tmp_path, case):
    nir.write(tmp_path / "g.nir", _graph(_lif([0.02] * 4)))
    x = np.zeros((3, 3))
    path = tmp_path / "x.npy"
    if case == "no steps":
        np.save(path, np.zeros((0, 3)))
        want = ["no time steps"]
    elif case == "negative":
        x[1, 2] = -1.0
        np.save(path, x)
        want = ["negative", "step 1, input 2"]
    elif case == "nan":
        x[1, 2] = np.nan
        np.save(path, x)
        want = ["NaN", "step 1, input 2"]
    else:
        path.write_bytes(b"")
        want = ["not a readable .npy array"]
    out = refused(cli("nir-run", tmp_path / "g.nir", "--dt", "0.001", "--input", path), *want)
    assert "sample 0:" not in out


def test_execute_refuses_an_input_without_time_steps():
    from neurodelay.nir import execute

    with pytest.raises(NeurodelayError, match="no time steps"):
        execute(_graph(_lif([0.02] * 4)), np.zeros((2, 0, 3)), 0.001)


# --------------------------------------------------------------- 4. empty list items
@pytest.mark.parametrize("option,value,item", [
    ("--hidden", "16,,16", "item 2 of 3 is empty"),
    ("--hidden", "16,", "item 2 of 2 is empty"),
    ("--test-speakers", ",1", "item 1 of 2 is empty"),
    ("--valid-speakers", "1, ,2", "item 2 of 3 is empty"),
])
def test_empty_list_item_is_refused(task, tmp_path, option, value, item):
    # --epochs 0 makes the old code (which dropped the item) fail fast elsewhere
    refused(cli("train", "--out", tmp_path / "unused", "--train-file", task["train"], option,
                value, "--epochs", "0"), f"{option} '{value}'", item)


def test_sweep_bits_refuses_empty_items_and_reversed_ranges(run):
    from neurodelay.research.sweep import SweepError, parse_bits

    with pytest.raises(SweepError, match="item 2 of 3 is empty"):
        parse_bits("8,,4", "weight bits")
    with pytest.raises(SweepError, match="range '6-4' is empty"):
        parse_bits("8,6-4", "weight bits")
    refused(cli("sweep-bits", run, "--weight-bits", "8,,4", "--no-progress"),
            "weight bits '8,,4'", "item 2 of 3 is empty")


# ------------------------------------------------------------- 5. reversed ranges
@pytest.mark.parametrize("option", ["--test-speakers", "--valid-speakers"])
def test_reversed_speaker_range_is_refused(task, tmp_path, option):
    # old code: --test-speakers 5-2 said "no test data"; --valid-speakers 5-2 trained
    # without a validation split (--epochs 0 stops that early)
    fast = ["--epochs", "0"] if option == "--valid-speakers" else []
    out = refused(cli("train", "--out", tmp_path / "unused", "--train-file", task["train"],
                      option, "5-2", *fast),
                  f"{option} '5-2'", "range '5-2' is empty", "'2-5'")
    assert "no test data" not in out


# ----------------------------------------------------------- 6. infinite tau in NIR
@pytest.mark.parametrize("kind", ["LIF", "CubaLIF"])
@pytest.mark.parametrize("command", ["import-nir", "nir-run"])
def test_infinite_tau_message_quotes_the_value(tmp_path, kind, command):
    n = 4
    tau = np.full(n, 0.02)
    tau[2] = np.inf
    if kind == "LIF":
        node, attr = _lif(tau), "tau"
    else:
        node, attr = nir.CubaLIF(tau_syn=np.full(n, 0.01), tau_mem=tau, r=np.ones(n),
                                 v_leak=np.zeros(n), v_threshold=np.ones(n)), "tau_mem"
    nir.write(tmp_path / "g.nir", _graph(node))
    if command == "import-nir":
        args = ["import-nir", tmp_path / "g.nir", "--dt", "0.001", "--out", tmp_path / "x"]
    else:
        np.save(tmp_path / "x.npy", np.zeros((5, 3)))
        args = ["nir-run", tmp_path / "g.nir", "--dt", "0.001", "--input", tmp_path / "x.npy"]
    out = refused(cli(*args), "node 'lif'", f"{attr} = inf s", "neuron 2")
    assert "got 0.02" not in out and "0.02" not in out
