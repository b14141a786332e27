"""Simulators: numpy float reference, bit-accurate Loihi 2, and the Lava runner."""
