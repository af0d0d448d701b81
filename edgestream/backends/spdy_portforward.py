"""port-forward over SPDY/3.1 for the emulator, as the kubelet serves it (``portforward.k8s.io``).

One SPDY session carries every local connection kubectl accepts: per connection an ``error``
and a ``data`` stream with the same ``port`` and ``requestid`` headers (an old client without
``requestid`` is paired by stream id, as the kubelet does). A stream without a valid port or
type is reset; a pair that stays incomplete for 30 s gets "timed out waiting for streams" on
its error stream. The data stream goes to the emulated pod's echo service; at its end the
data and error streams are FINed (kubectl waits for both).

The same session serves kubectl 1.31+'s tunnelling form: a WebSocket with subprotocol
``SPDY/3.1+portforward.k8s.io`` whose binary messages carry these SPDY bytes
(``serve_tunnelled_port_forward``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from streamproto.aio.spdy import SpdyConnection, SpdyStream
from streamproto.spdy import Role, SessionConfig
from streamproto.tunnel.errors import StreamClosed, TunnelError

from ..stream import EdgeStream
from .kube_http import negotiate_spdy, refusals

__all__ = ["PORTFORWARD_PROTOCOL", "TUNNEL_PROTOCOL", "echo", "serve_port_forward_session",
           "serve_spdy_port_forward", "serve_tunnelled_port_forward"]

PORTFORWARD_PROTOCOL = "portforward.k8s.io"
TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
STREAM_CREATION_TIMEOUT = 30.0
MAX_PAIRS = 256
"""Forwarded connections at once in one session (kubectl opens one per local connection)."""

Forward = Callable[[int, SpdyStream], Awaitable[None]]
logger = logging.getLogger(__name__)


async def echo(port: int, data: SpdyStream) -> None:
    """The emulated pod's service on every port: what is sent comes back, EOF ends it."""
    while (chunk := await data.read()) is not None:
        await data.write(chunk)


@dataclass(slots=True)
class _Pair:
    request_id: str
    port: int
    error: SpdyStream | None = None
    data: SpdyStream | None = None
    watchdog: asyncio.Task[None] | None = None


def _port(stream: SpdyStream) -> tuple[int | None, str]:
    text = stream.header("port") or ""
    if not text:
        return None, '"port" header is required'
    if not text.isdigit() or not 0 < int(text) < 65536:
        return None, f"unable to parse {text[:20]!r} as a port"
    kind = stream.header("streamtype") or ""
    if kind not in ("error", "data"):
        return None, f"invalid stream type {kind[:20]!r}" if kind else '"streamtype" header is required'
    return int(text), ""


async def serve_port_forward_session(conn: SpdyConnection, forward: Forward = echo) -> None:
    pairs: dict[str, _Pair] = {}

    async def run(pair: _Pair) -> None:
        assert pair.data is not None and pair.error is not None
        try:
            await forward(pair.port, pair.data)
        except (TunnelError, ConnectionError):
            pass
        finally:
            for s in (pair.data, pair.error):
                try:
                    await s.close()
                except (StreamClosed, ConnectionError):
                    pass

    async def expire(pair: _Pair) -> None:
        await asyncio.sleep(STREAM_CREATION_TIMEOUT)
        pairs.pop(pair.request_id, None)
        try:
            if pair.error is not None:
                await pair.error.write(f"timed out waiting for streams of request {pair.request_id}".encode())
                await pair.error.close()
            for s in (pair.error, pair.data):
                if s is not None:
                    await s.reset()
        except (StreamClosed, ConnectionError):
            pass

    async with asyncio.TaskGroup() as tg:
        while (stream := await conn.accept()) is not None:
            port, problem = _port(stream)
            if port is None:
                refusals.event(("portforward", problem[:30]), "emulator: port-forward stream refused: %s", problem)
                await stream.reset()  # the kubelet's handler returns an error: the stream is reset
                continue
            kind = stream.header("streamtype") or ""  # _port checked it: "data" or "error"
            request_id = stream.header("requestid") or str(stream.id if kind == "error" else stream.id - 2)
            pair = pairs.get(request_id)
            if pair is None:
                if len(pairs) >= MAX_PAIRS:
                    refusals.event("portforward-pairs", "emulator: more than %d unpaired port-forward streams", MAX_PAIRS)
                    await stream.reset()
                    continue
                pair = pairs[request_id] = _Pair(request_id, port)
                pair.watchdog = tg.create_task(expire(pair))
            await stream.reply()
            if getattr(pair, kind) is not None:
                stream.discard = True
                if pair.error is not None:
                    await pair.error.write(f"error processing stream for request {request_id}: "
                                           f"{kind} stream already assigned".encode())
                continue
            setattr(pair, kind, stream)
            if kind == "error":
                stream.discard = True  # kubectl sends nothing on it (it FINs at once)
            if pair.error is not None and pair.data is not None:
                del pairs[request_id]
                if pair.watchdog is not None:
                    pair.watchdog.cancel()
                tg.create_task(run(pair))
        for pair in pairs.values():
            if pair.watchdog is not None:
                pair.watchdog.cancel()
        raise _SessionOver  # cancels the forwards still running: the client left


class _SessionOver(Exception):
    pass


async def _drive(conn: SpdyConnection, forward: Forward, connect_id: int) -> None:
    reader = asyncio.create_task(conn.run(), name=f"spdy-pf-{connect_id}")
    try:
        await serve_port_forward_session(conn, forward)
    except* _SessionOver:
        pass
    except* (TunnelError, ConnectionError) as group:
        logger.debug("port-forward session %d ended: %s", connect_id, group.exceptions[0])
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def serve_spdy_port_forward(stream: EdgeStream, forward: Forward = echo) -> None:
    if await negotiate_spdy(stream, [PORTFORWARD_PROTOCOL]) is None:
        return
    conn = SpdyConnection(Role.SERVER, stream.read, stream.send, SessionConfig(max_streams=2 * MAX_PAIRS + 8))
    await _drive(conn, forward, stream.connect_id)


async def serve_tunnelled_port_forward(stream: EdgeStream, forward: Forward = echo) -> None:
    """kubectl 1.31+: SPDY inside binary WebSocket messages (``SPDY/3.1+portforward.k8s.io``)."""
    from .ws_channels import accept_websocket

    channel = await accept_websocket(stream, [TUNNEL_PROTOCOL])
    if channel is None:
        return
    messages = channel.frames()

    async def read() -> bytes | None:
        try:
            return await anext(messages)
        except StopAsyncIteration:
            return None

    async def write(data: bytes) -> None:
        channel.protocol.send_binary(data)
        await channel.flush()

    conn = SpdyConnection(Role.SERVER, read, write, SessionConfig(max_streams=2 * MAX_PAIRS + 8))
    try:
        await _drive(conn, forward, stream.connect_id)
    finally:
        await messages.aclose()
        try:
            await channel.close()
        except (StreamClosed, ConnectionError):
            pass
