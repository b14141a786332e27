"""neurodelay.alloc: large buffers are reused from the heap instead of being mapped and
page-faulted afresh; the CLI turns it on, NEURODELAY_MALLOC=default keeps glibc's own
settings. Checked through resident memory after a free (not by timing), each case in a
fresh process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="glibc's mallopt exists on Linux only")

PROBE = r"""
import json, sys
from neurodelay.alloc import tune_allocator, allocator_status
import numpy as np
tuned = tune_allocator() if sys.argv[1] == "tune" else False

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

def kept_after_free():
    a = np.ones(16 * 2**20, dtype=np.float32)        # 64 MB, every page written
    held = rss_mb()
    del a
    return round(rss_mb() - (held - 64), 1)          # MB of the freed block still resident

print(json.dumps({"tuned": tuned, "status": allocator_status(),
                  "kept_mb": [kept_after_free() for _ in range(3)]}))
"""


def _probe(mode: str, **env) -> dict:
    res = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **env})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_tuned_allocator_keeps_freed_large_buffers_for_reuse():
    plain = _probe("plain")
    tuned = _probe("tune")
    assert plain["tuned"] is False and tuned["tuned"] is True
    assert tuned["status"].startswith("tuned: mmap and trim thresholds 1024 MiB")
    # glibc's default maps a 64 MB block on its own and unmaps it on free (so the next
    # one is mapped and page-faulted afresh) ...
    assert max(plain["kept_mb"]) < 8, plain
    # ... tuned, the freed block stays in the heap, resident, for the next buffer
    assert min(tuned["kept_mb"]) > 56, tuned


def test_neurodelay_malloc_default_turns_it_off():
    off = _probe("tune", NEURODELAY_MALLOC="default")
    assert off["tuned"] is False
    assert off["status"] == "default: NEURODELAY_MALLOC=default: the C library's own settings"


def test_the_cli_tunes_the_allocator_before_any_command(monkeypatch):
    import neurodelay.alloc as alloc
    from neurodelay.cli import main

    calls = []
    monkeypatch.setattr(alloc, "tune_allocator", lambda: calls.append(1) or True)
    res = CliRunner().invoke(main, ["inspect", "/nonexistent/run"])
    assert res.exit_code != 0 and calls == [1]
