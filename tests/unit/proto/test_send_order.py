"""TunnelConnection's sender over a real websockets pair: direct while the transport takes
data, and once it pushes back, queued messages go out urgent first (control, exec) and bulk
(logs) byte-fair; a sender cancelled while queued sends nothing; a closed tunnel fails the
queue with TunnelClosed."""

from __future__ import annotations

import asyncio
import logging

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from streamproto.aio import TunnelConnection
from streamproto.tunnel import ConnectRequest, Event, Feature, MessageType, Mux, Role, TunnelClosed, decode, encode

log = logging.getLogger("t.send")


class Sender(TunnelConnection):
    async def handle_event(self, event: Event) -> None:
        pass


async def _pair(run):  # type: ignore[no-untyped-def]
    received: list[tuple[int, int, bytes]] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        try:
            async for raw in ws:
                m = decode(raw if isinstance(raw, bytes) else raw.encode())
                received.append((m.connect_id, int(m.kind), bytes(m.data)))
        finally:
            done.set()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            mux = Mux(Role.CLOUD, features=frozenset({Feature.PORTFORWARD}), next_id=iter(range(1, 99)).__next__)
            tunnel = Sender(ws, mux, log)
            await run(tunnel, ws)
        async with asyncio.timeout(5):
            await done.wait()
    return received


async def test_backlog_goes_out_urgent_first_then_bulk_round_robin() -> None:
    async def run(tunnel: Sender, ws) -> None:  # type: ignore[no-untyped-def]
        logs = [tunnel.mux.open_stream(MessageType.LOGS_CONNECT, ConnectRequest(0, "/containerLogs/a/b/c"))[0]
                for _ in range(3)]
        exec_id = tunnel.mux.open_stream(MessageType.EXEC_CONNECT, ConnectRequest(0, "/exec/a/b/c"))[0]
        ws.pause_writing()  # the transport pushes back (as when its buffer is over the limit)
        tasks = []
        for cid in logs:  # each bulk stream queues two 40 KB messages (the quantum is 64 KiB)
            for n in range(2):
                payload = b"L%d" % n + b"." * 40_000
                tasks.append(asyncio.create_task(tunnel.send(encode(cid, MessageType.DATA, payload), tunnel.is_bulk(cid))))
                await asyncio.sleep(0)
        tasks.append(asyncio.create_task(tunnel.send(encode(exec_id, MessageType.DATA, b"keystroke"))))
        doomed = asyncio.create_task(tunnel.send(encode(logs[0], MessageType.DATA, b"never"), logs[0]))
        await asyncio.sleep(0.01)
        assert not any(t.done() for t in tasks)
        doomed.cancel()
        ws.resume_writing()
        await asyncio.gather(*tasks)
        assert len(tunnel._queue) == 0 and tunnel._pump is None

    received = await _pair(run)
    data = [(cid, payload) for cid, kind, payload in received if kind == MessageType.DATA]
    assert data[0] == (4, b"keystroke")  # queued last, sent first
    assert [(c, p[:2]) for c, p in data[1:]] == [(1, b"L0"), (2, b"L0"), (3, b"L0"), (1, b"L1"), (2, b"L1"), (3, b"L1")]
    assert b"never" not in [p for _, p in data]


async def test_a_closed_tunnel_fails_queued_senders() -> None:
    async def run(tunnel: Sender, ws) -> None:  # type: ignore[no-untyped-def]
        cid = tunnel.mux.open_stream(MessageType.LOGS_CONNECT, ConnectRequest(0, "/containerLogs/a/b/c"))[0]
        ws.pause_writing()
        queued = asyncio.create_task(tunnel.send(encode(cid, MessageType.DATA, b"x"), cid))
        await asyncio.sleep(0.01)
        reader = asyncio.create_task(tunnel.run_reader())
        ws.resume_writing()  # (the pump may write it before the close: either outcome is fine)
        async with asyncio.timeout(5):
            await ws.close()
            await reader
            try:
                await queued
            except TunnelClosed:
                pass
        with pytest.raises(TunnelClosed):
            await tunnel.send(encode(cid, MessageType.DATA, b"y"), cid)

    await _pair(run)
