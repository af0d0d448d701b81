"""The systems under test, each started as real processes and yielding where a client dials.

Every stack is an async context manager: it starts its processes, yields a :class:`Stack`
(the kubelet-API-like port clients dial, plus the processes), and stops them on exit. With a
link ``profile`` the edge side is reached through ``python -m testkit.link`` in its own process
(the link's CPU does not share the measuring process)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from streamcerts import Layout
from testkit.cri import RealStack
from testkit.processes import READY, ROOT, Process, start_cloud, start_edge

NODE = "bench-node"
LISTENING = re.compile(r"listening on \S+:(\d+)")
EMULATE = ["--emulate", "default/bulk/app", "--emulate", "default/shell/sh", "--emulate-log-rate", "0",
           "--emulate-line-size", "1024"]


@dataclass
class Stack:
    kind: str
    port: int
    """Where the API server (our clients) dial: 10003 or the baseline's equivalent."""
    processes: list[Process] = field(default_factory=list)


async def _started(stack: AsyncExitStack, process: Process) -> Process:
    stack.push_async_callback(process.stop)
    return process


async def link_port(stack: AsyncExitStack, upstream: int, profile: str | None) -> int:
    """``upstream`` itself without a profile, else the port of a link process in front of it."""
    if profile is None:
        return upstream
    link = await _started(stack, await Process.start("link", [
        "testkit.link", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream}", "--profile", profile]))
    return int((await link.wait_for_line(re.compile(r"link listening on \S+:(\d+)"))).group(1))


@asynccontextmanager
async def ours(layout: Layout, root: Path = ROOT, profile: str | None = None, *, cloud_args: tuple[str, ...] = (),
               edge_args: tuple[str, ...] = ()) -> AsyncIterator[Stack]:
    """cloudstream + edgestream (emulator: ``bulk/app`` at full speed, ``shell/sh`` for exec)."""
    async with AsyncExitStack() as stack:
        cloud, stream_port, tunnel_port = await start_cloud(layout, *cloud_args, root=root)
        await _started(stack, cloud)
        dial = await link_port(stack, tunnel_port, profile)
        edge = await _started(stack, await start_edge(layout, NODE, dial, *EMULATE, *edge_args, root=root))
        await cloud.wait_for_line(f"tunnel up: node {NODE}")
        yield Stack("ours", stream_port, [cloud, edge])


@asynccontextmanager
async def raw_relay(layout: Layout, profile: str | None = None) -> AsyncIterator[Stack]:
    """client -TLS-> relay -TLS-> generator (bench.baselines.raw_relay)."""
    async with AsyncExitStack() as stack:
        edge = await _started(stack, await Process.start(
            "raw-edge", ["bench.baselines.raw_relay", "edge", "--pki", str(layout.root)]))
        upstream = await link_port(stack, int((await edge.wait_for_line(LISTENING)).group(1)), profile)
        relay = await _started(stack, await Process.start(
            "raw-relay", ["bench.baselines.raw_relay", "relay", "--pki", str(layout.root),
                          "--upstream", f"127.0.0.1:{upstream}"]))
        yield Stack("raw", int((await relay.wait_for_line(LISTENING)).group(1)), [relay, edge])


@asynccontextmanager
async def kubeedge(layout: Layout, profile: str | None = None, *, cloud: str = "kubeedge", feed: str = "messages",
                   root: Path = ROOT) -> AsyncIterator[Stack]:
    """The KubeEdge-style edge (``feed``: ``messages`` as Go sends them, ``frames`` a cheap feeder)
    against the KubeEdge-style cloud or (``cloud="ours"``) cloudstream."""
    async with AsyncExitStack() as stack:
        if cloud == "ours":
            server, port, tunnel_port = await start_cloud(layout, root=root)
        else:
            server = await Process.start("ke-cloud", ["bench.baselines.kubeedge_style", "cloud", "--pki",
                                                      str(layout.root)])
            m = await server.wait_for_line(READY)
            port, tunnel_port = int(m.group(1)), int(m.group(2))
        await _started(stack, server)
        dial = await link_port(stack, tunnel_port, profile)
        edge = await _started(stack, await Process.start("ke-edge", [
            "bench.baselines.kubeedge_style", "edge", "--pki", str(layout.root), "--server", f"localhost:{dial}",
            "--node", NODE, "--feed", feed]))
        await server.wait_for_line(f"tunnel up: node {NODE}")
        yield Stack(f"{cloud}+{feed}", port, [server, edge])


class Containerd:
    """One real containerd (``tests/realstack/setup.sh``, root) shared by a scenario's variants,
    with a running busybox container ``default/shell/sh``; started by the first user, stopped
    by the last."""

    SETUP = ROOT / "tests" / "realstack" / "setup.sh"

    def __init__(self) -> None:
        self.users = 0
        self.lock = asyncio.Lock()
        self.rs: Path | None = None
        self.stack: RealStack | None = None
        self.container = ""
        self.pod = ""

    def _env(self) -> dict[str, str]:
        return dict(os.environ, RS=str(self.rs), PYTHON=sys.executable)

    def _up(self) -> None:
        self.rs = Path(tempfile.mkdtemp(prefix="kes-bench-rs-"))
        done = subprocess.run(["bash", str(self.SETUP), "up"], env=self._env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"containerd did not start (tests/realstack/setup.sh up): {done.stderr[-300:]}")
        self.stack = RealStack.from_rs(self.rs)
        self.pod = self.stack.run_pod("shell", "default")
        self.container = self.stack.run_container(self.pod, "sh", ["sleep", "3600"])
        self.stack.wait_running(self.container)

    def _down(self) -> None:
        if self.stack is not None:
            with contextlib.suppress(Exception):
                self.stack.remove_pod(self.pod)
            self.stack.close()
            self.stack = None
        subprocess.run(["bash", str(self.SETUP), "down"], env=self._env(), capture_output=True)
        shutil.rmtree(self.rs or "", ignore_errors=True)

    @asynccontextmanager
    async def use(self) -> AsyncIterator[Containerd]:
        async with self.lock:
            if not self.users:
                if os.geteuid() != 0:
                    raise RuntimeError("a real containerd needs root")
                try:
                    await asyncio.to_thread(self._up)
                except BaseException:
                    await asyncio.to_thread(self._down)
                    raise
            self.users += 1
        try:
            yield self
        finally:
            async with self.lock:
                self.users -= 1
                if not self.users:
                    await asyncio.to_thread(self._down)


@asynccontextmanager
async def ours_cri(layout: Layout, ctd: Containerd, root: Path = ROOT) -> AsyncIterator[Stack]:
    """cloudstream + edgestream with the CRI backend on the shared containerd."""
    async with ctd.use(), AsyncExitStack() as stack:
        assert ctd.stack is not None
        cloud, stream_port, tunnel_port = await start_cloud(layout, root=root)
        await _started(stack, cloud)
        edge = await _started(stack, await start_edge(layout, NODE, tunnel_port, "--backend", "cri",
                                                      "--cri-endpoint", ctd.stack.endpoint, root=root))
        await cloud.wait_for_line(f"tunnel up: node {NODE}")
        yield Stack("ours", stream_port, [cloud, edge])
