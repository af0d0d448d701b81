"""The edge's splice to a local streaming server (containerd's, edged's) over a real socket pair:
keystrokes written from the tunnel's callback or by the pump, echoes sent from the read callback
or by the pump (the tunnel busy 30 % of the time), every byte once and in order both ways; a
bulk answer goes through the pump whole; the backend closing ends the relay; no task left."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from edgestream.backends.relay import relay_plain
from streamproto.tunnel import MessageType

from .fakes import FakeStream


async def _backend(sock: socket.socket, bulk: int) -> bytes:
    """Reads the head, answers 101 and ``bulk`` bytes, then echoes until EOF; returns what it read."""
    reader, writer = await asyncio.open_connection(sock=sock)
    head = await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + bytes(i % 251 for i in range(bulk)))
    got = bytearray()
    while data := await reader.read(65536):
        got += data
        writer.write(data)
        await writer.drain()
    writer.close()
    return head + bytes(got)


@pytest.mark.parametrize("seed", [1, 2])
async def test_keystrokes_and_echoes_once_in_order_on_either_path(seed: int) -> None:
    rng = random.Random(seed)
    tasks_before = len(asyncio.all_tasks())
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    stream = FakeStream("/exec/x", kind=MessageType.EXEC_CONNECT)
    backend = asyncio.create_task(_backend(theirs, 300_000))
    relay = asyncio.create_task(relay_plain(stream, ours, b"POST /exec/x HTTP/1.1\r\nHost: h\r\n\r\n"))
    answer = b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + bytes(i % 251 for i in range(300_000))
    async with asyncio.timeout(10):
        while len(stream.body) < len(answer):
            await asyncio.sleep(0.001)
    assert stream.body == answer  # the 101 and bulk: through the pump, whole
    stream.answered = True
    typed = []
    for i in range(300):
        stream.now_ok = rng.random() < 0.7
        payload = f"{i};".encode() * rng.choice([1, 1, 1, 40])
        typed.append(payload)
        stream.deliver(payload)
        if rng.random() < 0.5:
            await asyncio.sleep(0)
    stream.now_ok = True
    async with asyncio.timeout(10):
        while len(stream.body) < len(answer) + len(b"".join(typed)):
            await asyncio.sleep(0.002)
    assert stream.body[len(answer):] == b"".join(typed)
    assert stream.taken_direct > 30 and stream.sent_now > 30  # both callbacks took some ...
    assert len(stream.frames) > stream.sent_now + 2  # ... and the pumps others
    stream.inbound.feed_eof()  # the cloud's side ends: half-close, the relay ends
    async with asyncio.timeout(10):
        await relay
        got = await backend
    assert got.endswith(b"".join(typed))
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == tasks_before


async def test_the_backend_closing_ends_the_relay() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    stream = FakeStream("/exec/x", kind=MessageType.EXEC_CONNECT)
    relay = asyncio.create_task(relay_plain(stream, ours, b"GET / HTTP/1.1\r\n\r\n"))
    await asyncio.sleep(0.05)
    theirs.sendall(b"HTTP/1.1 200 OK\r\n\r\nbye")
    theirs.close()
    async with asyncio.timeout(5):
        await relay
    assert stream.body == b"HTTP/1.1 200 OK\r\n\r\nbye"
    assert ours.fileno() == -1  # closed
