"""Build, cache and load the package's plain C kernels; run them on a few threads.

The package ships a few C files (no Python or torch headers): the integer-delay and
multi-tap kernels and the recurrent time loop of training (:mod:`neurodelay.train.native`,
:mod:`neurodelay.train.recurrent`) and the float simulator's delayed sum
(:mod:`neurodelay.sim.floatsim`). Each is compiled on first use with the system C
compiler (``$CC``, else ``cc``/``gcc``/``clang``), trying ``-O3 -march=native`` first and
plainer flag sets after, into ``<cache>/native/`` (``$NEURODELAY_CACHE``, else
``~/.cache/neurodelay``) under a name hashed from the source, the compiler, the flags and
the CPU; the file is written atomically, so concurrent processes never load half a
library, and later processes just load it. ``NEURODELAY_NATIVE=0`` (or off/no/false)
turns every compiled kernel off: their callers then use their own fallbacks.

Every library must export ``int nd_abi_version(void)``; a library whose version is not
the caller's is refused (a stale cache entry cannot be called with the wrong arguments).
ctypes releases the GIL during a call, so :func:`split_run` runs one range of work items
per thread on a shared pool.

This module imports neither torch nor numpy: the simulators use it without torch.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from neurodelay.errors import KernelError
from neurodelay.fs import atomic_path, default_cache_dir

ENV_SWITCH = "NEURODELAY_NATIVE"          # "0" / "off" / "no" / "false": do not build or use
FLAG_SETS = (("-O3", "-march=native", "-fopenmp-simd"), ("-O3", "-fopenmp-simd"), ("-O3",))
COMMON_FLAGS = ("-std=gnu11", "-ffp-contract=off", "-fPIC", "-shared")


@dataclass(frozen=True)
class NativeStatus:
    """Whether a compiled library is in use, and why (not)."""

    available: bool
    reason: str
    library: str | None = None
    compiler: str | None = None
    flags: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.available:
            return f"compiled direct kernels ({self.compiler} {' '.join(self.flags)})"
        return f"frequency-domain fallback: {self.reason}"


_LOCK = threading.Lock()
_LOADED: dict = {}
_POOL: dict = {}


def disabled() -> bool:
    """True when ``NEURODELAY_NATIVE`` turns the compiled kernels off."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "off", "no", "false")


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else the first of cc, gcc, clang on the PATH."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or cc
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _cpu_signature() -> str:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}|{flags}"


def _writable_cache() -> Path:
    """The cache folder for the libraries, or a fresh temporary folder where the cache
    cannot be created or written (a library is then built once per process)."""
    cache = default_cache_dir() / "native"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if os.access(cache, os.W_OK):
            return cache
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="neurodelay-native-"))


class _CompileFailed(Exception):
    """The compiler's complaint (caught in :func:`_compile`)."""


def _compile(cc: str, flags: tuple[str, ...], dest: Path, source: Path) -> str | None:
    """Compile source to dest atomically; the compiler's complaint, or None."""
    try:
        with atomic_path(dest) as tmp:
            proc = subprocess.run([cc, *flags, *COMMON_FLAGS, "-o", str(tmp), str(source),
                                   "-lm"], capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise _CompileFailed((proc.stderr or proc.stdout).strip()[-2000:]
                                     or f"exit {proc.returncode}")
    except _CompileFailed as exc:
        return str(exc)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def build(source: Path, stem: str, abi: int, declare,
          flag_sets: tuple[tuple[str, ...], ...] = FLAG_SETS) -> tuple[NativeStatus, object]:
    """Compile (or find in the cache) and load ``source``: (status, library or None).
    The first flag set that compiles and loads wins; ``declare(lib)`` sets the argument
    types of its functions (an AttributeError there refuses the library)."""
    if disabled():
        return NativeStatus(False, f"{ENV_SWITCH}={os.environ[ENV_SWITCH]} is set"), None
    cc = compiler()
    if cc is None:
        return NativeStatus(False, "no C compiler found (set CC, or install gcc or clang)"), None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout.splitlines()[:1]
    except (OSError, subprocess.SubprocessError) as exc:
        return NativeStatus(False, f"the C compiler {cc} does not run: {exc}"), None
    source = Path(source)
    try:
        text = source.read_bytes()
    except OSError as exc:
        return NativeStatus(False, f"the C source {source} cannot be read: {exc}"), None
    cache = _writable_cache()
    errors = []
    for flags in flag_sets:
        key = hashlib.sha256(b"\0".join([text, cc.encode(), " ".join(version).encode(),
                                         " ".join(flags + COMMON_FLAGS).encode(),
                                         _cpu_signature().encode()])).hexdigest()[:20]
        dest = cache / f"{stem}_{key}.so"
        if not dest.exists():
            err = _compile(cc, flags, dest, source)
            if err is not None:
                errors.append(f"{' '.join(flags)}: {err}")
                continue
        try:
            lib = ctypes.CDLL(str(dest))
            lib.nd_abi_version.restype = ctypes.c_int
            if lib.nd_abi_version() != abi:
                raise OSError(f"interface version {lib.nd_abi_version()}, need {abi}")
            declare(lib)
        except (OSError, AttributeError) as exc:
            errors.append(f"{' '.join(flags)}: loading {dest} failed: {exc}")
            continue
        return NativeStatus(True, "built", str(dest), cc, flags), lib
    return NativeStatus(False, "compiling the kernels failed: " + " | ".join(errors), None,
                        cc), None


def bind(lib, name: str, restype, *argtypes) -> None:
    """Declare the C signature of ``lib.name`` for ctypes (what ``declare`` callbacks do)."""
    fn = getattr(lib, name)
    fn.argtypes = list(argtypes)
    fn.restype = restype


def load(source: Path, stem: str, abi: int, declare) -> tuple[NativeStatus, object]:
    """:func:`build` once per process for ``stem`` (later calls return the same pair)."""
    with _LOCK:
        if stem not in _LOADED:
            _LOADED[stem] = build(source, stem, abi, declare)
        return _LOADED[stem]


def default_threads() -> int:
    """Threads for a kernel call: torch's thread count where this process uses torch
    (``--threads`` sets it), else the CPUs this process may run on."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return max(1, int(torch.get_num_threads()))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def split_run(fn, n_items: int, args_of, threads: int | None = None,
              what: str = "compiled kernel") -> None:
    """Call the compiled fn(*args_of(lo, hi)) over [0, n_items) split into one range per
    thread (``threads``, default :func:`default_threads`) on a shared pool. Return codes:
    0 fine, -1 out of memory (MemoryError), others refused arguments (KernelError)."""
    n = max(1, min(threads or default_threads(), n_items))
    ranges = [(n_items * k // n, n_items * (k + 1) // n) for k in range(n)]
    if n == 1:
        rcs = [fn(*args_of(0, n_items))]
    else:
        with _LOCK:
            pool = _POOL.get("pool")
            # a forked child inherits the pool object but not its threads: make its own
            if pool is None or _POOL["size"] < n or _POOL["pid"] != os.getpid():
                if pool is not None and _POOL["pid"] == os.getpid():
                    pool.shutdown(wait=False)                    # replaced by a wider one
                pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="nd-native")
                _POOL.update(pool=pool, size=n, pid=os.getpid())
        futures = [pool.submit(fn, *args_of(lo, hi)) for lo, hi in ranges]
        rcs = [f.result() for f in futures]
    if any(rc == -1 for rc in rcs):
        raise MemoryError(f"{what}: out of memory for its buffers")
    if any(rc != 0 for rc in rcs):
        raise KernelError(f"{what}: refused its arguments (codes {rcs})")
