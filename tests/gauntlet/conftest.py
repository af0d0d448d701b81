"""The gauntlet's harness: real cloudstream and edgestream processes on loopback, clients that
check every byte, and cloudstream's own account of what it holds (SIGUSR1 ``state`` line).

Size: CI runs it reduced (a few edges, seconds of soak); ``KES_GAUNTLET=full`` runs it at full
size (a storm of 1,000 tunnels, a 10-minute soak):

    KES_GAUNTLET=full PYTHONPATH=$PWD python -m pytest -p no:cacheprovider tests/gauntlet
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

FULL = os.environ.get("KES_GAUNTLET", "").lower() == "full"
EDGES = 8 if FULL else 3
"""Edge processes (about 35 MB each) in the process-level tests."""
STORM = 1000 if FULL else 100
"""Tunnels in the reconnect storm (in-process run_tunnel edges against a real cloudstream)."""
SOAK_SECONDS = float(os.environ.get("KES_SOAK_SECONDS", 600.0 if FULL else 20.0))
"""``KES_SOAK_SECONDS`` sets it. Full: 10 minutes, because cloudstream's RSS climbs for the first
4-5 (arenas and heap grow to the highest concurrent buffering seen: 43 -> 119 MB in one run),
then stays flat (+2.8 MB fitted over minutes 5-10); a 5-minute soak's second half is still
climbing."""
RSS_CHECKED = SOAK_SECONDS >= 600
"""Below that the second half is warm-up: its RSS is reported, not asserted (fds always are)."""
SOAK_MEMTRACE = os.environ.get("KES_SOAK_MEMTRACE")
"""A file: the soak's cloudstream runs under tracemalloc and appends a diff of its Python
allocation sites there every 30 s (``testkit.memtrace``); RSS then includes the tracing."""
NODES = [f"g{i:02d}" for i in range(EDGES)]
STORM_NODES = [f"s{i:04d}" for i in range(STORM)]
STATE = re.compile(r"state (.*)$")
LINE = re.compile(rb"^default/demo/app line (\d+)$")
FOLLOW = "/containerLogs/default/demo/app?follow=true"


def node_ip(i: int, block: int = 2) -> str:
    """Each node its own loopback IP (cloudstream gives an IP to one live node)."""
    return f"127.{block}.{i // 250}.{i % 250 + 1}"


@pytest.fixture(scope="session")
def gauntlet_pki(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return init_lab(tmp_path_factory.mktemp("gauntlet-pki"), NODES + STORM_NODES)


class SilentEOF(AssertionError):
    """A stream ended with a clean end of body although its edge was cut: the fault this tier forbids."""


@dataclass
class Follow:
    """A ``logs -f`` that checks the emulator's lines arrive in order with none missing."""

    node: str
    lines: int = 0
    first: int | None = None
    next_expected: int | None = None
    ended: str = "running"
    """running | complete (the final 0-chunk) | error (a broken body: what a cut must give) | refused."""
    error: BaseException | None = None
    task: asyncio.Task[None] | None = None

    async def run(self, port: int, layout: Layout, path: str = FOLLOW) -> None:
        partial = b""
        try:
            async with kubelet_request(port, path, host=self.node, tls=apiserver_tls(layout)) as response:
                if response.status != 200:  # refused (e.g. 503: the edge is not connected): an error, said at once
                    self.ended, self.error = "refused", ConnectionRefusedError(f"{self.node}: HTTP {response.status}")
                    await response.body()
                    return
                async for chunk in response.chunks():
                    *whole, partial = (partial + chunk).split(b"\n")
                    for line in whole:
                        self._check(line)
            self.ended = "complete"
            assert not partial, f"{self.node}: body ended inside a line"
        except asyncio.CancelledError:
            raise
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            self.ended, self.error = "error", exc

    def _check(self, line: bytes) -> None:
        m = LINE.match(line)
        assert m, f"{self.node}: not an emulator line: {line[:80]!r}"
        n = int(m.group(1))
        if self.first is None:
            self.first = n
        else:
            assert n == self.next_expected, f"{self.node}: line {n} after line {self.next_expected - 1}: bytes lost"
        self.next_expected = n + 1
        self.lines += 1

    def start(self, port: int, layout: Layout, path: str = FOLLOW) -> Follow:
        self.task = asyncio.create_task(self.run(port, layout, path))
        return self

    async def wait_lines(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout * MS
        while self.lines < count:
            assert self.ended == "running", f"{self.node}: follow ended ({self.ended}: {self.error!r}) early"
            assert time.monotonic() < deadline, f"{self.node}: only {self.lines} lines in {timeout} s"
            await asyncio.sleep(0.05)

    async def ended_with_error(self, timeout: float = 15.0) -> BaseException:
        """The follow must end with a broken body (reset, or no final chunk), never a clean end."""
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), timeout * MS)
        if self.ended == "complete":
            raise SilentEOF(f"{self.node}: the logs -f ended with a final chunk although its edge was cut")
        assert self.ended == "error" and self.error is not None
        return self.error


@dataclass
class Lab:
    """One cloudstream process (restartable on the same ports) and edge processes by node."""

    layout: Layout
    cloud_args: tuple[str, ...] = ()
    cloud: Process | None = None
    stream_port: int = 0
    tunnel_port: int = 0
    edges: dict[str, Process] = field(default_factory=dict)
    memtrace: str | None = None

    async def start_cloud(self) -> None:
        fixed = ("--stream-port", str(self.stream_port), "--tunnel-port", str(self.tunnel_port)) if self.tunnel_port else ()
        wrap = ("testkit.memtrace", self.memtrace, "--") if self.memtrace else ()
        self.cloud, self.stream_port, self.tunnel_port = await start_cloud(self.layout, *self.cloud_args, *fixed,
                                                                           wrap=wrap)

    async def edge(self, node: str, *extra: str, server_port: int | None = None, wait: bool = True) -> Process:
        assert self.cloud is not None
        since = len(self.cloud.lines)
        i = NODES.index(node) if node in NODES else 0
        proc = await start_edge(
            self.layout, node, server_port or self.tunnel_port, "--node-ip", node_ip(i), "--emulate-log-rate", "200",
            *extra,
        )
        self.edges[node] = proc
        if wait:
            await self.wait_up(node, since)
        return proc

    async def wait_up(self, node: str, since: int = 0, timeout: float = 20.0) -> None:
        assert self.cloud is not None
        await self.cloud.wait_for_line(rf"tunnel up: node {re.escape(node)} ", since=since, timeout=timeout * MS)

    async def state(self) -> dict[str, int]:
        assert self.cloud is not None
        since = len(self.cloud.lines)
        self.cloud.proc.send_signal(signal.SIGUSR1)
        m = await self.cloud.wait_for_line(STATE, since=since, timeout=10)
        return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}

    async def settled(self, baseline: dict[str, int], timeout: float = 15.0) -> dict[str, int]:
        """Poll until cloudstream holds no stream or connection and no more tasks/fds than ``baseline``."""
        deadline = time.monotonic() + timeout * MS
        while True:
            now = await self.state()
            if (
                now["streams"] == 0 and now["mux_streams"] == 0 and now["api_connections"] == 0
                and now["tasks"] <= baseline["tasks"] and now["fds"] <= baseline["fds"]
            ) or time.monotonic() > deadline:
                return now
            await asyncio.sleep(0.2)

    async def assert_no_leak(self, baseline: dict[str, int]) -> None:
        after = await self.settled(baseline)
        assert after["streams"] == 0 and after["mux_streams"] == 0, f"streams leaked in cloudstream: {after}"
        assert after["api_connections"] == 0, f"10003 connections leaked: {after}"
        assert after["tasks"] <= baseline["tasks"], f"tasks leaked in cloudstream: {baseline} -> {after}"
        assert after["fds"] <= baseline["fds"], f"descriptors leaked in cloudstream: {baseline} -> {after}"

    def rss_kb(self) -> int:
        assert self.cloud is not None
        with open(f"/proc/{self.cloud.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    def fd_count(self) -> int:
        assert self.cloud is not None
        return len(os.listdir(f"/proc/{self.cloud.proc.pid}/fd"))

    async def stop(self) -> None:
        for proc in self.edges.values():
            if proc.proc.returncode is None:
                try:
                    proc.proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
            await proc.stop()
        if self.cloud is not None:
            await self.cloud.stop()


@pytest.fixture
async def lab(gauntlet_pki: Layout, request: pytest.FixtureRequest) -> AsyncIterator[Lab]:
    marker = request.node.get_closest_marker("cloud_args")
    lab = Lab(gauntlet_pki, tuple(marker.args) if marker else ())
    if request.node.get_closest_marker("memtrace"):
        lab.memtrace = SOAK_MEMTRACE
    await lab.start_cloud()
    try:
        yield lab
    finally:
        await lab.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cloud_args(*flags): extra cloudstream flags for the lab fixture")
    config.addinivalue_line("markers", "gauntlet: faults against real processes; nothing lost, nothing leaked")
    config.addinivalue_line("markers", "memtrace: cloudstream under tracemalloc when KES_SOAK_MEMTRACE names a file")
