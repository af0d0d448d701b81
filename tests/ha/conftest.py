"""The HA tier: several cloudstream replicas behind a real HAProxy (TCP mode, loopback)."""

from __future__ import annotations

import pytest

from testkit.haproxy import ensure_haproxy


@pytest.fixture(scope="session")
def haproxy_installed() -> None:
    reason = ensure_haproxy()
    if reason is not None:
        pytest.skip(reason)
