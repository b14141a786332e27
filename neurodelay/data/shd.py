"""Reading (validated) and writing files in the SHD HDF5 layout, and binning them.

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

Every file is untrusted: links, external storage and oversized declarations are
refused before anything is read (:mod:`neurodelay.untrusted`); shapes are checked before
a dataset is read; every malformed value is a DataError naming the file and sample."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from neurodelay import progress as P
from neurodelay.errors import DataError
from neurodelay.fs import atomic_path
from neurodelay.options import GIB, binned_bytes, check_memory, memory_limit_gib
from neurodelay.untrusted import open_h5, printable

WHERE_TO_GET = (
    "SHD and SSC are published by the Zenke lab (Cramer et al. 2020, \"The Heidelberg "
    "Spiking Data Sets for the Systematic Evaluation of Spiking Neural Networks\", IEEE "
    "TNNLS) at https://zenkelab.org/datasets/ as .h5.gz files: download them and gunzip "
    "them (e.g. `gunzip shd_train.h5.gz`) into the data folder."
)
REQUIRED_KEYS = ("spikes/times", "spikes/units", "labels")
_GZIP_MAGIC = b"\x1f\x8b"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CHUNK = 512  # samples read and binned at once
_BINNING_EXPANSION = 16  # bytes binning holds per stored byte of spike data, at most
MAX_CLASSES = 100_000  # SSC has 35; a file claiming more is refused before allocating


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
    if not path.is_file():
        raise DataError(f"{str(path)!r}: file not found. {WHERE_TO_GET}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:2] == _GZIP_MAGIC:
        raise DataError(f"{str(path)!r} is gzip-compressed, not HDF5: run `gunzip` on it "
                        f"(the .h5.gz files must be unpacked) and load the .h5 file")
    def unreadable(e: OSError) -> DataError:
        what = ("a truncated or damaged HDF5 file (an interrupted download or copy?)"
                if head == _HDF5_MAGIC else "not an HDF5 file, or a truncated one")
        return DataError(f"{str(path)!r}: {what} ({e}). Download / copy it again; the "
                         f"original files are SHD-layout .h5 files. {WHERE_TO_GET}")

    return open_h5(path, DataError, what="data file", unreadable=unreadable)


def read_chunk(path: Path) -> int:
    """Samples read at once: :data:`_CHUNK`, fewer for a large file under a small memory
    limit. A variable-length entry lives uncompressed in the file's heap, so no sample is
    larger than the file; but entries of a hostile file may all point at one heap object,
    so a read of k samples can allocate k x the file size, and binning them makes
    int64/float64 copies of every entry (up to :data:`_BINNING_EXPANSION` x the stored
    bytes). Reading at most limit / (expansion x file size) samples at once keeps every
    read and its binning under the memory limit."""
    limit = memory_limit_gib() * GIB
    size = max(1, path.stat().st_size)
    return int(max(1, min(_CHUNK, limit // (_BINNING_EXPANSION * size))))


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
            with P.bar(total=n, desc=f"binning {path.name}", unit="sample",
                       enabled=progress, leave=False) as bar:
                step = read_chunk(path)
                for a in range(0, n, step):
                    z = min(n, a + step)
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
