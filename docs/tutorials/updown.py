"""The tutorials' data: a two-class timing task written as SHD-layout HDF5 files.

Each sample has two bursts of 60 spikes, 80 ms apart: units 0-349 first and units 350-699
second (class ``up``), or the other way round (``down``). Every unit fires at the same
rate in both classes, so only the timing tells them apart: a task for delays.
"""
from pathlib import Path

import numpy as np

from neurodelay.data import write_shd_file

GAP_S = 0.08        # seconds between the two bursts


def make_file(path, n: int, seed: int) -> Path:
    """Write ``n`` samples (labels alternate 0, 1) to ``path``; returns the path."""
    rng = np.random.default_rng(seed)
    low, high = np.arange(0, 350), np.arange(350, 700)
    times, units, labels = [], [], []
    for i in range(n):
        label = i % 2
        first, second = (low, high) if label == 0 else (high, low)
        onset = rng.uniform(0.0, 0.05)
        u = np.concatenate([rng.choice(first, 60), rng.choice(second, 60)])
        t = np.concatenate([onset + rng.uniform(0, 0.02, 60),
                            onset + GAP_S + rng.uniform(0, 0.02, 60)])
        order = np.argsort(t, kind="stable")
        times.append(t[order])
        units.append(u[order])
        labels.append(label)
    return write_shd_file(path, times, units, labels, class_names=["up", "down"],
                          speakers=[i % 4 for i in range(n)])
