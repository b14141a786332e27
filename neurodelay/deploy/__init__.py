"""Deployment: the frozen network, passes, artifacts and verification."""
