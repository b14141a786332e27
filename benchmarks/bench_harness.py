"""The benchmarks' harness: thread settings, logging, timing, peak-RSS probes, JSON.

Nothing here imports numpy or torch at module level: ``early_env`` must run before they
load (benchmarks/bench.py calls it first), so they are imported inside the functions
that need them.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
ENTRY = BENCH_DIR / "bench.py"        # the entry point; memory probes re-run it
for _p in (str(ROOT), str(BENCH_DIR)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# The JSON's ``neurodelay_variant``: the neurodelay variant is DelaySNN.forward itself
# (model.py runs on neurodelay.train.fastconv); the value is kept for the saved results'
# readers.
NEURODELAY_VARIANT = "model.py (uses fastconv)"


class BenchmarkError(RuntimeError):
    """A benchmark could not run (missing module, failed subprocess)."""


# ---------------------------------------------------------------------------- environment
def _flag(argv, name):
    """Value of ``--name V`` / ``--name=V`` in argv (None if absent)."""
    val = None
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            val = argv[i + 1]
        elif a.startswith(name + "="):
            val = a.split("=", 1)[1]
    return val


def early_env(argv) -> tuple[str, str]:
    """Thread settings that must be in the environment before numpy/torch load.

    OMP_WAIT_POLICY (--omp-wait-policy, default PASSIVE): with the default spinning
    policy, 2 torch threads on a machine where other processes also run wait in
    barriers for a descheduled thread; measured 8-10x slower steps for both variants,
    i.e. noise. PASSIVE costs little on a quiet machine.
    OPENBLAS_NUM_THREADS (--blas-threads, default 1; numpy's BLAS, used by bitsim,
    floatsim and Lava): 2 OpenBLAS threads under the same load made a batched numpy
    matmul 40x slower (2 vs 78 GFLOP/s). Values already in the environment are kept
    unless the flag is given.
    """
    pol = _flag(argv, "--omp-wait-policy")
    if pol is not None:
        if pol.upper() not in ("PASSIVE", "ACTIVE", "DEFAULT"):
            sys.exit(f"--omp-wait-policy must be passive, active or default, got {pol!r}")
        if pol.upper() == "DEFAULT":
            os.environ.pop("OMP_WAIT_POLICY", None)
        else:
            os.environ["OMP_WAIT_POLICY"] = pol.upper()
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    blas = _flag(argv, "--blas-threads")
    if blas is not None:
        if not blas.isdigit() or int(blas) < 1:
            sys.exit(f"--blas-threads must be a positive integer, got {blas!r}")
        os.environ["OPENBLAS_NUM_THREADS"] = blas
    else:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return os.environ.get("OMP_WAIT_POLICY", "default"), os.environ["OPENBLAS_NUM_THREADS"]


def current_env() -> tuple[str, str]:
    """The thread settings as they are (imported by tests: the environment is left alone)."""
    return (os.environ.get("OMP_WAIT_POLICY", "default"),
            os.environ.get("OPENBLAS_NUM_THREADS", "default"))


# ---------------------------------------------------------------------------- logging
_LOG_STREAM = sys.stdout


def set_log_stream(stream) -> None:
    """Where ``log`` writes (stderr under --json, so stdout holds only the JSON)."""
    global _LOG_STREAM
    _LOG_STREAM = stream


def log(msg: str = "") -> None:
    print(msg, file=_LOG_STREAM, flush=True)


# ---------------------------------------------------------------------------- timing
def alternate(runs: dict, reps: int, keep: bool = False):
    """Time the callables of ``runs`` ``reps`` times each, alternating (A B C, C B A,
    ...). Returns {name: [seconds]} and, with ``keep``, {name: its last output}."""
    times = {k: [] for k in runs}
    outs = {}
    for r in range(reps):
        for k in (runs if r % 2 == 0 else list(runs)[::-1]):
            t0 = time.perf_counter()
            out = runs[k]()
            times[k].append(time.perf_counter() - t0)
            if keep:
                outs[k] = out
    return times, outs


def time_variants(trainers: list, x, y, reps: int) -> dict:
    """Alternate the variants (A B C, C B A, ...); no separate warm-up: the equality
    check just ran every variant's forward and backward at these shapes. Each
    trainer's ``step(x, y)`` returns its own step time."""
    times = {tr.name: [] for tr in trainers}
    for r in range(reps):
        order = trainers if r % 2 == 0 else trainers[::-1]
        for tr in order:
            times[tr.name].append(tr.step(x, y))
    b = x.shape[0]
    return {n: {"median_s": statistics.median(ts), "samples_per_s": b / statistics.median(ts),
                "times_s": [round(t, 4) for t in ts]} for n, ts in times.items()}


# ---------------------------------------------------------------------------- memory
def status_mb(key: str) -> float:
    """VmRSS (current) or VmHWM (peak) of this process in MB, from /proc/self/status.

    (getrusage's ru_maxrss is not used: Linux carries the parent's peak over fork+exec.)
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise BenchmarkError(f"/proc/self/status has no {key} line (Linux only)")


def memory_probe(spec: dict, variant: str, threads: int) -> dict:
    """Peak RSS of a fresh process (bench.py --_probe, see bench_probe) running
    ``variant`` on the shape ``spec``."""
    cmd = [sys.executable, str(ENTRY), "--_probe",
           json.dumps({"spec": spec, "variant": variant}), "--threads", str(threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), timeout=900)
    if p.returncode != 0:
        raise BenchmarkError(f"memory probe {variant} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- JSON
def json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(out: dict) -> None:
    """The result on stdout, as one JSON object."""
    print(json.dumps(out, indent=1, default=json_default))


# ---------------------------------------------------------------------------- run record
def git_commit() -> str | None:
    """The checkout's commit, with " (modified)" when tracked files differ from it; None
    outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


def native_status() -> str:
    """Which integer-delay path `auto` takes here: the compiled kernels, or the
    frequency-domain fallback and why (neurodelay.train.native)."""
    try:
        from neurodelay.train import native
    except ImportError:                       # a checkout from before the kernels
        return "frequency domain (no neurodelay.train.native in this checkout)"
    return native.status().describe()


def cpu_info() -> dict:
    """The CPU's model name and feature flags (/proc/cpuinfo; empty where unreadable)."""
    info = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return info
    for line in lines:
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "model name":
            info["model"] = val.strip()
        elif key in ("flags", "Features") and not info["flags"]:
            info["flags"] = val.split()
    return info


def run_info(quick: bool, omp_wait_policy: str, blas_threads: str) -> dict:
    """The JSON's header (machine, versions, thread settings, allocator, commit), logged."""
    import torch

    from neurodelay.alloc import allocator_status

    out = {"torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
           "python": platform.python_version(), "cpu_count": os.cpu_count(),
           "load_average_at_start": list(os.getloadavg()), "quick": quick,
           "omp_wait_policy": omp_wait_policy, "openblas_threads": blas_threads,
           "allocator": allocator_status(),
           "integer_delay_operator": native_status(),
           "git_commit": git_commit(), "cpu": cpu_info(),
           "neurodelay_variant": NEURODELAY_VARIANT}
    log(f"neurodelay benchmarks at commit {out['git_commit']}: torch {torch.__version__}, "
        f"{out['torch_threads']} torch "
        f"threads (OMP_WAIT_POLICY {omp_wait_policy}), {blas_threads} OpenBLAS thread(s), "
        f"{os.cpu_count()} CPUs ({out['cpu']['model']}; AVX-512: "
        f"{'yes' if 'avx512f' in out['cpu']['flags'] else 'no'}), load average "
        f"{out['load_average_at_start'][0]:.1f}; "
        f"allocator {out['allocator']}; "
        f"integer-delay operator: {out['integer_delay_operator']}; "
        f"neurodelay variant = {out['neurodelay_variant']}")
    return out
