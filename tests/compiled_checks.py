"""What the tests of the compiled kernels share: the kernels must be built, unless
``NEURODELAY_NATIVE`` switches them off (then the test is skipped, with the reason).

On ``sys.path`` through pytest's ``pythonpath`` setting (pyproject.toml), like cli_checks.
"""
from __future__ import annotations

import os

import pytest

from neurodelay.cbuild import ENV_SWITCH


def require_compiled(status, what: str) -> None:
    """Skip when NEURODELAY_NATIVE switched the compiled code off; fail when it should
    have built (a compiler is there in CI) but did not."""
    if not status.available and os.environ.get(ENV_SWITCH):
        pytest.skip(f"{what} switched off here: {status.reason}")
    assert status.available, f"{what} did not build: {status.reason}"
