"""Bit-width sweep (neurodelay.research.sweep, `neurodelay sweep-bits`)."""
import json
import math

import numpy as np
import pytest
import torch

from neurodelay import passes
from neurodelay.core.network import Layer, Network
from neurodelay.hw.resources import resource_report
from neurodelay.research.sweep import (
    SWEEP_FILES,
    SweepError,
    format_csv,
    memory_from_counts,
    parse_bits,
    parse_modes,
    reduce_delays,
    sweep_network,
)
from neurodelay.sim import floatsim

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _net(seed: int = 0, max_d: int = 20) -> Network:
    """A small random float network 24 -> 16 -> 16 -> 4 with delays 0..max_d."""
    rng = np.random.default_rng(seed)
    sizes = [24, 16, 16, 4]
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = k == len(sizes) - 2
        layers.append(Layer(weight=rng.normal(0, 1.2 / np.sqrt(a), (b, a)),
                            delay=rng.integers(0, max_d + 1, (b, a)), bias=np.zeros(b),
                            decay=0.9, threshold=np.inf if last else 0.5,
                            kind="li" if last else "lif", name=f"l{k}"))
    return Network(layers=layers, n_channels=24, channel_bin=1)


def _data(net: Network, n: int = 48, T: int = 40):
    """Poisson inputs, labelled by the float network itself (float accuracy = 1)."""
    x = np.random.default_rng(1).poisson(0.3, (n, T, net.n_in)).astype(np.float32)
    _, y = floatsim.predict(net, x)
    return x, y


# ----------------------------------------------------------------------------- helpers

def test_parse_bits_and_modes():
    assert parse_bits("8,6, 4,3,2") == (8, 6, 4, 3, 2)
    assert parse_bits("2-4,8,3") == (2, 3, 4, 8)
    assert parse_bits([5, 5, 4]) == (5, 4)
    assert parse_bits(6) == (6,)
    for bad in ("8,x", "", [1.5]):
        with pytest.raises(SweepError):
            parse_bits(bad, "weight bits")
    assert parse_modes("both") == ("clip", "coarse")
    assert parse_modes("coarse") == ("coarse",)
    with pytest.raises(SweepError, match="delay_mode"):
        parse_modes("round")


def test_clip_mode_clips_only_long_delays():
    net = _net()
    used = [l.weight != 0 for l in net.layers]
    n_long = sum(int(((l.delay > 7) & u).sum()) for l, u in zip(net.layers, used))
    assert n_long > 0
    out, info = reduce_delays(net, 3, "clip", 62)
    assert info["max_delay"] == 7 and info["delay_step"] == 1
    assert info["delays_changed"] == n_long and info["largest_delay"] == 7
    for a, b in zip(net.layers, out.layers):
        np.testing.assert_array_equal(b.delay, np.minimum(a.delay, 7))
        np.testing.assert_array_equal(b.weight, a.weight)
    # 6 bits hold 0..63, but Loihi 2 (NetX) stops at 62; 20-step delays are untouched
    out6, info6 = reduce_delays(net, 6, "clip", 62)
    assert info6["max_delay"] == 62 and info6["delays_changed"] == 0
    assert net.layers[0].delay.max() == 20          # the input network is not changed


def test_coarse_mode_keeps_range_at_coarser_resolution():
    net = _net()
    out, info = reduce_delays(net, 3, "coarse", 62)
    k = math.ceil(20 / 7)
    assert info["delay_step"] == k == 3
    for a, b in zip(net.layers, out.layers):
        expect = (np.floor(a.delay / k + 0.5) * k).astype(int)
        np.testing.assert_array_equal(b.delay, expect)
        assert np.all(b.delay % k == 0) and np.all(b.delay // k <= 7)   # fits 3 bits
    assert abs(info["largest_delay"] - 20) <= k // 2 + 1 and info["largest_delay"] > 7
    assert info["delays_changed"] > 0
    # the target's maximum still caps it, at a whole number of k-step units: k = 20 here,
    # so 30 is not reachable (it would be stored as 1.5 units) and the cap is 20
    capped_net, capped = reduce_delays(_net(max_d=60), 2, "coarse", 30)
    assert capped["delay_step"] == 20
    assert capped["largest_delay"] == 20 and capped["max_delay"] == 20
    for lay in capped_net.layers:
        assert np.all(lay.delay[lay.weight != 0] % 20 == 0)
    # the case that exposed it: D = 62 at 3 bits (k = 9) rounds 62 up to 63 > 62
    big = _net(max_d=62)
    big.layers[0].delay[0, 0], big.layers[0].weight[0, 0] = 62, 1.0
    out62, info62 = reduce_delays(big, 3, "coarse", 62)
    assert info62["delay_step"] == 9 and info62["largest_delay"] == 54
    for lay in out62.layers:
        assert np.all(lay.delay[lay.weight != 0] % 9 == 0)
    # enough bits: nothing changes
    _, same = reduce_delays(net, 5, "coarse", 62)
    assert same["delay_step"] == 1 and same["delays_changed"] == 0


def test_memory_formula():
    assert memory_from_counts([10, 3], 4, 5) == math.ceil(90 / 8) + math.ceil(27 / 8)
    assert memory_from_counts([8], 8, 6) == 14


# ----------------------------------------------------------------------------- sweep

def test_sweep_network_grid_memory_and_errors():
    net = _net()
    x, y = _data(net)
    r = sweep_network(net, x, y, "loihi2", weight_bits=(8, 3, 1), delay_bits=(6, 3),
                      delay_mode="both", progress=False)
    assert r["float_accuracy"] == 1.0 and r["network_max_delay"] == 20
    combos = {(c["mode"], c["weight_bits"], c["delay_bits"]) for c in r["cells"]}
    assert combos == {(m, w, b) for m in ("clip", "coarse") for w in (8, 3, 1) for b in (6, 3)}
    assert len(r["cells"]) == 12 and len(r["columns"]) == 4
    for c in r["cells"]:
        if c["weight_bits"] == 1:                   # quantize refuses: an error cell
            assert c["accuracy"] is None and "weight bits 1 is outside" in c["error"]
            continue
        assert c["error"] is None and 0.0 <= c["accuracy"] <= 1.0
        assert c["memory_bytes"] == sum(math.ceil(n * (c["weight_bits"] + c["delay_bits"]) / 8)
                                        for n in c["layer_synapses"])
        assert sum(c["layer_synapses"]) == c["synapses"] <= net.n_synapses
    # with the target's own widths (8 + 6) the memory equals the resource report's
    qnet, _ = passes.quantize(net, "loihi2", data=(x, y), weight_bits=8)
    c86 = next(c for c in r["cells"] if (c["mode"], c["weight_bits"], c["delay_bits"])
               == ("clip", 8, 6))
    assert c86["memory_bytes"] == resource_report(qnet, "loihi2").totals[
        "synaptic_memory_bytes"]
    # fewer weight bits: fewer bytes
    c36 = next(c for c in r["cells"] if (c["mode"], c["weight_bits"], c["delay_bits"])
               == ("clip", 3, 6))
    assert c36["memory_bytes"] < c86["memory_bytes"]
    cols = {(c["mode"], c["delay_bits"]): c for c in r["columns"]}
    assert cols[("clip", 3)]["delays_changed"] > 0 and cols[("clip", 6)]["delays_changed"] == 0
    assert cols[("coarse", 3)]["largest_delay"] > cols[("clip", 3)]["largest_delay"] == 7
    csv = format_csv(r).splitlines()
    assert len(csv) == 1 + 4 * (1 + 3)              # header + per column: float + 3 widths


def test_sweep_rejects_bad_input():
    net = _net()
    x, y = _data(net, n=4)
    with pytest.raises(SweepError, match="delay bits"):
        sweep_network(net, x, y, delay_bits=(0, 3), progress=False)
    with pytest.raises(SweepError, match="shape"):
        sweep_network(net, x[:, :, :5], y, progress=False)
    with pytest.raises(SweepError, match="no synaptic delays"):
        sweep_network(net, x, y, "nodelay", progress=False)


# ----------------------------------------------------------------------------- run + CLI

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from neurodelay import api
    from neurodelay.data import make_synthetic

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("sweep")
    p = make_synthetic(tmp, sizes={"train": 300, "valid": 60, "test": 60})
    out = tmp / "run"
    api.train_run(str(out), preset="tiny", hidden=[16, 16], epochs=2, batch_size=32, seed=0,
                  progress=False, log=lambda m: None, train_file=str(p["train"]),
                  valid_file=str(p["valid"]), test_file=str(p["test"]),
                  cache_dir=str(tmp / "c"))
    return out


def test_cli_sweep_bits(tiny_run, tmp_path):
    from click.testing import CliRunner

    from neurodelay.cli import main

    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["sweep-bits", str(tiny_run), "--weight-bits", "8,2",
                                    "--delay-bits", "6,3", "--delay-mode", "both",
                                    "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "| 8 |" in res.output and "delay mode `coarse`" in res.output
    for name in SWEEP_FILES:
        assert (out / name).is_file(), name
    assert (out / "sweep.png").read_bytes()[:8] == PNG_MAGIC
    r = json.loads((out / "sweep.json").read_text())
    cell = {(c["mode"], c["weight_bits"], c["delay_bits"]): c for c in r["cells"]}
    col = {(c["mode"], c["delay_bits"]): c for c in r["columns"]}
    assert len(cell) == 8
    # 8-bit weights, 6-bit delays (= the target's own): as good as the float network
    c86 = cell[("clip", 8, 6)]
    assert abs(c86["accuracy"] - r["float_accuracy"]) <= 0.05
    assert c86["agreement_with_float"] >= 0.9
    # the model uses delays up to 10 steps: 3 bits (0..7) must clip some
    assert r["network_max_delay"] > 7
    assert col[("clip", 3)]["delays_changed"] > 0 and col[("clip", 3)]["largest_delay"] == 7
    assert col[("coarse", 3)]["largest_delay"] >= r["network_max_delay"] - 1
    assert "sweep.md" in res.output.splitlines()[-1]
    # bad input: a clear error, exit code 1
    bad = CliRunner().invoke(main, ["sweep-bits", str(tiny_run), "--delay-bits", "0",
                                    "--out", str(tmp_path / "x"), "--no-progress"])
    assert bad.exit_code == 1 and "delay bits" in bad.output


def test_sweep_calibrates_on_training_data_and_fine_tunes_cells(tiny_run, tmp_path,
                                                                 monkeypatch):
    from neurodelay.data import rundata
    from neurodelay.research.sweep import sweep_bits

    seen = []
    real = rundata.run_test_data
    monkeypatch.setattr(rundata, "run_test_data", lambda run, *a, **k: seen.append(1) or
                        real(run, *a, **k))
    r = sweep_bits(tiny_run, weight_bits="8,2", delay_bits="3", out_dir=tmp_path / "o",
                   progress=False, finetune=True, finetune_epochs=1, threads=1)
    assert "training split" in r["calibration"] and r["calib_samples"] == 256
    ft = {(c["weight_bits"], c["delay_bits"]): c for c in r["finetuned"]}
    assert set(ft) == {(8, 3), (2, 3)} and not any(c["error"] for c in ft.values())
    for (w, b), c in ft.items():
        assert c["delay_mode"] in ("clip", "coarse") and c["memory_bytes"] > 0
        assert (tmp_path / "o" / "finetuned" / f"w{w}_d{b}" / "qnet.h5").exists()
    # a fine-tuned cell is never worse on validation than its post-training start
    assert all(c["valid_accuracy"] >= c["post_training_valid_accuracy"] for c in ft.values())
    assert "hardware-exact fine-tuned" in r["markdown"]
    # the test set is read once for the table and once per fine-tuned run's final report
    assert len(seen) == 1 + len(ft)
    # a second call reuses the finished fine-tuned runs
    r2 = sweep_bits(tiny_run, weight_bits="8,2", delay_bits="3", out_dir=tmp_path / "o",
                    progress=False, finetune=True, finetune_epochs=1, threads=1)
    assert [c["accuracy"] for c in r2["finetuned"]] == [c["accuracy"] for c in r["finetuned"]]


def test_sweep_finetuned_cells_in_parallel_processes(tiny_run, tmp_path):
    """--executor local --jobs 2: the fine-tuned cells train in two worker processes (each
    logged to TensorBoard) and give the numbers of the in-process sweep."""
    from click.testing import CliRunner

    from neurodelay.cli import main
    from neurodelay.errors import SweepError
    from neurodelay.research.executors import read_record
    from neurodelay.research.sweep import sweep_bits

    ref = sweep_bits(tiny_run, weight_bits="8,2", delay_bits="3", out_dir=tmp_path / "seq",
                     progress=False, finetune=True, finetune_epochs=1, threads=1)
    out = tmp_path / "par"
    res = CliRunner().invoke(main, ["sweep-bits", str(tiny_run), "--weight-bits", "8,2",
                                    "--delay-bits", "3", "--finetune", "--finetune-epochs",
                                    "1", "--threads", "1", "--out", str(out),
                                    "--no-progress", "--executor", "local", "--jobs", "2",
                                    "--log", "tensorboard"])
    assert res.exit_code == 0, res.output
    got = json.loads((out / "sweep.json").read_text())["finetuned"]
    assert [(c["weight_bits"], c["accuracy"], c["valid_accuracy"]) for c in got] == \
        [(c["weight_bits"], c["accuracy"], c["valid_accuracy"]) for c in ref["finetuned"]]
    cells = read_record(out)["cells"]
    assert sorted(cells) == ["finetuned/w2_d3", "finetuned/w8_d3"]
    for name, rec in cells.items():
        assert rec["attempts"][-1]["state"] == "finished"
        assert list((out / name / "tensorboard").glob("events.out.tfevents.*")), name
    rep = CliRunner().invoke(main, ["report", str(out)])
    assert "| finetuned/w2_d3 | finished |" in rep.output, rep.output
    # re-issued with other fine-tuning settings: refused, naming what changed
    with pytest.raises(SweepError, match="finetune_epochs: 1 -> 2"):
        sweep_bits(tiny_run, weight_bits="8,2", delay_bits="3", out_dir=out, progress=False,
                   finetune=True, finetune_epochs=2, threads=1)
