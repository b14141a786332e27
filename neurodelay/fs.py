"""The file system, safely: atomic writes, no writing through links, full disks reported.

* :func:`atomic_path` / :func:`atomic_write`: a reader never sees a half-written
  checkpoint, export or report; :func:`append_line` for logs such as metrics.jsonl.
* A write that fails because the file system is full raises
  :class:`~neurodelay.errors.DiskFullError` naming the file system and saying that the
  previous file is kept (the temporary file is removed, the old file was never touched).
* :func:`inside` and :func:`refuse_links`: names read from a folder stay inside it, and
  nothing is written or deleted through a symbolic link (the README's threat model).
* :func:`default_cache_dir`: this machine's cache (``$NEURODELAY_CACHE`` or
  ``~/.cache/neurodelay``).
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from neurodelay.errors import DiskFullError, UnsafeInputError

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_NEARLY_FULL = 256 << 10  # bytes free below which a failed write is put down to a full disk


def disk_full_error(exc: BaseException, path, kept: str) -> DiskFullError | None:
    """A DiskFullError for ``exc`` when it came from a full file system at ``path`` (an
    ENOSPC / EDQUOT OSError anywhere in its chain, or any write error while almost
    nothing is free: torch and h5py report a full disk in their own words), else None.
    Call it before removing the failed write's temporary files."""
    if isinstance(exc, DiskFullError):
        return exc
    e, full = exc, False
    while e is not None and not full:
        full = isinstance(e, OSError) and e.errno in _FULL_ERRNOS
        e = e.__cause__ or e.__context__
    folder = Path(path)
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if not full and not (isinstance(exc, (OSError, RuntimeError))
                         and free is not None and free < _NEARLY_FULL):
        return None
    shown = f"{free / (1 << 20):,.2f} MiB free" if free is not None else "no space left"
    return DiskFullError(errno.ENOSPC, f"{path}: the file system holding {folder} is full "
                         f"({shown}); the write was abandoned and {kept}. Free some space "
                         f"(or write elsewhere) and run the command again", str(path))


def inside(folder, name, what: str = "folder") -> Path:
    """``folder / name``, refused (UnsafeInputError) when ``name`` -- often read from a
    file in that folder -- is absolute, climbs out with '..', or resolves outside
    ``folder`` through a symbolic link."""
    folder = Path(folder)
    name = str(name)
    p = folder / name
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts:
        raise UnsafeInputError(f"{folder}: refused the file name {name!r} (from the "
                               f"{what}'s own files): it leads outside {folder}; only names "
                               f"inside the {what} are followed")
    try:
        real, base = p.resolve(), folder.resolve()
    except (OSError, RuntimeError):  # a link loop
        raise UnsafeInputError(f"{p}: refused, a symbolic link loop") from None
    if p.is_symlink() or any(q.is_symlink() for q in list(p.parents)[:len(parts) - 1]):
        if not real.is_relative_to(base):
            raise UnsafeInputError(f"{p}: refused, a symbolic link to {real}, outside the "
                                   f"{what} {folder}; neurodelay never follows links out of "
                                   f"a folder it was given. Replace the link with the file")
    return p


def refuse_links(folder, names=None, what: str = "folder") -> None:
    """UnsafeInputError if ``folder`` holds a symbolic link, among ``names`` (the entries
    a writer is about to write, replace or delete) or anywhere inside it when ``names`` is
    None: neurodelay never writes or deletes through a link (it could point anywhere)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    if names is None:
        found = []
        for root, dirs, files in os.walk(folder):   # os.walk does not follow links
            for n in dirs + files:
                p = Path(root) / n
                if p.is_symlink():
                    found.append(p)
            if len(found) > 5:
                break
    else:
        found = [folder / n for n in names if (folder / n).is_symlink()]
    if found:
        shown = ", ".join(f"{p} -> {os.readlink(p)}" for p in found[:5])
        raise UnsafeInputError(f"{folder}: refused, the {what} holds symbolic links "
                               f"({shown}); neurodelay never writes or deletes through a "
                               f"link. Remove the link(s) (or copy the real files in their "
                               f"place) and run the command again")


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On any error the temporary file is removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    created = make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        full = disk_full_error(exc, path, f"{path.name} is as it was before")
        remove_empty_dirs(created)
        if full is not None:
            raise full from None
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give a normal file mode
        os.replace(tmp, path)
    except BaseException as exc:
        full = disk_full_error(exc, path, f"{path.name} is as it was before"
                               if path.exists() else f"{path.name} was not created")
        if os.path.exists(tmp):
            os.unlink(tmp)
        remove_empty_dirs(created)
        if full is not None and full is not exc:
            raise full from None
        raise


def make_dirs(folder) -> list[Path]:
    """mkdir -p ``folder``; returns the folders it created (deepest last)."""
    folder = Path(folder)
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def remove_empty_dirs(created: list) -> None:
    """Undo :func:`make_dirs` after a failure: remove the folders it created, deepest
    first, as long as they are empty (a refused write leaves no empty folder behind)."""
    for p in reversed(created):
        try:
            p.rmdir()
        except OSError:
            break


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def append_line(path, line: str) -> None:
    """Append one line to a log-like file (metrics.jsonl); a full disk raises
    DiskFullError (the lines written before are kept)."""
    path = Path(path)
    try:
        with open(path, "a") as f:
            f.write(line.rstrip("\n") + "\n")
    except OSError as exc:
        full = disk_full_error(exc, path, f"the lines already in {path.name} are kept")
        if full is not None:
            raise full from None
        raise


def atomic_write(path, data: str | bytes) -> Path:
    """Write text or bytes to ``path`` atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
    return Path(path)


def default_cache_dir() -> Path:
    """``$NEURODELAY_CACHE`` if set, else ``~/.cache/neurodelay``."""
    env = os.environ.get("NEURODELAY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neurodelay"
