"""Batches: samples zero-padded on the right to a common length, in a seeded order."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from neurodelay.data.dataset import BinnedDataset
from neurodelay.errors import DataError
from neurodelay.options import binned_bytes, check_memory


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
    import torch  # lazy: the data layer is numpy/h5py only; torch only for batches

    if int(batch_size) != batch_size or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size}")
    order = batch_order(len(ds), shuffle=shuffle, seed=seed, epoch=epoch)
    for a in range(0, len(order), batch_size):
        idx = order[a:a + batch_size]
        if drop_last and len(idx) < batch_size:
            break
        x = pad_batch([ds.samples[i] for i in idx], pad_to)
        yield torch.from_numpy(x), torch.from_numpy(ds.labels[idx].astype(np.int64))
