"""Spiking audio data: SHD / SSC HDF5 files, binning, caching, splits, batches, a synthetic
task. One module per concept:

==================  ===================================================================
:mod:`.files`       where the files are (official names, explicit paths, the cache)
:mod:`.shd`         reading (validated) and writing the SHD HDF5 layout; binning
:mod:`.binned`      :func:`load_binned`: a file as a BinnedDataset, through the cache
:mod:`.dataset`     :class:`BinnedDataset` (binned samples, labels, classes, speakers)
:mod:`.splits`      :class:`DataConfig`, :func:`load_splits`, the speaker hold-out
:mod:`.batches`     zero-padded batches in a seeded order
:mod:`.synthetic`   the embedded timing task
==================  ===================================================================

The names below are the package's public API (``from neurodelay import data as D``).
Everything here is numpy/h5py; torch is imported only by :func:`iterate_batches`.
"""
from neurodelay.data.batches import batch_order, iterate_batches, pad_batch
from neurodelay.data.binned import load_binned
from neurodelay.data.dataset import BinnedDataset, remap_classes
from neurodelay.data.files import OFFICIAL_FILES, resolve_files
from neurodelay.data.shd import MAX_CLASSES, WHERE_TO_GET, write_shd_file
from neurodelay.data.splits import (
                                    DataConfig,
                                    Splits,
                                    load_splits,
                                    split_by_speaker,
                                    split_random,
                                    training_split,
)
from neurodelay.data.synthetic import (
                                    SYNTHETIC_FILES,
                                    make_synthetic,
                                    synthetic_dir,
                                    synthetic_patterns,
)
from neurodelay.errors import DataError
from neurodelay.fs import default_cache_dir

__all__ = [
    "DataError", "BinnedDataset", "DataConfig", "Splits", "resolve_files", "load_binned",
    "load_splits", "training_split", "split_by_speaker", "split_random", "remap_classes",
    "pad_batch", "batch_order", "iterate_batches", "write_shd_file", "make_synthetic",
    "synthetic_dir", "default_cache_dir", "synthetic_patterns", "OFFICIAL_FILES",
    "SYNTHETIC_FILES", "WHERE_TO_GET", "MAX_CLASSES",
]
