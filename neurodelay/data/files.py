"""Where the data files are: the official SHD / SSC names in a folder, or files given
one by one; every miss is an error saying where to get the data."""
from __future__ import annotations

import os
from pathlib import Path

from neurodelay.data.shd import WHERE_TO_GET
from neurodelay.data.synthetic import make_synthetic, synthetic_dir
from neurodelay.errors import DataError

OFFICIAL_FILES = {
    "shd": {"train": "shd_train.h5", "valid": None, "test": "shd_test.h5"},
    "ssc": {"train": "ssc_train.h5", "valid": "ssc_valid.h5", "test": "ssc_test.h5"},
}


# ----------------------------------------------------------------------------------------
# Locating files
# ----------------------------------------------------------------------------------------
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
