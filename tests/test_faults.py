"""Fault suite of issue #13 ("no silent wrong results, no lost runs, no tracebacks").

One test (or a parametrized family) per item of the issue, written against the behaviour
the issue demands, driven through the CLI (``click.testing.CliRunner`` on
``neurodelay.cli.main``, or a real ``python -m neurodelay`` process where a process
matters: kill -9, two writers, memory limits), so the same file runs against the code
before the fixes (commit 0aed8f7, where these tests fail) and after. Names only imported
inside tests where they are new.

Every refusal is checked the same way (:func:`refused`): exit status 1, an ``Error:``
message naming what is wrong (file, option, value), no exception escaping the command
and no "Traceback".
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_checks import cli, refused, train_args

from neurodelay import api
from neurodelay.hw.target import config_dir

PY = sys.executable
HW_CONFIGS = config_dir()          # the built-in target files, as installed
LIMIT_AS = 4 << 30          # address-space cap of the memory-test processes (bytes)


# ------------------------------------------------------------------------------ helpers
def clean_exit(r):
    assert r.exception is None or isinstance(r.exception, SystemExit), \
        f"exception escaped the command: {r.exception!r}\n{r.output}"
    assert "Traceback" not in r.output, r.output
    assert r.exit_code == 0, r.output
    return r.output


def raw_h5(path, times, units, labels, keys=None, speakers=None):
    """An SHD-layout file written with h5py directly (float64 times: any value fits)."""
    with h5py.File(path, "w") as f:
        t = np.empty(len(times), object)
        u = np.empty(len(units), object)
        for i in range(len(times)):
            t[i] = np.asarray(times[i], np.float64)
            u[i] = np.asarray(units[i], np.uint16)
        f.create_dataset("spikes/times", data=t, dtype=h5py.vlen_dtype(np.float64))
        f.create_dataset("spikes/units", data=u, dtype=h5py.vlen_dtype(np.uint16))
        f.create_dataset("labels", data=np.asarray(labels, np.uint16))
        if keys is not None:
            f.create_dataset("extra/keys", data=np.array([k.encode() for k in keys]))
        if speakers is not None:
            f.create_dataset("extra/speaker", data=np.asarray(speakers, np.uint16))
    return Path(path)


def small_samples(n, seed=0, n_classes=3):
    rng = np.random.default_rng(seed)
    times = [np.sort(rng.uniform(0.0, 0.12, 30)) for _ in range(n)]
    units = [rng.integers(0, 700, 30) for _ in range(n)]
    return times, units, np.arange(n) % n_classes


def copy_run(src, dst) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return Path(dst)


def proc_env(work) -> dict:
    env = {**os.environ, "NEURODELAY_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    env.pop("NEURODELAY_DEBUG", None)
    env.pop("NEURODELAY_MAX_GIB", None)
    return env


def run_process(args, work, *, limit_as=None, timeout=300, env=None):
    """``python -m neurodelay ARGS`` as a real process (optionally with an address-space
    cap, so a runaway allocation fails instead of filling the machine)."""
    def cap():
        if limit_as:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    return subprocess.run([PY, "-m", "neurodelay", *map(str, args)], capture_output=True,
                          text=True, env=env or proc_env(work), cwd=work, timeout=timeout,
                          preexec_fn=cap)


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def run(work, data):
    """A finished run (hidden [8], 2 epochs, 3 classes, delay window 25 steps)."""
    out = work / "run"
    clean_exit(cli(*train_args(out, data)))
    return out


@pytest.fixture(scope="module")
def long_run(work, data):
    """A finished run whose delay window (80 steps) exceeds Loihi 2's max delay (62)."""
    out = work / "long"
    clean_exit(cli(*train_args(out, data, "--max-delay", "800", "--epochs", "1")))
    return out


@pytest.fixture(scope="module")
def syn(work):
    """The embedded timing task, small (300 / 60 / 60 samples, ~45 steps)."""
    from neurodelay.data import make_synthetic

    p = make_synthetic(work / "syn", seed=0, sizes={"train": 300, "valid": 60, "test": 60})
    return {k: Path(v) for k, v in p.items()}


def syn_args(out, syn, *extra):
    return ["train", "--out", out, "--train-file", syn["train"], "--valid-file", syn["valid"],
            "--test-file", syn["test"], "--hidden", "8", "--batch-size", "25", "--seed", "2",
            "--threads", "1", "--no-progress", *extra]


@pytest.fixture(scope="module")
def killed(work, syn):
    """(killed run, uninterrupted run): the same training, once killed with SIGKILL in the
    middle of its second epoch (after the first checkpoint), once run to the end."""
    env = proc_env(work)
    full = subprocess.Popen([PY, "-m", "neurodelay", *map(str, syn_args(
        work / "full", syn, "--epochs", "4"))], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, cwd=work)
    out = work / "killed"
    p = subprocess.Popen([PY, "-m", "neurodelay", *map(str, syn_args(out, syn, "--epochs", "4"))],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                         cwd=work)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1:
            break
        time.sleep(0.005)
    assert p.poll() is None, "the run ended before it could be killed"
    time.sleep(0.05)                  # well inside epoch 2
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not (out / "result.json").exists()
    o, e = full.communicate(timeout=600)
    assert full.returncode == 0, e
    return out, work / "full", o


# ====================================================================== 1. verify obeys the target
def _target_file(tmp_path, **changes) -> Path:
    text = (HW_CONFIGS / "loihi2.toml").read_text()
    for key, value in changes.items():
        text, n = re.subn(rf"(?m)^{key}\s*=\s*\S+", f"{key} = {value}", text)
        assert n == 1, key
    path = tmp_path / ("t_" + "_".join(f"{k}{v}" for k, v in changes.items()) + ".toml")
    path.write_text(text)
    return path


def _verdict(r):
    """(exit status, parsed JSON or None) of `verify --json`, with no escaped exception."""
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    try:
        return r.exit_code, json.loads(r.stdout[r.stdout.index("{"):])
    except ValueError:
        return r.exit_code, None


def test_item01_verify_quantizes_with_the_target_files_weight_bits(run, tmp_path):
    """weight_bits = 2 in the target file: never 'passed' with a violated target."""
    t2 = _target_file(tmp_path, weight_bits=2)
    code, got = _verdict(cli("verify", run, "--target", t2, "--json", "--no-progress",
                             "--tolerance", "100"))
    if code == 0:
        assert got is not None and got["passed"] is True
        assert got["resources"]["fits"] is True, "PASS although the target is violated"
        assert int(got["weight_bits"]) <= 2, "quantized wider than the target holds"
    else:
        assert code == 1
        assert got is None or got["passed"] is False
    # a flag may only narrow the target: 8-bit weights on a 2-bit target are refused/FAIL
    r = cli("verify", run, "--target", t2, "--weight-bits", "8", "--no-progress")
    assert r.exit_code == 1 and "Traceback" not in r.output and "PASS" not in r.output, \
        r.output


def test_item01_verify_simulates_the_target_files_state_bits(run, tmp_path):
    """state_bits = 8 must change the verdict or the numbers (24 on Loihi 2)."""
    code24, got24 = _verdict(cli("verify", run, "--json", "--no-progress"))
    assert got24 is not None
    t8 = _target_file(tmp_path, state_bits=8)
    code8, got8 = _verdict(cli("verify", run, "--target", t8, "--json", "--no-progress"))
    if code8 == 0:
        assert got8["resources"]["fits"] is True
        assert (got8["quantized_accuracy"], got8["agreement"]) != \
               (got24["quantized_accuracy"], got24["agreement"]), \
            "an 8-bit state target verified exactly like the 24-bit one"
    else:
        assert code8 == 1 and (got8 is None or got8["passed"] is False)


# ====================================================================== 2. classes of a test file
@pytest.fixture(scope="module")
def six_class_file(work):
    t, u, lab = small_samples(18, seed=4, n_classes=6)
    return raw_h5(work / "six_classes.h5", t, u, lab, keys=[f"k{i}" for i in range(6)])


@pytest.mark.parametrize("command", ["eval", "verify"])
def test_item02_test_file_of_other_classes_is_refused(run, six_class_file, command):
    extra = ["--no-progress"] if command == "verify" else []
    out = refused(cli(command, run, "--test-file", six_class_file, *extra), "six_classes.h5")
    msg = out.replace(str(run), "RUN").replace(str(six_class_file), "FILE")
    assert re.search(r"\b6 classes\b", msg), msg
    assert re.search(r"\b3 (outputs|classes)\b", msg), msg


# ====================================================================== 3. 0 is a value, not "unset"
@pytest.mark.parametrize("option,value", [("--epochs", "0"), ("--batch-size", "0"),
                                          ("--threads", "0"), ("--max-delay", "0"),
                                          ("--max-delay", "-10")])
def test_item03_zero_or_negative_option_is_refused(work, data, option, value):
    out = work / f"o3{option}{value}"
    refused(cli(*train_args(out, data, option, value, "--epochs", "1")
                if option != "--epochs" else train_args(out, data, option, value)),
            f"{option} {value}", "out of range")
    assert not (out / "config.json").exists()


@pytest.mark.parametrize("kw,fragment", [(dict(epochs=0), "--epochs 0"),
                                         (dict(batch_size=0), "--batch-size 0"),
                                         (dict(threads=0), "--threads 0"),
                                         (dict(max_delay_ms=0.0), "--max-delay 0"),
                                         (dict(max_delay_ms=-10.0), "--max-delay -10"),
                                         (dict(hidden=[8, 0]), "--hidden 0"),
                                         (dict(lr=-1e-3), "--lr -0.001")])
def test_item03_library_gives_the_same_option_error(data, tmp_path, kw, fragment):
    out = tmp_path / "r"
    opts = dict(train_file=str(data["train"]), test_file=str(data["test"]), hidden=[8],
                epochs=1, progress=False, log=lambda m: None)
    with pytest.raises(ValueError) as e:
        api.train_run(str(out), **{**opts, **kw})
    assert type(e.value).__name__ == "OptionError"
    assert fragment in str(e.value) and "out of range" in str(e.value)
    assert not out.exists()


# ====================================================================== 4. eval of an unfinished run
def test_item04_eval_of_a_killed_run_says_it_is_unfinished(killed, tmp_path):
    k = copy_run(killed[0], tmp_path / "k")
    r = cli("eval", k, "--json")
    clean_exit(r)
    assert json.loads(r.stdout)["finished"] is False
    assert "unfinished" in r.output.lower() and "--resume" in r.output
    r = cli("eval", k)
    clean_exit(r)
    assert "UNFINISHED" in r.stdout


# ====================================================================== kill -9, then --resume
def test_kill_9_mid_epoch_then_resume_gives_the_uninterrupted_result(killed, work, syn, tmp_path):
    """What must keep holding (it held before the fixes too)."""
    k = copy_run(killed[0], tmp_path / "k")
    p = run_process(["train", "--resume", "--out", k, "--threads", "1", "--no-progress"], work)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    full = killed[1]
    a = json.loads((full / "result.json").read_text())
    b = json.loads((k / "result.json").read_text())
    assert a["test_accuracy"] == b["test_accuracy"] and a["best_epoch"] == b["best_epoch"]
    strip = lambda p_: [{x: y for x, y in json.loads(line).items() if x != "seconds"}
                        for line in (p_ / "metrics.jsonl").read_text().splitlines()]
    assert strip(full) == strip(k)
    sa = torch.load(full / "best.pt", weights_only=False)["model"]
    sb = torch.load(k / "best.pt", weights_only=False)["model"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[n], sb[n]) for n in sa)


# ====================================================================== 5. two writers, one folder
READY_THEN_RUN = ("import sys\nfrom neurodelay.cli import main\nsys.stderr.write('ready\\n')\n"
                  "sys.stderr.flush()\nsys.stdin.readline()\n"
                  "main(sys.argv[1:], prog_name='neurodelay')\n")


def test_item05_second_writer_fails_fast_naming_the_holder(work, syn, tmp_path):
    out = tmp_path / "shared_out"
    env = proc_env(work)

    def start(seed):   # imported and waiting: released below, so timing is not imports'
        p = subprocess.Popen([PY, "-c", READY_THEN_RUN, *map(str, syn_args(
            out, syn, "--epochs", "8", "--seed", str(seed)))], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=work)
        assert p.stderr.readline().strip() == "ready"
        return p

    a, b = start(0), start(1)
    try:
        a.stdin.write("\n")
        a.stdin.flush()
        deadline = time.time() + 120
        lock = out / ".lock"
        while time.time() < deadline and a.poll() is None:
            held = lock.exists() and f'"pid": {a.pid}' in lock.read_text(errors="replace")
            if held or (out / "config.json").exists():
                break
            time.sleep(0.005)
        assert a.poll() is None, "the first writer ended before the second started"
        t0 = time.time()
        b.stdin.write("\n")
        b.stdin.flush()
        b_out, b_err = b.communicate(timeout=120)
        b_secs = time.time() - t0
        a_running = a.poll() is None
        a_out, a_err = a.communicate(timeout=300)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    assert b.returncode == 1, (b_out, b_err)
    assert "Traceback" not in b_err and "Error:" in b_err
    assert f"process {a.pid}" in b_err, b_err             # names the holder
    assert a_running and b_secs < 60
    assert a.returncode == 0, a_err
    res = json.loads((out / "result.json").read_text())
    printed = re.search(r"discrete test accuracy: ([0-9.]+) \(n=(\d+), best epoch (\d+)\)",
                        a_out)
    assert printed, a_out
    assert printed[1] == f"{res['test_accuracy']:.4f}"
    assert int(printed[2]) == res["n_test"] and int(printed[3]) == res["best_epoch"]
    epochs = [json.loads(line)["epoch"] for line in
              (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 9))
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 0


# ====================================================================== 6. no silent overwrite
def test_item06_non_empty_out_is_refused(work, data, run, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    refused(cli(*train_args(user, data)), str(user), "--overwrite")
    assert (user / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in user.iterdir() if p.name != ".lock") == ["notes.txt"]

    done = copy_run(run, tmp_path / "done")
    (done / "checkpoint.pt").unlink()
    before = {p.name: p.read_bytes() for p in done.iterdir() if p.is_file()}
    refused(cli(*train_args(done, data, "--seed", "7")), str(done))
    assert {p.name: p.read_bytes() for p in done.iterdir()
            if p.is_file() and p.name != ".lock"} == before
    # asked explicitly, it is replaced
    clean_exit(cli(*train_args(done, data, "--seed", "7", "--overwrite")))
    assert json.loads((done / "config.json").read_text())["train"]["seed"] == 7


# ====================================================================== 7. clean up
def test_item07a_stale_checkpoint_temp_file_is_removed(killed, tmp_path):
    k = copy_run(killed[0], tmp_path / "k")
    stale = k / ".checkpoint.pt.x1y2z3ab.tmp"     # what a kill mid-checkpoint-write leaves
    stale.write_bytes(b"half a checkpoint")
    clean_exit(cli("train", "--resume", "--out", k, "--no-progress"))
    assert not list(k.glob(".*.tmp")), list(k.glob(".*.tmp"))
    assert (k / "result.json").exists()


def test_item07b_refused_export_leaves_no_output_folder(run, long_run, tmp_path):
    # delays above Loihi 2's 62 steps without --clip-delays: refused
    dest = tmp_path / "new" / "loihi2"
    r = cli("export", long_run, "--target", "loihi2", "--out", dest / "net.h5")
    refused(r, "delay")
    assert not (tmp_path / "new").exists(), list((tmp_path / "new").rglob("*"))
    # a run whose model file is garbage: refused
    broken = copy_run(run, tmp_path / "broken")
    (broken / "best.pt").write_bytes(b"\x00garbage" * 64)
    dest = tmp_path / "new2" / "nir"
    refused(cli("export", broken, "--target", "nir", "--out", dest / "net.nir"), "best.pt")
    assert not (tmp_path / "new2").exists()


# ====================================================================== 8. damaged run files
def _damage(path: Path, how: str) -> None:
    if how == "zero-byte":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    elif how == "broken-json":
        path.write_text('{"model": {"n_inputs": 140, ')
    elif how == "empty-object":
        path.write_text("{}")


@pytest.mark.parametrize("name,how,command", [
    ("best.pt", "zero-byte", "eval"), ("best.pt", "truncated", "eval"),
    ("best.pt", "garbage", "eval"),
    ("checkpoint.pt", "zero-byte", "resume"), ("checkpoint.pt", "truncated", "resume"),
    ("checkpoint.pt", "garbage", "resume"),
    ("config.json", "zero-byte", "eval"), ("config.json", "broken-json", "eval"),
    ("config.json", "empty-object", "eval"), ("config.json", "garbage", "eval"),
    ("config.json", "broken-json", "resume"), ("config.json", "empty-object", "resume"),
])
def test_item08a_damaged_run_file_is_named(run, tmp_path, name, how, command):
    r_ = copy_run(run, tmp_path / "r")
    _damage(r_ / name, how)
    args = ["eval", r_] if command == "eval" else ["train", "--resume", "--out", r_,
                                                   "--no-progress"]
    refused(cli(*args), str(r_ / name))


def test_item08b_report_names_a_garbage_result_json(run, tmp_path):
    """Decision: the report skips that run with a visible note naming the file and why
    (one broken run must not hide the others); with no readable run it is an error."""
    root = tmp_path / "study"
    copy_run(run, root / "good")
    bad = copy_run(run, root / "bad")
    _damage(bad / "result.json", "garbage")
    r = cli("report", root)
    out = clean_exit(r)
    assert str(bad / "result.json") in out and "skipped" in out
    assert "UTF-8" in out or "not valid JSON" in out
    assert "| 1 |" in r.stdout                         # the good run is reported
    shutil.rmtree(root / "good")
    refused(cli("report", root), str(bad / "result.json"))


# ====================================================================== 9. zero samples
def test_item09_data_file_without_samples_is_named(work, data, run, tmp_path):
    empty = raw_h5(tmp_path / "empty.h5", [], [], [], keys=["a", "b", "c"])
    refused(cli("eval", run, "--test-file", empty), "empty.h5", "no samples")
    out = tmp_path / "t"
    refused(cli("train", "--out", out, "--train-file", empty, "--test-file", data["test"],
                "--hidden", "8", "--epochs", "1", "--no-progress"), "empty.h5", "no samples")
    assert not out.exists()
    # a speaker split that leaves no training sample
    t, u, lab = small_samples(12)
    one = raw_h5(tmp_path / "one_speaker.h5", t, u, lab, keys=["a", "b", "c"],
                 speakers=[7] * 12)
    refused(cli("train", "--out", out, "--train-file", one, "--test-speakers", "7",
                "--hidden", "8", "--epochs", "1", "--no-progress"), "one_speaker.h5",
            "no training samples")
    assert not out.exists()


# ====================================================================== 10. crashes on bad values
@pytest.mark.parametrize("option,value", [("--hidden", "0"), ("--threads", "-1"),
                                          ("--dropout", "1.5"), ("--tau", "0")])
def test_item10_bad_value_is_refused_before_anything_is_written(work, data, option, value):
    out = work / f"o10{option}{value}"
    refused(cli(*train_args(out, data, option, value)), f"{option} {value}")
    assert not out.exists() or not any(p.name != ".lock" for p in out.iterdir())


# ====================================================================== 11. bounded memory
def test_item11_one_spike_at_1e5_seconds_is_refused_before_allocating(work, run, tmp_path):
    t, u, lab = small_samples(6)
    t[2], u[2] = np.append(t[2], 1e5), np.append(u[2], 3)
    f = raw_h5(tmp_path / "late_spike.h5", t, u, lab, keys=["a", "b", "c"])
    p = run_process(["eval", run, "--test-file", f], work, limit_as=LIMIT_AS)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and "MemoryError" not in p.stderr, p.stderr
    for fragment in ("late_spike.h5", "GiB", "--max-time", "NEURODELAY_MAX_GIB"):
        assert fragment in p.stderr, p.stderr


def test_item11_huge_delay_window_is_refused_before_allocating(work, data, tmp_path):
    out = tmp_path / "huge"
    p = run_process(train_args(out, data, "--max-delay", "1e7"), work, limit_as=LIMIT_AS)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and "MemoryError" not in p.stderr, p.stderr
    for fragment in ("GiB", "--max-delay", "NEURODELAY_MAX_GIB"):
        assert fragment in p.stderr, p.stderr
    assert not out.exists()


def test_item11_limit_is_set_by_neurodelay_max_gib(run):
    clean_exit(cli("eval", run))
    refused(cli("eval", run, env={"NEURODELAY_MAX_GIB": "0.00001"}), "GiB",
            "NEURODELAY_MAX_GIB")
    refused(cli("eval", run, env={"NEURODELAY_MAX_GIB": "lots"}), "NEURODELAY_MAX_GIB='lots'")


def test_item11_normal_shd_and_ssc_use_is_within_the_limit():
    """The guard must not refuse the paper's settings on full SHD / SSC / SSHD."""
    from neurodelay.options import DEFAULT_MAX_GIB, GIB, binned_bytes, model_memory_bytes

    limit = DEFAULT_MAX_GIB * GIB
    # SHD train: 8156 samples of <= 1.4 s (140 steps at 10 ms), about 100 steps on average
    assert binned_bytes(8156 * 100, 140) * 3 < limit / 4
    # SSC train: 75466 samples of <= 1 s
    assert binned_bytes(75466 * 100, 140) * 2 < limit
    shd = model_memory_bytes(140, [256, 256], 20, 25, 256, 140, training=True)
    ssc = model_memory_bytes(140, [512, 512], 35, 31, 128, 100, training=True)
    assert shd < limit / 4 and ssc < limit / 4
    assert model_memory_bytes(140, [256, 256], 20, 25, 256, 140, training=False) < limit / 4
    assert model_memory_bytes(140, [512, 512], 35, 31, 256, 100, training=False) < limit / 2


# ====================================================================== 12. export targets
def test_item12_export_accepts_a_target_toml_path(run, tmp_path):
    target = tmp_path / "my_loihi2.toml"
    target.write_text((HW_CONFIGS / "loihi2.toml").read_text())
    dest = tmp_path / "x" / "net.h5"
    clean_exit(cli("export", run, "--target", target, "--out", dest))
    assert dest.exists()


def test_item12_nir_quantized_export_honours_clip_delays(long_run, tmp_path):
    dest = tmp_path / "q.nir"
    clean_exit(cli("export", long_run, "--target", "nir", "--variant", "quantized",
                   "--clip-delays", "--out", dest))
    assert dest.exists()


# ====================================================================== 13. global state
def test_item13a_train_run_leaves_global_state_as_found(data, tmp_path):
    before_threads = torch.get_num_threads()
    other = 3 if before_threads != 3 else 2
    torch.set_num_threads(other)
    try:
        torch.manual_seed(1234)
        np.random.seed(4321)
        rng_t, rng_n = torch.get_rng_state(), np.random.get_state()
        res = api.train_run(str(tmp_path / "r"), threads=1, train_file=str(data["train"]),
                            test_file=str(data["test"]), hidden=[8], epochs=1,
                            progress=False, log=lambda m: None)
        assert res["finished"]
        assert torch.get_num_threads() == other
        assert torch.equal(torch.get_rng_state(), rng_t)
        after = np.random.get_state()
        assert after[0] == rng_n[0] and np.array_equal(after[1], rng_n[1]) \
            and after[2:] == rng_n[2:]
        # reference-kernel training flushes denormals inside only
        torch.set_flush_denormal(False)
        api.train_run(str(tmp_path / "ref"), train_file=str(data["train"]),
                      test_file=str(data["test"]), hidden=[8], epochs=1,
                      reference_kernels=True, progress=False, log=lambda m: None)
        assert float(torch.tensor([1e-39], dtype=torch.float32).mul(1.0)[0]) != 0.0
    finally:
        torch.set_num_threads(before_threads)
        torch.set_flush_denormal(False)


def test_item13b_training_does_not_depend_on_earlier_callers_thread_settings(data, tmp_path):
    """The suite's shared fixtures must train the same model whatever earlier tests did
    with the library: a call with threads=1 may not leak into the next call."""
    kw = dict(train_file=str(data["train"]), test_file=str(data["test"]), hidden=[8],
              epochs=1, seed=3, progress=False, log=lambda m: None)
    before = torch.get_num_threads()
    try:
        a = api.train_run(str(tmp_path / "a"), **kw)
        api.train_run(str(tmp_path / "x"), threads=1, **kw)
        assert torch.get_num_threads() == before
        b = api.train_run(str(tmp_path / "b"), **kw)
    finally:
        torch.set_num_threads(before)
    assert a["test_accuracy"] == b["test_accuracy"]
    ma = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    mb = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(ma[0])["loss"] == json.loads(mb[0])["loss"]


# ====================================================================== no traceback, anywhere
def _bad_inputs(name, work, data, run, six_class_file, tmp_path):
    """(args, fragments that the message must hold, paths that must not appear)."""
    t_out = tmp_path / "out"
    if name.startswith("train "):
        opt, val = name.split()[1:]
        return train_args(t_out, data, opt, val), [f"{opt} {val}"], [t_out / "config.json"]
    if name == "eval zero-sample file":
        empty = raw_h5(tmp_path / "empty.h5", [], [], [], keys=["a", "b", "c"])
        return ["eval", run, "--test-file", empty], ["empty.h5"], []
    if name == "eval other classes":
        return ["eval", run, "--test-file", six_class_file], ["six_classes.h5"], []
    if name.startswith("eval damaged "):
        fname, how = name.split()[2:]
        r_ = copy_run(run, tmp_path / "r")
        _damage(r_ / fname, how)
        return ["eval", r_], [fname], []
    if name.startswith("resume damaged "):
        fname, how = name.split()[2:]
        r_ = copy_run(run, tmp_path / "r")
        _damage(r_ / fname, how)
        return ["train", "--resume", "--out", r_, "--no-progress"], [fname], []
    if name == "eval --batch-size 0":
        return ["eval", run, "--batch-size", "0"], ["--batch-size 0"], []
    if name == "ablate --seeds 0":
        return ["ablate", "--out", t_out, "--seeds", "0", "--train-file", data["train"],
                "--test-file", data["test"], "--hidden", "8", "--no-progress"], \
            ["--seeds", "0"], [t_out / "ablation.json"]
    if name == "ablate --epochs 0":
        return ["ablate", "--out", t_out, "--seeds", "1", "--epochs", "0", "--train-file",
                data["train"], "--test-file", data["test"], "--hidden", "8",
                "--no-progress"], ["--epochs 0"], [t_out / "ablation.json"]
    if name == "plot --synapses 0":
        r_ = copy_run(run, tmp_path / "r")
        return ["plot", r_, "--synapses", "0"], ["--synapses 0"], [r_ / "plots"]
    if name == "plot --sample 9999":
        r_ = copy_run(run, tmp_path / "r")
        return ["plot", r_, "--sample", "9999"], ["--sample 9999"], [r_ / "plots"]
    if name == "sweep-bits --calib-samples 0":
        r_ = copy_run(run, tmp_path / "r")
        return ["sweep-bits", r_, "--calib-samples", "0", "--no-progress"], \
            ["--calib-samples", "0"], [r_ / "sweep"]
    raise KeyError(name)


BAD_INPUTS = [
    *(f"train {o} {v}" for o, v in [
        ("--epochs", "0"), ("--batch-size", "0"), ("--threads", "0"), ("--threads", "-1"),
        ("--max-delay", "0"), ("--max-delay", "-10"), ("--max-delay", "10"),
        ("--hidden", "0"), ("--dropout", "1.5"), ("--dropout", "-0.1"), ("--tau", "0"),
        ("--tau", "5"), ("--dt", "0"), ("--channel-bin", "0"), ("--channel-bin", "3"),
        ("--max-time", "0"), ("--connections", "0"), ("--threshold", "0"),
        ("--seed", "-1"), ("--lr", "-1"), ("--max-lr", "nan"),
        ("--position-lr-factor", "-1")]),
    "eval zero-sample file", "eval other classes", "eval --batch-size 0",
    *(f"eval damaged {f} {h}" for f, h in [("best.pt", "zero-byte"), ("best.pt", "garbage"),
                                           ("config.json", "empty-object"),
                                           ("config.json", "broken-json")]),
    *(f"resume damaged {f} {h}" for f, h in [("checkpoint.pt", "zero-byte"),
                                             ("checkpoint.pt", "truncated")]),
    "ablate --seeds 0", "ablate --epochs 0", "plot --synapses 0", "plot --sample 9999",
    "sweep-bits --calib-samples 0",
]


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_no_command_prints_a_traceback(name, work, data, run, six_class_file, tmp_path):
    args, fragments, absent = _bad_inputs(name, work, data, run, six_class_file, tmp_path)
    refused(cli(*args), *fragments)
    for p in absent:
        assert not Path(p).exists(), f"{p} was written although the input was refused"
