"""load_binned: an SHD-layout file as a BinnedDataset, through the on-disk cache.

Binned datasets are cached on disk (``.npz``), keyed by the sha256 of the file content and
the preprocessing parameters, so a second load skips HDF5 parsing and binning."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from neurodelay.data.dataset import BinnedDataset
from neurodelay.data.shd import WHERE_TO_GET, _bin_file, _check_params
from neurodelay.errors import DataError
from neurodelay.fs import default_cache_dir
from neurodelay.options import binned_bytes, check_memory

CACHE_VERSION = 2  # 2: files with links or external storage are refused, never cached


# ----------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _cache_key(file_sha: str, channel_bin, dt, max_time, n_channels) -> str:
    spec = {"version": CACHE_VERSION, "file_sha256": file_sha, "channel_bin": int(channel_bin),
            "dt": float(dt), "max_time": None if max_time is None else float(max_time),
            "n_channels": int(n_channels)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _cache_path(cache_dir: Path, src: Path, key: str) -> Path:
    return cache_dir / "binned" / f"{src.stem}-{key[:24]}.npz"


def _small_uint(counts: np.ndarray) -> np.ndarray:
    top = int(counts.max()) if counts.size else 0
    for dt_ in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt_).max:
            return counts.astype(dt_)
    return counts


def _save_cache(cpath: Path, key, counts, lengths, labels, names, speakers) -> None:
    """Write the cache file atomically; a cache that cannot be written only warns."""
    tmp = None
    try:
        cpath.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cpath.parent, prefix=f".{cpath.stem}-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, counts=_small_uint(counts), lengths=lengths.astype(np.int64),
                     labels=labels.astype(np.int64),
                     speakers=(np.zeros(0, np.int64) if speakers is None
                               else speakers.astype(np.int64)),
                     class_names=np.array(names, dtype=str),
                     meta=np.array(json.dumps({"key": key, "has_speakers":
                                               speakers is not None})))
        os.replace(tmp, cpath)
        tmp = None
    except OSError as e:
        warnings.warn(f"could not write the binned-data cache {str(cpath)!r} ({e}); "
                      f"continuing without it (set NEURODELAY_CACHE to a writable folder)",
                      stacklevel=3)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _load_cache(cpath: Path, key: str, c: int):
    """The cached arrays, or None when the file is absent, stale or corrupt (with a warning)."""
    if not cpath.is_file():
        return None
    try:
        with np.load(cpath, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            if meta.get("key") != key:
                raise ValueError("cache key mismatch")
            counts, lengths = z["counts"], z["lengths"].astype(np.int64)
            labels = z["labels"].astype(np.int64)
            names = [str(s) for s in z["class_names"]]
            speakers = z["speakers"].astype(np.int64) if meta["has_speakers"] else None
        if counts.ndim != 2 or counts.shape[1] != c or counts.shape[0] != lengths.sum() \
                or len(labels) != len(lengths) or (lengths < 1).any() \
                or (speakers is not None and len(speakers) != len(labels)):
            raise ValueError("inconsistent array shapes")
        return counts, lengths, labels, names, speakers
    except Exception as e:  # any damage (bad zip, truncation, missing keys): rebuild
        warnings.warn(f"ignoring unreadable binned-data cache {str(cpath)!r} ({e!r}); "
                      f"rebuilding it", stacklevel=3)
        return None


def load_binned(path: str | os.PathLike, *, channel_bin: int = 5, dt: float = 0.01,
                max_time: float | None = None, n_channels: int = 700,
                cache_dir: str | os.PathLike | None = None, progress: bool = True,
                cache: bool = True) -> BinnedDataset:
    """Load an SHD-layout HDF5 file as a :class:`BinnedDataset` (see the module docstring).

    The result is cached under ``<cache_dir>/binned`` (default :func:`default_cache_dir`),
    keyed by the sha256 of the file content and the preprocessing parameters; a corrupt
    cache file is ignored and rebuilt. ``cache=False`` skips the cache. The input file is
    only read. Raises :class:`DataError` for missing or malformed files and for a file
    without samples, and :class:`~neurodelay.errors.ResourceLimitError` (before binning)
    when the binned data would exceed the memory limit of :mod:`neurodelay.options`
    (``NEURODELAY_MAX_GIB``, default 8 GiB; e.g. a sample whose spikes span hours).
    """
    path = Path(path).expanduser()
    _check_params(channel_bin, dt, max_time, n_channels)
    channel_bin, n_channels, dt = int(channel_bin), int(n_channels), float(dt)
    max_time = None if max_time is None else float(max_time)
    if not path.is_file():
        raise DataError(f"{str(path)!r}: file not found"
                        + (" (it is a folder)" if path.exists() else "") + f". {WHERE_TO_GET}")
    c = n_channels // channel_bin
    params = dict(channel_bin=channel_bin, dt=dt, max_time=max_time, n_channels=n_channels)
    got = cpath = key = None
    if cache:
        cdir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        key = _cache_key(_sha256(path), **params)
        cpath = _cache_path(cdir, path, key)
        got = _load_cache(cpath, key, c)
    if got is None:
        got = _bin_file(path, progress=progress, **params)
        if cache:
            _save_cache(cpath, key, *got)
    counts, lengths, labels, names, speakers = got
    if len(lengths) == 0:
        raise DataError(f"{str(path)!r}: the file holds no samples (spikes/times is empty); "
                        f"nothing to train or evaluate on. Use a file with samples (was its "
                        f"creation or download interrupted?)")
    if counts.dtype != np.float32:  # from the cache (small unsigned integers)

        check_memory(binned_bytes(int(lengths.sum()), c),
                     f"{str(path)!r}: the binned data ({int(lengths.sum()):,} time steps x "
                     f"{c} channels, from the cache {str(cpath)!r})",
                     "Load it with --max-time SECONDS (library: max_time=) or a coarser --dt")
    flat = counts.astype(np.float32, copy=False)
    samples = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
    # a file without extra/keys gets the names '0', '1', ...: nothing to compare by name
    named = list(names) != [str(k) for k in range(len(names))]
    return BinnedDataset(samples=samples, labels=labels, class_names=names, speakers=speakers,
                         source=str(path), named_classes=named, **params)
