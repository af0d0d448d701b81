"""Real containerd fixtures for tests under tests/realstack (see conftest_plugin.py)."""

from tests.realstack.conftest_plugin import pytest_configure, realstack  # noqa: F401
