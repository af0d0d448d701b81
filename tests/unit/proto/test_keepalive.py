"""The shared keepalive timer against real websockets connections on loopback: pings go out
on schedule from one task, an answering peer stays up, a peer that stops reading is failed
with 1011 "keepalive ping timeout" (as websockets' own keepalive does), and the task ends
with the last connection."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from streamproto.aio.keepalive import Keepalive, shared_keepalive


async def _pair(keepalive: Keepalive, count: int, interval: float, timeout: float):
    """``count`` client connections to a server whose side is kept alive by ``keepalive``."""
    server_side: list = []
    closed: list[str] = []

    async def handler(ws) -> None:
        keepalive.add(ws, interval, timeout)
        server_side.append(ws)
        try:
            await ws.wait_closed()
        finally:
            keepalive.discard(ws)
            sent = ws.protocol.close_sent  # the peer never answers a stalled close: what we sent counts
            closed.append(f"{sent.code} {sent.reason}" if sent is not None else f"{ws.close_code}")

    server = await serve(handler, "127.0.0.1", 0, ping_interval=None, compression=None)
    port = server.sockets[0].getsockname()[1]
    clients = [await connect(f"ws://127.0.0.1:{port}", ping_interval=None, compression=None) for _ in range(count)]
    while len(server_side) < count:
        await asyncio.sleep(0.01)
    return server, clients, server_side, closed


async def test_answering_peers_stay_up_and_one_task_pings_them_all() -> None:
    keepalive = Keepalive()
    server, clients, server_side, closed = await _pair(keepalive, 20, 0.05, 0.5)
    try:
        tasks_before = len(asyncio.all_tasks())
        await asyncio.sleep(0.4)
        assert keepalive.pings_sent >= 20 * 4  # every connection, about every 50 ms
        assert keepalive.timeouts == 0 and not closed
        assert all(ws.latency > 0 for ws in server_side)  # the pongs were matched to our pings
        assert len(asyncio.all_tasks()) == tasks_before  # no task per connection
    finally:
        for c in clients:
            await c.close()
        server.close()
        await server.wait_closed()
    assert len(keepalive) == 0 and keepalive._task is None  # the last one out ends the task


async def test_a_peer_that_stops_reading_is_failed_with_1011() -> None:
    keepalive = Keepalive(close_timeout=0.2)
    server, clients, server_side, closed = await _pair(keepalive, 2, 0.05, 0.3)
    stalled, healthy = clients
    try:
        stalled.transport.pause_reading()  # no pong will come back from it
        async with asyncio.timeout(5):
            while not closed:
                await asyncio.sleep(0.02)
        assert closed == ["1011 keepalive ping timeout"]
        assert keepalive.timeouts == 1
        await asyncio.sleep(0.2)
        await healthy.send("still here")  # the other connection is untouched
        assert len(keepalive) == 1
    finally:
        stalled.transport.resume_reading()
        for c in clients:
            try:
                await c.close()
            except ConnectionClosed:
                pass
        server.close()
        await server.wait_closed()


async def test_shared_keepalive_is_one_per_loop() -> None:
    assert shared_keepalive() is shared_keepalive()
