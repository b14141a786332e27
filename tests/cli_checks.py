"""What the CLI tests share: run a command in-process and check a clean refusal.

On ``sys.path`` through pytest's ``pythonpath`` setting (pyproject.toml); the name avoids
``tests``, which Lava's wheels install as a top-level package.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from click.testing import CliRunner

from neurodelay.cli import main


def cli(*args, env=None):
    """``neurodelay ARGS...`` in this process (click's CliRunner); arguments str()-ed."""
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def refused(r, *fragments, code=1):
    """A clean refusal: exit ``code``, 'Error:', every fragment, no traceback/escape."""
    out = r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), \
        f"exception escaped the command: {r.exception!r}\n{out}"
    assert r.exit_code == code, out
    assert "Traceback" not in out, out
    assert "Error:" in out, out
    for f in fragments:
        assert f in out, f"{f!r} not in:\n{out}"
    return out


@contextmanager
def own_environment(root):
    """The binned-data cache below ``root``, no memory limit or debug setting from the
    caller's environment; the environment is restored on exit."""
    keys = ("NEURODELAY_CACHE", "NEURODELAY_MAX_GIB", "NEURODELAY_DEBUG")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["NEURODELAY_CACHE"] = str(root / "cache")
    for k in keys[1:]:
        os.environ.pop(k, None)
    try:
        yield root
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def train_args(out, data, *extra):
    """``train`` of the tiny 3-class task: hidden [8], 2 epochs, batch 32."""
    return ["train", "--out", out, "--train-file", data["train"], "--test-file", data["test"],
            "--hidden", "8", "--epochs", "2", "--batch-size", "32", "--no-progress", *extra]
