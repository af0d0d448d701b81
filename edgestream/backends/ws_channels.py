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
from websockets.server import ServerProtocol

from streamproto.aio import StreamBuffer

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

    async def flush(self) -> None:
        data = self.protocol.data_to_send()
        if data:
            async with self._lock:
                await self.stream.send(b"".join(data))

    async def send(self, channel: int, payload: bytes) -> None:
        self.protocol.send_binary(bytes((channel,)) + payload)
        await self.flush()

    async def frames(self) -> "asyncio.AsyncIterator[bytes]":  # type: ignore[name-defined]
        """Binary/text messages from the client until it closes."""
        while True:
            data = await self.stream.read()
            if data is None:
                self.protocol.receive_eof()
            else:
                self.protocol.receive_data(bytes(data))
            for frame in self.protocol.events_received():
                if isinstance(frame, Frame) and frame.opcode in (Opcode.BINARY, Opcode.TEXT):
                    yield frame.data
            await self.flush()  # pongs, close replies
            if data is None or self.protocol.close_expected() or self.protocol.state.name == "CLOSED":
                return

    async def close(self, code: int = 1000) -> None:
        if self.protocol.state.name == "OPEN":
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

    async def pump_client() -> None:
        async for message in channel.frames():
            if not message:
                continue
            ch, payload = message[0], message[1:]
            if ch == STDIN and want_stdin:
                if stdin.feed(payload):  # bounded: a process that reads no stdin holds the sender back
                    await stdin.wait_drained()
            elif ch == RESIZE:
                try:
                    size = json.loads(payload)
                    io.size = (int(size["Height"]), int(size["Width"]))
                except (ValueError, KeyError, TypeError):
                    pass
            elif ch == CLOSE and payload[:1] == b"\x00":
                stdin.feed_eof()  # v5: the client half-closed stdin
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
