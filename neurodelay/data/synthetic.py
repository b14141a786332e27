"""The embedded synthetic task (see :func:`make_synthetic`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from neurodelay.data.shd import write_shd_file
from neurodelay.errors import DataError
from neurodelay.fs import default_cache_dir

SYNTHETIC_FILES = {s: f"synthetic_{s}.h5" for s in ("train", "valid", "test")}


def synthetic_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Default folder of the embedded synthetic task: ``<cache dir>/synthetic``."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / "synthetic"


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
