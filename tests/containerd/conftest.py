"""Real containerd for the CRI backend tests (the session-wide ``realstack`` fixture)."""

from tests.realstack.conftest_plugin import pytest_configure, realstack  # noqa: F401
