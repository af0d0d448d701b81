"""Real containerd for the CRI backend tests: the ``realstack`` fixture comes from tests/conftest.py."""
