"""What the CLI tests share: run a command in-process and check a clean refusal.

On ``sys.path`` through pytest's ``pythonpath`` setting (pyproject.toml); the name avoids
``tests``, which Lava's wheels install as a top-level package.
"""
from __future__ import annotations

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
