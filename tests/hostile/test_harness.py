"""The harness itself: a bystander flows, state is reported, a plain refusal leaks nothing."""

from __future__ import annotations

import pytest

from tests.integration.framework import apiserver_tls, kubelet_request

from .conftest import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(60)]


async def test_absent_node_requests_leave_nothing_behind(fleet: Fleet) -> None:
    state = await fleet.state()
    assert state["tunnels"] == 1 and state["streams"] == 1, state  # the bystander and its logs -f
    for _ in range(20):
        async with kubelet_request(
            fleet.stream_port, "/containerLogs/default/demo/app", host="absent", tls=apiserver_tls(fleet.layout)
        ) as response:
            assert response.status == 503
            assert b"absent" in await response.body()
    assert fleet.healthy.max_gap < 0.5
