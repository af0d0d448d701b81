"""A hostile kubelet behind a real edgestream (kubelet backend): malformed answers, an endless
head, a head that trickles, a body that never ends. Each bad stream gets its own error (502/504
naming the kubelet) while a ``logs -f`` on the same edge keeps flowing, the tunnel never
redials, and neither the edge process nor the kubelet keeps a connection it should have closed.

Before the fix, ``Content-Length: -1`` made the edge's reader spin: the whole edge loop stopped
(every stream, the keepalive) and chunk sizes ``0x5``, ``0_5``, ``-3`` were accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import pytest

from tests.conftest import MS
from tests.integration.framework import apiserver_tls, kubelet_request

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(120)]

MALFORMED = {
    "cl-minus": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc",
    "chunk-hex-prefix": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n",
    "chunk-underscore": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0_5\r\nhello\r\n",
    "chunk-negative": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nhello\r\n",
}


class HostileKubelet:
    """A real TCP server; the pod name in ``/containerLogs/<ns>/<pod>/<ctr>`` picks the misdeed."""

    def __init__(self) -> None:
        self.open = 0
        self.address = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            pod = head.split(b" ", 2)[1].split(b"/")[3].decode()
            if pod in MALFORMED:
                writer.write(MALFORMED[pod])
                await writer.drain()
                await reader.read()  # hold the connection open: only the edge can end it
            elif pod == "endless-head":
                writer.write(b"HTTP/1.1 200 OK\r\n")
                for _ in range(20_000):  # bounded; the edge stops reading at 64 KiB
                    writer.write(b"X-Pad: " + b"a" * 1000 + b"\r\n")
                    await writer.drain()
            elif pod == "trickle-head":
                writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(1200):
                    writer.write(b"a")
                    await writer.drain()
                    await asyncio.sleep(0.05)
            else:  # a legitimate, slow, endless follow: one line every 20 ms
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for i in range(100_000):
                    line = b"%s line %d\n" % (pod.encode(), i)
                    writer.write(b"%x\r\n%s\r\n" % (len(line), line))
                    await writer.drain()
                    await asyncio.sleep(0.02)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.open -= 1


@pytest.fixture
async def hostile_kubelet():
    kubelet = HostileKubelet()
    server = await asyncio.start_server(kubelet.handle, "127.0.0.1", 0)
    kubelet.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield kubelet
    finally:
        server.close()
        await server.wait_closed()


class Follow:
    """A ``logs -f`` through 10003 of a pod the hostile kubelet serves properly."""

    def __init__(self) -> None:
        self.received = 0
        self.error: BaseException | None = None

    async def run(self, port: int, tls, path: str) -> None:  # type: ignore[no-untyped-def]
        try:
            async with kubelet_request(port, path, host="victim", tls=tls) as response:
                assert response.status == 200, response.status
                async for chunk in response.chunks():
                    self.received += len(chunk)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported by flowing()
            self.error = exc

    async def flowing(self, within: float = 3.0) -> None:
        before = self.received
        deadline = time.monotonic() + within * MS
        while self.received == before and self.error is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert self.error is None, f"the healthy logs -f on the same edge failed: {self.error!r}"
        assert self.received > before, "the healthy logs -f on the same edge stopped flowing"


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_a_hostile_kubelet_fails_only_its_own_streams(fleet, hostile_kubelet) -> None:
    edge = await fleet.edge("victim", "--backend", "kubelet", "--kubelet-address", hostile_kubelet.address,
                            "--cri-timeout", "1")
    tls = apiserver_tls(fleet.layout)
    baseline_fds = fd_count(edge.proc.pid)
    healthy = Follow()
    task = asyncio.create_task(healthy.run(fleet.stream_port, tls, "/containerLogs/default/web/app?follow=true"))
    try:
        await healthy.flowing(5)
        expected = {pod: (502, "malformed HTTP") for pod in MALFORMED}
        expected["endless-head"] = (502, "a response head over 64 KiB")
        expected["trickle-head"] = (504, "no complete answer head within 1 s")
        for pod, (status, says) in expected.items():
            async with kubelet_request(fleet.stream_port, f"/containerLogs/default/{pod}/app?follow=true",
                                       host="victim", tls=tls) as response:
                body = await asyncio.wait_for(response.body(), 10 * MS)
                assert response.status == status, (pod, response.status, body)
                assert f"the kubelet (edged) at {hostile_kubelet.address}".encode() in body, body
                assert says.encode() in body, body
            await healthy.flowing()
        await fleet.healthy.assert_flowing()  # the bystander node, for good measure

        # a body that never ends is a legitimate follow: it flows, and ends when the client leaves
        async with kubelet_request(fleet.stream_port, "/containerLogs/default/slow/app?follow=true",
                                   host="victim", tls=tls) as response:
            assert response.status == 200
            chunks = response.chunks()
            assert b"slow line 0" in await asyncio.wait_for(chunks.__anext__(), 5 * MS)
            await chunks.aclose()
        await healthy.flowing()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # the edge closed every kubelet connection and holds no more descriptors than before
    deadline = time.monotonic() + 10 * MS
    while (hostile_kubelet.open or fd_count(edge.proc.pid) > baseline_fds) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert hostile_kubelet.open == 0, f"{hostile_kubelet.open} kubelet connections left open by the edge"
    assert fd_count(edge.proc.pid) <= baseline_fds, "descriptors leaked in edgestream"
    # one tunnel all along: the edge's loop never stalled long enough to lose it
    assert sum("= tunnel up" in line for line in edge.lines) == 1, edge.output
    assert not [line for line in edge.lines if "Traceback" in line or "ERROR" in line], edge.output
