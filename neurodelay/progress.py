"""Progress bars on a terminal, nothing in a log.

A tqdm bar redraws itself several times a second; written to a file (``neurodelay train
... 2> log``, a Slurm job's output) every redraw is a line of bar frames. :func:`bar`
therefore draws only when stderr is a terminal; elsewhere it is a silent wrapper with the
same methods, and the commands' own one-line-per-epoch (or per-stage) messages are the
log. ``NEURODELAY_PROGRESS=always`` / ``never`` overrides the terminal test.
"""
from __future__ import annotations

import os
import sys

from tqdm import tqdm

ENV = "NEURODELAY_PROGRESS"


def on_terminal() -> bool:
    """True when bars should be drawn: stderr is a terminal (or ``NEURODELAY_PROGRESS``
    says ``always``; ``never`` turns them off everywhere)."""
    mode = os.environ.get(ENV, "").strip().lower()
    if mode in ("always", "1", "yes"):
        return True
    if mode in ("never", "0", "no"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def bar(iterable=None, *, enabled: bool = True, **kw) -> tqdm:
    """``tqdm(iterable, **kw)``, drawn only when ``enabled`` and :func:`on_terminal`; a
    disabled tqdm still iterates, counts and accepts ``update``/``set_postfix``/``close``."""
    return tqdm(iterable, disable=not (enabled and on_terminal()), **kw)


def write(msg: str) -> None:
    """A message line that does not tear a bar that is being drawn."""
    tqdm.write(msg, file=sys.stderr)
