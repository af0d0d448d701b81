"""The receive fast path (``FastFrames`` + ``TunnelConnection._process_event``) over a real
websockets pair on loopback: every DATA payload arrives once and in order whichever path it
took, with pings, fragmented messages, control messages and a full buffer mixed in; both
directions (a server unmasks, a client does not)."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from streamproto.aio import TunnelConnection
from streamproto.aio.fastframes import FastFrames
from streamproto.tunnel import ConnectRequest, DataReceived, Event, MessageType, Mux, Role, encode

log = logging.getLogger("t.fastframes")


class Receiver(TunnelConnection):
    """Delivers DATA at once while ``room`` allows, else through the reader (slow path)."""

    def __init__(self, ws, mux: Mux) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ws, mux, log)
        self.got: list[bytes] = []
        self.fast = 0
        self.slow = 0
        self.room = True

    def data_nowait(self, connect_id: int, payload: memoryview) -> bool:
        if not self.room:
            return False
        self.got.append(bytes(payload))
        self.fast += 1
        return True

    async def handle_event(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            self.got.append(bytes(event.data))
            self.slow += 1
            await asyncio.sleep(0)  # a reader that takes its time


def _script(cid: int, seed: int) -> list[tuple[str, object]]:
    """What the sender does: DATA messages (some fragmented), pings, a control message for
    an unknown stream, and switches of the receiver's room."""
    rng = random.Random(seed)
    steps: list[tuple[str, object]] = []
    for i in range(600):
        payload = f"{i:05d}".encode() + bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 200, 300, 70_000])))
        roll = rng.random()
        if roll < 0.05:
            steps.append(("ping", None))
        elif roll < 0.08:
            steps.append(("room", rng.random() < 0.5))
        elif roll < 0.10:
            steps.append(("send", encode(99, MessageType.REMOVE_CONNECT)))  # unknown stream: ignored
        if roll > 0.97:
            steps.append(("fragmented", encode(cid, MessageType.DATA, payload)))
        else:
            steps.append(("send", encode(cid, MessageType.DATA, payload)))
    steps.append(("room", True))
    return steps


async def _play(ws, steps, receiver_box) -> list[bytes]:  # type: ignore[no-untyped-def]
    sent = []
    # Start once the receiver hooked in: bytes websockets buffered before that take the reader,
    # and under load a steady stream may give the fast path no idle frame boundary to resume at.
    await receiver_box
    await asyncio.sleep(0.02)
    for kind, arg in steps:
        if kind == "ping":
            await ws.ping()
        elif kind == "room":
            (await receiver_box).room = arg  # type: ignore[assignment]
            await asyncio.sleep(0.001)
        elif kind == "fragmented":
            data = bytes(arg)  # type: ignore[arg-type]
            await ws.send([data[:3], data[3:7], data[7:]], text=True)
            sent.append(data[2:])
        else:
            data = bytes(arg)  # type: ignore[arg-type]
            await ws.send(data, text=True)
            if data[1] == MessageType.DATA:
                sent.append(data[2:])
    return sent


def _receiver(ws) -> Receiver:  # type: ignore[no-untyped-def]
    mux = Mux(Role.CLOUD, next_id=iter(range(1, 9)).__next__)
    cid, _ = mux.open_stream(MessageType.LOGS_CONNECT, ConnectRequest(0, "/containerLogs/a/b/c"))
    assert cid == 1
    return Receiver(ws, mux)


@pytest.mark.parametrize("receiving_side", ["server", "client"])
@pytest.mark.parametrize("seed", [1, 2])
async def test_every_payload_arrives_once_in_order_on_either_path(receiving_side: str, seed: int) -> None:
    loop = asyncio.get_running_loop()
    box: asyncio.Future[Receiver] = loop.create_future()
    steps = _script(1, seed)
    result: asyncio.Future[list[bytes]] = loop.create_future()

    async def handler(ws: ServerConnection) -> None:
        if receiving_side == "server":
            receiver = _receiver(ws)
            box.set_result(receiver)
            await receiver.run_reader()
        else:
            result.set_result(await _play(ws, steps, box))
            await ws.close()

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=2 << 20) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=2 << 20) as client:
            if receiving_side == "client":
                receiver = _receiver(client)
                box.set_result(receiver)
                await receiver.run_reader()
                sent = await result
            else:
                sent = await _play(client, steps, box)
                await client.close()
        receiver = await box
        if receiving_side == "server":
            async with asyncio.timeout(10):
                while receiver.closed_reason is None:
                    await asyncio.sleep(0.01)
    assert receiver.got == sent
    assert receiver.fast + receiver.slow == len(sent)  # each payload took exactly one path
    assert receiver.slow > 0  # the receiver refused room at times: those went through the reader
    fast = receiver._fast
    assert isinstance(fast, FastFrames)
    if receiving_side == "server":
        # The server's reader hooks in before the client can send; a client receiver may meet
        # a peer already streaming and, under load, no idle frame boundary to switch at.
        assert receiver.fast > 0 and fast.frames > 0
    assert isinstance(receiver.ws, (ServerConnection, ClientConnection))
