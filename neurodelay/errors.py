"""One error family: every error neurodelay raises on purpose derives from NeurodelayError.

The CLI turns any of them into a one-paragraph message and exit status 1 (never a
traceback). Each stage keeps its own subclass (``DataError``, ``NetworkError``,
``TargetError``, ``PassError``, ``BitSimError``, ``LavaRunError``, ``ExportError``, ...),
defined next to the code that raises it; the classes below are the ones several
stages share. Most subclasses are also ``ValueError`` (bad input), so code written
against the standard exception types keeps working.
"""
from __future__ import annotations


class NeurodelayError(Exception):
    """Base class of every error neurodelay raises deliberately (message says the fix)."""


class OptionError(NeurodelayError, ValueError):
    """A command option or function argument is out of range or meaningless."""


class RunError(NeurodelayError, ValueError):
    """A run folder is missing, incomplete, corrupted, locked or would be overwritten."""


class DiskFullError(NeurodelayError, OSError):
    """A write failed because the file system is full; what existed before is kept."""


class UnsafeInputError(NeurodelayError, ValueError):
    """A file or folder from another source would make neurodelay run code, read or write
    outside the folder the user named, or follow a link (see the README's threat model)."""


class ResourceLimitError(NeurodelayError, ValueError):
    """An input would make the program allocate more memory than allowed (with an
    estimate and how to cap it)."""
