"""The binned dataset: one float32 ``(T_i, n_inputs)`` array of spike counts per sample,
with labels, class names and speakers."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from neurodelay.errors import DataError


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
