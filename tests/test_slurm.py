"""Studies on executors, against a REAL single-node Slurm (tests/slurm_cluster.py), no mock.

* a 2-model x 2-seed tiny ablation gives the same numbers sequentially (in this
  process), through ``--executor local --jobs 2`` and through ``--executor slurm``;
* ``scancel`` of a running cell, then re-issuing the command, resumes the cell from its
  checkpoint to the result of an uninterrupted run;
* a failing cell is reported with the path of its log while the others finish, and
  ``neurodelay report`` shows every cell's state.

Skipped (with the reason printed) only where slurmctld/munged are not installed or the
tests do not run as root; ``.ci/run`` installs them.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import slurm_cluster
from click.testing import CliRunner

from neurodelay.cli import main
from neurodelay.research import executors, study

MODELS = ["learned", "fixed-random"]
SLURM = dict(executor="slurm", cpus=1, time_min=10, poll_s=1.0)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    why = slurm_cluster.missing()
    if why:
        print(f"\nSKIP Slurm tests: {why}")
        pytest.skip(why)
    c = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(c.conf)          # sbatch/squeue here and in the jobs
    try:
        yield c
    finally:
        c.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def _opts(tmp: Path, data: dict, **over) -> dict:
    return {**dict(train_file=str(data["train"]), test_file=str(data["test"]), hidden=[8],
                   epochs=2, batch_size=32, max_delay_ms=50.0, threads=1,
                   cache_dir=str(tmp / "cache")), **over}


def _numbers(out: Path, cells) -> dict:
    """Per cell: its test accuracy and every metrics record without the timings."""
    res = {}
    for cell in cells:
        run = out / cell
        metrics = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                   for line in (run / "metrics.jsonl").read_text().splitlines()]
        res[cell] = (json.loads((run / "result.json").read_text())["test_accuracy"], metrics)
    return res


CELLS = [f"{m}/seed{s}" for s in (0, 1) for m in MODELS]


@pytest.fixture(scope="module")
def three_ways(cluster, tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("three")
    opts = _opts(tmp, data)
    quiet = lambda m: None  # noqa: E731
    seq = study.run_ablation(tmp / "seq", 2, models=MODELS, progress=False, log=quiet, **opts)
    loc = study.run_ablation(tmp / "loc", 2, models=MODELS, progress=False, log=quiet,
                             executor=dict(executor="local", jobs=2), **opts)
    slu = study.run_ablation(tmp / "slu", 2, models=MODELS, progress=False, log=quiet,
                             executor=SLURM, trackers=["tensorboard"], **opts)
    return tmp, (seq, loc, slu)


def test_slurm_local_and_sequential_give_the_same_numbers(three_ways):
    tmp, (seq, loc, slu) = three_ways
    assert [r["action"] for r in seq] == ["trained"] * 4
    assert [r["action"] for r in loc] == ["done"] * 4
    assert [r["action"] for r in slu] == ["done"] * 4
    ref = _numbers(tmp / "seq", CELLS)
    assert _numbers(tmp / "loc", CELLS) == ref
    assert _numbers(tmp / "slu", CELLS) == ref
    # the study folder records which job ran which cell
    rec = executors.read_record(tmp / "slu")["cells"]
    jobs = {c: rec[c]["attempts"][-1]["job"] for c in CELLS}
    assert len(set(jobs.values())) == 4 and all("_" in j for j in jobs.values())  # an array
    assert all(rec[c]["attempts"][-1]["state"] == "finished" for c in CELLS)
    assert all(Path(rec[c]["attempts"][-1]["log"]).exists() for c in CELLS)
    local = executors.read_record(tmp / "loc")["cells"]
    assert all(local[c]["attempts"][-1]["job"].startswith("pid ") for c in CELLS)
    # --log went with the cells into their jobs: event files in every run folder
    for c in CELLS:
        assert list((tmp / "slu" / c / "tensorboard").glob("events.out.tfevents.*")), c


def test_reissue_skips_finished_and_refuses_changed_options(three_ways, data):
    tmp, _ = three_ways
    opts = _opts(tmp, data)
    res = study.run_ablation(tmp / "slu", 2, models=MODELS, progress=False,
                             log=lambda m: None, executor=SLURM, **opts)
    assert [r["action"] for r in res] == ["skipped"] * 4
    with pytest.raises(study.AblationError, match=r"--epochs: 2 -> 3.*--lr: \(default\) -> "
                                                  r"0.002"):
        study.run_ablation(tmp / "slu", 2, models=MODELS, progress=False,
                           executor=SLURM, **{**opts, "epochs": 3, "lr": 0.002})


def _wait_for(ok, timeout, what):
    t0 = time.monotonic()
    while not ok():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)


REMAINING_S = 15.0    # training time left when a job is signalled: > Slurm's ~5 s to kill


@pytest.fixture(scope="module")
def long_ref(tmp_path_factory, data):
    """The long cell's options and the numbers of its uninterrupted run. Its epochs are
    counted so that training takes about REMAINING_S on this machine (measured on a short
    run first): long enough that a signalled job never finishes before it dies, without
    taking longer than needed on a fast machine."""
    tmp = tmp_path_factory.mktemp("long")
    quiet = lambda m: None  # noqa: E731
    probe = study.run_ablation(tmp / "probe", 1, models=["learned"], progress=False,
                               log=quiet, **_opts(tmp, data, epochs=20))
    seconds = sum(m["seconds"] for m in _metrics(Path(probe[0]["run"])))
    epochs = max(100, min(5000, int(REMAINING_S * 20 / max(seconds, 1e-3))))
    opts = _opts(tmp, data, epochs=epochs)
    ref = study.run_ablation(tmp / "ref", 1, models=["learned"], progress=False, log=quiet,
                             **opts)
    assert ref[0]["action"] == "trained"
    return opts, _numbers(tmp / "ref", ["learned/seed0"])


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _start_long_cell(out: Path, opts: dict):
    """Submit the long cell (not waiting) and wait for its first epoch."""
    sub = study.run_ablation(out, 1, models=["learned"], progress=False, log=lambda m: None,
                             executor={**SLURM, "wait": False}, **opts)
    assert sub[0]["action"] == "submitted"
    job, run = sub[0]["job"], out / "learned" / "seed0"
    metrics = run / "metrics.jsonl"
    _wait_for(lambda: metrics.exists() and metrics.read_text().strip(), 120,
              "the cell's first epoch")
    return job, run


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_preempted_then_cancelled_cell_resumes_to_the_same_result(cluster, tmp_path,
                                                                  long_ref):
    """One cell, interrupted twice, ends with the numbers of the uninterrupted run:

    1. the signal Slurm sends a job before its time limit or a preemption (USR2, what
       submitit asks sbatch for): submitit calls the cell's checkpoint hook and requeues
       the job, which resumes the run from its checkpoint;
    2. ``scancel`` of the running job: the cell is reported failed with its log, and
       re-issuing the command resumes it in a new job.
    """
    opts, ref = long_ref
    quiet = lambda m: None  # noqa: E731
    out = tmp_path / "abl"
    job, run = _start_long_cell(out, opts)
    metrics = run / "metrics.jsonl"
    cluster.run("scancel", "--signal=USR2", job)

    def requeued():
        info = cluster.run("scontrol", "show", "job", job)
        return "Restarts=1" in info and "JobState=PENDING" in info
    _wait_for(requeued, 60, "the job to be requeued")
    assert not (run / "result.json").exists(), "the cell finished before the USR2 signal"
    assert [s["state"] for s in executors.cell_states(out, ["learned/seed0"])] == ["pending"]
    at_requeue = _lines(metrics)
    # Slurm holds a requeued job back for about two minutes; let it start now
    cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    _wait_for(lambda: _lines(metrics) > at_requeue, 120, "the requeued job to train")
    assert [s["state"] for s in executors.cell_states(out, ["learned/seed0"])] == ["running"]
    cluster.run("scancel", job)
    _wait_for(lambda: not executors._alive(executors.squeue_states([job]), job), 60,
              "the cancelled job to end")
    assert not (run / "result.json").exists(), "the cell finished before scancel took effect"
    assert 1 <= _lines(metrics) < opts["epochs"]
    first_log = Path(executors.read_record(out)["cells"]["learned/seed0"]["attempts"][-1]
                     ["log"])
    log = first_log.read_text()
    assert "Caught signal SIGUSR2" in log and "requeued, it resumes" in log
    assert "resuming from its checkpoint" in log, log[-2000:]     # the requeued job
    states = executors.cell_states(out, study.study_cells(out))
    assert [(s["state"], s["log"]) for s in states] == [("failed", str(first_log))]
    # re-issuing the same command resumes the cell from its checkpoint in a new job
    res = study.run_ablation(out, 1, models=["learned"], progress=False, log=quiet,
                             executor=SLURM, **opts)
    assert res[0]["action"] == "done" and res[0]["job"] != job
    log = Path(res[0]["log"]).read_text()
    assert "resuming from its checkpoint" in log, log[-2000:]
    # ... from where the cancelled job stopped: the epochs already done are not trained again
    first = re.search(r"^epoch +(\d+)/", log, re.M)
    assert first and int(first[1]) > at_requeue, log[:2000]
    assert _numbers(out, ["learned/seed0"]) == ref
    att = executors.read_record(out)["cells"]["learned/seed0"]["attempts"]
    assert [a["job"] for a in att] == [job, res[0]["job"]]


def test_failing_cell_is_reported_with_its_log_and_the_others_finish(cluster, tmp_path,
                                                                      data):
    out = tmp_path / "abl"
    bad = out / "fixed-random" / "seed0"
    bad.mkdir(parents=True)
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")    # resumed -> fails
    args = ["ablate", "--out", str(out), "--seeds", "1", "--models", ",".join(MODELS),
            "--no-progress", "--train-file", str(data["train"]), "--test-file",
            str(data["test"]), "--hidden", "8", "--epochs", "1", "--batch-size", "32",
            "--max-delay", "50", "--threads", "1", "--cache-dir", str(tmp_path / "cache"),
            "--executor", "slurm", "--slurm-cpus", "1", "--slurm-time", "10"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    rec = executors.read_record(out)["cells"]
    log = rec["fixed-random/seed0"]["attempts"][-1]["log"]
    assert f"log: {log}" in r.output and "1 of 2 runs failed" in r.output
    assert "not a neurodelay run folder" in Path(log).read_text()   # the job's own error
    assert (out / "learned" / "seed0" / "result.json").exists()
    assert "| Learned delays |" in r.output               # the report of what finished
    r = CliRunner().invoke(main, ["report", str(out)])
    assert r.exit_code == 0, r.output
    assert "| learned/seed0 | finished |" in r.output
    assert f"| fixed-random/seed0 | failed | {rec['fixed-random/seed0']['attempts'][-1]['job']} " \
           f"| {log}: " in r.output


def test_slurm_executor_errors_are_specific(tmp_path, monkeypatch):
    from neurodelay.errors import OptionError

    with pytest.raises(OptionError, match="--jobs is for --executor local"):
        executors.ExecutorOptions.of(dict(executor="slurm", jobs=2))
    with pytest.raises(OptionError, match="KEY=VALUE"):
        executors.parse_extra(["=x"])
    assert executors.parse_extra(["qos=high", "--exclusive"]) == {"qos": "high",
                                                                  "exclusive": True}
    monkeypatch.setenv("PATH", str(tmp_path))                    # no sbatch on PATH
    with pytest.raises(OptionError, match="sbatch not found"):
        executors.run_cells(tmp_path / "s", [executors.Cell("a", "ablation", {})],
                            executors.ExecutorOptions.of("slurm"))


def test_squeue_reads_array_tasks(cluster, tmp_path):
    out = cluster.run("sbatch", "--array=0-1", "-o", str(tmp_path / "%A_%a.out"),
                      "--wrap", "sleep 1")
    jid = out.split()[-1]
    _wait_for(lambda: all(not executors._alive(executors.squeue_states([f"{jid}_{i}"]),
                                                f"{jid}_{i}") for i in (0, 1)), 60,
              "the array to end")
    st = executors.squeue_states([f"{jid}_0", f"{jid}_1"])
    assert st == {f"{jid}_0": "COMPLETED", f"{jid}_1": "COMPLETED"}


def test_local_jobs_failing_cell_is_reported_with_its_log(tmp_path, data):
    """The same isolation without Slurm: --executor local --jobs 2."""
    out = tmp_path / "abl"
    bad = out / "fixed-random" / "seed0"
    bad.mkdir(parents=True)
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    res = study.run_ablation(out, 1, models=MODELS, progress=False, log=lambda m: None,
                             executor=dict(executor="local", jobs=2), **_opts(tmp_path, data))
    by = {r["model"]: r for r in res}
    assert by["learned"]["action"] == "done" and by["learned"]["test_accuracy"] is not None
    assert by["fixed-random"]["action"] == "failed"
    log = Path(by["fixed-random"]["log"])
    assert log == out / "jobs" / "local" / "fixed-random__seed0.log"
    assert "not a neurodelay run folder" in by["fixed-random"]["error"]
    assert "not a neurodelay run folder" in log.read_text()          # the worker's own error
    states = {s["cell"]: s for s in executors.cell_states(out, study.study_cells(out))}
    assert states["fixed-random/seed0"]["state"] == "failed"
    assert states["fixed-random/seed0"]["log"] == str(log)
    assert states["learned/seed0"]["state"] == "finished"
