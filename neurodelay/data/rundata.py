"""The data of a run folder: how it was binned, its own test and training splits, and the
check that a data file's classes are the model's."""
from __future__ import annotations

from neurodelay.data.dataset import BinnedDataset, remap_classes
from neurodelay.data.splits import DataConfig, load_splits, training_split
from neurodelay.data.synthetic import SYNTHETIC_FILES, make_synthetic, synthetic_dir
from neurodelay.errors import DataError, RunError
from neurodelay.runs import Run, open_run


def run_data_config(run: Run | str) -> DataConfig:
    """The run's DataConfig (how its data is found and binned)."""
    run = open_run(run)
    d = run.config.get("data")
    if not isinstance(d, dict):
        raise RunError(f"{run.file('config.json')}: this {run.kind} run has no data "
                       f"settings; pass --test-file (and --train-file where asked)")
    try:
        dc = DataConfig(**d)
    except TypeError as e:
        raise RunError(f"{run.file('config.json')}: 'data' does not match this "
                       f"neurodelay ({e})") from None
    # Where to write is this machine's business, not the run folder's: the binned-data
    # cache is this machine's ($NEURODELAY_CACHE or ~/.cache/neurodelay), and the
    # embedded task is (re)generated into this machine's synthetic folder, never into
    # a folder named by a config.json from elsewhere.
    dc.cache_dir = None
    if dc.embedded:
        here = synthetic_dir()
        dc.train = str(here / SYNTHETIC_FILES["train"])
        dc.valid = str(here / SYNTHETIC_FILES["valid"]) if dc.valid else None
        dc.test = str(here / SYNTHETIC_FILES["test"]) if dc.test else None
    return dc


def _ensure_embedded(dc: DataConfig) -> None:
    if dc.embedded:
        make_synthetic(synthetic_dir())


def run_test_data(run: Run | str, test_file=None, progress: bool = False) -> BinnedDataset:
    """The run's own test split, or ``test_file`` binned with the run's settings."""
    run = open_run(run)
    dc = run_data_config(run)
    if test_file:
        ds = dc.load(test_file, progress)
    else:
        if not dc.train:
            raise RunError(f"{run.path}: this {run.kind} run has no test split of its "
                           f"own; pass --test-file F (an SHD-layout HDF5 file)")
        _ensure_embedded(dc)
        ds = load_splits(dc, progress=progress).test
    return check_classes(run, ds)


def run_train_data(run: Run | str, progress: bool = False) -> BinnedDataset:
    """The run's training split (valid/test speakers removed): calibration and
    fine-tuning read only this."""
    run = open_run(run)
    dc = run_data_config(run)
    if not dc.train:
        raise RunError(f"{run.path}: this {run.kind} run has no training data; pass "
                       f"--train-file F (an SHD-layout HDF5 file)")
    _ensure_embedded(dc)
    return check_classes(run, training_split(dc, progress))


def check_classes(run: Run, ds: BinnedDataset) -> BinnedDataset:
    """``ds`` with labels in the model's class order: refused when the classes do not
    match the model's outputs (count, or names when both sides name them); when the
    names are the same in another order, the labels are renumbered to the model's
    order (``ds.notes`` says so)."""
    n_out = run.n_outputs()
    if n_out is None:
        return ds
    hi = int(ds.labels.max()) + 1 if len(ds.labels) else 0
    if ds.n_classes != n_out or hi > n_out:
        raise DataError(
            f"{ds.source}: the data has {ds.n_classes} classes (labels up to {hi - 1}) "
            f"but the model of {run.path} has {n_out} outputs; use a file of the task "
            f"the model was trained on")
    names = run.class_names
    placeholders = ([str(k) for k in range(len(names))],
                    [f"class{k}" for k in range(len(names))])   # import-nir's default
    if not names or names in placeholders or not ds.named_classes \
            or list(ds.class_names) == names:
        return ds
    if sorted(ds.class_names) != sorted(names):
        theirs = sorted(set(ds.class_names) - set(names))[:5]
        ours = sorted(set(names) - set(ds.class_names))[:5]
        raise DataError(
            f"{ds.source}: its class names (extra/keys) differ from the model's: the file "
            f"has {theirs} that the model of {run.path} lacks, the model has {ours} "
            f"that the file lacks; use a file of the task the model was trained on")
    return remap_classes(ds, names)
