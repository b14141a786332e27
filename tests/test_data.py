"""Tests of neurodelay.data: SHD-layout reading, binning, cache, errors, batches, synthetic task."""
from __future__ import annotations

import gzip
import hashlib
import math
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from neurodelay import data
from neurodelay.data import DataError, binned

# ../shared/data next to the repository (CI lays shared/ beside its clone)
SSHD_TINY = Path(__file__).resolve().parents[2] / "shared" / "data" / "sshd_tiny.h5"


# ------------------------------------------------------------------------------ helpers
def random_spikes(rng, n_samples=25, n_channels=700, max_spikes=400):
    """Random SHD-like samples: sorted float16 times (first spike not at 0), uint16 units."""
    times, units = [], []
    for i in range(n_samples):
        k = 1 if i == 0 else int(rng.integers(2, max_spikes))
        t0 = rng.uniform(0.0, 0.3)
        t = np.sort(t0 + rng.uniform(0.0, 0.9, size=k)).astype(np.float16)
        times.append(t)
        units.append(rng.integers(0, n_channels, size=k).astype(np.uint16))
    return times, units


def reference_binning(times, units, dt, channel_bin, n_channels, max_time=None):
    """Spike-by-spike pure-Python reference of the paper's preprocessing."""
    out = []
    for t16, u in zip(times, units):
        ts = [float(x) for x in t16]
        first = min(ts)
        kept = [(math.floor((t - first) / dt), int(k)) for t, k in zip(ts, u)
                if max_time is None or t - first < max_time]
        T = max(b for b, _ in kept) + 1
        x = np.zeros((T, n_channels // channel_bin), np.float32)
        for b, k in kept:
            x[b, k // channel_bin] += 1
        out.append(x)
    return out


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def raw_h5(path, times, units, labels, keys=None, speakers=None, skip=()):
    """Write an SHD-like file directly with h5py (no validation at all)."""
    with h5py.File(path, "w") as f:
        if "spikes/times" not in skip:
            t = np.empty(len(times), object)
            for i, a in enumerate(times):
                t[i] = np.asarray(a, np.float16)
            f.create_dataset("spikes/times", data=t, dtype=h5py.vlen_dtype(np.float16))
        if "spikes/units" not in skip:
            u = np.empty(len(units), object)
            for i, a in enumerate(units):
                u[i] = np.asarray(a, np.uint16)
            f.create_dataset("spikes/units", data=u, dtype=h5py.vlen_dtype(np.uint16))
        if "labels" not in skip:
            f.create_dataset("labels", data=np.asarray(labels))
        if keys is not None:
            f.create_dataset("extra/keys", data=np.array([k.encode() for k in keys]))
        if speakers is not None:
            f.create_dataset("extra/speaker", data=np.asarray(speakers, np.uint16))
    return path


def small_file(tmp_path, name="small.h5", seed=0, n=12, speakers=True):
    rng = np.random.default_rng(seed)
    times, units = random_spikes(rng, n_samples=n, max_spikes=120)
    labels = np.arange(n) % 4
    spk = (np.arange(n) % 3) if speakers else None
    p = data.write_shd_file(tmp_path / name, times, units, labels,
                            ["a", "b", "c", "d"], speakers=spk)
    return p, times, units, labels, spk


def load(path, tmp_path, **kw):
    kw.setdefault("progress", False)
    return data.load_binned(path, cache_dir=tmp_path / "cache", **kw)


# ------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("channel_bin,dt,max_time", [(5, 0.01, None), (1, 0.004, None),
                                                     (7, 0.02, 0.3)])
def test_roundtrip_matches_reference_binning(tmp_path, channel_bin, dt, max_time):
    rng = np.random.default_rng(1)
    times, units = random_spikes(rng)
    labels = rng.integers(0, 20, size=len(times))
    speakers = rng.integers(0, 5, size=len(times))
    names = [f"class-{k}" for k in range(20)]
    p = data.write_shd_file(tmp_path / "r.h5", times, units, labels, names, speakers=speakers)
    before = sha(p)
    ds = load(p, tmp_path, channel_bin=channel_bin, dt=dt, max_time=max_time)
    ref = reference_binning(times, units, dt, channel_bin, 700, max_time)
    assert len(ds) == len(ref)
    for i, (got, want) in enumerate(zip(ds.samples, ref)):
        assert got.dtype == np.float32
        assert got.shape == want.shape, i
        np.testing.assert_array_equal(got, want)
    assert ds.n_inputs == 700 // channel_bin
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.speakers, speakers)
    assert ds.class_names == names
    assert (ds.dt, ds.channel_bin, ds.n_channels, ds.max_time) == (dt, channel_bin, 700, max_time)
    if max_time is None:  # every spike lands in exactly one bin
        assert [int(s.sum()) for s in ds.samples] == [len(t) for t in times]
        # T_i = floor((last - first) / dt) + 1
        for s, t in zip(ds.samples, times):
            t = t.astype(np.float64)
            assert s.shape[0] == math.floor((t.max() - t.min()) / dt) + 1
    else:
        assert ds.max_steps <= math.ceil(max_time / dt)
    assert sha(p) == before  # the input file is never modified


def test_time_is_relative_to_first_spike_and_channels_are_summed(tmp_path):
    times = [[0.5, 0.5, 0.52, 0.5], [0.0]]
    units = [[0, 4, 5, 699], [12]]
    p = data.write_shd_file(tmp_path / "x.h5", times, units, [0, 1], ["a", "b"])
    ds = load(p, tmp_path, progress=True)  # also exercises the progress bar
    x = ds.samples[0]
    assert x.shape == (3, 140)
    assert x[0, 0] == 2 and x[0, 139] == 1 and x[2, 1] == 1 and x.sum() == 4
    assert ds.samples[1].shape == (1, 140) and ds.samples[1][0, 2] == 1
    assert ds.speakers is None and ds.max_steps == 3 and len(ds) == 2


def test_write_shd_file_layout(tmp_path):
    p, times, units, labels, spk = small_file(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["small.h5"]  # no temp file left behind
    with h5py.File(p, "r") as f:
        assert h5py.check_vlen_dtype(f["spikes/times"].dtype) == np.float16
        assert h5py.check_vlen_dtype(f["spikes/units"].dtype) == np.uint16
        assert f["labels"].dtype == np.uint16 and f["extra/speaker"].dtype == np.uint16
        assert f["extra/keys"].dtype.kind == "S"
        assert [k.decode() for k in f["extra/keys"][:]] == ["a", "b", "c", "d"]
        np.testing.assert_array_equal(f["spikes/times"][3], times[3])
        np.testing.assert_array_equal(f["spikes/units"][3], units[3])
    with pytest.raises(DataError, match="sample 1 has 2 times but 1 units"):
        data.write_shd_file(tmp_path / "bad.h5", [[0.1], [0.1, 0.2]], [[1], [2]], [0, 0], ["a"])
    assert not (tmp_path / "bad.h5").exists()


def test_missing_keys_fallback_class_names(tmp_path):
    p = raw_h5(tmp_path / "nokeys.h5", [[0.1, 0.2]] * 3, [[1, 2]] * 3, np.array([0, 2, 1]))
    ds = load(p, tmp_path)
    assert ds.class_names == ["0", "1", "2"] and ds.n_classes == 3


# ------------------------------------------------------------------------------ cache
def _boom(*a, **k):
    raise AssertionError("spikes were re-read although the cache should have been used")


def test_cache_hit_returns_identical_arrays_without_rereading(tmp_path, monkeypatch):
    p, *_ = small_file(tmp_path)
    ds1 = load(p, tmp_path)
    files = list((tmp_path / "cache" / "binned").glob("*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    monkeypatch.setattr(binned, "_bin_file", _boom)
    ds2 = load(p, tmp_path)
    assert files[0].stat().st_mtime_ns == mtime
    assert len(ds2) == len(ds1)
    for a, b in zip(ds1.samples, ds2.samples):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ds1.labels, ds2.labels)
    np.testing.assert_array_equal(ds1.speakers, ds2.speakers)
    assert ds1.class_names == ds2.class_names and ds2.source == str(p)
    # other parameters or other content are a cache miss
    with pytest.raises(AssertionError, match="re-read"):
        load(p, tmp_path, dt=0.02)
    with pytest.raises(AssertionError, match="re-read"):
        load(p, tmp_path, max_time=0.5)
    monkeypatch.undo()
    small_file(tmp_path, seed=5)  # same path, new content
    monkeypatch.setattr(binned, "_bin_file", _boom)
    with pytest.raises(AssertionError, match="re-read"):
        load(p, tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "half"])
def test_corrupt_cache_is_ignored_and_rebuilt(tmp_path, monkeypatch, damage):
    p, *_ = small_file(tmp_path)
    ref = load(p, tmp_path)
    (cfile,) = (tmp_path / "cache" / "binned").glob("*.npz")
    raw = cfile.read_bytes()
    cfile.write_bytes(b"not a cache" * 10 if damage == "garbage" else raw[: len(raw) // 2])
    with pytest.warns(UserWarning, match="ignoring unreadable binned-data cache"):
        ds = load(p, tmp_path)
    for a, b in zip(ref.samples, ds.samples):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(binned, "_bin_file", _boom)  # the rebuilt cache is valid again
    ds3 = load(p, tmp_path)
    np.testing.assert_array_equal(np.concatenate(ds3.samples), np.concatenate(ref.samples))


def test_cache_disabled_and_env_default(tmp_path, monkeypatch):
    p, *_ = small_file(tmp_path)
    monkeypatch.setenv("NEURODELAY_CACHE", str(tmp_path / "envcache"))
    assert data.default_cache_dir() == tmp_path / "envcache"
    assert data.synthetic_dir() == tmp_path / "envcache" / "synthetic"
    data.load_binned(p, progress=False, cache=False)
    assert not (tmp_path / "envcache").exists()
    data.load_binned(p, progress=False)
    assert len(list((tmp_path / "envcache" / "binned").glob("*.npz"))) == 1


# ------------------------------------------------------------------------------ bad input
def _good(tmp_path):
    return [[0.01, 0.02], [0.03, 0.05, 0.07], [0.0, 0.1], [0.2, 0.2, 0.3], [0.4]], \
           [[1, 2], [3, 4, 5], [6, 7], [8, 9, 10], [11]], [0, 1, 2, 3, 4]


def _bad_file(kind, tmp_path):
    t, u, lab = _good(tmp_path)
    keys = ["k0", "k1", "k2", "k3", "k4"]
    p = tmp_path / f"{kind}.h5"
    if kind == "missing":
        return tmp_path / "nowhere" / "shd_train.h5"
    if kind == "not_hdf5":
        p.write_text("this is not HDF5\n" * 100)
    elif kind in ("truncated", "gzip"):
        good = data.write_shd_file(tmp_path / "good.h5", t, u, lab, keys)
        raw = good.read_bytes()
        p.write_bytes(raw[: len(raw) // 2] if kind == "truncated" else gzip.compress(raw))
    elif kind == "missing_keys":
        raw_h5(p, t, u, lab, skip=("spikes/units", "labels"))
    elif kind == "length_mismatch":
        u[3] = u[3][:2]
        raw_h5(p, t, u, lab, keys)
    elif kind == "unit_range":
        u[2][1] = 700
        raw_h5(p, t, u, lab, keys)
    elif kind == "negative_time":
        t[1][2] = -0.5
        raw_h5(p, t, u, lab, keys)
    elif kind == "nan_time":
        t[4][0] = float("nan")
        raw_h5(p, t, u, lab, keys)
    elif kind == "label_range":
        lab[4] = 5
        raw_h5(p, t, u, np.array(lab, np.uint16), keys)
    elif kind == "label_negative":
        lab[1] = -1
        raw_h5(p, t, u, np.array(lab, np.int16))
    elif kind == "empty_sample":
        t[2], u[2] = [], []
        raw_h5(p, t, u, lab, keys)
    elif kind == "label_count":
        raw_h5(p, t, u, np.array(lab[:4]), keys)
    return p


BAD_CASES = {
    "missing": r"file not found.*Zenke lab.*gunzip",
    "not_hdf5": r"not an HDF5 file",
    "truncated": r"truncated",
    "gzip": r"gzip-compressed.*gunzip",
    "missing_keys": r"missing spikes/units, labels",
    "length_mismatch": r"sample 3 has 3 spike times but 2 units",
    "unit_range": r"sample 2 spike 1 has unit 700, out of range \[0, 700\)",
    "negative_time": r"sample 1 spike 2 has time -0.5 s.*negative or NaN",
    "nan_time": r"sample 4 spike 0 has time nan s.*negative or NaN",
    "label_range": r"label of sample 4 is 5, out of range \[0, 5\)",
    "label_negative": r"label of sample 1 is -1, negative",
    "empty_sample": r"sample 2 has no spikes",
    "label_count": r"'labels' has shape \(4,\) but there are 5 samples",
}


@pytest.mark.parametrize("kind", list(BAD_CASES))
def test_bad_input_raises_specific_data_error(tmp_path, kind):
    p = _bad_file(kind, tmp_path)
    before = sha(p) if p.exists() else None
    with pytest.raises(DataError, match=BAD_CASES[kind]) as err:
        load(p, tmp_path)
    assert isinstance(err.value, ValueError)
    assert str(p) in str(err.value)  # names the file
    if before is not None:
        assert sha(p) == before
    assert not list((tmp_path / "cache").rglob("*.npz"))  # nothing cached for bad files


def test_bad_parameters(tmp_path):
    p, *_ = small_file(tmp_path)
    with pytest.raises(DataError, match="not divisible by channel_bin=3"):
        load(p, tmp_path, channel_bin=3)
    with pytest.raises(DataError, match="dt must be a positive number"):
        load(p, tmp_path, dt=0)
    with pytest.raises(DataError, match="max_time must be positive"):
        load(p, tmp_path, max_time=-1)


def test_file_without_samples_is_a_data_error(tmp_path):
    p = raw_h5(tmp_path / "none.h5", [], [], np.zeros(0, np.int64), keys=["a", "b"])
    with pytest.raises(DataError, match="holds no samples") as err:
        load(p, tmp_path)
    assert str(p) in str(err.value)
    assert not list((tmp_path / "cache").rglob("*.npz"))


def test_memory_guard_refuses_a_runaway_sample_before_binning(tmp_path, monkeypatch):
    """One spike 10^5 s after the first: 10^7 steps x 140 channels. Refused with the
    estimate, the sample and how to cap it; --max-time makes the same file load."""
    from neurodelay.errors import ResourceLimitError

    rng = np.random.default_rng(1)
    times, units = random_spikes(rng, n_samples=6, max_spikes=50)
    times = [np.asarray(t, np.float64) for t in times]
    times[4] = np.append(times[4], 1e5)
    units[4] = np.append(units[4], 5)
    with h5py.File(tmp_path / "late.h5", "w") as f:
        t = np.empty(6, object)
        u = np.empty(6, object)
        for i in range(6):
            t[i], u[i] = times[i], np.asarray(units[i], np.uint16)
        f.create_dataset("spikes/times", data=t, dtype=h5py.vlen_dtype(np.float64))
        f.create_dataset("spikes/units", data=u, dtype=h5py.vlen_dtype(np.uint16))
        f.create_dataset("labels", data=np.arange(6) % 2)
    p = tmp_path / "late.h5"
    monkeypatch.delenv("NEURODELAY_MAX_GIB", raising=False)
    with pytest.raises(ResourceLimitError) as err:
        load(p, tmp_path)
    msg = str(err.value)
    for fragment in (str(p), "sample 4, spans 99,99", "GiB", "--max-time",
                     "NEURODELAY_MAX_GIB"):
        assert fragment in msg, msg
    assert not list((tmp_path / "cache").rglob("*.npz"))
    ds = load(p, tmp_path, max_time=2.0)
    assert ds.max_steps <= 200
    # the limit is the environment's: a tiny one refuses even this small file
    monkeypatch.setenv("NEURODELAY_MAX_GIB", "1e-6")
    with pytest.raises(ResourceLimitError, match="limit of 1e-06 GiB"):
        load(p, tmp_path, max_time=2.0, cache=False)


def test_pad_batch_memory_guard(monkeypatch):
    from neurodelay.errors import ResourceLimitError

    monkeypatch.setenv("NEURODELAY_MAX_GIB", "0.001")       # ~1 MB
    small = [np.ones((10, 140), np.float32)] * 4
    assert data.pad_batch(small).shape == (4, 10, 140)
    with pytest.raises(ResourceLimitError, match=r"padding 4 samples to 1,000 time steps"):
        data.pad_batch(small, pad_to=1000)


# ------------------------------------------------------------------------------ resolve_files
def test_resolve_files(tmp_path):
    for name in ("shd_train.h5", "shd_test.h5", "ssc_train.h5", "ssc_test.h5"):
        (tmp_path / name).write_bytes(b"x")
    got = data.resolve_files("shd", tmp_path, None, None, None)
    assert got == {"train": tmp_path / "shd_train.h5", "valid": None,
                   "test": tmp_path / "shd_test.h5"}
    with pytest.raises(DataError) as err:
        data.resolve_files("ssc", tmp_path, None, None, None)
    msg = str(err.value)
    for part in ("ssc_valid.h5", str(tmp_path), "shd_train.h5", "ssc_test.h5", "Zenke lab",
                 "Cramer et al. 2020", "The Heidelberg Spiking Data Sets", ".h5.gz", "gunzip"):
        assert part in msg, part
    other = tmp_path / "mine.h5"
    other.write_bytes(b"x")
    got = data.resolve_files("ssc", tmp_path, None, valid_file=other, test_file=None)
    assert got["valid"] == other and got["train"] == tmp_path / "ssc_train.h5"
    assert data.resolve_files(None, None, other, None, None) == {"train": other, "valid": None,
                                                                 "test": None}
    with pytest.raises(DataError, match="test file 'nope.h5' not found"):
        data.resolve_files(None, None, other, None, tmp_path / "nope.h5")
    with pytest.raises(DataError, match="no training file"):
        data.resolve_files(None, tmp_path, None, None, None)
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        data.resolve_files("mnist", tmp_path, None, None, None)
    with pytest.raises(DataError, match="no data_dir"):
        data.resolve_files("shd", None, None, None, None)


# ------------------------------------------------------------------------------ batches
def _toy_ds(n=11, c=3, speakers=None):
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, 4, size=(int(rng.integers(1, 9)), c)).astype(np.float32)
               for _ in range(n)]
    return data.BinnedDataset(samples=samples, labels=np.arange(n),
                              class_names=[str(i) for i in range(n)], speakers=speakers,
                              source="toy", channel_bin=1, n_channels=c)


def test_pad_batch():
    a = np.ones((2, 3), np.float32)
    b = np.full((5, 3), 2, np.float32)
    x = data.pad_batch([a, b])
    assert x.shape == (2, 5, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0, :2], a)
    assert not x[0, 2:].any()
    np.testing.assert_array_equal(x[1], b)
    assert data.pad_batch([a, b], pad_to=7).shape == (2, 7, 3)
    with pytest.raises(DataError, match="sample 1 has 5 steps > pad_to=4"):
        data.pad_batch([a, b], pad_to=4)
    with pytest.raises(DataError, match="sample 1 has shape"):
        data.pad_batch([a, np.ones((2, 4))])
    with pytest.raises(DataError, match="no samples"):
        data.pad_batch([])


def _order(ds, **kw):
    batches = list(data.iterate_batches(ds, 4, **kw))
    return np.concatenate([y.numpy() for _, y in batches]), batches


def test_iterate_batches_deterministic_per_seed_and_epoch():
    import torch

    ds = _toy_ds()
    o1, batches = _order(ds, shuffle=True, seed=3, epoch=2)
    o2, _ = _order(ds, shuffle=True, seed=3, epoch=2)  # a resumed run
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(o1, np.random.default_rng([3, 2]).permutation(len(ds)))
    assert sorted(o1.tolist()) == list(range(len(ds)))
    assert not np.array_equal(o1, _order(ds, shuffle=True, seed=3, epoch=3)[0])
    assert not np.array_equal(o1, _order(ds, shuffle=True, seed=4, epoch=2)[0])
    np.testing.assert_array_equal(_order(ds, shuffle=False)[0], np.arange(len(ds)))
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    idx = y.numpy()
    assert x.shape == (4, max(ds.samples[i].shape[0] for i in idx), 3)
    for row, i in zip(x.numpy(), idx):
        np.testing.assert_array_equal(row[: ds.samples[i].shape[0]], ds.samples[i])
    assert [len(y) for _, y in batches] == [4, 4, 3]
    o3, b3 = _order(ds, shuffle=True, seed=3, epoch=2, drop_last=True, pad_to=10)
    assert [tuple(x.shape) for x, _ in b3] == [(4, 10, 3), (4, 10, 3)]
    np.testing.assert_array_equal(o3, o1[:8])


def test_subset_and_splits():
    spk = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3])
    ds = _toy_ds(speakers=spk)
    assert ds.max_steps == max(s.shape[0] for s in ds.samples)
    sub = ds.subset([4, 1])
    assert len(sub) == 2 and sub.labels.tolist() == [4, 1] and sub.speakers.tolist() == [1, 1]
    assert sub.samples[0] is ds.samples[4]
    train, hold = data.split_by_speaker(ds, [2, 3])
    assert set(hold.speakers.tolist()) == {2, 3} and set(train.speakers.tolist()) == {0, 1}
    assert sorted(train.labels.tolist() + hold.labels.tolist()) == list(range(11))
    with pytest.raises(DataError, match=r"holdout speakers \[7\] do not occur"):
        data.split_by_speaker(ds, [7])
    with pytest.raises(DataError, match="no speaker ids"):
        data.split_by_speaker(_toy_ds(), [0])
    a, b = data.split_random(ds, 0.3, seed=1)
    a2, b2 = data.split_random(ds, 0.3, seed=1)
    assert len(b) == 3 and len(a) == 8 and b.labels.tolist() == b2.labels.tolist()
    assert not set(a.labels.tolist()) & set(b.labels.tolist())
    with pytest.raises(DataError, match="fraction must be in"):
        data.split_random(ds, 1.0, seed=1)


# ------------------------------------------------------------------------------ synthetic task
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    paths = data.make_synthetic(root / "files", seed=0)
    kw = dict(cache_dir=root / "cache", progress=False)
    return paths, {s: data.load_binned(p, **kw) for s, p in paths.items()}


def test_synthetic_files_and_determinism(synthetic, tmp_path):
    paths, dss = synthetic
    assert {s: p.name for s, p in paths.items()} == {
        "train": "synthetic_train.h5", "valid": "synthetic_valid.h5", "test": "synthetic_test.h5"}
    assert [len(dss[s]) for s in ("train", "valid", "test")] == [2000, 500, 500]
    assert all(p.stat().st_size < 6e6 for p in paths.values())
    tr = dss["train"]
    assert tr.n_classes == 10 and np.bincount(tr.labels).tolist() == [200] * 10
    assert 40 <= tr.lengths.min() and tr.max_steps <= 50
    mtimes = {s: p.stat().st_mtime_ns for s, p in paths.items()}
    assert data.make_synthetic(paths["train"].parent, seed=0) == paths  # reused, not rewritten
    assert {s: p.stat().st_mtime_ns for s, p in paths.items()} == mtimes
    # the same seed elsewhere gives identical data; another seed differs
    again = data.make_synthetic(tmp_path / "again", seed=0)
    with h5py.File(paths["valid"]) as f, h5py.File(again["valid"]) as g:
        for k in ("spikes/times", "spikes/units"):
            assert all(np.array_equal(a, b) for a, b in zip(f[k][:], g[k][:]))
        np.testing.assert_array_equal(f["labels"][:], g["labels"][:])
    data.make_synthetic(tmp_path / "again", seed=1)  # other seed: regenerated in place
    with h5py.File(paths["valid"]) as f, h5py.File(again["valid"]) as g:
        assert not np.array_equal(f["spikes/times"][0], g["spikes/times"][0])
    foreign = tmp_path / "foreign"
    small_file(foreign, name="synthetic_train.h5")
    with pytest.raises(DataError, match="not made by make_synthetic"):
        data.make_synthetic(foreign)
    assert data.resolve_files("synthetic", paths["train"].parent) == paths


def test_synthetic_patterns_fit_the_delay_window():
    pats = data.synthetic_patterns(0)
    assert pats.shape == (10, 7) and pats.min() >= 0 and pats.max() <= 8  # offsets <= 8 steps
    assert all(len(set(row.tolist())) == 7 for row in pats)  # each group fires at its own time
    np.testing.assert_array_equal(pats[1::2], 8 - pats[0::2])  # classes in time-reversed pairs
    centred = {tuple(row - row.min()) for row in pats}
    assert len(centred) == 10  # no two classes equal up to a global shift


def test_synthetic_rates_are_equal_across_classes(synthetic):
    tr = synthetic[1]["train"]
    counts = np.stack([s.sum(0) for s in tr.samples])  # (N, 140) spikes per channel
    grand, sd = counts.mean(0), counts.std(0)
    z = np.stack([(counts[tr.labels == c].mean(0) - grand) / (sd / np.sqrt(200))
                  for c in range(10)])
    assert np.abs(z).max() < 5.0
    assert 0.7 < np.mean(z ** 2) < 1.3  # pure sampling noise: E[z^2] ~ 1 - 1/10


def _fit_lr(feat, dss):
    from sklearn.linear_model import LogisticRegression

    a, b = feat(dss["train"]), feat(dss["test"])
    mu, sd = a.mean(0), a.std(0) + 1e-6
    model = LogisticRegression(C=0.1, max_iter=300).fit((a - mu) / sd, dss["train"].labels)
    return model.predict((b - mu) / sd)


def test_synthetic_needs_timing(synthetic):
    """Histogram at chance, memoryless coincidences only find the pair, timing solves it."""
    dss = synthetic[1]
    y = dss["test"].labels

    def histogram(ds):  # time-averaged 140-channel histogram
        return np.stack([s.mean(0) for s in ds.samples])

    def coincidences(ds):  # sum over time of per-step group co-activations (no delays)
        out = []
        for s in ds.samples:
            g = s.reshape(len(s), 7, 20).sum(2)
            out.append((g.T @ g)[np.triu_indices(7)] / len(s))
        return np.stack(out)

    def pattern(ds):  # full time x channel pattern aligned to the first spike
        return data.pad_batch(ds.samples, pad_to=50)[:, :30].reshape(len(ds), -1)

    acc_hist = np.mean(_fit_lr(histogram, dss) == y)
    pred = _fit_lr(coincidences, dss)
    acc_coinc, acc_pair = np.mean(pred == y), np.mean(pred // 2 == y // 2)
    acc_pattern = np.mean(_fit_lr(pattern, dss) == y)
    assert acc_hist < 0.25, acc_hist
    assert acc_pair > 0.8 and acc_coinc < 0.6, (acc_pair, acc_coinc)
    assert acc_pattern > 0.6, acc_pattern


# ------------------------------------------------------------------------------ SSHD
@pytest.mark.slow
def test_sshd_tiny_loads(tmp_path):
    if not SSHD_TINY.is_file():
        pytest.skip(f"{SSHD_TINY} is absent (the SSHD stand-in data of ../shared/data)")
    ds = load(SSHD_TINY, tmp_path)
    assert len(ds) == 200 and ds.n_inputs == 140 and ds.n_classes == 20
    assert ds.class_names[0] == "english-zero" and ds.class_names[19] == "german-neun"
    assert np.bincount(ds.labels).tolist() == [10] * 20
    assert ds.speakers is not None and ds.speakers.max() <= 23
    with h5py.File(SSHD_TINY) as f:
        for i in (0, 57, 199):
            t = f["spikes/times"][i].astype(np.float64)
            assert ds.samples[i].shape[0] == math.floor((t.max() - t.min()) / 0.01) + 1
            assert ds.samples[i].sum() == len(t)
    assert 38 <= ds.max_steps <= 140
    train, hold = data.split_by_speaker(ds, [0, 1, 2])
    assert len(train) + len(hold) == 200 and len(hold) > 0
