"""The hostile tier's harness: a real cloudstream process, a bystander edge whose ``logs -f``
must keep flowing while a test attacks, and a leak check of the cloudstream process.

Every test takes ``fleet``; at teardown the fixture asserts that the bystander's stream is
still flowing, reports its longest gap, ends it, and asserts that cloudstream holds no stream,
no extra task and no extra descriptor compared with before the attack (``SIGUSR1`` state line).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from streamcerts import Layout, init_lab
from tests.conftest import MS
from tests.integration.framework import Process, apiserver_tls, kubelet_request, start_cloud, start_edge

NODES = ["victim", "attacker", "bystander"]
NODE_IPS = {"bystander": "127.0.1.3", "victim": "127.0.1.1", "attacker": "127.0.1.2"}
"""Distinct node IPs, none of them 127.0.0.1: that is where clients reach cloudstream, and a
connection's local address that is a node's IP picks that node (the no-DNAT wiring). An IP
belongs to one live node (first claim wins), so every node needs its own."""
STATE = re.compile(r"state (.*)$")
FOLLOW = "/containerLogs/default/demo/app?follow=true"


@pytest.fixture(scope="session")
def hostile_pki(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return init_lab(tmp_path_factory.mktemp("hostile-pki"), NODES)


@dataclass
class HealthyFollow:
    """A ``logs -f`` of the bystander node, timed chunk by chunk."""

    received: int = 0
    chunks: int = 0
    last: float = field(default_factory=time.monotonic)
    max_gap: float = 0.0
    error: BaseException | None = None
    task: asyncio.Task[None] | None = None

    def reset_gap(self) -> None:
        """Forget gaps seen so far (e.g. those of the set-up)."""
        self.max_gap = 0.0
        self.last = time.monotonic()

    async def run(self, port: int, layout: Layout) -> None:
        try:
            async with kubelet_request(port, FOLLOW, host="bystander", tls=apiserver_tls(layout)) as response:
                assert response.status == 200, response.status
                async for chunk in response.chunks():
                    now = time.monotonic()
                    self.max_gap = max(self.max_gap, now - self.last)
                    self.last = now
                    self.received += len(chunk)
                    self.chunks += 1
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported by assert_flowing
            self.error = exc

    async def assert_flowing(self, within: float = 2.0) -> None:
        before = self.received
        deadline = time.monotonic() + within * MS
        while self.received == before and time.monotonic() < deadline:
            assert self.error is None, f"the bystander's logs -f failed: {self.error!r}"
            await asyncio.sleep(0.05)
        assert self.error is None, f"the bystander's logs -f failed: {self.error!r}"
        assert self.received > before, f"the bystander's logs -f stopped flowing ({self.received} bytes so far)"


@dataclass
class Fleet:
    layout: Layout
    cloud: Process
    stream_port: int
    tunnel_port: int
    healthy: HealthyFollow
    edges: dict[str, Process] = field(default_factory=dict)

    async def edge(self, node: str, *extra: str, wait: bool = True) -> Process:
        """Start an emulated edge for ``node`` (a lab certificate with CN=node)."""
        since = len(self.cloud.lines)
        ip = NODE_IPS.get(node, "127.0.0.1")
        proc = await start_edge(self.layout, node, self.tunnel_port, "--node-ip", ip, *extra)  # extra may override
        self.edges[node] = proc
        if wait:
            await self.cloud.wait_for_line(rf"tunnel up: node {re.escape(node)} ", since=since)
        return proc

    async def state(self) -> dict[str, int]:
        """cloudstream's own account of what it holds (SIGUSR1 -> one ``state`` log line)."""
        since = len(self.cloud.lines)
        self.cloud.proc.send_signal(signal.SIGUSR1)
        m = await self.cloud.wait_for_line(STATE, since=since, timeout=10)
        return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}

    def rss_mb(self) -> float:
        with open(f"/proc/{self.cloud.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return -1.0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.cloud.proc.pid}/fd"))

    def log_lines(self, pattern: str, since: int = 0) -> list[str]:
        regex = re.compile(pattern)
        return [line for line in self.cloud.lines[since:] if regex.search(line)]


async def _settled_state(fleet: Fleet, baseline: dict[str, int], timeout: float = 10.0) -> dict[str, int]:
    """Poll the state until it is back at the baseline (closing connections take a moment)."""
    deadline = time.monotonic() + timeout * MS
    while True:
        now = await fleet.state()
        settled = (
            now["streams"] == 0 and now["mux_streams"] == 0 and now["api_connections"] == 0
            and now["tasks"] <= baseline["tasks"] and now["fds"] <= baseline["fds"]
        )
        if settled or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.2)


@pytest.fixture
async def fleet(hostile_pki: Layout, request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    """cloudstream (extra flags from ``@pytest.mark.cloud_args(...)``) with the bystander edge
    and its healthy ``logs -f`` running."""
    marker = request.node.get_closest_marker("cloud_args")
    extra = tuple(str(a).replace("{pki}", str(hostile_pki.root)) for a in marker.args) if marker else ()
    cloud, stream_port, tunnel_port = await start_cloud(hostile_pki, *extra)
    fleet = Fleet(hostile_pki, cloud, stream_port, tunnel_port, HealthyFollow())
    try:
        await fleet.edge("bystander", "--emulate-log-rate", "200")
        baseline = await fleet.state()
        fleet.healthy.task = asyncio.create_task(fleet.healthy.run(stream_port, hostile_pki))
        await fleet.healthy.assert_flowing(5)
        fleet.healthy.reset_gap()
        yield fleet
        await fleet.healthy.assert_flowing()
        fleet.healthy.task.cancel()
        await asyncio.gather(fleet.healthy.task, return_exceptions=True)
        for node, proc in list(fleet.edges.items()):
            if node != "bystander":
                await proc.stop()
        after = await _settled_state(fleet, baseline)
        assert after["streams"] == 0 and after["mux_streams"] == 0, f"streams leaked in cloudstream: {after}"
        assert after["api_connections"] == 0, f"10003 connections leaked: {after}"
        assert after["tasks"] <= baseline["tasks"], f"tasks leaked in cloudstream: {baseline} -> {after}"
        assert after["fds"] <= baseline["fds"], f"descriptors leaked in cloudstream: {baseline} -> {after}"
    finally:
        if fleet.healthy.task is not None:
            fleet.healthy.task.cancel()
            await asyncio.gather(fleet.healthy.task, return_exceptions=True)
        for proc in fleet.edges.values():
            await proc.stop()
        await cloud.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cloud_args(*flags): extra cloudstream flags for the fleet fixture ({pki}: the lab's directory)"
    )
    config.addinivalue_line("markers", "hostile: attacks real processes and checks nothing leaked")
