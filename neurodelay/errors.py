"""Every error neurodelay raises on purpose, in one shallow family.

The CLI turns any :class:`NeurodelayError` into a one-paragraph message and exit status 1
(never a traceback); anything else reaching it is a bug (exit status 70). Each message
says what is wrong, where (file, option, layer) and how to fix it. All of them are also
``ValueError`` (bad input) except :class:`DiskFullError`, an ``OSError``, so code written
against the standard exception types keeps working::

    NeurodelayError
    ├── OptionError          a command option or function argument out of range
    ├── ResourceLimitError   an input would allocate more than NEURODELAY_MAX_GIB
    ├── UnsafeInputError     a file or folder from elsewhere tried to leave its folder
    ├── DiskFullError        a write failed on a full file system (OSError)
    ├── RunError             a run folder missing, incomplete, locked, or in the way
    ├── DataError            a data file or data argument missing or malformed
    ├── NetworkError         a Network / QNetwork or its file is inconsistent
    ├── TargetError          a hardware target description is invalid
    │   ├── FitError         a network breaks a target's limits
    │   └── FixedPointError  a value cannot be represented in the target's arithmetic
    ├── PassError            a deployment pass cannot transform a network
    │   ├── DelayRangeError  delays beyond the target's range
    │   └── QuantizationError
    ├── SimulationError      a simulator refused its input
    │   ├── BitSimError      the bit-accurate simulator
    │   └── LavaRunError     running a network in Lava
    ├── KernelError          a training kernel refused its arguments
    ├── ExportError          an exporter cannot write the network
    │   └── NirExportError
    ├── NirImportError       a NIR graph cannot be imported or run
    ├── ArtifactError        a deployment artifact missing, altered or in the way
    └── ResearchError        a study (ablation, sweep, report, plot) cannot go on
        ├── AblationError
        ├── SweepError
        ├── ReportError
        └── PlotError
"""
from __future__ import annotations


class NeurodelayError(Exception):
    """Base class of every error neurodelay raises deliberately (message says the fix)."""


class OptionError(NeurodelayError, ValueError):
    """A command option or function argument is out of range or meaningless."""


class ResourceLimitError(NeurodelayError, ValueError):
    """An input would make the program allocate more memory than allowed (with an
    estimate and how to cap it)."""


class UnsafeInputError(NeurodelayError, ValueError):
    """A file or folder from another source would make neurodelay run code, read or write
    outside the folder the user named, or follow a link (see the README's threat model)."""


class DiskFullError(NeurodelayError, OSError):
    """A write failed because the file system is full; what existed before is kept."""


class RunError(NeurodelayError, ValueError):
    """A run folder is missing, incomplete, corrupted, locked or would be overwritten."""


class DataError(NeurodelayError, ValueError):
    """A data file or a data argument is missing or malformed."""


class NetworkError(NeurodelayError, ValueError):
    """A network (float or quantized) or its file is inconsistent."""


class TargetError(NeurodelayError, ValueError):
    """A hardware target description is missing, malformed or out of range."""


class FitError(TargetError):
    """A network breaks one or more limits of a target (every violation listed)."""


class FixedPointError(TargetError):
    """A value cannot be represented exactly in the target's fixed-point arithmetic."""


class PassError(NeurodelayError, ValueError):
    """A deployment pass cannot transform the network as asked."""


class DelayRangeError(PassError):
    """Delays exceed what the target can represent (and clipping was not asked for)."""


class QuantizationError(PassError):
    """Weights, thresholds or decays cannot be quantized as asked."""


class SimulationError(NeurodelayError, ValueError):
    """A simulator (float reference, bit-accurate, Lava) refused its network or input."""


class BitSimError(SimulationError):
    """The bit-accurate simulator refused its network or input."""


class LavaRunError(SimulationError):
    """Running a network in Lava failed or was refused."""


class KernelError(NeurodelayError, ValueError):
    """A training kernel (DCLS convolution, integer-delay operator) refused its
    arguments."""


class ExportError(NeurodelayError, ValueError):
    """An exporter cannot write the network in its format."""


class NirExportError(ExportError):
    """The NIR exporter cannot write the network."""


class NirImportError(NeurodelayError, ValueError):
    """A NIR graph cannot be read, imported or run."""


class ArtifactError(NeurodelayError, ValueError):
    """A deployment artifact is missing, incomplete, altered, or in the way."""


class ResearchError(NeurodelayError, ValueError):
    """A study (ablation, bit-width sweep, report, plot) cannot go on."""


class AblationError(ResearchError):
    """An ablation study cannot be run or resumed as asked."""


class SweepError(ResearchError):
    """A bit-width sweep cannot be run as asked."""


class StudyError(ResearchError):
    """The cells of a study (ablation, sweep) could not all be run by its executor."""


class ReportError(ResearchError):
    """A study report cannot be made from the folder given."""


class PlotError(ResearchError):
    """A plot cannot be drawn from the run or study given."""
