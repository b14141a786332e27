"""Spiking audio datasets: SHD / SSC HDF5 files, binning, caching, batching, a synthetic task.

File layout read (the Heidelberg Spiking Data Sets, Cramer et al. 2020; SSHD uses it too)::

    spikes/times   (N,) vlen float16   spike times in seconds, one array per sample
    spikes/units   (N,) vlen uint16    channel 0..n_channels-1 of each spike
    labels         (N,) integer        class index
    extra/keys     (n_classes,) bytes  class names (optional)
    extra/speaker  (N,) integer        speaker id (optional)

Preprocessing (as in Hammouamri et al. 2023): ``channel_bin`` consecutive units are summed
(700 -> 140), time is cut into bins of ``dt`` seconds counted from the sample's first spike,
and every entry is the spike COUNT of that (time bin, channel group), as float32. Sample i
becomes an array of shape ``(T_i, n_channels // channel_bin)`` with
``T_i = floor((last_i - first_i) / dt) + 1`` (spikes at relative time >= ``max_time`` are
dropped first when ``max_time`` is given).

Binned datasets are cached on disk (``.npz``), keyed by the sha256 of the file content and
the preprocessing parameters, so a second load skips HDF5 parsing and binning.

Everything here is numpy/h5py; torch is imported only inside :func:`iterate_batches`.
"""
from __future__ import annotations

from neurodelay.errors import NeurodelayError

import hashlib
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from neurodelay._io import atomic_path

__all__ = [
    "DataError", "BinnedDataset", "resolve_files", "load_binned", "split_by_speaker",
    "split_random", "pad_batch", "iterate_batches", "write_shd_file", "make_synthetic",
    "synthetic_dir", "default_cache_dir", "synthetic_patterns",
]

CACHE_VERSION = 2  # 2: files with links or external storage are refused, never cached
REQUIRED_KEYS = ("spikes/times", "spikes/units", "labels")
OFFICIAL_FILES = {
    "shd": {"train": "shd_train.h5", "valid": None, "test": "shd_test.h5"},
    "ssc": {"train": "ssc_train.h5", "valid": "ssc_valid.h5", "test": "ssc_test.h5"},
}
SYNTHETIC_FILES = {s: f"synthetic_{s}.h5" for s in ("train", "valid", "test")}
WHERE_TO_GET = (
    "SHD and SSC are published by the Zenke lab (Cramer et al. 2020, \"The Heidelberg "
    "Spiking Data Sets for the Systematic Evaluation of Spiking Neural Networks\", IEEE "
    "TNNLS) at https://zenkelab.org/datasets/ as .h5.gz files: download them and gunzip "
    "them (e.g. `gunzip shd_train.h5.gz`) into the data folder."
)
_GZIP_MAGIC = b"\x1f\x8b"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CHUNK = 512  # samples read and binned at once
MAX_CLASSES = 100_000  # SSC has 35; a file claiming more is refused before allocating


class DataError(NeurodelayError, ValueError):
    """A data file or a data argument is missing or malformed."""


# ----------------------------------------------------------------------------------------
# Locating files
# ----------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$NEURODELAY_CACHE`` if set, else ``~/.cache/neurodelay``."""
    env = os.environ.get("NEURODELAY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neurodelay"


def synthetic_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Default folder of the embedded synthetic task: ``<cache dir>/synthetic``."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / "synthetic"


def _missing_file_error(path: Path, split: str, official: str | None) -> DataError:
    names = ", ".join(f"{ds.upper()}: " + " / ".join(n for n in files.values() if n)
                      for ds, files in OFFICIAL_FILES.items())
    hint = f" (official name {official!r})" if official else ""
    return DataError(
        f"{split} file {path.name!r}{hint} not found in {str(path.parent)!r}. "
        f"Official file names are {names}. {WHERE_TO_GET} Or pass the file explicitly.")


def resolve_files(dataset: str | None, data_dir: str | os.PathLike | None = None,
                  train_file: str | os.PathLike | None = None,
                  valid_file: str | os.PathLike | None = None,
                  test_file: str | os.PathLike | None = None) -> dict[str, Path | None]:
    """Find the train/valid/test files of a dataset.

    ``dataset`` is ``'shd'`` (``shd_train.h5``, ``shd_test.h5``; SHD has no validation
    split), ``'ssc'`` (``ssc_{train,valid,test}.h5``), ``'synthetic'`` (the embedded task,
    generated into ``data_dir`` or :func:`synthetic_dir` if missing) or ``None`` (only the
    explicit files). Explicit ``*_file`` arguments override the dataset's files.
    Returns ``dict(train=Path, valid=Path | None, test=Path | None)``; every returned file
    exists. Raises :class:`DataError` naming the missing file and where it was looked for.
    """
    explicit = {"train": train_file, "valid": valid_file, "test": test_file}
    key = dataset.lower() if isinstance(dataset, str) else None
    if dataset is not None and key not in (*OFFICIAL_FILES, "synthetic"):
        raise DataError(f"unknown dataset {dataset!r}: use 'shd', 'ssc', 'synthetic', or "
                        f"dataset=None with train_file=... (and valid_file/test_file)")
    if key == "synthetic":
        generated = make_synthetic(data_dir if data_dir is not None else synthetic_dir())
        official: dict[str, str | None] = {s: generated[s].name for s in generated}
        data_dir = generated["train"].parent
    else:
        official = OFFICIAL_FILES.get(key or "", {"train": None, "valid": None, "test": None})
    out: dict[str, Path | None] = {}
    for split in ("train", "valid", "test"):
        if explicit[split] is not None:
            path = Path(explicit[split]).expanduser()
        elif official[split] is not None:
            if data_dir is None:
                raise DataError(f"dataset {dataset!r}: no data_dir given to look for "
                                f"{official[split]!r}; pass data_dir=<folder with the "
                                f"files> or {split}_file=<path>")
            path = Path(data_dir).expanduser() / official[split]
        else:
            out[split] = None
            continue
        if not path.is_file():
            if path.exists():
                raise DataError(f"{split} file {str(path)!r} is not a regular file "
                                f"(a folder?); pass the path of the .h5 file")
            raise _missing_file_error(path, split, official[split])
        out[split] = path
    if out["train"] is None:
        raise DataError("no training file: pass dataset='shd' / 'ssc' / 'synthetic' with "
                        "data_dir, or train_file=<path to an SHD-layout .h5 file>")
    return out


# ----------------------------------------------------------------------------------------
# The binned dataset
# ----------------------------------------------------------------------------------------
@dataclass
class BinnedDataset:
    """Binned samples: ``samples[i]`` is a float32 ``(T_i, n_inputs)`` array of spike counts."""

    samples: list[np.ndarray]
    labels: np.ndarray                 # (N,) int64
    class_names: list[str]
    speakers: np.ndarray | None = None  # (N,) int64 or None
    source: str = ""
    dt: float = 0.01
    channel_bin: int = 5
    n_channels: int = 700
    max_time: float | None = None
    named_classes: bool = True           # class_names came from the file (extra/keys)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.samples = [np.asarray(s, dtype=np.float32) for s in self.samples]
        self.labels = np.asarray(self.labels).astype(np.int64).reshape(-1)
        if len(self.labels) != len(self.samples):
            raise DataError(f"{self.source}: {len(self.samples)} samples but "
                            f"{len(self.labels)} labels")
        if self.speakers is not None:
            self.speakers = np.asarray(self.speakers).astype(np.int64).reshape(-1)
            if len(self.speakers) != len(self.samples):
                raise DataError(f"{self.source}: {len(self.samples)} samples but "
                                f"{len(self.speakers)} speaker ids")
        self.class_names = [str(c) for c in self.class_names]
        c = self.n_inputs
        for i, s in enumerate(self.samples):
            if s.ndim != 2 or s.shape[1] != c:
                raise DataError(f"{self.source}: sample {i} has shape {s.shape}, expected "
                                f"(T, {c}) for n_channels={self.n_channels} / "
                                f"channel_bin={self.channel_bin}")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def n_inputs(self) -> int:
        """Input channels after channel binning (140 for SHD defaults)."""
        return self.n_channels // self.channel_bin

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64 number of time steps of each sample."""
        return np.array([s.shape[0] for s in self.samples], dtype=np.int64)

    @property
    def max_steps(self) -> int:
        """The longest sample, in time steps (0 for an empty dataset)."""
        return int(self.lengths.max()) if self.samples else 0

    def subset(self, indices) -> "BinnedDataset":
        """A new dataset with the given samples (integer indices or a boolean mask)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise DataError(f"boolean mask of shape {idx.shape} for {len(self)} samples")
            idx = np.nonzero(idx)[0]
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise DataError(f"subset index out of range for {len(self)} samples")
        return BinnedDataset(
            samples=[self.samples[i] for i in idx], labels=self.labels[idx],
            class_names=list(self.class_names),
            speakers=None if self.speakers is None else self.speakers[idx],
            source=self.source, dt=self.dt, channel_bin=self.channel_bin,
            n_channels=self.n_channels, max_time=self.max_time,
            named_classes=self.named_classes, notes=list(self.notes))


def remap_classes(ds: BinnedDataset, names: Sequence[str]) -> BinnedDataset:
    """``ds`` with its labels renumbered so that class k is ``names[k]`` (the same class
    names in another order, e.g. a test file written with another class order)."""
    where = {n: k for k, n in enumerate(names)}
    if sorted(where) != sorted(ds.class_names) or len(where) != len(ds.class_names):
        raise DataError(f"{ds.source}: class names {ds.class_names[:5]}... cannot be mapped "
                        f"onto {list(names)[:5]}...")
    perm = np.array([where[n] for n in ds.class_names], dtype=np.int64)
    note = (f"{ds.source}: the file lists the classes in another order than the model; its "
            f"labels were renumbered by class name")
    return replace(ds, labels=perm[ds.labels], class_names=list(names),
                   notes=[*ds.notes, note])


# ----------------------------------------------------------------------------------------
# Reading and binning
# ----------------------------------------------------------------------------------------
def _check_params(channel_bin, dt, max_time, n_channels):
    if int(n_channels) != n_channels or n_channels <= 0:
        raise DataError(f"n_channels must be a positive integer, got {n_channels}")
    if int(channel_bin) != channel_bin or channel_bin <= 0:
        raise DataError(f"channel_bin must be a positive integer, got {channel_bin}")
    if n_channels % channel_bin:
        raise DataError(f"n_channels={n_channels} is not divisible by channel_bin="
                        f"{channel_bin}; choose a channel_bin that divides it (e.g. 5 for 700)")
    if not (dt > 0 and math.isfinite(dt)):
        raise DataError(f"dt must be a positive number of seconds, got {dt}")
    if max_time is not None and not (max_time > 0):
        raise DataError(f"max_time must be positive seconds or None, got {max_time}")


def _open_h5(path: Path) -> h5py.File:
    """Open read-only, turning every failure into a DataError that says how to fix it;
    links, external storage and oversized declarations are refused before anything is
    read (:func:`neurodelay.untrusted.open_h5`)."""
    from neurodelay.untrusted import check_h5

    if not path.is_file():
        raise DataError(f"{str(path)!r}: file not found. {WHERE_TO_GET}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:2] == _GZIP_MAGIC:
        raise DataError(f"{str(path)!r} is gzip-compressed, not HDF5: run `gunzip` on it "
                        f"(the .h5.gz files must be unpacked) and load the .h5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        what = ("a truncated or damaged HDF5 file (an interrupted download or copy?)"
                if head == _HDF5_MAGIC else "not an HDF5 file, or a truncated one")
        raise DataError(f"{str(path)!r}: {what} ({e}). Download / copy it again; the "
                        f"original files are SHD-layout .h5 files. {WHERE_TO_GET}") from None
    try:
        check_h5(f, path, DataError, what="data file")
    except BaseException:
        f.close()
        raise
    return f


def _first_bad(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _bin_chunk(times, units, start: int, path: Path, *, channel_bin, dt, max_time,
               n_channels, entries_before: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Validate and bin samples ``start .. start+len(times)-1``.

    Returns (counts (sum T_i, C) float32, lengths (n,) int64). ``entries_before``: time
    steps binned by earlier chunks of the same file (for the memory guard).
    """
    n = len(times)
    n_t = np.fromiter((len(a) for a in times), np.int64, n)
    n_u = np.fromiter((len(a) for a in units), np.int64, n)
    if (i := _first_bad(n_t != n_u)) is not None:
        raise DataError(f"{str(path)!r}: sample {start + i} has {n_t[i]} spike times but "
                        f"{n_u[i]} units; spikes/times[i] and spikes/units[i] must have the "
                        f"same length. The file is damaged: re-create or re-download it")
    if (i := _first_bad(n_t == 0)) is not None:
        raise DataError(f"{str(path)!r}: sample {start + i} has no spikes (empty sample); "
                        f"remove it from the file or give it at least one spike")
    t = np.concatenate([np.asarray(a) for a in times]).astype(np.float64)
    u_raw = np.concatenate([np.asarray(a) for a in units])
    sid = np.repeat(np.arange(n), n_t)
    first = np.concatenate([[0], np.cumsum(n_t)[:-1]])

    def where(k):  # sample number and spike number of flat spike k
        return start + int(sid[k]), int(k - first[sid[k]])

    if (k := _first_bad(~np.isfinite(t) | (t < 0))) is not None:
        s, j = where(k)
        raise DataError(f"{str(path)!r}: sample {s} spike {j} has time {t[k]} s; spike "
                        f"times must be finite and >= 0 (negative or NaN times). Fix or "
                        f"drop that sample")
    if not np.issubdtype(u_raw.dtype, np.integer):
        if (k := _first_bad(~np.isfinite(u_raw) | (u_raw != np.round(u_raw)))) is not None:
            s, j = where(k)
            raise DataError(f"{str(path)!r}: sample {s} spike {j} has a non-integer unit "
                            f"{u_raw[k]}; spikes/units must hold channel indices")
    u = u_raw.astype(np.int64)
    if (k := _first_bad((u < 0) | (u >= n_channels))) is not None:
        s, j = where(k)
        raise DataError(f"{str(path)!r}: sample {s} spike {j} has unit {u[k]}, out of range "
                        f"[0, {n_channels}); pass n_channels=<number of channels in the "
                        f"file> (SHD/SSC have 700) or fix the file")

    t0 = np.minimum.reduceat(t, first)
    rel = t - t0[sid]
    b = np.floor(rel / dt).astype(np.int64)
    if max_time is not None:
        keep = rel < max_time          # the first spike (rel = 0) is always kept
        b, u, sid = b[keep], u[keep], sid[keep]
        first = np.concatenate([[0], np.cumsum(np.bincount(sid, minlength=n))[:-1]])
    c = n_channels // channel_bin
    lengths = np.maximum.reduceat(b, first) + 1
    _check_binned_size(path, start, lengths, entries_before, c=c, dt=dt, max_time=max_time)
    row0 = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = (row0[sid] + b) * c + u // channel_bin
    counts = np.bincount(flat, minlength=int(lengths.sum()) * c).reshape(-1, c)
    return counts.astype(np.float32), lengths


def _check_binned_size(path: Path, start: int, lengths: np.ndarray, entries_before: int, *,
                       c: int, dt: float, max_time) -> None:
    """Refuse (ResourceLimitError) before binning would allocate more than the limit
    (:mod:`neurodelay.options`): the binned data set (float32) plus this chunk's integer
    counts (int64), estimated from the sample lengths in steps."""
    from neurodelay.options import binned_bytes, check_memory

    chunk = int(lengths.sum())
    total = int(entries_before) + chunk
    need = binned_bytes(total, c) + 2 * binned_bytes(chunk, c)
    i = int(np.argmax(lengths))
    longest = int(lengths[i])
    cut = "" if max_time is None else f", already cut at max_time {max_time:g} s"
    check_memory(
        need,
        f"{str(path)!r}: binning samples 0..{start + len(lengths) - 1} at dt "
        f"{dt * 1000:g} ms x {c} channels ({total:,} time steps in all; the longest, sample "
        f"{start + i}, spans {(longest - 1) * dt:,.6g} s = {longest:,} steps{cut})",
        "Drop the spikes late in each sample with --max-time SECONDS (library: max_time=; "
        "SHD/SSC samples last under 1.5 s), use a coarser --dt, or fix that sample's "
        "spike times")


def _small_dataset(f: h5py.File, key: str, path: Path, n: int | None, limit: int,
                   what: str) -> np.ndarray:
    """``f[key]`` read whole after checking, from its declared shape, that it is 1-D
    with ``n`` entries (or at most ``limit`` when ``n`` is None)."""
    ds = f[key]
    if not isinstance(ds, h5py.Dataset):
        raise DataError(f"{str(path)!r}: '{key}' is a group, expected a dataset ({what})")
    shape = ds.shape
    if shape is None or len(shape) != 1 or (n is not None and shape[0] != n):
        raise DataError(f"{str(path)!r}: '{key}' has shape {shape} but there are {n} samples "
                        f"in spikes/times; it must be one entry per sample ({what})"
                        if n is not None else
                        f"{str(path)!r}: '{key}' has shape {shape}; expected a 1-D list "
                        f"({what})")
    if n is None and shape[0] > limit:
        raise DataError(f"{str(path)!r}: '{key}' declares {shape[0]:,} entries ({what}); "
                        f"neurodelay reads at most {limit:,}")
    return np.asarray(ds[()])


def _as_index(values: np.ndarray, path: Path, key: str, what: str) -> np.ndarray:
    """Integer-valued entries as int64, refusing non-integers and values beyond int64
    (which a cast would wrap or saturate), naming the first bad entry."""
    a = np.asarray(values)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise DataError(f"{str(path)!r}: '{key}' must hold integers ({what}), got dtype "
                        f"{a.dtype}")
    if np.issubdtype(a.dtype, np.integer):
        if a.dtype == np.uint64 and (i := _first_bad(a > np.iinfo(np.int64).max)) is not None:
            raise DataError(f"{str(path)!r}: entry {i} of '{key}' is {int(a[i])}, too large "
                            f"({what})")
        return a.astype(np.int64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(a) | (a != np.round(a)) | (np.abs(a) >= 2.0 ** 62)
    if (i := _first_bad(bad)) is not None:
        raise DataError(f"{str(path)!r}: entry {i} of '{key}' is {a[i]!r}; it must hold "
                        f"integers ({what})")
    return a.astype(np.int64)


def _read_labels(f: h5py.File, path: Path, n: int):
    """labels (int64), class names, speakers (or None), validated; shapes are checked
    before anything is read, and no more than :data:`MAX_CLASSES` classes are accepted."""
    from neurodelay.untrusted import printable

    labels = _as_index(_small_dataset(f, "labels", path, n, 0, "class indices"), path,
                       "labels", "class indices")
    if (i := _first_bad(labels < 0)) is not None:
        raise DataError(f"{str(path)!r}: label of sample {i} is {labels[i]}, negative; labels "
                        f"must be class indices 0..n_classes-1")
    if "extra/keys" in f:
        keys = _small_dataset(f, "extra/keys", path, None, MAX_CLASSES, "class names")
        names = [printable(k.decode("utf-8", "replace") if isinstance(k, bytes) else k)
                 for k in keys.reshape(-1)]
        n_classes = len(names)
        if (i := _first_bad(labels >= n_classes)) is not None:
            raise DataError(f"{str(path)!r}: label of sample {i} is {labels[i]}, out of range "
                            f"[0, {n_classes}) given the {n_classes} class names in "
                            f"extra/keys; fix the label or add the missing class names")
    else:
        top = int(labels.max()) if n else -1
        if top >= MAX_CLASSES:
            i = int(np.argmax(labels))
            raise DataError(f"{str(path)!r}: label of sample {i} is {top}, so the file would "
                            f"have {top + 1:,} classes (it has no extra/keys naming them); "
                            f"neurodelay accepts at most {MAX_CLASSES:,}. Fix the label")
        n_classes = top + 1
        names = [str(k) for k in range(n_classes)]
    speakers = None
    if "extra/speaker" in f:
        speakers = _as_index(_small_dataset(f, "extra/speaker", path, n, 0, "speaker ids"),
                             path, "extra/speaker", "speaker ids")
    return labels, names, speakers


def _bin_file(path: Path, *, channel_bin, dt, max_time, n_channels, progress):
    """Read an SHD-layout file and bin it. Returns (counts, lengths, labels, names, speakers)."""
    with _open_h5(path) as f:
        missing = [k for k in REQUIRED_KEYS if k not in f]
        if missing:
            raise DataError(f"{str(path)!r}: missing {', '.join(missing)} (an SHD-layout file "
                            f"needs {', '.join(REQUIRED_KEYS)}); is this an SHD/SSC file?")
        ds_t, ds_u = f["spikes/times"], f["spikes/units"]
        for name, ds in (("spikes/times", ds_t), ("spikes/units", ds_u)):
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or \
                    h5py.check_vlen_dtype(ds.dtype) is None:
                raise DataError(f"{str(path)!r}: {name} must be a 1-D variable-length "
                                f"dataset (one array per sample), got "
                                f"{getattr(ds, 'shape', 'a group')} {getattr(ds, 'dtype', '')}")
        n = ds_t.shape[0]
        if n == 0:
            raise DataError(f"{str(path)!r}: the file holds no samples (spikes/times is "
                            f"empty); nothing to train or evaluate on. Use a file with "
                            f"samples (was its creation or download interrupted?)")
        if ds_u.shape[0] != n:
            raise DataError(f"{str(path)!r}: spikes/times has {n} samples but spikes/units "
                            f"has {ds_u.shape[0]}; the file is damaged")
        try:
            labels, names, speakers = _read_labels(f, path, n)
            chunks, lens = [], []
            from tqdm import tqdm
            with tqdm(total=n, desc=f"binning {path.name}", unit="sample",
                      disable=not progress, leave=False) as bar:
                for a in range(0, n, _CHUNK):
                    z = min(n, a + _CHUNK)
                    counts, lengths = _bin_chunk(
                        ds_t[a:z], ds_u[a:z], a, path, channel_bin=channel_bin, dt=dt,
                        max_time=max_time, n_channels=n_channels,
                        entries_before=sum(len(k) for k in chunks))
                    chunks.append(counts)
                    lens.append(lengths)
                    bar.update(z - a)
        except OSError as e:
            raise DataError(f"{str(path)!r}: reading failed ({e}); the file is truncated or "
                            f"damaged. Download / copy it again.") from None
    c = n_channels // channel_bin
    if not chunks:
        counts = np.zeros((0, c), np.float32)
    else:
        counts = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    lengths = np.concatenate(lens) if lens else np.zeros(0, np.int64)
    return counts, lengths, labels, names, speakers


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
        from neurodelay.options import binned_bytes, check_memory

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


# ----------------------------------------------------------------------------------------
# Splits and batches
# ----------------------------------------------------------------------------------------
def split_by_speaker(ds: BinnedDataset, holdout_speakers: Sequence[int]
                     ) -> tuple[BinnedDataset, BinnedDataset]:
    """(samples of the other speakers, samples of ``holdout_speakers``)."""
    if ds.speakers is None:
        raise DataError(f"{ds.source}: the file has no speaker ids (extra/speaker), so it "
                        f"cannot be split by speaker; use split_random instead")
    hold = np.asarray(list(holdout_speakers), dtype=np.int64)
    present = np.unique(ds.speakers)
    absent = np.setdiff1d(hold, present)
    if absent.size:
        raise DataError(f"{ds.source}: holdout speakers {absent.tolist()} do not occur; "
                        f"speakers present: {present.tolist()}")
    mask = np.isin(ds.speakers, hold)
    if mask.all():
        raise DataError(f"{ds.source}: holding out {hold.tolist()} leaves no training samples")
    return ds.subset(~mask), ds.subset(mask)


def split_random(ds: BinnedDataset, fraction: float, seed: int = 0
                 ) -> tuple[BinnedDataset, BinnedDataset]:
    """(rest, holdout) where holdout is a random ``fraction`` of the samples (seeded)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"fraction must be in (0, 1), got {fraction}")
    n_hold = int(round(fraction * len(ds)))
    if not 0 < n_hold < len(ds):
        raise DataError(f"fraction {fraction} of {len(ds)} samples gives an empty split")
    perm = np.random.default_rng(seed).permutation(len(ds))
    return ds.subset(np.sort(perm[n_hold:])), ds.subset(np.sort(perm[:n_hold]))


def pad_batch(samples: Sequence[np.ndarray], pad_to: int | None = None) -> np.ndarray:
    """Stack (T_i, C) arrays into a float32 (B, T, C) array, zero right padding.

    T is the longest sample, or ``pad_to`` (then a longer sample is a DataError). An array
    above the memory limit (:mod:`neurodelay.options`) is a ResourceLimitError.
    """
    if len(samples) == 0:
        raise DataError("pad_batch got no samples")
    arrs = [np.asarray(s) for s in samples]
    c = arrs[0].shape[-1] if arrs[0].ndim == 2 else None
    for i, a in enumerate(arrs):
        if a.ndim != 2 or a.shape[1] != c:
            raise DataError(f"pad_batch: sample {i} has shape {a.shape}; all samples must be "
                            f"(T_i, {c})")
    longest = max(a.shape[0] for a in arrs)
    if pad_to is None:
        t = longest
    else:
        t = int(pad_to)
        if longest > t:
            i = int(np.argmax([a.shape[0] for a in arrs]))
            raise DataError(f"pad_batch: sample {i} has {longest} steps > pad_to={t}; raise "
                            f"pad_to or load with max_time to cut samples")
    from neurodelay.options import binned_bytes, check_memory

    check_memory(len(arrs) * binned_bytes(t, c),
                 f"padding {len(arrs):,} samples to {t:,} time steps x {c} channels",
                 "Cut long samples when loading with --max-time SECONDS (library: max_time=), "
                 "or use fewer samples per batch")
    out = np.zeros((len(arrs), t, c), dtype=np.float32)
    for i, a in enumerate(arrs):
        out[i, :a.shape[0]] = a
    return out


def batch_order(n: int, *, shuffle: bool, seed: int | None = None, epoch: int = 0
                ) -> np.ndarray:
    """Sample order of one epoch: a permutation from a Generator seeded with (seed, epoch).

    ``seed=None`` means 0, so the order is always reproducible (a resumed run that knows
    its epoch gets the same batches).
    """
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([0 if seed is None else int(seed), int(epoch)]).permutation(n)


def iterate_batches(ds: BinnedDataset, batch_size: int, *, shuffle: bool,
                    seed: int | None = None, epoch: int = 0, pad_to: int | None = None,
                    drop_last: bool = False) -> Iterator[tuple]:
    """Yield ``(x, y)``: torch float32 (B, T, C) zero right-padded and int64 (B,) labels."""
    import torch

    if int(batch_size) != batch_size or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size}")
    order = batch_order(len(ds), shuffle=shuffle, seed=seed, epoch=epoch)
    for a in range(0, len(order), batch_size):
        idx = order[a:a + batch_size]
        if drop_last and len(idx) < batch_size:
            break
        x = pad_batch([ds.samples[i] for i in idx], pad_to)
        yield torch.from_numpy(x), torch.from_numpy(ds.labels[idx].astype(np.int64))


# ----------------------------------------------------------------------------------------
# Writing SHD-layout files
# ----------------------------------------------------------------------------------------
def write_shd_file(path: str | os.PathLike, times: Sequence, units: Sequence, labels,
                   class_names: Sequence[str], speakers=None, *,
                   attrs: dict | None = None) -> Path:
    """Write an SHD-layout HDF5 file atomically (temp file in the same folder, then rename).

    times[i] (seconds) become vlen float16, units[i] vlen uint16, labels uint16,
    class_names ``extra/keys`` (bytes), speakers ``extra/speaker`` (uint16). Values are not
    range-checked against a channel count (tests use this to write bad files), but the
    structure is: equal numbers of samples, equal lengths per sample, values that fit uint16.
    ``attrs`` are stored as root attributes.
    """
    path = Path(path)
    n = len(times)
    if len(units) != n or len(labels) != n:
        raise DataError(f"write_shd_file: {n} times, {len(units)} units, {len(labels)} labels; "
                        f"give one entry per sample in each")
    if speakers is not None and len(speakers) != n:
        raise DataError(f"write_shd_file: {len(speakers)} speaker ids for {n} samples")
    t_obj = np.empty(n, dtype=object)
    u_obj = np.empty(n, dtype=object)
    for i in range(n):
        t = np.asarray(times[i], dtype=np.float64).reshape(-1)
        u = np.asarray(units[i]).reshape(-1)
        if len(t) != len(u):
            raise DataError(f"write_shd_file: sample {i} has {len(t)} times but {len(u)} units")
        if u.size and (u.min() < 0 or u.max() > 65535 or np.any(u != np.round(u))):
            raise DataError(f"write_shd_file: sample {i} has units outside uint16")
        t_obj[i] = t.astype(np.float16)
        u_obj[i] = u.astype(np.uint16)
    lab = np.asarray(labels)
    if lab.size and (lab.min() < 0 or lab.max() > 65535):
        raise DataError("write_shd_file: labels must fit uint16 (0..65535)")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("spikes/times", data=t_obj, dtype=h5py.vlen_dtype(np.float16))
            f.create_dataset("spikes/units", data=u_obj, dtype=h5py.vlen_dtype(np.uint16))
            f.create_dataset("labels", data=lab.astype(np.uint16))
            f.create_dataset("extra/keys", data=np.array([str(c).encode() for c in class_names],
                                                         dtype=bytes))
            if speakers is not None:
                f.create_dataset("extra/speaker", data=np.asarray(speakers).astype(np.uint16))
            for k, v in (attrs or {}).items():
                f.attrs[k] = v
    return path


# ----------------------------------------------------------------------------------------
# The embedded synthetic task
# ----------------------------------------------------------------------------------------
SYNTHETIC_VERSION = 1
SYN = dict(
    n_units=700, n_groups=7,        # 7 groups of 100 consecutive units (20 inputs after /5)
    n_patterns=5,                   # 5 base orders + their time reversals = 10 classes
    max_offset=8,                   # group offsets are distinct values in 0..8 steps
    min_distance=10,                # shift-invariant L1 distance between any two classes
    lead_steps=2, onset_steps=15,   # pattern onset uniform in [2, 17) steps (continuous)
    jitter_steps=1,                 # +-1 step (integer) per group and sample
    burst_steps=2,                  # a group's spikes are uniform over 2 steps
    spikes_per_unit=0.5,            # Poisson mean per unit and burst
    noise_hz=0.5,                   # background Poisson rate per unit
    total_steps=45, dt=0.01,        # noise over [0, 0.45 s)
    sizes={"train": 2000, "valid": 500, "test": 500},
)


def _shift_l1(a: np.ndarray, b: np.ndarray) -> int:
    """L1 distance of two offset vectors, minimised over a global shift."""
    return min(int(np.abs(a - b - s).sum()) for s in range(-20, 21))


def synthetic_patterns(seed: int = 0) -> np.ndarray:
    """(10, n_groups) int offsets in steps; class 2k is base order k, 2k+1 its reversal."""
    rng = np.random.default_rng([int(seed), 0x5EED])
    g, m = SYN["n_groups"], SYN["max_offset"]
    pats: list[np.ndarray] = []
    while len(pats) < 2 * SYN["n_patterns"]:
        cand = rng.choice(m + 1, size=g, replace=False)
        pair = [cand, m - cand]
        if _shift_l1(*pair) < SYN["min_distance"]:
            continue
        if all(_shift_l1(p, q) >= SYN["min_distance"] for p in pair for q in pats):
            pats.extend(pair)
    return np.stack(pats).astype(np.int64)


def _synthetic_split(rng: np.random.Generator, patterns: np.ndarray, n: int):
    s = SYN
    upg = s["n_units"] // s["n_groups"]
    n_cls = len(patterns)
    labels = rng.permutation(np.arange(n) % n_cls)
    unit_group = np.minimum(np.arange(s["n_units"]) // upg, s["n_groups"] - 1)
    times, units = [], []
    for c in labels:
        onset = s["lead_steps"] + rng.uniform(0, s["onset_steps"])
        jit = rng.integers(-s["jitter_steps"], s["jitter_steps"] + 1, size=s["n_groups"])
        start = onset + patterns[c] + jit                       # steps, per group
        k = rng.poisson(s["spikes_per_unit"], size=s["n_units"])
        bu = np.repeat(np.arange(s["n_units"]), k)
        bt = start[unit_group[bu]] + rng.uniform(0, s["burst_steps"], size=bu.size)
        n_noise = rng.poisson(s["noise_hz"] * s["n_units"] * s["total_steps"] * s["dt"])
        nu = rng.integers(0, s["n_units"], size=n_noise)
        nt = rng.uniform(0, s["total_steps"], size=n_noise)
        t = (np.concatenate([bt, nt]) * s["dt"]).astype(np.float16)
        u = np.concatenate([bu, nu]).astype(np.uint16)
        o = np.lexsort((u, t))                                  # by time, then unit
        times.append(t[o])
        units.append(u[o])
    return times, units, labels


def make_synthetic(out_dir: str | os.PathLike | None = None, seed: int = 0,
                   sizes: dict[str, int] | None = None) -> dict[str, Path]:
    """Write (if missing) the embedded delay task; returns dict(train=, valid=, test=) paths.

    **The task.** 700 units in 7 groups of 100 consecutive units (20 inputs each after
    binning by 5). In every sample each group fires exactly one burst (Poisson 0.5 spikes
    per unit, spread over 2 steps of 10 ms) at ``onset + offset[class, group] + jitter``:
    the offsets of a class are 7 distinct values in 0..8 steps, the jitter is +-1 step per
    group, the onset is uniform over 15 steps, and sparse background noise (0.5 Hz per unit)
    covers all units over 0.45 s (about 45 steps at dt = 10 ms). The 10 classes are 5 random
    orders and their time reversals (offset -> 8 - offset).

    So every channel fires at the same rate in every class (a time-averaged histogram is at
    chance), and the distribution of a class's frames is the time reversal of its partner's,
    so a memoryless no-delay network (tau ~ 1 step) that sums per-step votes cannot tell a
    pair apart (<= 50 %). A neuron with per-synapse delays up to 9 steps can align two
    groups' bursts and detect their order. 2000 / 500 / 500 samples, about 500 spikes each.

    ``sizes`` overrides the sample counts per split (tests use smaller sets).

    Files are ``synthetic_{train,valid,test}.h5`` in ``out_dir`` (default
    :func:`synthetic_dir`). Existing files made by the same version and seed are reused;
    ones from another seed/version are regenerated; foreign files are never overwritten.
    """
    out = Path(out_dir).expanduser() if out_dir is not None else synthetic_dir()
    sizes = {**SYN["sizes"], **(sizes or {})}
    tag = {"synthetic_version": SYNTHETIC_VERSION, "seed": int(seed)}
    if sizes != SYN["sizes"]:
        tag["sizes"] = sizes
    tag = json.dumps(tag)
    paths = {s: out / name for s, name in SYNTHETIC_FILES.items()}
    todo = []
    for split, p in paths.items():
        if not p.exists():
            todo.append(split)
            continue
        try:
            with h5py.File(p, "r") as f:
                found = f.attrs.get("neurodelay_synthetic")
        except OSError:
            found = None
        if found is None:
            raise DataError(f"{str(p)!r} exists but was not made by make_synthetic (or is "
                            f"damaged); move it away or choose another folder")
        if str(found) != tag:
            todo.append(split)
    if todo:
        patterns = synthetic_patterns(seed)
        names = [f"order{k // 2}-{'rev' if k % 2 else 'fwd'}" for k in range(len(patterns))]
        for i, split in enumerate(("train", "valid", "test")):
            if split in todo:
                rng = np.random.default_rng([int(seed), 1 + i])
                t, u, lab = _synthetic_split(rng, patterns, int(sizes[split]))
                write_shd_file(paths[split], t, u, lab, names,
                               attrs={"neurodelay_synthetic": tag})
    return paths
