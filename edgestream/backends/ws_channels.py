"""Kubernetes' WebSocket stream protocols, server side, for the emulator.

exec/attach speak ``v5.channel.k8s.io`` / ``v4.channel.k8s.io``: each binary message is one
channel byte then payload (0 stdin, 1 stdout, 2 stderr, 3 status JSON, 4 resize JSON; v5 adds
255 = close a channel, which is how stdin is half-closed). Port-forward speaks the same
framing with channels 2i (data) and 2i+1 (error) per requested port, the first message on each
carrying the port as two little-endian bytes.

The WebSocket itself is websockets' sans-I/O ``ServerProtocol``; bytes come from and go to
the tunnel stream. This is the form an API server passes through (kubectl >= 1.30 exec/attach
when the node declares ``ExtendWebSocketsToKubelet``, or an API server < 1.30); SPDY, what an
API server sends by default, is in ``spdy_exec`` / ``spdy_portforward``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from streamproto.aio import StreamBuffer
from streamproto.aio.fastframes import simple_frames
from streamproto.tunnel import TunnelError

from ..stream import EdgeStream
from . import kube_http
from .emulator_shell import ProcessIO

__all__ = ["EXEC_PROTOCOLS", "accept_websocket", "refuse", "serve_port_forward", "serve_remotecommand"]

EXEC_PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
PORTFORWARD_PROTOCOLS = ["v4.channel.k8s.io"]
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


async def refuse(stream: EdgeStream, status: int, message: str) -> None:
    """An HTTP error answer to an upgrade (a metav1.Status, relayed to the client as is)."""
    await kube_http.refuse(stream, status, message)


class WsChannel:
    """A server-side WebSocket over one tunnel stream."""

    def __init__(self, stream: EdgeStream, protocol: ServerProtocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self.subprotocol = protocol.subprotocol or ""
        self._lock = asyncio.Lock()
        self._later: set[asyncio.Task[None]] = set()
        self._fast = True
        self._tail = b""
        """Our own frame parser (``simple_frames``) still reads: websockets' waits at a frame boundary."""

    async def flush(self) -> None:
        data = self.protocol.data_to_send()
        if data:
            async with self._lock:
                await self.stream.send(b"".join(data))

    async def send(self, channel: int, payload: bytes) -> None:
        self.protocol.send_binary(bytes((channel,)) + payload)
        await self.flush()

    def send_now(self, channel: int, payload: bytes | memoryview) -> bool:
        """``send`` from a callback while no other send is under way: True when it went out.
        The frame is built here (a server's frames are unmasked: head, channel byte, payload)."""
        size = len(payload) + 1
        if size >= 126 or self._lock.locked() or self.protocol.state is not State.OPEN:
            return False
        return self.stream.send_now(bytes((0x82, size, channel)) + payload)

    def flush_nowait(self) -> None:
        """``flush`` from a callback: pongs and close replies go now, or from a task."""
        data = self.protocol.data_to_send()
        if not data:
            return
        joined = b"".join(data)
        if self._lock.locked() or not self.stream.send_now(joined):
            task = asyncio.ensure_future(self._send_later(joined))
            self._later.add(task)
            task.add_done_callback(self._later.discard)

    async def _send_later(self, data: bytes) -> None:
        try:
            async with self._lock:
                await self.stream.send(data)
        except TunnelError:
            pass  # the stream or the tunnel is gone: nobody to answer

    def receive(self, data: bytes | memoryview | None) -> tuple[list[bytes], bool]:
        """Bytes from the client (None: its end) in; the binary/text messages they completed
        out, and whether the WebSocket is over. Plain data frames are taken apart here until
        the first other frame or a split one; from there on websockets parses everything."""
        messages: list[bytes] = []
        if data is None:
            self.protocol.receive_eof()
        else:
            data = self._tail + data if self._tail else bytes(data)
            self._tail = b""
            if self._fast:
                messages, pos, refused = simple_frames(data, True, self.protocol.max_message_size)
                if not refused:  # all taken, or a frame not all here yet: kept for the next bytes
                    self._tail = data[pos:]
                    return messages, False
                self._fast, data = False, data[pos:]
            self.protocol.receive_data(data)
        messages += [bytes(frame.data) for frame in self.protocol.events_received()
                     if isinstance(frame, Frame) and frame.opcode in (Opcode.BINARY, Opcode.TEXT)]
        over = data is None or self.protocol.close_expected() or self.protocol.state is State.CLOSED
        return messages, over

    async def frames(self) -> "asyncio.AsyncIterator[bytes]":  # type: ignore[name-defined]
        """Binary/text messages from the client until it closes."""
        while True:
            messages, over = self.receive(await self.stream.read())
            for message in messages:
                yield message
            await self.flush()  # pongs, close replies
            if over:
                return

    async def close(self, code: int = 1000) -> None:
        for task in self._later:
            task.cancel()
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code)
            await self.flush()


async def accept_websocket(stream: EdgeStream, protocols: list[str]) -> WsChannel | None:
    request = stream.request
    if (request.header("Upgrade") or "").lower() != "websocket":
        await refuse(stream, 400, f"expected a WebSocket upgrade ({', '.join(protocols)}), got "
                     f"{request.header('Upgrade') or 'a plain request'}")
        return None
    offered = [p.strip() for line in request.header_values("Sec-WebSocket-Protocol") for p in line.split(",")]
    # websockets parses subprotocols as RFC 7230 tokens, and "SPDY/3.1+portforward.k8s.io" is not
    # one ("/"); Go accepts it. Such a protocol is negotiated here and the header kept from the parser.
    verbatim = next((p for p in protocols if "/" in p and p in offered), None)
    protocol = ServerProtocol(subprotocols=None if verbatim else protocols)  # type: ignore[arg-type]
    # Feed the forwarded request head through the protocol's own parser, so that its
    # state machine moves on to WebSocket frames for the bytes that follow.
    lines = [f"GET {request.target} HTTP/1.1"]
    if request.header("Host") is None:
        lines.append(f"Host: {request.host}")
    lines += [f"{name}: {value}" for name, value in request.headers
              if not (verbatim and name.lower() == "sec-websocket-protocol")]
    protocol.receive_data(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    parsed = [event for event in protocol.events_received() if isinstance(event, Request)]
    if not parsed:
        await refuse(stream, 400, "malformed WebSocket upgrade request")
        return None
    response = protocol.accept(parsed[0])
    if verbatim and response.status_code == 101:
        response.headers["Sec-WebSocket-Protocol"] = verbatim
    protocol.send_response(response)
    channel = WsChannel(stream, protocol)
    channel.subprotocol = verbatim or channel.subprotocol
    await channel.flush()
    return channel if response.status_code == 101 else None


def _status(code: int) -> bytes:
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    return json.dumps(
        {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command, exit status {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    ).encode()


async def serve_remotecommand(
    stream: EdgeStream, run: Callable[[ProcessIO], Coroutine[Any, Any, int]], hostname: str
) -> None:
    """exec/attach: run ``run`` with the client's stdin/stdout/stderr/tty over the WebSocket."""
    query = parse_qs(stream.request.raw_query)
    flag = lambda *names: any(query.get(n, [""])[-1] in ("1", "true") for n in names)  # noqa: E731
    tty, want_stdin = flag("tty"), flag("input", "stdin")
    channel = await accept_websocket(stream, EXEC_PROTOCOLS)
    if channel is None:
        return
    stdin = StreamBuffer(256 * 1024)
    io: ProcessIO

    async def write_out(data: bytes) -> None:
        await channel.send(STDOUT, data)

    async def write_err(data: bytes) -> None:
        await channel.send(STDOUT if tty else STDERR, data)

    async def read_in() -> bytes | None:
        chunk = await stdin.read()
        return None if chunk is None else bytes(chunk)

    io = ProcessIO(write_out, write_err, read_in, tty=tty, hostname=hostname, stdin=want_stdin)
    if not want_stdin:
        stdin.feed_eof()

    over = False

    def handle(messages: list[bytes]) -> None:
        for message in messages:
            if not message:
                continue
            ch, payload = message[0], message[1:]
            if ch == STDIN and want_stdin:
                # `cat` waiting with nothing unread: its echo goes out here, no task woken.
                if not (io.cat_waiting and not stdin.size and channel.send_now(STDOUT, payload)):
                    stdin.feed(payload)  # bounded: the pump waits below the high mark
            elif ch == RESIZE:
                try:
                    size = json.loads(payload)
                    io.size = (int(size["Height"]), int(size["Width"]))
                except (ValueError, KeyError, TypeError):
                    pass
            elif ch == CLOSE and payload[:1] == b"\x00":
                stdin.feed_eof()  # v5: the client half-closed stdin

    def direct(data: memoryview) -> bool:
        """The tunnel's callback, while the pump waits with nothing unread: the pump's work, here."""
        nonlocal over
        if over or stdin.size + len(data) > stdin.high:
            return False
        messages, over = channel.receive(data)
        handle(messages)
        channel.flush_nowait()
        if over:
            stream.inbound.feed_eof()  # the pump ends as if the stream had
        return True

    async def pump_client() -> None:
        nonlocal over
        while not over:
            stream.direct = direct
            try:
                data = await stream.read()
            finally:
                stream.direct = None
            if over:
                break
            messages, over = channel.receive(data)
            handle(messages)
            await channel.flush()  # pongs, close replies
            if stdin.size > stdin.high:  # a process that reads no stdin holds the sender back
                await stdin.wait_drained()
        stdin.feed_eof()

    reader = asyncio.create_task(pump_client())
    process = asyncio.create_task(run(io))
    try:
        await asyncio.wait((process, reader), return_when=asyncio.FIRST_COMPLETED)
        if not process.done():  # the client left (attach without stdin ends only so)
            return
        await channel.send(STATUS, _status(process.result()))
        await channel.close()
    finally:
        for task in (process, reader):
            task.cancel()
        await asyncio.gather(process, reader, return_exceptions=True)


async def serve_port_forward(stream: EdgeStream, echo_prefix: bytes = b"") -> None:
    """Port-forward to the emulator's echo service: what is sent to a port comes back."""
    ports = [int(p) for p in parse_qs(stream.request.raw_query).get("port", []) if p.isdigit()]
    if not ports:
        await refuse(stream, 400, "port-forward over WebSocket needs ?port=N")
        return
    channel = await accept_websocket(stream, PORTFORWARD_PROTOCOLS)
    if channel is None:
        return
    for i, port in enumerate(ports):
        prefix = port.to_bytes(2, "little")
        await channel.send(2 * i, prefix)
        await channel.send(2 * i + 1, prefix)
    async for message in channel.frames():
        if not message:
            continue
        ch, payload = message[0], message[1:]
        if ch % 2 or ch // 2 >= len(ports):
            continue
        if payload:
            await channel.send(ch, echo_prefix + payload)
    await channel.close()
