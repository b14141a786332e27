"""Reading files that come from other people: HDF5 files, checkpoints, text from files.

Everything neurodelay reads may have been made by someone else: a run folder, a deploy
folder, an SHD-layout data file, a NIR graph. The README's threat model lists what is
promised for each; this module holds the checks they share:

* :func:`open_h5` opens an HDF5 file read-only and, before any dataset is read, walks
  every link in it and refuses (with the caller's error class, naming the file and the
  object): external links and soft links (HDF5 would follow them into other files or
  other objects), datasets stored in external raw files or as virtual datasets (their
  bytes live in other files), filters other than HDF5's and h5py's built-in ones (an
  unknown filter makes HDF5 load a plugin library), more than :data:`MAX_H5_OBJECTS`
  objects, and declared sizes the memory guard (:mod:`neurodelay.options`) would not
  allow: the sum over all fixed-size datasets, and any dataset that declares much more
  than the file stores for it (a few kB of gzip-compressed zeros, or an unallocated
  dataset, can declare terabytes).
* :func:`load_torch_file` loads a checkpoint with ``torch.load(weights_only=True)``:
  tensors and plain Python data only; a file that holds anything else (a pickled object
  whose unpickling would run code) is refused, naming what was found, and nothing of it
  is executed.
* :func:`printable` escapes control characters (terminal escape sequences) in strings
  read from files and bounds their length, before they reach a terminal, a log or a
  file name.

Only :mod:`neurodelay.errors` and :mod:`neurodelay.options` are imported here (a low
layer); torch and h5py are imported by the functions that need them.
"""
from __future__ import annotations

import math
import pickle
import unicodedata
import zipfile
from pathlib import Path

import h5py
import numpy as np

from neurodelay.errors import NeurodelayError
from neurodelay.options import GIB, check_memory

MAX_H5_OBJECTS = 100_000
# A dataset may declare at most this many times the bytes it stores (plus a small floor):
# real data compresses a few times; only a fill value or zeros compress by 1000x.
MAX_EXPANSION = 100
EXPANSION_FLOOR = 16 << 20
# filters HDF5 itself or h5py bring (deflate, shuffle, fletcher32, szip, nbit,
# scaleoffset, lzf); any other id makes HDF5 search HDF5_PLUGIN_PATH for a library
BUILTIN_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
                   6: "scaleoffset", 32000: "lzf"}
MAX_TEXT = 200


def printable(text, limit: int = MAX_TEXT) -> str:
    """``text`` with control and format characters written as ``\\xNN`` / ``\\uNNNN``
    escapes (no terminal escape sequence survives), cut to ``limit`` characters."""
    s = str(text)
    out = []
    for ch in s:
        cat = unicodedata.category(ch)
        if cat == "Zs":
            out.append(" ")
        elif not cat.startswith("C") and cat not in ("Zl", "Zp"):
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    s = "".join(out)
    return s if len(s) <= limit else s[:limit - 3] + "..."


# ----------------------------------------------------------------------------- HDF5

def _fmt_bytes(n: float) -> str:
    if n >= GIB:
        return f"{n / GIB:,.1f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):,.1f} MiB"
    return f"{int(n):,} bytes"


def check_h5(f, path, error=NeurodelayError, *, what: str = "HDF5 file") -> dict:
    """Refuse what the module docstring lists in the open h5py file ``f``; returns
    ``{name: declared bytes}`` of its datasets. ``error`` is the caller's error class."""

    path = Path(path)
    problems: list[str] = []
    sizes: dict[str, int] = {}
    count = 0

    def visit(name, link):
        nonlocal count
        count += 1
        if count > MAX_H5_OBJECTS:
            return True  # stop the walk
        if isinstance(link, h5py.ExternalLink):
            problems.append(f"'{printable(name)}' is an external link to "
                            f"'{printable(link.filename)}:{printable(link.path)}'")
            return None
        if isinstance(link, h5py.SoftLink):
            problems.append(f"'{printable(name)}' is a soft link to '{printable(link.path)}'")
            return None
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset):
            _check_dataset(obj, name, problems, sizes)
        return None

    try:
        # attributes need no check: they cannot be compressed, linked or stored elsewhere
        f.visititems_links(visit)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise error(f"{path}: not a readable {what} ({type(e).__name__}: {e}); the file is "
                    f"damaged or not what its name says") from None
    if count > MAX_H5_OBJECTS:
        raise error(f"{path}: holds more than {MAX_H5_OBJECTS:,} HDF5 objects; a {what} "
                    f"needs a handful, so it was not read further")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                            if len(problems) > 5 else "")
        raise error(f"{path}: refused, {what} from another source must be self-contained: "
                    f"{shown}. neurodelay never follows links out of a file nor reads data "
                    f"stored elsewhere; write the file again with the data inside it "
                    f"(h5py: copy the dataset's values, not a link)")
    check_memory(sum(sizes.values()),
                 f"{path}: the datasets of this {what} (as declared in the file)",
                 "Use a smaller file or check where it came from")
    return sizes


def _check_dataset(ds, name: str, problems: list, sizes: dict) -> None:
    shown = printable(name)
    dcpl = ds.id.get_create_plist()
    if dcpl.get_external_count() > 0:
        target = dcpl.get_external(0)[0]
        target = target.decode("utf-8", "replace") if isinstance(target, bytes) else target
        problems.append(f"dataset '{shown}' is stored in the external file "
                        f"'{printable(target)}'")
        return
    if ds.is_virtual:
        problems.append(f"dataset '{shown}' is a virtual dataset (its data is in other files)")
        return
    for k in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(k)[0]
        if code not in BUILTIN_FILTERS:
            problems.append(f"dataset '{shown}' uses HDF5 filter {code}, not one of the "
                            f"built-in ones ({', '.join(sorted(BUILTIN_FILTERS.values()))})")
            return
    if ds.shape is None:
        sizes[name] = 0
        return
    n = math.prod(ds.shape)
    item = ds.dtype.itemsize
    if h5py.check_vlen_dtype(ds.dtype) is not None or h5py.check_string_dtype(ds.dtype):
        item = max(item, 16)  # a heap reference per element; the heap is in the file
    declared = int(n) * int(item)
    sizes[name] = declared
    if declared <= EXPANSION_FLOOR:
        return
    stored = int(ds.id.get_storage_size())
    if declared > MAX_EXPANSION * stored + EXPANSION_FLOOR:
        problems.append(f"dataset '{shown}' declares shape {tuple(ds.shape)} "
                        f"({_fmt_bytes(declared)}) but stores only {_fmt_bytes(stored)} "
                        f"(a decompression bomb, or a dataset that was never written)")


def open_h5(path, error=NeurodelayError, *, what: str = "HDF5 file", unreadable=None):
    """Open ``path`` read-only as HDF5 after :func:`check_h5`; an ``error`` naming the
    file for every failure (missing, not HDF5, truncated, refused content).
    ``unreadable(exc)``, if given, makes the error for a file HDF5 cannot open (the
    caller's wording of what to do)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file" + (" (it is a folder)" if path.exists() else ""))
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        if unreadable is not None:
            raise unreadable(e) from None
        raise error(f"{path}: not a readable {what} (not HDF5, or truncated: {e})") from None
    try:
        check_h5(f, path, error, what=what)
    except BaseException:
        f.close()
        raise
    return f


# ----------------------------------------------------------------------------- torch

def _numpy_globals() -> list:
    """numpy's array reconstruction, allowed for the numpy RNG state (a uint32 array)
    that checkpoints written before this module existed hold."""
    return [np._core.multiarray._reconstruct, np.ndarray, np.dtype,
            np.dtypes.UInt32DType]


def load_torch_file(path, error=NeurodelayError, *, what: str = "checkpoint"):
    """``torch.load`` with ``weights_only=True`` onto the CPU: tensors and plain data.

    Anything else in the file (a class, a function: what a pickle needs to run code) is
    refused with ``error`` naming it; it is never imported or called.
    """
    import torch  # local: the HDF5 readers above (data, network files) stay torch-free

    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        found = _unsafe_names(path)
        if found is None:
            raise error(f"{path}: not a readable {what} (truncated or corrupted: "
                        f"{_first_line(e)})") from None
        raise error(f"{path}: refused, this {what} holds Python objects other than tensors "
                    f"and plain data ({', '.join(found) or 'an object the safe loader does not allow'}"
                    f"); loading them could run code, so nothing of it was loaded. A file "
                    f"written by neurodelay never holds them: it was modified, or made by "
                    f"another program. Train or fine-tune the run again") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, TypeError,
            AttributeError, ImportError, IndexError, UnicodeDecodeError, OSError) as e:
        raise error(f"{path}: not a readable {what} (truncated or corrupted: "
                    f"{type(e).__name__}: {_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    s = str(e)
    return printable(s.splitlines()[0] if s else "", 300)


def _unsafe_names(path) -> list[str] | None:
    """The globals (module.name) a torch file would import, read without unpickling;
    None when the file is not a torch zip file at all."""
    import torch  # local: as in load_torch_file

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - any damage: report it as unreadable
        return None
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _numpy_globals()}
    return [printable(n, 80) for n in names if n not in allowed][:6]
