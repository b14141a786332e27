"""Security suite of issue #19: files and folders from someone else must never run code,
read or write outside the folder the user named, or exhaust the machine.

Every test plays the hostile (or careless) sender: it builds the input, runs the command
the receiver would run (through the CLI, ``CliRunner`` on ``neurodelay.cli.main``, or a
real process where signals matter) and checks two things: a clean refusal (exit 1, one
``Error:`` paragraph naming the file and the problem, no traceback) AND the proof that the
attack did not happen (a marker file a payload would write is absent, the file outside
the folder is untouched, the process stayed under a memory cap).
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

from neurodelay.data import write_shd_file
from neurodelay.hw.target import config_dir

PY = sys.executable
HW_CONFIGS = config_dir()          # the built-in target files, as installed
LIMIT_AS = 3 << 30          # address-space cap of the memory-bomb processes (bytes)


def ok(r):
    assert r.exit_code == 0, r.output
    return r.output


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def run(work, data):
    out = work / "run"
    ok(cli(*train_args(out, data)))
    return out


def partial_run(full: Path, out: Path, epochs_done: int) -> Path:
    """The run of ``full``'s config.json, interrupted after ``epochs_done`` epochs."""
    from neurodelay.data import DataConfig
    from neurodelay.train.model import ModelConfig
    from neurodelay.train.trainer import TrainConfig, train

    cfg = json.loads((full / "config.json").read_text())
    train(out, ModelConfig(**cfg["model"]), TrainConfig(**cfg["train"]),
          DataConfig(**cfg["data"]), progress=False, stop_after_epoch=epochs_done,
          log=lambda m: None)
    return out


def copy_run(run, dst) -> Path:
    shutil.copytree(run, dst, symlinks=True)
    return Path(dst)


# ------------------------------------------------------------- checkpoints carry no code
class _Payload:
    """Unpickling this runs ``touch MARKER`` (what a hostile checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _poison(path: Path, marker: Path) -> None:
    ck = torch.load(path, weights_only=False)
    ck["extra"] = _Payload(marker)
    torch.save(ck, path)


COMMANDS = [["eval", "{run}"], ["export", "{run}", "--target", "loihi2"],
            ["inspect", "{run}", "--target", "loihi2"],
            ["verify", "{run}", "--target", "loihi2", "--no-progress"],
            ["finetune", "{run}", "--epochs", "1", "--out", "{run}-ft", "--no-progress"],
            ["plot", "{run}"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
def test_pickle_payload_in_best_pt_never_runs(run, tmp_path, cmd):
    victim = copy_run(run, tmp_path / "victim")
    marker = tmp_path / "PWNED"
    _poison(victim / "best.pt", marker)
    r = cli(*[a.format(run=victim) for a in cmd])
    refused(r, "best.pt", "refused", "posix.system")
    assert not marker.exists(), "the pickled payload ran"


def test_pickle_payload_in_checkpoint_pt_never_runs(run, tmp_path, data):
    victim = copy_run(run, tmp_path / "victim")
    marker = tmp_path / "PWNED"
    _poison(victim / "checkpoint.pt", marker)
    (victim / "result.json").unlink()     # an interrupted run: --resume reads checkpoint.pt
    r = cli("train", "--resume", "--out", victim, "--no-progress")
    refused(r, "checkpoint.pt", "refused")
    assert not marker.exists(), "the pickled payload ran"


def test_old_format_checkpoint_still_resumes(work, data, tmp_path):
    """Checkpoints written before the safe loader kept numpy's RNG state as a numpy
    tuple; they pass the safe loader (numpy's uint32 array only) and resume."""
    out = tmp_path / "old"
    ok(cli(*train_args(out, data, "--epochs", "3")))
    full = json.loads((out / "result.json").read_text())
    # make it an old-format run interrupted after 2 epochs: retrain 2 epochs, then put
    # the numpy tuple where the checkpoint now keeps plain numbers
    out2 = partial_run(out, tmp_path / "old2", 2)
    ck = torch.load(out2 / "checkpoint.pt", weights_only=True)
    s = ck["rng"]["numpy"]
    ck["rng"]["numpy"] = (s["name"], s["key"].numpy().astype(np.uint32), s["pos"],
                          s["has_gauss"], s["cached_gaussian"])
    torch.save(ck, out2 / "checkpoint.pt")
    ok(cli("train", "--resume", "--out", out2, "--no-progress"))
    again = json.loads((out2 / "result.json").read_text())
    assert again["test_accuracy"] == full["test_accuracy"]
    assert again["best_valid_accuracy"] == full["best_valid_accuracy"]


# ------------------------------------------------------------- 1. target name traversal
@pytest.mark.parametrize("name", ["../../X", "/tmp/abs-target", "a/b", ".."])
def test_target_name_cannot_leave_the_deploy_folder(run, tmp_path, name):
    victim = copy_run(run, tmp_path / "deep" / "er" / "victim")
    text = (HW_CONFIGS / "loihi2.toml").read_text()
    text = re.sub(r'(?m)^name = "loihi2"', f'name = "{name}"', text)
    assert f'name = "{name}"' in text
    toml = tmp_path / "t.toml"
    toml.write_text(text)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = cli("export", victim, "--target", toml)
    refused(r, "t.toml", "name", "plain target name")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/abs-target").exists()


# ------------------------------------------------------------- 2. links and external data
def _shd_like(path, n=12, labels=None, keys=None, extra=None):
    """A small valid SHD-layout file; ``extra(f)`` may add hostile objects."""
    rng = np.random.default_rng(0)
    times = [np.sort(rng.uniform(0, 0.1, 20)).astype(np.float16) for _ in range(n)]
    units = [rng.integers(0, 700, 20).astype(np.uint16) for _ in range(n)]
    labels = np.arange(n) % 3 if labels is None else labels
    with h5py.File(path, "w") as f:
        vt, vu = h5py.vlen_dtype(np.float16), h5py.vlen_dtype(np.uint16)
        f.create_dataset("spikes/times", (n,), dtype=vt)[...] = times
        f.create_dataset("spikes/units", (n,), dtype=vu)[...] = units
        if labels is not False:
            f["labels"] = labels
        if keys is not None:
            f["extra/keys"] = keys
        if extra is not None:
            extra(f)
    return path


def test_data_file_with_external_storage_is_refused(run, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET-LINE:/root:/bin/bash\n" * 30)

    def hostile(f):
        f["extra"].create_dataset("keys", (3,), "S40", external=[(str(secret), 0, 120)])

    bad = _shd_like(tmp_path / "ext.h5", extra=lambda f: (f.create_group("extra"), hostile(f)))
    r = cli("eval", run, "--test-file", bad)
    out = refused(r, "ext.h5", "extra/keys", "external file")
    assert "SECRET-LINE" not in out
    r = cli(*train_args(tmp_path / "r", {"train": bad, "test": bad}))
    refused(r, "external file")
    assert not (tmp_path / "r" / "config.json").exists()


@pytest.mark.parametrize("link", ["external", "soft"])
def test_data_file_with_links_is_refused(run, tmp_path, link):
    other = _shd_like(tmp_path / "other.h5")

    def hostile(f):
        del f["labels"]
        f["labels"] = (h5py.ExternalLink(str(other), "/labels") if link == "external"
                       else h5py.SoftLink("/spikes/units"))

    bad = _shd_like(tmp_path / "l.h5", extra=hostile)
    refused(cli("eval", run, "--test-file", bad), "l.h5", "labels", f"{link} link")


def test_nir_file_with_external_link_weight_is_refused(tmp_path):
    import nir

    w = np.ones((4, 3))
    g = nir.NIRGraph.from_list(nir.Affine(weight=w, bias=np.zeros(4)),
                               nir.LIF(tau=np.full(4, 0.01), r=np.ones(4), v_leak=np.zeros(4),
                                       v_threshold=np.ones(4)))
    nir.write(tmp_path / "a.nir", g)
    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as f:
        f["w"] = np.full((4, 3), 7.0)
    with h5py.File(tmp_path / "a.nir", "r+") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if n.endswith("/weight") else None)
        assert names
        del f[names[0]]
        f[names[0]] = h5py.ExternalLink(str(outside), "/w")
    r = cli("import-nir", tmp_path / "a.nir", "--dt", "0.001", "--out", tmp_path / "imp")
    refused(r, "a.nir", "external link", "outside.h5")
    assert not (tmp_path / "imp" / "network.h5").exists()


def test_quantized_network_linked_out_is_refused(run, tmp_path):
    victim = copy_run(run, tmp_path / "victim")
    ok(cli("export", victim, "--target", "loihi2"))
    q = victim / "deploy" / "loihi2" / "network.qnet.h5"
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not hdf5 at all" * 10)
    with h5py.File(q, "r+") as f:
        del f["layers/0/weight"]
        f["layers/0/weight"] = h5py.ExternalLink(str(junk), "/w")
    refused(cli("verify", victim, "--target", "loihi2", "--no-progress"), "network.qnet.h5",
            "external link")


def test_deploy_report_file_names_cannot_leave_the_artifact(run, tmp_path):
    victim = copy_run(run, tmp_path / "victim")
    ok(cli("export", victim, "--target", "loihi2"))
    art = victim / "deploy" / "loihi2"
    outside = tmp_path / "elsewhere.h5"
    shutil.copy(art / "network.qnet.h5", outside)
    rep = json.loads((art / "deploy.json").read_text())
    rep["files"]["qnet"] = "../../../elsewhere.h5"
    (art / "deploy.json").write_text(json.dumps(rep))
    refused(cli("verify", "--artifact", art, "--no-progress"), "elsewhere.h5", "outside")
    rep["files"]["qnet"] = str(outside)
    (art / "deploy.json").write_text(json.dumps(rep))
    refused(cli("verify", "--artifact", art, "--no-progress"), "outside")


def test_run_file_symlinked_out_is_not_read(run, tmp_path):
    victim = copy_run(run, tmp_path / "victim")
    elsewhere = tmp_path / "elsewhere.pt"
    shutil.move(victim / "best.pt", elsewhere)
    (victim / "best.pt").symlink_to(elsewhere)
    refused(cli("eval", victim), "best.pt", "symbolic link", "outside")


# ------------------------------------------------------------- 3. / 4. memory bombs
def _capped(code: str, tmp_path, timeout=120):
    """Run ``code`` in a process capped at LIMIT_AS bytes of address space."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))
    env = {**os.environ, "NEURODELAY_CACHE": str(tmp_path / "cache")}
    t0 = time.perf_counter()
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, preexec_fn=cap,
                       timeout=timeout, env=env, cwd=tmp_path)
    return p, time.perf_counter() - t0


def _cli_code(*args):
    return ("import sys; from neurodelay.cli import main; "
            f"sys.exit(main({[str(a) for a in args]!r}, standalone_mode=True))")


def test_huge_label_is_refused_before_allocating(run, tmp_path):
    labels = np.arange(12) % 3
    labels[5] = 2_000_000_000
    bad = _shd_like(tmp_path / "big.h5", labels=labels)
    p, secs = _capped(_cli_code("eval", run, "--test-file", bad), tmp_path)
    assert p.returncode == 1, p.stderr
    assert "big.h5" in p.stderr and "2000000000" in p.stderr and "Traceback" not in p.stderr
    assert secs < 60


@pytest.mark.parametrize("what", ["labels", "extra/keys"])
def test_compressed_declarations_are_refused_before_reading(run, tmp_path, what):
    def hostile(f):
        if what == "labels":
            del f["labels"]
            f.create_dataset("labels", (1_500_000_000,), "i8", compression="gzip",
                             chunks=(1 << 20,))
        else:
            f.create_dataset("extra/keys", (500_000_000,), "S16", compression="gzip",
                             chunks=(1 << 20,))

    bad = _shd_like(tmp_path / "bomb.h5", extra=hostile)
    assert bad.stat().st_size < 1 << 20
    p, secs = _capped(_cli_code("eval", run, "--test-file", bad), tmp_path)
    assert p.returncode == 1, p.stderr
    assert "bomb.h5" in p.stderr and what in p.stderr and "Traceback" not in p.stderr
    assert secs < 60


def test_nir_decompression_bomb_is_refused_quickly(tmp_path):
    import nir

    g = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((16, 3)), bias=np.zeros(16)),
                               nir.LIF(tau=np.full(16, 0.01), r=np.ones(16),
                                       v_leak=np.zeros(16), v_threshold=np.ones(16)))
    path = tmp_path / "bomb.nir"
    nir.write(path, g)
    with h5py.File(path, "r+") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if n.endswith("/weight") else None)
        del f[names[0]]
        f.create_dataset(names[0], (16, 60_000_000), "f8", compression="gzip",
                         chunks=(16, 1 << 16))
    assert path.stat().st_size < 1 << 20
    p, secs = _capped(_cli_code("import-nir", path, "--dt", "0.001", "--out",
                                tmp_path / "imp"), tmp_path)
    assert p.returncode == 1, p.stderr
    assert "bomb.nir" in p.stderr and "declares shape (16, 60000000)" in p.stderr
    assert secs < 30


# ------------------------------------------------------------- 5. / 6. lost data
def test_overwrite_through_symlinked_deploy_loses_nothing(run, tmp_path, data):
    victim = copy_run(run, tmp_path / "victim")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    (victim / "deploy").symlink_to(outside, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()
              and p.name != ".lock"}
    r = cli(*train_args(victim, data, "--overwrite"))
    refused(r, "deploy", "symbolic link")
    assert {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()
              and p.name != ".lock"} == before
    assert (outside / "precious.txt").read_text() == "keep me"


def test_export_never_writes_through_a_symlinked_deploy(run, tmp_path):
    victim = copy_run(run, tmp_path / "victim")
    outside = tmp_path / "outside"
    outside.mkdir()
    (victim / "deploy").symlink_to(outside, target_is_directory=True)
    refused(cli("export", victim, "--target", "loihi2"), "deploy", "symbolic link")
    assert list(outside.iterdir()) == []


def test_lock_file_symlink_is_not_followed(run, tmp_path, data):
    victim = copy_run(run, tmp_path / "victim")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (victim / ".lock").unlink(missing_ok=True)
    (victim / ".lock").symlink_to(outside)
    refused(cli("train", "--resume", "--out", victim, "--no-progress"), ".lock",
            "symbolic link")
    assert outside.read_text() == "keep me"


def test_metrics_symlink_is_not_appended_to(run, tmp_path, data):
    out = partial_run(run, tmp_path / "r", 1)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").symlink_to(outside)
    refused(cli("train", "--resume", "--out", out, "--no-progress"), "metrics.jsonl",
            "symbolic link")
    assert outside.read_text() == "keep me"


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MiB tmpfs (root only: the CI machine runs as root)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MiB tmpfs for the full-disk tests needs root")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()}); the full-disk tests "
                    f"need one")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system of ``folder`` up to ``leave`` bytes."""
    with open(folder / "filler", "wb") as fh:
        try:
            while True:
                free = shutil.disk_usage(folder).free
                if free <= leave:
                    break
                fh.write(b"\0" * min(free - leave, 1 << 16) or b"\0")
                fh.flush()
        except OSError:
            pass


def test_overwrite_on_a_full_disk_keeps_the_old_run(run, full_disk, data):
    victim = copy_run(run, full_disk / "victim")
    before = {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()
              and p.name != ".lock"}
    _fill(full_disk)
    r = cli(*train_args(victim, data, "--overwrite"))
    refused(r, "full")
    after = {p.name: p.read_bytes() for p in victim.iterdir() if p.is_file()
              and p.name != ".lock"}
    assert after == before, "the old run was not kept intact"
    assert not (victim / ".replaced.tmp").exists()


def test_export_on_a_full_disk_is_a_message(run, full_disk):
    victim = copy_run(run, full_disk / "victim")
    _fill(full_disk, leave=60_000)   # room for the folder and a first file, not for all
    r = cli("export", victim, "--target", "loihi2")
    refused(r, "full")
    left = [p for p in victim.rglob("*") if p.name.endswith(".tmp")]
    assert left == []


def test_train_on_a_full_disk_is_a_message(full_disk, data):
    _fill(full_disk, leave=4096)
    r = cli(*train_args(full_disk / "new", data))
    refused(r, "full")


# ------------------------------------------------------------- 7. silent wrong results
def test_test_file_with_reordered_classes_is_remapped(run, data, tmp_path):
    from neurodelay.data import load_binned

    with h5py.File(data["test"], "r") as f:
        times, units = list(f["spikes/times"][()]), list(f["spikes/units"][()])
        labels = f["labels"][()]
        keys = [k.decode() for k in f["extra/keys"][()]]
    n = len(keys)
    perm = np.arange(n)[::-1]                    # class k is now named keys[n-1-k]
    rev = write_shd_file(tmp_path / "rev.h5", times, units, perm[labels],
                         [keys[n - 1 - k] for k in range(n)])
    same = json.loads(ok(cli("eval", run, "--json")).splitlines()[-1])
    r = cli("eval", run, "--test-file", rev, "--json")
    got = json.loads(ok(r).splitlines()[-1])
    assert got["accuracy"] == same["accuracy"]
    assert "renumbered" in r.output
    assert len(load_binned(rev, progress=False).labels) == got["n"]


def test_test_file_with_other_class_names_is_refused(run, data, tmp_path):
    with h5py.File(data["test"], "r") as f:
        times, units = list(f["spikes/times"][()]), list(f["spikes/units"][()])
        labels = f["labels"][()]
        n = len(f["extra/keys"])
    other = write_shd_file(tmp_path / "other.h5", times, units, labels,
                           [f"word{k}" for k in range(n)])
    refused(cli("eval", run, "--test-file", other), "other.h5", "class names", "word0")


# ------------------------------------------------------------- 9. unfinished export
def test_export_of_an_unfinished_run_warns(run, tmp_path):
    victim = copy_run(run, tmp_path / "victim")
    (victim / "result.json").unlink()
    r = cli("export", victim, "--target", "loihi2")
    out = ok(r)
    assert "UNFINISHED" in out
    rep = json.loads((victim / "deploy" / "loihi2" / "deploy.json").read_text())
    assert any("UNFINISHED" in w for w in rep["warnings"])


# ------------------------------------------------------------- smaller findings
def test_sigterm_during_export_leaves_no_temporary_folders(run, tmp_path):
    victim = copy_run(run, tmp_path / "victim")
    code = ("import time, neurodelay.deploy.artifact as A\n"
            "orig = A._replace_folder\n"
            "def slow(tmp, out):\n"
            "    print('READY', flush=True); time.sleep(60); orig(tmp, out)\n"
            "A._replace_folder = slow\n"
            "from neurodelay.cli import main\n"
            f"main(['export', {str(victim)!r}, '--target', 'loihi2'])\n")
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        line = p.stdout.readline()
        assert "READY" in line, p.stderr.read()
        assert [q for q in (victim / "deploy").iterdir() if q.name.endswith(".tmp")]
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
    finally:
        p.kill()
    assert p.returncode != 0
    deploy = victim / "deploy"   # removed with the temporary folder (it made both)
    assert not deploy.exists() or [q.name for q in deploy.iterdir()] == []


@pytest.mark.parametrize("value,shown", [(2 ** 63 + 5, str(2 ** 63 + 5)), (1e20, "1e+20")])
def test_labels_beyond_int64_are_not_called_negative(run, tmp_path, value, shown):
    labels = np.arange(12) % 3
    labels = labels.astype(np.uint64 if isinstance(value, int) else np.float64)
    labels[4] = value
    bad = _shd_like(tmp_path / "lab.h5", labels=labels)
    out = refused(cli("eval", run, "--test-file", bad), "lab.h5", "labels", shown)
    assert "negative" not in out


def test_nan_speaker_id_is_refused(run, tmp_path):
    def hostile(f):
        sp = np.arange(12, dtype=np.float64)
        sp[3] = np.nan
        f["extra/speaker"] = sp
    bad = _shd_like(tmp_path / "spk.h5", extra=hostile)
    out = refused(cli("eval", run, "--test-file", bad), "spk.h5", "extra/speaker", "nan")
    assert "RuntimeWarning" not in out


def test_class_names_with_terminal_escapes_are_escaped(tmp_path, data):
    with h5py.File(data["train"], "r") as f:
        times, units = list(f["spikes/times"][()]), list(f["spikes/units"][()])
        labels = f["labels"][()]
        n = len(f["extra/keys"])
    names = ["\x1b]0;owned\x07\x1b[2J" + f"c{k}" for k in range(n)]
    evil = write_shd_file(tmp_path / "evil.h5", times, units, labels, names)
    out = tmp_path / "r"
    ok(cli("train", "--out", out, "--train-file", evil, "--test-file", evil, "--hidden", "4",
           "--epochs", "1", "--no-progress"))
    cfg = (out / "config.json").read_text()
    assert "\\u001b" not in cfg and "\x1b" not in cfg
    r = cli("inspect", out, "--target", "loihi2")
    assert "\x1b" not in r.output and "\x07" not in r.output
    assert json.loads(cfg)["class_names"][0] == "\\x1b]0;owned\\x07\\x1b[2Jc0"


def test_reads_of_variable_length_data_stay_under_the_memory_limit(tmp_path, monkeypatch):
    """Entries of a hostile file may all point at one heap object (h5py cannot write such
    a file, so this checks the bound itself): a read takes at most limit / (expansion x
    file size) samples, and binning in such small reads gives the same data."""
    from neurodelay.data import load_binned
    from neurodelay.data.shd import _BINNING_EXPANSION, _CHUNK, read_chunk

    path = _shd_like(tmp_path / "v.h5", n=40)
    size = path.stat().st_size
    assert read_chunk(path) == _CHUNK                 # default limit: 8 GiB
    whole = load_binned(path, dt=0.1, cache=False, progress=False)
    monkeypatch.setenv("NEURODELAY_MAX_GIB", repr(7.5 * _BINNING_EXPANSION * size / 2 ** 30))
    assert read_chunk(path) == 7
    small = load_binned(path, dt=0.1, cache=False, progress=False)
    assert [s.tolist() for s in small.samples] == [s.tolist() for s in whole.samples]
    assert small.labels.tolist() == whole.labels.tolist()
