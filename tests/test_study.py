"""neurodelay.research.study: the five-model ablation (layout, resume, identical init) and the report."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from neurodelay.research import study

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_CLASSES = 3


def tiny_options(tmp: Path, files: dict) -> dict:
    return dict(train_file=str(files["train"]), test_file=str(files["test"]), hidden=[8],
                epochs=1, batch_size=32, max_delay_ms=50.0, threads=1,
                cache_dir=str(tmp / "cache"))


@pytest.fixture(scope="module")
def ablation(tmp_path_factory, tiny_task):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("ablation")
    files = tiny_task(tmp / "data")
    opts = tiny_options(tmp, files)
    out = tmp / "abl"
    res = study.run_ablation(out, 2, progress=False, log=lambda m: None, **opts)
    return out, opts, res


def _cfg(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


# ------------------------------------------------------------------------------ ablation
def test_ablation_creates_five_models_times_seeds(ablation):
    out, _, res = ablation
    assert len(res) == 10 and all(r["action"] == "trained" for r in res)
    for name in study.MODELS:
        for seed in (0, 1):
            run = out / name / f"seed{seed}"
            assert (run / "result.json").exists(), run
            cfg = _cfg(run)
            assert cfg["train"]["seed"] == seed
            want = study.MODELS[name][0]
            assert cfg["model"]["delays"] == want["delays"]
            assert cfg["train"]["sigma"] == want["sigma"]
            assert cfg["train"]["learn"] == want["learn"]
            assert study.model_key(cfg) == name
    assert sorted(p.parent.parent.name for p in out.glob("*/seed*/result.json")) == \
        sorted(list(study.MODELS) * 2)
    rec = json.loads((out / "ablation.json").read_text())
    assert rec["seeds"] == [0, 1] and rec["options"]["epochs"] == 1


def test_rerun_does_not_retrain(ablation):
    out, opts, _ = ablation
    files = sorted(out.glob("*/seed*/result.json"))
    before = {p: p.stat().st_mtime_ns for p in files}
    res = study.run_ablation(out, 2, progress=False, log=lambda m: None, **opts)
    assert [r["action"] for r in res] == ["skipped"] * 10
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_interrupted_run_is_resumed_not_restarted(ablation, tmp_path):
    out, opts, _ = ablation
    run = out / "fixed-random" / "seed1"
    saved = (run / "result.json").read_text()
    (run / "result.json").unlink()   # checkpoint.pt stays: looks like an interrupted run
    ck_mtime = (run / "checkpoint.pt").stat().st_mtime_ns
    res = study.run_ablation(out, 2, progress=False, log=lambda m: None, **opts)
    actions = {(r["model"], r["seed"]): r["action"] for r in res}
    assert actions[("fixed-random", 1)] == "resumed"
    assert sum(a == "resumed" for a in actions.values()) == 1
    # all epochs were done: resume only evaluates, it does not train again
    assert (run / "checkpoint.pt").stat().st_mtime_ns == ck_mtime
    assert json.loads((run / "result.json").read_text())["test_accuracy"] == \
        json.loads(saved)["test_accuracy"]


def test_no_delay_model_has_at_least_the_parameters(ablation):
    out, _, _ = ablation
    for seed in (0, 1):
        learned = _cfg(out / "learned" / f"seed{seed}")
        none = _cfg(out / "no-delays" / f"seed{seed}")
        assert none["parameters"]["total"] >= learned["parameters"]["total"]
        assert none["parameters"]["delays"] == 0 and learned["parameters"]["delays"] > 0
        assert none["model"]["hidden"][0] > learned["model"]["hidden"][0]


def test_identical_initialisation_across_models(ablation):
    out, _, _ = ablation
    init = {m: study.initial_model(out / m / "seed1") for m in study.MODELS}
    ref = init["learned"]
    for name in ("constant-sigma", "fixed-weights", "fixed-random"):
        for a, b in zip(ref.all_synapses(), init[name].all_synapses()):
            assert torch.equal(a.conv.weight, b.conv.weight), name
            pa, pb = a.conv.P.detach(), b.conv.P.detach()
            assert torch.equal(torch.round(pa) if name == "fixed-random" else pa, pb), name
    # other seed -> other network
    other = study.initial_model(out / "learned" / "seed0")
    assert not torch.equal(other.synapses[0].conv.weight, ref.synapses[0].conv.weight)
    # widened model: other shapes
    assert init["no-delays"].synapses[0].conv.weight.shape != ref.synapses[0].conv.weight.shape


def test_initial_model_is_what_training_started_from(tmp_path, tiny_task):
    """With all learning rates 0, the trained weights must equal initial_model's."""
    from neurodelay import api

    torch.set_num_threads(1)
    files = tiny_task(tmp_path / "data")
    opts = {**tiny_options(tmp_path, files), "lr": 0.0, "max_lr": 0.0}
    api.train_run(tmp_path / "r", progress=False, log=lambda m: None, seed=3, **opts)
    best = torch.load(tmp_path / "r" / "best.pt", weights_only=False)["model"]
    start = study.initial_model(tmp_path / "r").state_dict()
    for k in ("synapses.0.conv.weight", "synapses.0.conv.P", "readout_synapses.conv.weight",
              "readout_synapses.conv.P"):
        assert torch.equal(best[k], start[k]), k


def test_changed_options_are_refused(ablation):
    out, opts, _ = ablation
    with pytest.raises(study.AblationError, match="epochs"):
        study.run_ablation(out, 2, progress=False, log=lambda m: None, **{**opts, "epochs": 2})
    with pytest.raises(study.AblationError, match="connections"):
        study.run_ablation(out, 2, connections=4, progress=False, log=lambda m: None, **opts)
    with pytest.raises(study.AblationError, match="delays"):
        study.run_ablation(out, 2, progress=False, delays="none", **opts)
    from neurodelay.errors import OptionError

    with pytest.raises(OptionError, match="--seeds 0: out of range"):
        study.run_ablation(out, 0, progress=False, **opts)
    before = (out / "ablation.json").read_bytes()
    with pytest.raises(OptionError, match="--dropout 1.5: out of range"):
        study.run_ablation(out, 2, progress=False, **{**opts, "dropout": 1.5})
    assert (out / "ablation.json").read_bytes() == before   # refused before writing


def test_report_on_ablation(ablation):
    out, _, _ = ablation
    rep = study.report(out)
    assert rep["runs"] == 10
    assert [r["model"] for r in rep["rows"]] == list(study.MODELS)
    assert all(r["n_runs"] == 2 and r["ci95_pct"] is not None for r in rep["rows"])
    for f in ("report.md", "report.csv", "report.png"):
        assert (out / f).stat().st_size > 0
    assert (out / "report.png").read_bytes()[:8] == PNG_MAGIC
    assert "No delays (wider layers)" in (out / "report.md").read_text()
    assert "cannot start from the same initialisation" in rep["markdown"]


# ------------------------------------------------------------------------------ report
def fake_run(folder: Path, acc: float, *, delays="learned", sigma="decreasing",
             learn="weights+delays", connections=None, seed=0, total=1000) -> None:
    folder.mkdir(parents=True)
    cfg = {"model": {"delays": delays, "connections": connections, "hidden": [16],
                     "max_delay_steps": 5},
           "train": {"sigma": sigma, "learn": learn, "seed": seed, "epochs": 3},
           "data": {"train": "x.h5"},
           "parameters": {"weights": total // 2, "delays": total // 2, "batchnorm": 0,
                          "total": total}}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "result.json").write_text(json.dumps({"finished": True, "test_accuracy": acc}))


def test_report_ci_matches_hand_computation(tmp_path):
    accs = [0.80, 0.90, 0.85, 0.875]
    for s, a in enumerate(accs):
        fake_run(tmp_path / "learned" / f"seed{s}", a, seed=s)
    fake_run(tmp_path / "deep" / "nested" / "const", 0.7, sigma="constant")
    fake_run(tmp_path / "sparse", 0.6, delays="fixed-random", learn="weights", connections=4)
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "not_a_run" / "result.json").write_text("{}")  # no config.json: ignored
    rep = study.report(tmp_path)
    assert rep["runs"] == 6
    rows = {(r["model"], r["connectivity"]): r for r in rep["rows"]}
    row = rows[("learned", "fully connected")]
    pct = [100 * a for a in accs]
    mean = sum(pct) / 4
    sd = math.sqrt(sum((p - mean) ** 2 for p in pct) / 3)
    t975_df3 = 3.182446305284263          # Student t 97.5 % quantile, 3 degrees of freedom
    assert row["n_runs"] == 4
    assert row["mean_pct"] == pytest.approx(mean)
    assert row["ci95_pct"] == pytest.approx(t975_df3 * sd / 2.0, rel=1e-9)
    assert row["parameters"] == 1000 and "| 1,000 (500 + 500 + 0) |" in rep["markdown"]
    single = rows[("constant-sigma", "fully connected")]
    assert single["ci95_pct"] is None and single["mean_pct"] == pytest.approx(70.0)
    assert ("fixed-random", "sparse K=4") in rows
    assert "n/a (1 run)" in rep["markdown"]
    table = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text())))
    got = {r["model"]: r for r in table}
    assert float(got["learned"]["ci95_pct"]) == pytest.approx(row["ci95_pct"], abs=1e-4)
    assert got["constant-sigma"]["ci95_pct"] == ""
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 1000


def test_confidence_interval_small_n():
    assert study.confidence_interval([0.5]) is None
    assert study.confidence_interval([1.0, 3.0]) == pytest.approx(12.706204736174705 * 1.0)


def test_model_keys_from_config():
    def key(delays="learned", sigma="decreasing", learn="weights+delays"):
        return study.model_key({"model": {"delays": delays},
                                "train": {"sigma": sigma, "learn": learn}})
    assert key() == "learned"
    assert key(sigma="constant") == "constant-sigma"
    assert key(delays="fixed-random", learn="weights+delays") == "fixed-random"
    assert key(learn="delays") == "fixed-weights"
    assert key(delays="none") == "no-delays"
    assert key(sigma="constant", learn="delays") == "constant-sigma+fixed-weights"


def test_report_without_runs_is_an_error(tmp_path):
    with pytest.raises(study.ReportError, match="no finished runs"):
        study.report(tmp_path)
    with pytest.raises(study.ReportError, match="no such folder"):
        study.report(tmp_path / "missing")


# ------------------------------------------------------------------------------ CLI
def test_cli_ablate_and_report(ablation):
    from neurodelay.cli import main

    out, opts, _ = ablation
    args = ["ablate", "--out", str(out), "--seeds", "2", "--no-progress",
            "--train-file", opts["train_file"], "--test-file", opts["test_file"],
            "--hidden", "8", "--epochs", "1", "--batch-size", "32", "--max-delay", "50",
            "--threads", "1", "--cache-dir", opts["cache_dir"]]
    # the CLI passes every option (defaults included) yet records the same ablation
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "0 trained, 0 resumed, 10 already finished" in r.output
    assert "| Fixed random delays | fully connected |" in r.output
    r = CliRunner().invoke(main, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert "Learned delays, fixed weights" in r.output and "report.png" in r.output


def test_ablation_compares_augmentation_settings(tmp_path, tiny_task):
    """--compare-augment: every model once per setting, same seed, grouped by the report."""
    torch.set_num_threads(1)
    opts = tiny_options(tmp_path, tiny_task(tmp_path / "data"))
    out = tmp_path / "abl"
    res = study.run_ablation(out, [3], models=["learned", "fixed-random"],
                             augment_variants=["none", "shift:k=2,mask"], progress=False,
                             log=lambda m: None, **opts)
    runs = {r["model"]: Path(r["run"]) for r in res}
    setting = "shift:k=2:p=1,mask:p=0.65"                 # canonical: every parameter
    assert set(runs) == {"learned", f"learned+augment({setting})", "fixed-random",
                         f"fixed-random+augment({setting})"}
    assert runs[f"learned+augment({setting})"] == \
        out / "learned+augment_shift_k_2_p_1_mask_p_0.65" / "seed3"
    for name, run in runs.items():
        cfg = _cfg(run)
        assert cfg["train"]["augment"] == (setting if "augment" in name else "")
        assert cfg["train"]["seed"] == 3 and study.model_key(cfg) == name
    # the same seed: the same initial network with and without augmentation
    a = study.initial_model(runs["learned"]).state_dict()
    b = study.initial_model(runs[f"learned+augment({setting})"]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rep = study.report(out)
    labels = [row["label"] for row in rep["rows"]]
    assert labels == ["Learned delays", f"Learned delays, augmented ({setting})",
                      "Fixed random delays", f"Fixed random delays, augmented ({setting})"]
    assert sorted(study.study_cells(out)) == sorted(
        str(p.relative_to(out)) for p in runs.values())
    with pytest.raises(study.AblationError, match="not both"):
        study.run_ablation(out, [3], augment_variants=["none"], augment="mask",
                           progress=False, **opts)
    with pytest.raises(study.AblationError, match="unknown model 'wobble'"):
        study.ablation_runs(out, [0], models=["wobble"], augment_variants=["none"])
