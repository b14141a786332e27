"""Run folders: what ``train``, ``finetune`` and ``import-nir`` create, and how every command
opens one -- validated, locked while written, never silently overwritten.

A run folder holds ``config.json`` whose ``kind`` says where its network came from:

``trained``    ``neurodelay train``: a DelaySNN (``best.pt``, ``checkpoint.pt``,
               ``metrics.jsonl``, ``result.json``). Folders written before ``kind``
               existed are trained runs.
``finetuned``  ``neurodelay finetune``: a network trained with the target's integer
               arithmetic; its deployable network is already quantized (``qnet.h5``).
``imported``   ``neurodelay import-nir``: a float network read from a NIR graph
               (``network.h5``); no PyTorch model, no data of its own.

Every file is read through this module, so a broken folder gives one specific
:class:`~neurodelay.errors.RunError` naming the file and the fix (missing, truncated,
not JSON, missing keys, a checkpoint that is not one) instead of a library traceback.

Writers hold :class:`RunLock` (``.lock`` in the folder, an ``fcntl`` lock the kernel
releases when the process dies, even by ``kill -9``) for as long as they write; a
second writer fails at once, naming the holder. :func:`new_run` refuses a folder that
already holds files unless asked to resume or overwrite (and then replaces the old run
only once the new one has a checkpoint), and :func:`remove_stale_temp_files` removes the
temporary files an interrupted atomic write left behind. No writer writes or deletes
through a symbolic link in a run folder (:func:`neurodelay.fs.refuse_links`).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from neurodelay.core.network_io import load_network
from neurodelay.errors import RunError
from neurodelay.fs import inside, refuse_links
from neurodelay.untrusted import load_torch_file

KINDS = ("trained", "finetuned", "imported")
LOCK_FILE = ".lock"
# files a run of each kind writes; --overwrite removes exactly these (and deploy/)
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "result.json",
             "network.h5", "qnet.h5", "finetune.json",
             "tensorboard", "wandb")      # folders of --log (neurodelay/tracking.py)
REQUIRED_KEYS = {"trained": ("model", "train", "data"),
                 "finetuned": ("finetune", "data", "target"),
                 "imported": ("source", "network")}


# ----------------------------------------------------------------------------- reading

def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise RunError(f"{path}: missing ({what})")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RunError(f"{path}: not a text (UTF-8) file ({what}): byte {e.start} cannot "
                       f"be decoded; the file is corrupted or is not what its name says")
    except OSError as e:
        raise RunError(f"{path}: cannot be read ({e.strerror})") from None


def read_jsonl(path, what: str = "file") -> list[dict]:
    """The JSON objects of a JSON-lines file (blank lines skipped); RunError naming the
    file and line for every problem."""
    path = Path(path)
    recs = []
    for k, line in enumerate(_read_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise RunError(f"{path}: line {k} is not valid JSON ({what}): {e.msg}; the file "
                           f"is corrupted (an interrupted write?)") from None
        if not isinstance(rec, dict):
            raise RunError(f"{path}: line {k} is not a JSON object ({what})")
        recs.append(rec)
    return recs


def read_json(path, what: str = "file") -> dict:
    """A JSON object from ``path``; RunError naming the file for every problem."""
    path = Path(path)
    text = _read_text(path, what)
    if not text.strip():
        raise RunError(f"{path}: empty ({what}); the write that created it was interrupted")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not valid JSON ({what}): {e.msg} at line {e.lineno}, "
                       f"column {e.colno}") from None
    if not isinstance(value, dict):
        raise RunError(f"{path}: expected a JSON object ({what}), got "
                       f"{type(value).__name__}")
    return value


def load_checkpoint(path, what: str = "checkpoint") -> dict:
    """A checkpoint this project wrote, loaded with the safe loader
    (:func:`neurodelay.untrusted.load_torch_file`: tensors and plain data only, never
    code), with a RunError for every bad file (zero bytes, truncated, garbage, a pickled
    object, not a dict)."""

    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: missing ({what})")
    if path.stat().st_size == 0:
        raise RunError(f"{path}: empty (0 bytes) {what}; its write was interrupted before "
                       f"the atomic rename, or the file was truncated")
    ck = load_torch_file(path, RunError, what=what)
    if not isinstance(ck, dict):
        raise RunError(f"{path}: not a neurodelay {what} (holds a {type(ck).__name__})")
    return ck


def require_keys(obj: dict, keys, where: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise RunError(f"{where}: missing {', '.join(repr(k) for k in missing)}; the file "
                       f"is incomplete or was not written by this neurodelay")


def _require_run_dir(path: Path) -> None:
    if not path.exists():
        raise RunError(f"{path}: no such run folder")
    if not path.is_dir():
        raise RunError(f"{path}: is a file, not a run folder")
    if not (path / "config.json").exists():
        raise RunError(f"{path}: not a neurodelay run folder (no config.json); create one "
                       f"with `neurodelay train --out {path}` or `neurodelay import-nir`")


# ----------------------------------------------------------------------------- the run

@dataclass
class RunStatus:
    """How far a run got: finished (result.json present), epochs done / planned."""

    finished: bool
    epoch: int | None = None
    epochs: int | None = None
    notes: list = field(default_factory=list)

    def describe(self) -> str:
        if self.finished:
            return "finished"
        if self.epoch is not None and self.epochs is not None:
            return f"UNFINISHED: {self.epoch} of {self.epochs} epochs done"
        return "UNFINISHED"


@dataclass
class Run:
    """An opened, validated run folder (see the module docstring)."""

    path: Path
    config: dict
    kind: str

    # ------------------------------------------------------------- status / files
    def file(self, name: str) -> Path:
        """``name`` in the run folder; refused when the name (e.g. from config.json)
        leads outside the folder, directly or through a symbolic link."""
        return inside(self.path, name, "run folder")

    def status(self) -> RunStatus:
        """finished when result.json is present and valid; else epochs from metrics."""
        if self.file("result.json").exists():
            read_json(self.file("result.json"), "the run's final result")
            return RunStatus(True)
        epochs = None
        if self.kind == "trained":
            epochs = int(self.config["train"].get("epochs", 0)) or None
        elif self.kind == "finetuned":
            epochs = int(self.config["finetune"].get("epochs", 0)) or None
        done = 0
        metrics = self.file("metrics.jsonl")
        if metrics.exists():
            done = sum(1 for line in metrics.read_text(errors="replace").splitlines()
                       if line.strip())
        return RunStatus(False, done, epochs)

    def result(self) -> dict:
        return read_json(self.file("result.json"), "the run's final result")

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.config.get("class_names") or []]

    # ------------------------------------------------------------- data
    def has_own_data(self) -> bool:
        d = self.config.get("data")
        return isinstance(d, dict) and bool(d.get("train"))

    def n_outputs(self) -> int | None:
        if self.kind == "trained":
            return int(self.config["model"]["n_outputs"])
        names = self.class_names
        return len(names) if names else self.config.get("n_outputs")

    # ------------------------------------------------------------- stored networks
    def qnetwork(self):
        """The quantized network a fine-tuned run stores (its integers are the chip's)."""
        if self.kind != "finetuned":
            raise RunError(f"{self.path}: a {self.kind} run stores no quantized network; "
                           f"export it (`neurodelay export {self.path} --target loihi2`)")
        return load_network(self.file("qnet.h5"), kind="quantized")

    def imported_network(self):
        """The float network an imported run stores (network.h5)."""
        if self.kind != "imported":
            raise RunError(f"{self.path}: a {self.kind} run stores no imported network")
        return load_network(self.file(self.config["network"]), kind="float")

    def parent_path(self) -> Path:
        """The run a fine-tuned run started from: found next to this folder by its
        recorded relative path (folders moved together), else by its absolute path;
        RunError naming both when neither exists."""
        rel, recorded = self.config.get("parent_relative"), self.config.get("parent")
        if not recorded and not rel:
            raise RunError(f"{self.path / 'config.json'}: this finetuned run records no "
                           f"parent run")
        tried = []
        for cand in ([self.path / rel] if rel else []) + ([Path(recorded)] if recorded else []):
            if (cand / "config.json").exists():
                return cand
            tried.append(str(cand))
        raise RunError(f"{self.path}: the run it was fine-tuned from is missing (looked in "
                       f"{' and '.join(tried)}); put the parent run back there, or set "
                       f"'parent' in {self.path / 'config.json'} to where it is now")


def open_run(path, kinds=KINDS) -> Run:
    """Open and validate a run folder; RunError naming the file and fix otherwise. An
    already opened :class:`Run` is returned as it is (its kind still checked)."""
    if isinstance(path, Run):
        if path.kind not in kinds:
            raise RunError(f"{path.path}: is a {path.kind} run; this command takes "
                           f"{' or '.join(kinds)} runs")
        return path
    path = Path(path)
    _require_run_dir(path)
    cfg = read_json(inside(path, "config.json", "run folder"), "the run's settings")
    kind = cfg.get("kind", "trained")
    if kind not in KINDS:
        raise RunError(f"{path / 'config.json'}: unknown run kind {kind!r} (known: "
                       f"{', '.join(KINDS)})")
    require_keys(cfg, REQUIRED_KEYS[kind], str(path / "config.json"))
    if kind == "trained":
        for key in ("model", "train", "data"):
            if not isinstance(cfg[key], dict):
                raise RunError(f"{path / 'config.json'}: {key!r} must be an object")
        require_keys(cfg["train"], ("seed",), f"{path / 'config.json'} 'train'")
        require_keys(cfg["model"], ("n_outputs",), f"{path / 'config.json'} 'model'")
    if kind not in kinds:
        raise RunError(f"{path}: is a {kind} run; this command takes "
                       f"{' or '.join(kinds)} runs")
    return Run(path, cfg, kind)


# ----------------------------------------------------------------------------- writing

@dataclass
class RunLock:
    """Exclusive lock on a run folder for one writer (module docstring).

    ``with RunLock(folder, "train"):`` ... ; a second holder gets a RunError naming the
    first one's process id, host, start time and command.
    """

    path: Path
    purpose: str = "write"
    _fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path = Path(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK_FILE
        try:  # O_NOFOLLOW: a .lock that is a symbolic link is never opened (or truncated)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError:
            if lock.is_symlink():
                raise RunError(f"{lock}: refused, a symbolic link (to {os.readlink(lock)}); "
                               f"neurodelay never writes through a link. Delete it") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunError(f"{self.path} is in use by another neurodelay process "
                           f"({holder}); wait for it to finish, or choose another folder")
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "purpose": self.purpose,
                "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        try:
            refuse_links(self.path, [*RUN_FILES, "deploy"], "run folder")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        info = {}
    if not info:
        return "holder unknown"
    return (f"process {info.get('pid')} on {info.get('host')}, {info.get('purpose')} since "
            f"{info.get('started')}: {info.get('command')}")


def stale_temp_files(folder) -> list[Path]:
    """Temporary files of interrupted atomic writes (``.<name>.*.tmp``) in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file())


def remove_stale_temp_files(folder) -> list[Path]:
    """Remove what :func:`stale_temp_files` finds (call it only while holding the lock)."""
    removed = []
    for p in stale_temp_files(folder):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


@contextmanager
def new_run(out, *, overwrite: bool = False):
    """Check that ``out`` may receive a new run; yields the run files an earlier run left
    there that ``overwrite`` replaces. Call while holding the lock.

    Nothing is deleted up front: the old files are moved aside into ``out/.replaced.tmp``
    (a rename: no space needed) and removed only once the ``with`` block has ended
    normally, or has failed after the new run wrote its first checkpoint (a resumable
    run). A failure before that (a full disk, a refused option, Ctrl-C) removes what the
    new run wrote and moves the old files back, so ``--overwrite`` never leaves half a
    run. Symbolic links among the files to replace are refused before anything moves.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is a file; choose a folder for --out")
    ours = _old_run_files(out, overwrite)
    refuse_links(out, [p.name for p in ours], "run folder")
    aside = out / REPLACED
    if ours:
        aside.mkdir()
        for p in ours:
            os.replace(p, aside / p.name)
    try:
        yield ours
    except BaseException:
        if ours and not (out / "checkpoint.pt").exists():
            _restore(out, aside)
        else:
            _remove_aside(aside)
        raise
    _remove_aside(aside)


REPLACED = ".replaced.tmp"


def _old_run_files(out: Path, overwrite: bool) -> list[Path]:
    if not out.exists():
        return []
    present = [p for p in out.iterdir() if p.name != LOCK_FILE]
    if not present:
        return []
    if (out / REPLACED).exists():
        raise RunError(f"{out / REPLACED}: the files of a run that an interrupted "
                       f"--overwrite was replacing are still here; move them back into "
                       f"{out} (or delete {out / REPLACED}) and run the command again")
    ours = [p for p in present if p.name in RUN_FILES or p.name == "deploy"
            or (p.name.startswith(".") and p.name.endswith(".tmp"))]
    if (out / "checkpoint.pt").exists() and not overwrite:
        raise RunError(f"{out} already holds a run (checkpoint.pt); pass --resume to "
                       f"continue it, --overwrite to replace it, or choose another --out")
    if not overwrite:
        names = ", ".join(sorted(p.name for p in present)[:6])
        raise RunError(f"{out} exists and is not empty ({names}{', ...' if len(present) > 6 else ''}); "
                       f"nothing was written. Choose an empty or new folder for --out, pass "
                       f"--resume to continue an interrupted run there, or --overwrite to "
                       f"replace its run files")
    others = [p for p in present if p not in ours]
    if others:
        names = ", ".join(sorted(p.name for p in others)[:6])
        raise RunError(f"{out} holds files that are not run files ({names}); --overwrite "
                       f"removes only a run's own files: choose another --out")
    return ours


def _restore(out: Path, aside: Path) -> None:
    """Remove what a failed new run wrote and put the old run's files back."""
    for p in out.iterdir():
        if p.name in (LOCK_FILE, REPLACED):
            continue
        if p.name in RUN_FILES or p.name == "deploy" or p.name.endswith(".tmp"):
            _remove(p)
    for p in aside.iterdir():
        os.replace(p, out / p.name)
    aside.rmdir()


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)          # rmtree removes links inside, never their targets
    else:
        p.unlink()


def _remove_aside(aside: Path) -> None:
    if aside.exists() and not aside.is_symlink():
        _remove(aside)
