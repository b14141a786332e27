"""The small tools around benchmarks/bench.py whose outputs the README cites: the full-SHD-run
extrapolation and the ablation-time comparison (benchmarks/ablation_times.py)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"neurodelay_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _epoch_result(train_s, valid_s, padded_t):
    return {"mean_train_s": train_s, "mean_valid_s": valid_s, "mean_padded_T": padded_t}


def test_shd_extrapolation_scales_samples_and_steps():
    run = _load("bench")
    ep = {"n_train": 1024, "n_valid": 256, "valid_T": 96,
          "reference": _epoch_result(20.0, 2.0, 125.0),
          "neurodelay": _epoch_result(4.0, 0.5, 125.0)}
    x = run.shd_extrapolation(ep)
    # training: 4 s x (8156 / 1024) x (100 / 125); validation: 0.5 x (2264 / 256) x (100 / 96)
    train = 4.0 * 8156 / 1024 * 100 / 125
    valid = 0.5 * 2264 / 256 * 100 / 96
    assert x["neurodelay"]["train_s_per_epoch"] == pytest.approx(train, abs=0.05)
    assert x["neurodelay"]["valid_s_per_epoch"] == pytest.approx(valid, abs=0.05)
    assert x["neurodelay"]["run_h"] == pytest.approx(150 * (train + valid) / 3600, abs=0.005)
    ref = 20.0 * 8156 / 1024 * 100 / 125 + 2.0 * 2264 / 256 * 100 / 96
    assert x["ratio"] == pytest.approx(ref / (train + valid), abs=0.005)
    assert x["what"].startswith("extrapolated, not measured")


def test_extrapolate_option_reads_a_saved_result_and_refuses_others(tmp_path):
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps({"epoch": {
        "n_train": 512, "n_valid": 128, "valid_T": 100,
        "reference": _epoch_result(10.0, 1.0, 100.0),
        "neurodelay": _epoch_result(2.0, 0.25, 100.0)}}))
    cmd = [sys.executable, str(BENCH / "bench.py"), "--extrapolate"]
    ok = subprocess.run(cmd + [str(saved)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    ref, new = 10.0 * 8156 / 512 + 2264 / 128, 2.0 * 8156 / 512 + 0.25 * 2264 / 128
    assert json.loads(ok.stdout)["ratio"] == pytest.approx(ref / new, abs=0.005)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {}}))
    res = subprocess.run(cmd + [str(bad)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no epoch section" not in res.stdout
    assert "is not a saved result with an epoch section" in res.stderr


def _study(root: Path, seconds: dict[str, list[float]]) -> Path:
    for name, secs in seconds.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": i + 1, "seconds": s}) + "\n" for i, s in enumerate(secs)))
    return root


def test_ablation_times_sums_epoch_seconds_and_compares(tmp_path, capsys):
    at = _load("ablation_times")
    former = _study(tmp_path / "former", {"learned/seed0": [10.0, 10.0],
                                          "fixed-random/seed0": [40.0, 40.0]})
    new = _study(tmp_path / "new", {"learned/seed0": [8.0, 8.0],
                                    "fixed-random/seed0": [7.0, 7.0]})
    out = tmp_path / "times.json"
    assert at.main([str(former), str(new), "--wall", "110", "35", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["former_total_s"] == 100.0 and res["new_total_s"] == [30.0]
    assert res["ratio_new_over_former"] == [0.3]
    assert res["wall_s"]["ratio_new_over_former"] == [round(35 / 110, 3)]
    assert "ratio new / former (epoch seconds): 0.300" in capsys.readouterr().out


def test_ablation_times_refuses_studies_that_are_not_the_same_work(tmp_path):
    at = _load("ablation_times")
    former = _study(tmp_path / "former", {"learned/seed0": [10.0, 10.0]})
    other_runs = _study(tmp_path / "a", {"learned/seed1": [8.0, 8.0]})
    unfinished = _study(tmp_path / "b", {"learned/seed0": [8.0]})
    with pytest.raises(SystemExit, match="different runs"):
        at.main([str(former), str(other_runs)])
    with pytest.raises(SystemExit, match="different epoch counts"):
        at.main([str(former), str(unfinished)])
    with pytest.raises(SystemExit, match="no \\*/seed\\*/metrics.jsonl"):
        at.main([str(former), str(tmp_path / "empty")])


def _load_kernels():
    sys.path.insert(0, str(BENCH))            # bench_kernels imports bench_harness
    try:
        return _load("bench_kernels"), _load("bench_harness")
    finally:
        sys.path.remove(str(BENCH))


def test_cost_model_fit_recovers_known_constants_and_drops_negative_ones():
    kern, _ = _load_kernels()
    import torch

    g = torch.Generator().manual_seed(0)
    rows = (torch.rand(30, 2, generator=g, dtype=torch.float64) * 1e6).tolist()
    times = [3e-9 * a + 5e-10 * b for a, b in rows]
    c = kern._lstsq_rel(rows, times)
    assert c[0] == pytest.approx(3e-9, rel=1e-6) and c[1] == pytest.approx(5e-10, rel=1e-6)
    times = [3e-9 * a for a, _ in rows]           # the second column explains nothing
    c = kern._lstsq_rel([[a, b] for a, b in rows], [t * (1 + 0.01 * ((-1) ** k))
                                                   for k, t in enumerate(times)])
    assert all(v >= 0 for v in c) and c[0] == pytest.approx(3e-9, rel=0.05)


def test_run_record_has_the_cpu_model_and_flags():
    _, harness = _load_kernels()
    info = harness.cpu_info()
    assert isinstance(info["model"], str) and info["model"]
    if Path("/proc/cpuinfo").exists():
        assert info["flags"] and all(isinstance(f, str) for f in info["flags"])
