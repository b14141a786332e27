"""In-process compatibility fixes for third-party packages on Python 3.11.

Lava (lava-nc 0.10.0, lava-dl 0.6.0) has no release for Python 3.11 and is archived
upstream. Two things stop it from importing here; both are fixed in memory at import
time, without touching any file in site-packages:

1. ``lava/magma/compiler/var_model.py`` declares dataclass fields whose default is a
   dataclass *instance* (``x: ByteEncoder = ByteEncoder()``). Python 3.11 rejects an
   unhashable default, so the module fails at import. We install a meta-path finder
   that loads that one module from its source with those defaults rewritten to
   ``field(default_factory=ByteEncoder)``.
2. ``lava.lib.dl.slayer`` imports ``object_detection`` which needs torchvision; no
   torchvision build fits torch 2.13 on CPU. We register an empty placeholder module
   (object detection is not used by neurodelay).
3. Lava's runtime calls ``multiprocessing.set_start_method('fork')`` at import and fails
   ("context has already been set") if anything in the process already fixed the start
   method. We import that module once with a tolerant ``set_start_method``.

Call :func:`ensure_lava` before importing anything from ``lava``.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import types

_VAR_MODEL = "lava.magma.compiler.var_model"
_OBJ_DET = "lava.lib.dl.slayer.object_detection"
_DEFAULT_INSTANCE = re.compile(r"^(\s+\w+\s*:\s*(\w+)\s*=\s*)\2\(\)\s*$", re.MULTILINE)


class _PatchedSourceLoader(importlib.machinery.SourceFileLoader):
    """Source loader that rewrites instance defaults to default_factory."""

    def get_code(self, fullname):  # noqa: D102 - importlib API
        source = self.get_data(self.path).decode("utf-8")
        patched = _DEFAULT_INSTANCE.sub(
            r"\1__import__('dataclasses').field(default_factory=\2)", source)
        return compile(patched, self.path, "exec", dont_inherit=True)


class _LavaFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != _VAR_MODEL:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        loader = _PatchedSourceLoader(fullname, spec.origin)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


_installed = False


def ensure_lava() -> None:
    """Make ``import lava...`` work on Python 3.11 (idempotent)."""
    global _installed
    if _installed:
        return
    if _VAR_MODEL in sys.modules:  # imported before us: nothing we can do in place
        _installed = True
        return
    sys.meta_path.insert(0, _LavaFinder())
    if _OBJ_DET not in sys.modules:
        placeholder = types.ModuleType(_OBJ_DET)
        placeholder.__doc__ = "placeholder installed by neurodelay._compat (needs torchvision)"
        sys.modules[_OBJ_DET] = placeholder
    _import_lava_runtime()
    _installed = True


def _import_lava_runtime() -> None:
    import multiprocessing as mp  # local: patched only while Lava imports

    name = "lava.magma.runtime.message_infrastructure.multiprocessing"
    if name in sys.modules:
        return
    original = mp.set_start_method

    def tolerant(method, force=False):
        if mp.get_start_method(allow_none=True) != method:
            original(method, force=True)

    mp.set_start_method = tolerant
    try:
        __import__(name)
    finally:
        mp.set_start_method = original


_NETX_UTILS = "lava.lib.dl.netx.utils"


def netx_utils() -> types.ModuleType:
    """lava-dl's ``lava.lib.dl.netx.utils`` (the weight-bit optimisation netx applies to
    the weights of every file it loads), Lava's own code, without importing the rest of
    Lava: the package ``lava.lib.dl.netx`` imports slayer and Lava's runtime (~3 s), its
    ``utils.py`` only numpy and h5py. Where netx is already imported, its own module;
    else that one file is loaded from lava-dl's install under a private name."""
    if _NETX_UTILS in sys.modules:
        return sys.modules[_NETX_UTILS]
    private = "neurodelay._lava_netx_utils"
    if private in sys.modules:
        return sys.modules[private]
    origin = None
    try:
        spec = importlib.util.find_spec("lava.lib.dl")
        for loc in (spec.submodule_search_locations or []) if spec else []:
            cand = os.path.join(loc, "netx", "utils.py")
            if os.path.isfile(cand):
                origin = cand
                break
    except (ImportError, ValueError):
        origin = None
    if origin is None:              # an unusual layout: the regular (slow) import
        ensure_lava()
        return importlib.import_module(_NETX_UTILS)
    mspec = importlib.util.spec_from_file_location(private, origin)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    sys.modules[private] = mod
    return mod


def check_install() -> None:
    """Import every heavy dependency once; raise a readable error if one is missing."""
    problems = []
    for mod in ("torch", "numpy", "h5py", "click", "nir", "DCLS.construct.modules",
                "spikingjelly.activation_based.neuron"):
        try:
            __import__(mod)
        except Exception as exc:  # pragma: no cover - reported to the user
            problems.append(f"{mod}: {exc}")
    try:
        ensure_lava()
        __import__("lava.magma.core.run_configs")
        __import__("lava.proc.dense.process")
        __import__("lava.lib.dl.netx")
    except Exception as exc:  # pragma: no cover
        problems.append(f"lava: {exc}")
    if problems:
        raise SystemExit("neurodelay install check failed:\n  " + "\n  ".join(problems))
    print("neurodelay install check: torch, dcls, spikingjelly, lava-nc, lava-dl, nir OK")
