"""neurodelay: learned per-synapse delays for spiking networks, from training to chip."""
__version__ = "0.1.0"
