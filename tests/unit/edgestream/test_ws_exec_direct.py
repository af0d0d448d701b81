"""The emulator's WebSocket exec with keystrokes taken in the tunnel's callback: whichever way
each one goes (echoed from the callback, or through stdin and the ``cat`` task when the tunnel
is busy), the echo holds every byte once and in order; websockets parses what was sent."""

from __future__ import annotations

import asyncio
import random

import pytest
from websockets.frames import Frame, Opcode

from edgestream.backends.emulator_shell import run_command
from edgestream.backends.ws_channels import serve_remotecommand
from streamproto.tunnel import MessageType
from testkit.k8s_ws import parse_frames

from .fakes import FakeStream

HEADERS = (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
           ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"))


def _client_frame(channel: int, payload: bytes) -> bytes:
    return Frame(Opcode.BINARY, bytes((channel,)) + payload).serialize(mask=True, extensions=[])


def _server_messages(body: bytes) -> list[bytes]:
    """The binary messages after the 101, parsed by websockets."""
    head, _, rest = body.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    frames, left = parse_frames(rest, mask=False)
    assert not left
    return [f.data for f in frames if f.opcode is Opcode.BINARY]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_keystroke_echoed_once_in_order_on_either_path(seed: int) -> None:
    rng = random.Random(seed)
    stream = FakeStream("/exec/default/shell/sh", "command=cat&input=1&output=1", kind=MessageType.EXEC_CONNECT,
                        headers=HEADERS)
    stream.answered = True  # (the 101 is the backend's own bytes)
    task = asyncio.create_task(serve_remotecommand(stream, lambda io: run_command(["cat"], io), "sh"))  # type: ignore[arg-type]
    await stream.wait_for(b"\r\n\r\n")
    typed = []
    for i in range(400):
        stream.now_ok = rng.random() < 0.7
        payload = f"{i};".encode() * rng.choice([1, 1, 1, 5])
        typed.append(payload)
        stream.deliver(_client_frame(0, payload))
        if rng.random() < 0.6:
            await asyncio.sleep(0)  # the cat task runs now and then
    stream.now_ok = True
    stream.deliver(_client_frame(255, b"\x00"))  # v5: stdin closed
    async with asyncio.timeout(10):
        await task
    messages = _server_messages(stream.body)
    echoed = b"".join(m[1:] for m in messages if m[:1] == b"\x01")
    assert echoed == b"".join(typed)
    assert messages[-1][:1] == b"\x03" and b"Success" in messages[-1]
    assert stream.sent_now > 50 and stream.taken_direct > 50  # the callback took keystrokes ...
    assert len([m for m in messages if m[:1] == b"\x01"]) > stream.sent_now  # ... and cat others
