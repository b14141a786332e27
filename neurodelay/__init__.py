"""neurodelay: learned per-synapse delays for spiking networks, from training to chip.

The package is built in one-way layers; a module imports only from layers below its own
(checked by import-linter, see pyproject.toml and README "Layout"). Top to bottom::

    cli                      the commands
    research                 ablations, bit-width sweeps, figures
    api                      notebook calls (train_run, evaluate_run, ...)
    deploy | nir             the artifact and verify | NIR import and execution
    train                    model, kernels, the training loop, fine-tuning, loaders
    exporters                netx (Loihi 2) and NIR files
    passes                   prune, delays, quantize: network -> (network, report)
    sim                      float, bit-accurate and Lava simulation
    data                     SHD/SSC files, binning, splits, batches, a run's data
    hw                       targets, the Loihi 2 integer arithmetic, resource reports
    runs                     run folders: reading, locking, replacing
    core                     Network / QNetwork and their file format
    untrusted | threads | alloc | _compat | progress
    fs | options             file-system safety; option checks and the memory guard
    errors                   every error class
"""
import logging as _logging

# spikingjelly probes for Triton at import; on CPU-only machines torch then logs a
# warning per probe that says nothing to a neurodelay user.
_logging.getLogger("torch._library.triton").setLevel(_logging.ERROR)

__version__ = "0.1.0"
