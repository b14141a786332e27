"""Train / validation / test splits: which file or which speakers each one is.

One home for every split the project makes: :class:`DataConfig` (what a run records),
:func:`load_splits` (what training reads), :func:`training_split` (the training samples
alone: what calibration and fine-tuning read) and :func:`split_by_speaker` (the one
speaker hold-out all of them use).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from neurodelay.data.binned import load_binned
from neurodelay.data.dataset import BinnedDataset
from neurodelay.errors import DataError


@dataclass
class DataConfig:
    """Where the data comes from and how it is binned (``config.json``'s ``data``)."""

    train: str = ""
    valid: str | None = None
    test: str | None = None
    valid_speakers: list[int] | None = None   # carved out of the train file
    test_speakers: list[int] | None = None    # carved out of the train file
    dt: float = 0.01
    channel_bin: int = 5
    n_channels: int = 700
    max_time: float | None = None
    cache_dir: str | None = None
    embedded: bool = False

    def load(self, path, progress: bool = False) -> BinnedDataset:
        """``path`` binned with these settings (through the cache)."""
        return load_binned(path, channel_bin=self.channel_bin, dt=self.dt,
                           max_time=self.max_time, n_channels=self.n_channels,
                           cache_dir=self.cache_dir, progress=progress)


@dataclass
class Splits:
    train: Any
    valid: Any
    test: Any
    notes: list[str] = field(default_factory=list)


def split_by_speaker(ds: BinnedDataset, holdout_speakers: Sequence[int], role: str | None = None
                     ) -> tuple[BinnedDataset, BinnedDataset]:
    """(samples of the other speakers, samples of ``holdout_speakers``).

    ``role`` None (library use): every speaker must occur. ``role`` "test" / "valid" (the
    ``--test-speakers`` / ``--valid-speakers`` of a run): at least one must occur, and the
    messages name the options."""
    opt = f"--{role}-speakers" if role else None
    if ds.speakers is None:
        if opt:
            raise DataError(f"{ds.source}: has no extra/speaker dataset, so {opt} cannot "
                            f"split it; pass --{role}-file instead")
        raise DataError(f"{ds.source}: the file has no speaker ids (extra/speaker), so it "
                        f"cannot be split by speaker; use split_random instead")
    hold = np.asarray(list(holdout_speakers), dtype=np.int64)
    present = np.unique(ds.speakers)
    absent = np.setdiff1d(hold, present)
    mask = np.isin(ds.speakers, hold)
    if opt is None and absent.size:
        raise DataError(f"{ds.source}: holdout speakers {absent.tolist()} do not occur; "
                        f"speakers present: {present.tolist()}")
    if opt and not mask.any():
        raise DataError(f"{ds.source}: none of the speakers {list(holdout_speakers)} occur in "
                        f"the file (speakers present: {sorted(set(ds.speakers.tolist()))})")
    if mask.all():
        if opt:
            raise DataError(f"{ds.source}: holding out speakers {list(holdout_speakers)} as "
                            f"the {role} set leaves no training samples (every sample of the "
                            f"file is by those speakers); hold out fewer speakers or pass "
                            f"--{role}-file")
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


def load_splits(dc: DataConfig, progress: bool = True) -> Splits:
    """Load (and cache) train/valid/test as BinnedDatasets following ``dc``."""
    train = dc.load(dc.train, progress)
    valid = dc.load(dc.valid, progress) if dc.valid else None
    test = dc.load(dc.test, progress) if dc.test else None
    notes = []
    for name, spk in (("test", dc.test_speakers), ("valid", dc.valid_speakers)):
        if not spk:
            continue
        train, held = split_by_speaker(train, spk, role=name)
        if name == "test":
            if test is not None:
                raise DataError("give either --test-file or --test-speakers, not both")
            test = held
        else:
            if valid is not None:
                raise DataError("give either --valid-file or --valid-speakers, not both")
            valid = held
        notes.append(f"{name} set = speakers {spk} held out of {Path(dc.train).name} "
                     f"({len(held)} samples)")
    if test is None:
        raise DataError("no test data: pass --test-file, --test-speakers, or --dataset/--data-dir")
    if valid is None:
        valid = test
        notes.append("no validation split: the TEST set stands in for validation "
                     "(as in the paper for SHD); best-epoch selection then sees test data")
    return Splits(train, valid, test, notes)


def training_split(dc: DataConfig, progress: bool = False) -> BinnedDataset:
    """The training samples of ``dc`` alone: only the training file is read, and the
    speakers held out for validation / test are removed from it exactly as training did
    (calibration and fine-tuning read only this)."""
    train = dc.load(dc.train, progress)
    for name, spk in (("test", dc.test_speakers), ("valid", dc.valid_speakers)):
        if spk:
            train = split_by_speaker(train, spk, role=name)[0]
    return train
