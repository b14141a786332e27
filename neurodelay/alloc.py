"""Keep large tensor buffers in the process heap (glibc), so they are reused, not page-faulted.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB, adjusted
dynamically) with a fresh ``mmap``, and returns it to the system on free. A training
step allocates and frees the same large buffers every time (the LIF state and spikes,
BatchNorm and dropout outputs, gradients: 256 samples x 130 steps x 256 neurons is
34 MB): each one is then mapped afresh and page-faulted, a 4 KB page at a time, on its
first write, costing more than the arithmetic that fills it.

:func:`tune_allocator` raises the mmap threshold and the heap trim threshold to 1 GiB
(``mallopt``), so freed buffers stay in the heap and the next step reuses them. Measured
here (1 thread, batch 256, 130 steps, 140-256-256-20, steps of 130 / 123 / 116 samples
alternating, medians of 7 steps, one process each): ``--delays none`` (layers widened to
389) 1.27 -> 0.85 s per training step, ``--delays fixed-random`` 1.36 -> 1.04 s, learned
delays 1.25 -> 1.25 s; peak RSS +3 to +17 % (freed memory is kept for reuse, not
returned to the system).

The CLI calls it once at start-up (``neurodelay ...``); a notebook or script can call it
itself. It changes a process-wide setting and cannot be undone, so library functions
never call it. ``NEURODELAY_MALLOC=default`` in the environment turns it off. Only glibc
(Linux) has these knobs; elsewhere it does nothing and says so.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1          # glibc mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 30      # 1 GiB: every tensor buffer of a training step is below it

_STATE = {"done": False, "reason": "not called"}


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds to THRESHOLD_BYTES (see the module
    docstring). Returns True if the setting is in effect (now or from an earlier call);
    False, with the reason in :func:`allocator_status`, where it is turned off by
    ``NEURODELAY_MALLOC=default`` or the C library has no ``mallopt``."""
    if _STATE["done"]:
        return True
    if os.environ.get("NEURODELAY_MALLOC", "").strip().lower() == "default":
        _STATE["reason"] = "NEURODELAY_MALLOC=default: the C library's own settings"
        return False
    if not sys.platform.startswith("linux"):
        _STATE["reason"] = f"not on Linux ({sys.platform}): the C library's own settings"
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _STATE["reason"] = "the C library has no mallopt (not glibc)"
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES) != 1 or \
            mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES) != 1:
        _STATE["reason"] = "mallopt refused the thresholds"
        return False
    _STATE.update(done=True, reason=f"mmap and trim thresholds {THRESHOLD_BYTES >> 20} MiB")
    return True


def allocator_status() -> str:
    """One line: whether :func:`tune_allocator` is in effect, and why (not)."""
    return ("tuned: " if _STATE["done"] else "default: ") + _STATE["reason"]
