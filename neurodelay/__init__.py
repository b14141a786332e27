"""neurodelay: learned per-synapse delays for spiking networks, from training to chip."""
import logging as _logging

# spikingjelly probes for Triton at import; on CPU-only machines torch then logs a
# warning per probe that says nothing to a neurodelay user.
_logging.getLogger("torch._library.triton").setLevel(_logging.ERROR)

__version__ = "0.1.0"
