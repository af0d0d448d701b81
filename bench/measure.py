"""The measurements a scenario makes on a running stack: bulk throughput (``bench.reader`` in its
own process), exec echo round trips (idle, or beside a full-speed bulk stream), fairness."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from streamcerts import Layout
from streamproto.aio.spdy import SpdyStream, upgrade
from testkit.k8s_ws import open_ws
from testkit.processes import ROOT, apiserver_tls

from .core import percentiles
from .stacks import NODE, Containerd, Stack

BULK_PATH = "/containerLogs/default/bulk/app?follow=true"
EXEC_PATH = "/exec/default/shell/sh?command=cat&input=1&output=1"


async def _reader(port: int, pki: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.reader", "--port", str(port), "--pki", str(pki), "--host", NODE,
        "--path", BULK_PATH, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE)


@dataclass(frozen=True)
class Throughput:
    """What ``bench.reader`` counted: body bytes per stream over ``seconds``, and their sum's rate."""

    bytes: list[int]
    seconds: float
    MBps: float

    def per_stream_MBps(self) -> list[float]:
        return [b / self.seconds / 1e6 for b in self.bytes]


async def throughput(stack: Stack, layout: Layout, *, streams: int = 1, stall: int = 0, warmup: float = 1.0,
                     seconds: float = 3.0) -> Throughput:
    """Body bytes per stream over ``seconds`` after ``warmup`` (``stall`` more streams never read)."""
    proc = await _reader(stack.port, layout.root, "--streams", str(streams), "--stall", str(stall),
                         "--warmup", str(warmup), "--seconds", str(seconds))
    out, _ = await asyncio.wait_for(proc.communicate(), warmup + seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.reader failed ({proc.returncode}) on {stack.kind}")
    r = json.loads(out)
    return Throughput([int(b) for b in r["bytes"]], float(r["seconds"]), float(r["MBps"]))


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one stream has everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 0.0


class Rates(list[float]):
    """The MB/s a bulk reader reports once a second, and its process id."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid


@asynccontextmanager
async def bulk_beside(stack: Stack, layout: Layout, warmup: float = 0.5) -> AsyncIterator[Rates]:
    """A full-speed bulk ``logs -f`` of the same node read by another process, ``warmup`` seconds
    after it started; yields the MB/s it reported once a second (filled in while the body runs)."""
    proc = await _reader(stack.port, layout.root, "--warmup", str(warmup), "--seconds", "0")
    rates = Rates(proc.pid)
    assert proc.stdout is not None

    async def collect() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            rates.append(float(line))

    first = await asyncio.wait_for(proc.stdout.readline(), 30)
    rates.append(float(first))
    task = asyncio.create_task(collect())
    try:
        yield rates
    finally:
        proc.kill()
        await proc.wait()
        await task


class Echo:
    """An interactive session: one byte typed, one byte back."""

    async def ping(self, byte: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class WsEcho(Echo):
    """``exec cat`` through 10003 with the k8s WebSocket protocol (as kubectl >= 1.30)."""

    def __init__(self, ws) -> None:  # type: ignore[no-untyped-def]
        self.ws = ws

    async def ping(self, byte: bytes) -> None:
        await self.ws.send(b"\x00" + byte)
        while True:
            message = await self.ws.recv()
            if message[:1] == b"\x01" and message[1:]:
                return

    async def close(self) -> None:
        await self.ws.close()


class RawEcho(Echo):
    """The raw relay's echo: ``GET /exec...``, ``101``, then bytes as they are."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def ping(self, byte: bytes) -> None:
        self.writer.write(byte)
        await self.reader.readexactly(1)

    async def close(self) -> None:
        self.writer.transport.abort()


async def open_echo(stack: Stack, layout: Layout, raw_bytes: bool = False, spdy: bool = False) -> Echo:
    """The k8s WebSocket exec client (ours, and the raw relay by default), with ``spdy`` SPDY/3.1
    (ours only), or with ``raw_bytes`` bytes as they are (the raw relay only: no framing at all)."""
    if spdy:
        return await SpdyEcho.open(stack, layout)
    tls = apiserver_tls(layout)
    if raw_bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port, ssl=tls, server_hostname="localhost")
        writer.write(f"GET {EXEC_PATH} HTTP/1.1\r\nHost: {NODE}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        return RawEcho(reader, writer)
    return WsEcho(await open_ws(stack.port, EXEC_PATH, node=NODE, tls=tls))


class SpdyEcho(Echo):
    """``exec cat`` through 10003 over SPDY/3.1: what a kube-apiserver sends the kubelet for every
    kubectl exec unless the node declares ``ExtendWebSocketsToKubelet`` (apiserver-observed.md)."""

    def __init__(self, writer: asyncio.StreamWriter, task: asyncio.Task[None], stdin: SpdyStream,
                 stdout: SpdyStream) -> None:
        self.writer, self.task, self.stdin, self.stdout = writer, task, stdin, stdout

    @classmethod
    async def open(cls, stack: Stack, layout: Layout) -> SpdyEcho:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.port, ssl=apiserver_tls(layout),
                                                       server_hostname="localhost")
        return await cls.upgrade(reader, writer, EXEC_PATH, NODE)

    @classmethod
    async def upgrade(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                      host: str) -> SpdyEcho:
        answer = await upgrade(reader, writer, path, host=host, protocols=[  # client-go's offer
            "v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"])
        assert answer.status == 101 and answer.conn is not None, (answer.status, answer.body[:200])
        conn = answer.conn
        task = asyncio.create_task(conn.run())
        streams: dict[str, SpdyStream] = {}
        for kind in ("error", "stdin", "stdout"):  # client-go's order, each after the last one's reply
            streams[kind] = await conn.open_stream([("streamtype", kind)])
            await asyncio.wait_for(streams[kind].wait_reply(), 20)
        return cls(writer, task, streams["stdin"], streams["stdout"])

    async def ping(self, byte: bytes) -> None:
        await self.stdin.write(byte)
        if not await self.stdout.read():
            raise ConnectionError("exec over SPDY: stdout ended")

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.writer.transport.abort()


async def containerd_echo(ctd: Containerd, count: int) -> dict[str, float]:
    """``exec cat`` straight to containerd's streaming server (the URL its CRI Exec hands a
    kubelet), with the same SPDY client: what the chain's own hops are measured against."""
    assert ctd.stack is not None
    url = urlsplit(await asyncio.to_thread(ctd.stack.exec_url, ctd.container, ["cat"], stdin=True, stderr=False))
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    echo = await SpdyEcho.upgrade(reader, writer, url.path, url.netloc)
    try:
        await pings(echo, max(5, count // 15))
        p50, p99 = percentiles(await pings(echo, count))
    finally:
        await echo.close()
    return {"idle_p50_ms": p50, "idle_p99_ms": p99}


async def pings(echo: Echo, count: int) -> list[float]:
    rtts = []
    for i in range(count):
        began = time.perf_counter()
        await echo.ping(bytes([65 + i % 26]))
        rtts.append((time.perf_counter() - began) * 1000)
    return rtts


PLACEMENTS: dict[str, tuple[int, int, int, int] | None] = {
    # the CPU of (cloudstream, edgestream, the bulk reader, the keystroke client), on 2 cores
    "scheduler's choice": None,
    "cloud apart from the reader": (0, 1, 1, 0),
    "cloud beside the reader": (0, 1, 0, 1),
    "cloud beside the edge": (0, 0, 1, 1),
}


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` on ``cpus`` (a thread that just ended is skipped)."""
    try:
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass


async def exec_echo(stack: Stack, layout: Layout, *, count: int = 300, beside_bulk: bool = True,
                    idle: bool = True, raw_bytes: bool = False, spdy: bool = False,
                    bulk_warmup: float = 0.5, cpus: tuple[int, int, int, int] | None = None) -> dict[str, float]:
    """Round trips idle and beside a full-speed bulk stream of the same node (ms, MB/s); the
    bulk stream runs ``bulk_warmup`` seconds before the first (on a long link: past its start).
    ``cpus``: beside the bulk stream, the four busy processes pinned as ``PLACEMENTS`` says (on a
    2-core machine the keystroke waits for the cloud to get a CPU: which process shares its core
    decides how long)."""
    everywhere = os.sched_getaffinity(0)
    if cpus is not None and not set(cpus) <= everywhere:
        raise RuntimeError(f"placement needs CPUs {sorted(set(cpus))}; this process may use {sorted(everywhere)}")
    out: dict[str, float] = {}
    echo = await open_echo(stack, layout, raw_bytes, spdy)
    cloud_edge = [p.proc.pid for p in stack.processes][:2]
    try:
        await pings(echo, max(5, count // 15))  # warm up
        if idle:
            out["idle_p50_ms"], out["idle_p99_ms"] = percentiles(await pings(echo, count))
        if beside_bulk:
            async with bulk_beside(stack, layout, bulk_warmup) as rates:
                if cpus is not None:
                    for pid, cpu in zip([*cloud_edge, rates.pid, os.getpid()], cpus, strict=True):
                        _pin(pid, {cpu})
                    await asyncio.sleep(0.2)  # (the reader's next report comes from where it now runs)
                loaded = await pings(echo, count)
            out["bulk_p50_ms"], out["bulk_p99_ms"] = percentiles(loaded)
            out["bulk_MBps"] = statistics.median(rates)
    finally:
        if cpus is not None:
            for pid in [*cloud_edge, os.getpid()]:
                _pin(pid, everywhere)
        await echo.close()
    return out


