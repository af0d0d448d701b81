"""10003's Connection over real loopback sockets (no TLS: the identity is set as a verified
certificate would set it), with short timeouts: the first-head clock counts the whole head,
keep-alive idles out, pipelined requests are answered in order, refusals are Status JSON."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from streamcerts import Identity
from cloudstream.config import CloudConfig
from cloudstream.kubelet_api.connection import Connection
from cloudstream.registry import SessionRegistry


@dataclass
class _Server:
    config: CloudConfig
    registry: SessionRegistry = field(default_factory=SessionRegistry)
    busy: set[asyncio.Task[None]] = field(default_factory=set)
    draining: bool = False


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server_obj = _Server(CloudConfig(request_head_timeout=0.5, keepalive_idle_timeout=1.0, max_request_body=100))
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        conn = Connection(server_obj, reader, writer)  # type: ignore[arg-type]
        conn.identity = Identity("kube-apiserver-kubelet-client")
        try:
            await conn.serve()
        finally:
            tasks.discard(task)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        assert not tasks, "a connection outlived its client"


async def _read_all(reader: asyncio.StreamReader, timeout: float = 5.0) -> tuple[bytes, float]:
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        data = await reader.read()
    return data, time.monotonic() - started


async def test_trickled_first_head_is_cut_at_the_head_timeout(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        for byte in b"GET /configz HTTP/1.1\r\nHost: n\r\nX-Slow: " + b"a" * 40:
            if reader.at_eof():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)  # a byte every 50 ms: each read is quick, the head never ends
    except ConnectionError:
        pass
    data, _ = await _read_all(reader)
    writer.close()
    assert data == b""  # closed without an answer
    assert time.monotonic() - started < 2.0  # cut by the 0.5 s head clock, not by the trickle


async def test_keep_alive_serves_in_order_then_idles_out(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Two pipelined requests; the first has a body that must not run as a request.
    writer.write(b"GET /configz HTTP/1.1\r\nHost: n\r\nContent-Length: 15\r\n\r\nGET /x HTTP/1.1GET /nothing HTTP/1.1\r\nHost: n\r\n\r\n")
    data, waited = await _read_all(reader)
    writer.close()
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"404", b"404"]
    assert b"/configz" in answers[0] and b"/nothing" in answers[1]
    assert 0.8 < waited < 3.0  # then the 1 s keep-alive idle timeout closed it


async def test_refusals_are_status_json(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /configz HTTP/1.1\r\nHost: n\r\nContent-Length: 101\r\n\r\n")
    data, _ = await _read_all(reader)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"Content-Type: application/json" in head and b"Connection: close" in head
    status = json.loads(body)
    assert status["reason"] == "RequestEntityTooLarge" and status["code"] == 413 and "101" in status["message"]
