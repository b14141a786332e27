"""--log tensorboard / wandb (neurodelay/tracking.py): what users read is what metrics.jsonl says.

The TensorBoard files are read back with TensorBoard's own EventAccumulator.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from neurodelay import tracking
from neurodelay.cli import main
from neurodelay.errors import OptionError

EventAccumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard not installed (pip install 'neurodelay[tensorboard]')").EventAccumulator


def _train_args(out: Path, data: dict, tmp: Path, *extra) -> list[str]:
    return ["train", "--out", str(out), "--train-file", str(data["train"]), "--test-file",
            str(data["test"]), "--hidden", "8", "--epochs", "3", "--batch-size", "32",
            "--max-delay", "50", "--threads", "1", "--no-progress", "--cache-dir",
            str(tmp / "cache"), *extra]


def _events(folder: Path) -> EventAccumulator:
    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0,
                                                      "tensors": 0})
    ea.Reload()
    return ea


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_log_tensorboard_reads_back(tmp_path, data):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, _train_args(out, data, tmp_path, "--log", "tensorboard"))
    assert r.exit_code == 0, r.output
    ea = _events(out / "tensorboard")
    recs = _metrics(out)
    assert len(recs) == 3
    for key in ("loss", "train_acc", "valid_acc", "sigma", "lr_weights", "seconds"):
        got = [(e.step, e.value) for e in ea.Scalars(key)]
        assert [s for s, _ in got] == [1, 2, 3], key
        assert [v for _, v in got] == pytest.approx([m[key] for m in recs], rel=1e-6), key
    # the config as hparams, with the final result as its metrics
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    cfg = json.loads((out / "config.json").read_text())
    assert hp["train/epochs"].number_value == cfg["train"]["epochs"] == 3
    assert hp["model/hidden"].string_value == json.dumps(cfg["model"]["hidden"])
    res = json.loads((out / "result.json").read_text())
    acc = ea.Scalars("result/test_accuracy")
    assert acc[-1].value == pytest.approx(res["test_accuracy"], rel=1e-6)


def test_tensorboard_mirrors_metrics_after_a_resume_and_logs_figures(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"hidden": [8]},
                                                 "train": {"seed": 3, "epochs": 3}}))
    lines = [{"epoch": e, "loss": 1.0 / e, "valid_acc": 0.1 * e} for e in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    with tracking.tracked(["tensorboard"]):
        tracking.record(run, lines[-1])
    # a resume from the epoch-1 checkpoint: metrics.jsonl is cut back, epoch 2 trains again
    redo = [lines[0], {"epoch": 2, "loss": 0.25, "valid_acc": 0.7},
            {"epoch": 3, "loss": 0.125, "valid_acc": 0.8}]
    (run / "metrics.jsonl").write_text(json.dumps(redo[0]) + "\n")
    (run / "plots").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 6), (255, 0, 0)).save(run / "plots" / "curves.png")
    with tracking.tracked(["tensorboard"]):
        for rec in redo[1:]:
            with open(run / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            tracking.record(run, rec)
    ea = _events(run / "tensorboard")
    assert [(e.step, e.value) for e in ea.Scalars("loss")] == [(1, 1.0), (2, 0.25),
                                                             (3, 0.125)]
    img = ea.Images("figures/plots/curves")
    assert len(img) == 1 and (img[0].width, img[0].height) == (8, 6)
    assert tracking.active() == ()          # left as found


def test_wandb_offline_run_named_after_the_run_folder(tmp_path, data, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'neurodelay[wandb]')")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))           # no netrc: no account
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    out = tmp_path / "run"
    r = CliRunner().invoke(main, _train_args(out, data, tmp_path, "--log", "wandb"))
    assert r.exit_code == 0, r.output
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((out / "wandb").iterdir())
    want = (str(out.resolve()).encode(), b"valid_acc", b"test_accuracy")  # name, metrics
    t0 = time.monotonic()          # wandb's service may still be flushing the file
    while True:
        blob = next(runs[0].glob("run-*.wandb")).read_bytes()
        if all(w in blob for w in want) or time.monotonic() - t0 > 30:
            break
        time.sleep(0.5)
    assert [w in blob for w in want] == [True] * 3


def test_missing_library_says_how_to_install(tmp_path, data, monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(OptionError, match=r"pip install 'neurodelay\[tensorboard\]'"):
        tracking.check_trackers(["tensorboard"])
    out = tmp_path / "run"
    r = CliRunner().invoke(main, _train_args(out, data, tmp_path, "--log", "tensorboard"))
    assert r.exit_code == 1 and "pip install 'neurodelay[tensorboard]'" in r.output
    assert not out.exists()                               # refused before anything trained
    with pytest.raises(OptionError, match="unknown tracker"):
        tracking.check_trackers("mlflow")


def test_no_tracking_outside_tracked(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    tracking.record(run, {"epoch": 1, "loss": 1.0})
    assert list(run.iterdir()) == []


def test_ablate_and_finetune_log_tensorboard(tmp_path, data):
    """--log on ablate (the runs of this process) and finetune: the same event files."""
    out = tmp_path / "abl"
    args = _train_args(out, data, tmp_path, "--log", "tensorboard")
    args = ["ablate", "--seeds", "1", "--models", "learned", "--no-progress",
            *[a for a in args[1:] if a != "--no-progress"]]
    args[args.index("--epochs") + 1] = "1"
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    run = out / "learned" / "seed0"
    assert [e.step for e in _events(run / "tensorboard").Scalars("valid_acc")] == [1]
    ft = tmp_path / "ft"
    r = CliRunner().invoke(main, ["finetune", str(run), "--out", str(ft), "--epochs", "1",
                                  "--threads", "1", "--calib-samples", "16", "--no-progress",
                                  "--log", "tensorboard"])
    assert r.exit_code == 0, r.output
    ea = _events(ft / "tensorboard")
    assert [e.value for e in ea.Scalars("loss")] == \
        pytest.approx([m["loss"] for m in _metrics(ft)], rel=1e-6)
