"""The emulator's SPDY exec (what a kube-apiserver sends) with keystrokes parsed in the tunnel's
callback: whichever way each one goes (echoed from the callback, or through stdin and the
``cat`` task when the tunnel is busy or a frame came cut), the echo holds every byte once and in
order, and a client SPDY session (the one proven against containerd) reads the server's bytes."""

from __future__ import annotations

import asyncio
import random

import pytest

from edgestream.backends.emulator_shell import run_command
from edgestream.backends.spdy_exec import ExecOptions, serve_spdy_remotecommand
from streamproto.spdy import DataReceived, Role, Session, StreamEnded, StreamReplied
from streamproto.tunnel import MessageType

from .fakes import FakeStream

# what a kube-apiserver (StreamTranslator) sends the kubelet: apiserver-observed.md, "Translated"
HEADERS = (("User-Agent", "Go-http-client/1.1"), ("Content-Length", "0"), ("Connection", "Upgrade"),
           ("Upgrade", "SPDY/3.1"), *(("X-Stream-Protocol-Version", p) for p in (
               "v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_keystroke_echoed_once_in_order_on_either_path(seed: int) -> None:
    rng = random.Random(seed)
    stream = FakeStream("/exec/default/shell/sh", "command=cat&input=1&output=1", kind=MessageType.EXEC_CONNECT,
                        headers=HEADERS, method="POST")
    stream.answered = True
    opts = ExecOptions(stdin=True, stdout=True, stderr=False, tty=False)
    task = asyncio.create_task(serve_spdy_remotecommand(stream, lambda io: run_command(["cat"], io), "sh", opts))  # type: ignore[arg-type]
    await stream.wait_for(b"\r\n\r\n")
    assert b"X-Stream-Protocol-Version: v5.channel.k8s.io" in stream.body
    client = Session(Role.CLIENT)
    ids = {}
    for n, kind in enumerate(("error", "stdin", "stdout"), 1):  # client-go's order, each after the last's reply
        ids[kind] = client.open_stream([("streamtype", kind)])
        stream.deliver(client.data_to_send())
        async with asyncio.timeout(5):
            while stream.body.split(b"\r\n\r\n", 1)[1].count(b"\x80\x03\x00\x02") < n:  # SYN_REPLYs
                await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)  # the command starts
    typed = []
    for i in range(400):
        stream.now_ok = rng.random() < 0.7
        payload = f"{i};".encode() * rng.choice([1, 1, 1, 5])
        typed.append(payload)
        client.send_data(ids["stdin"], payload)
        wire = client.data_to_send()
        if rng.random() < 0.1:  # a frame cut in two: the callback refuses, the reader task parses it
            stream.deliver(wire[:5])
            stream.deliver(wire[5:])
        else:
            stream.deliver(wire)
        if rng.random() < 0.6:
            await asyncio.sleep(0)  # the reader and cat tasks run now and then
    stream.now_ok = True
    client.end_stream(ids["stdin"])
    stream.deliver(client.data_to_send())
    async with asyncio.timeout(10):
        while b"Success" not in stream.body:
            await asyncio.sleep(0.005)
        client.receive_data(stream.body.split(b"\r\n\r\n", 1)[1])  # the client reads it all, then leaves
        events = client.events_received()
        for sid in ids.values():  # as client-go ends: RST_STREAM (CANCEL) each stream, then GOAWAY
            client.reset(sid)
        client.goaway()
        stream.deliver(client.data_to_send())
        stream.inbound.feed_eof()
        await task

    echoed = b"".join(e.data for e in events if isinstance(e, DataReceived) and e.stream_id == ids["stdout"])
    status = b"".join(e.data for e in events if isinstance(e, DataReceived) and e.stream_id == ids["error"])
    assert echoed == b"".join(typed)
    assert status == b'{"metadata": {}, "status": "Success"}'
    assert sum(isinstance(e, StreamReplied) for e in events) == 3
    assert {e.stream_id for e in events if isinstance(e, StreamEnded)} >= {ids["stdout"], ids["error"]}
    assert stream.sent_now > 50 and stream.taken_direct > 50  # the callback took keystrokes ...
    stdout_frames = sum(1 for e in events if isinstance(e, DataReceived) and e.stream_id == ids["stdout"])
    assert stdout_frames > stream.sent_now  # ... and cat others
