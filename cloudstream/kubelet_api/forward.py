"""Carrying one routed request to its edge as a tunnel stream, and the answer back.

logs/metrics: the edge's STATUS becomes our status (errors as ``metav1.Status``), its body a
chunked 200. exec/attach/port-forward: the head goes to the edge, then raw bytes both ways
(the edge's own ``101`` or refusal comes back unchanged, as KubeEdge's hijack does).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamproto.tunnel import ConnectRequest, Feature, StreamClosed, TunnelClosed, TunnelError

from .audit import audit_close, audit_open
from .cut_status import CutStatus
from .spdy_cut import SpdyCut, is_spdy_upgrade
from .http1 import RequestHead, response_head
from .relay import HandoffReader, ToEdgeProtocol
from .routes import Route, RouteKind
from .status import edge_message

if TYPE_CHECKING:
    from ..edge_session import CloudStream, EdgeSession
    from ..stats import CloudStats
    from .connection import Connection

__all__ = ["relay_response", "relay_upgrade"]

logger = logging.getLogger(__name__)

_HOP_BY_HOP = frozenset({"keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"})
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
"""Not forwarded to the edge: no backend needs them (edged's 10350 checks nothing), and a
bearer token crossing the tunnel is one more place to leak it (KubeEdge forwards it)."""


def connect_request(head: RequestHead, route: Route, method: str | None) -> ConnectRequest:
    headers = tuple(
        (k, v) for k, v in head.headers if k.lower() not in _HOP_BY_HOP and k.lower() not in _SECRET_HEADERS
    )
    return ConnectRequest(connect_id=0, path=route.path, raw_query=head.raw_query, headers=headers, method=method)


async def relay_response(conn: Connection, head: RequestHead, route: Route, session: EdgeSession) -> bool:
    """logs / metrics: the edge's body, streamed as a chunked 200 (or its error status)."""
    config = conn.config
    stats = session.stats
    kind = route.kind.value
    began = time.monotonic()
    try:
        stream = await session.open(route.tunnel_type, connect_request(head, route, None))
    except TunnelError as exc:
        stats.stream_opens[kind, "unavailable"] += 1
        await conn.reply_error(503, f"node {session.node}: {exc}")
        return True
    started = time.monotonic()
    sent = 0
    writer = conn.writer
    watcher = asyncio.create_task(conn.reader.read(1))
    """Completes when the API server closes its side (b"") or starts its next request."""
    try:
        try:
            code, message = await stream.wait_status(config.connect_timeout)
        except TimeoutError:
            stats.stream_opens[kind, "timeout"] += 1
            stats.errors["edge_timeout"] += 1
            await conn.reply_error(
                504, f"node {session.node}: the edge did not answer {route.path} within {config.connect_timeout:.0f} s"
            )
            return await _keep_watched(conn, watcher)
        except TunnelError as exc:
            stats.stream_opens[kind, "tunnel_error"] += 1
            await conn.reply_error(502, f"node {session.node}: {exc}")
            return await _keep_watched(conn, watcher)
        stats.setup_seconds.labels(kind).observe(time.monotonic() - started)
        if code != 200:
            stats.stream_opens[kind, "edge_error"] += 1
            await conn.reply_error(code, f"node {session.node}: {edge_message(message)}")
            return await _keep_watched(conn, watcher)
        stats.stream_opens[kind, "ok"] += 1
        content_type = "text/plain" if route.kind is RouteKind.LOGS else "text/plain; charset=utf-8"
        if route.kind is RouteKind.METRICS and route.path.startswith("/stats"):
            content_type = "application/json"
        writer.write(response_head(200, [("Content-Type", content_type), ("Transfer-Encoding", "chunked")]))
        write = writer.write
        # One watcher for the whole response (not a task per chunk): when the client
        # leaves, it ends the stream's buffer and the read below wakes with _ClientGone.
        watcher.add_done_callback(lambda t: _end_if_gone(t, stream))
        chunk = await stream.read()
        if chunk is not None:  # (the first byte is timed here, outside the loop)
            stats.first_byte_seconds.labels(kind).observe(time.monotonic() - began)
        while chunk is not None:
            # Coalesce what is already buffered (a Go edge sends 256-byte messages).
            more = await stream.read_more()
            parts = [chunk, *more] if more else [chunk]
            size = sum(len(p) for p in parts)
            write(b"".join([b"%x\r\n" % size, *parts, b"\r\n"]))
            sent += size
            await writer.drain()
            chunk = await stream.read()
        write(b"0\r\n\r\n")
        await writer.drain()
        return await _keep_watched(conn, watcher)
    except _ClientGone:
        return False
    except (TunnelClosed, StreamClosed) as exc:
        # Status already sent: break the chunked body so the client sees an error.
        stats.errors["stream_cut"] += 1
        logger.warning("! %s on node %s ended early: %s", route.path, session.node, exc)
        writer.transport.abort()
        return False
    finally:
        await _cancel_and_wait(watcher)
        await stream.close()
        stats.duration_seconds.labels(kind).observe(time.monotonic() - started)
        logger.info(
            "stream %d %s %s node=%s bytes=%d %.3fs", stream.connect_id, head.method, route.path, session.node, sent,
            time.monotonic() - started,
        )


async def _keep_watched(conn: Connection, watcher: asyncio.Task[bytes]) -> bool:
    """After a complete answer: may the connection carry another request? A byte the watcher
    already read belongs to that request."""
    if not watcher.done():
        return True
    if watcher.cancelled() or watcher.exception() is not None:
        return False
    byte = watcher.result()
    conn.leftover += byte
    return bool(byte)


async def relay_upgrade(conn: Connection, head: RequestHead, route: Route, session: EdgeSession, early: bytes) -> None:
    """exec / attach / port-forward: forward the head, then relay raw bytes both ways.

    ``early``: what the client sent right behind the head (h11's trailing data); it goes
    first, before the zero-copy handoff.
    """
    if route.kind is RouteKind.PORTFORWARD and Feature.PORTFORWARD not in session.features:
        await conn.refuse(
            501, "no port-forward", head.method + " " + head.path,
            f"node {session.node} runs KubeEdge's Go edgecore, which has no port-forward; "
            "run kubeedge-stream's edgestream on that node for port-forward",
            close=True,
        )
        return
    if not head.is_upgrade:
        await conn.refuse(
            400, "not an upgrade", head.method + " " + head.path,
            f"{head.path} needs an HTTP upgrade (SPDY/3.1 or WebSocket)", close=True,
        )
        return
    stats = session.stats
    kind = route.kind.value
    began = time.monotonic()
    try:
        stream = await session.open(route.tunnel_type, connect_request(head, route, head.method))
    except TunnelError as exc:
        stats.stream_opens[kind, "unavailable"] += 1
        await conn.reply_error(503, f"node {session.node}: {exc}", close=True)
        return
    started = time.monotonic()
    cut: CutStatus | SpdyCut | None = None
    if route.kind in (RouteKind.EXEC, RouteKind.ATTACH):
        cut = SpdyCut() if is_spdy_upgrade(head.header("Upgrade")) else CutStatus()
    up = _ToEdge(conn, stream, early, cut.observe if isinstance(cut, SpdyCut) else None)
    counts_out = [0]
    answer = _Answer(stats, kind, began, started)
    audit_open(route, session.node, head, conn.caller, stream.connect_id)
    try:
        async with asyncio.TaskGroup() as tg:
            to_edge = tg.create_task(up.run())
            to_client = tg.create_task(_edge_to_client(conn, stream, counts_out, cut, answer))
            await asyncio.wait((to_edge, to_client), return_when=asyncio.FIRST_COMPLETED)
            # Either side finished: the stream is over (KubeEdge has no half-close on the tunnel).
            for task in (to_edge, to_client):
                task.cancel()
    except* (ConnectionError, TunnelError, ssl.SSLError):
        pass
    finally:
        answer.count(session.closed_reason is not None)
        if session.closed_reason is not None:
            stats.errors["stream_cut"] += 1
        if cut is not None and session.closed_reason is not None:
            # The tunnel died under the stream: say so on the client's error channel, where we can.
            await _end_cut(conn, cut, f"node {session.node}: the tunnel closed ({session.closed_reason})")
        await stream.close()
        stats.duration_seconds.labels(kind).observe(time.monotonic() - started)
        audit_close(route, session.node, stream.connect_id, up.bytes_in, counts_out[0], time.monotonic() - started)


class _ToEdge:
    """API server -> edge: the early bytes, what the StreamReader buffered, then zero-copy reads.
    Counts what was relayed even when the other direction ends first (then this is cancelled)."""

    def __init__(self, conn: Connection, stream: CloudStream, early: bytes,
                 observe: Callable[[memoryview], bool] | None = None) -> None:
        self.conn = conn
        self.stream = stream
        self.early = early
        self.sent_early = 0
        self.relay: ToEdgeProtocol | None = None
        self.observe = observe
        """Sees the client's bytes until it returns False (``SpdyCut.observe``)."""

    @property
    def bytes_in(self) -> int:
        return self.sent_early + (self.relay.bytes if self.relay is not None else 0)

    async def run(self) -> None:
        reader = self.conn.reader
        early = self.early
        if isinstance(reader, HandoffReader):
            early += reader.take_buffered()
        observe = self.observe
        if early:
            if observe is not None and not observe(memoryview(early)):
                observe = None
            await self.stream.send(early)
            self.sent_early += len(early)
        if isinstance(reader, HandoffReader):
            transport = self.conn.writer.transport
            self.relay = ToEdgeProtocol(self.stream, transport.get_protocol(), self.conn.config.max_payload)
            self.relay.observe = observe
            self.relay.attach(transport)  # type: ignore[arg-type]
            await self.relay.wait()
            return
        while data := await reader.read(self.conn.config.max_payload):
            if observe is not None and not observe(memoryview(data)):
                observe = None
            await self.stream.send(data)
            self.sent_early += len(data)


class _Answer:
    """How the edge answered an upgrade: its first bytes are the 101 (ok) or an HTTP error."""

    __slots__ = ("stats", "kind", "began", "opened", "result")

    def __init__(self, stats: CloudStats, kind: str, began: float, opened: float) -> None:
        self.stats, self.kind, self.began, self.opened = stats, kind, began, opened
        self.result: str | None = None

    def first(self, chunk: bytes | memoryview) -> None:
        now = time.monotonic()
        self.stats.setup_seconds.labels(self.kind).observe(now - self.opened)
        self.result = "ok" if bytes(chunk[:12]) in (b"HTTP/1.1 101", b"HTTP/1.0 101") else "edge_error"
        if self.result == "ok":
            self.stats.exec_round_trip_seconds.labels(self.kind).observe(now - self.began)

    def count(self, tunnel_closed: bool) -> None:
        result = self.result or ("tunnel_error" if tunnel_closed else "no_answer")
        self.stats.stream_opens[self.kind, result] += 1


async def _edge_to_client(
    conn: Connection, stream: CloudStream, counts: list[int], cut: CutStatus | SpdyCut | None, answer: _Answer
) -> None:
    writer = conn.writer
    transport = writer.transport

    def deliver(data: bytes | memoryview) -> None:
        counts[0] += len(data)
        if cut is not None:
            cut.feed(data)
        writer.write(data)

    def direct(payload: memoryview) -> bool:
        """While this task waits with nothing buffered, the tunnel's callback writes an echo
        straight to the client (no task wake-up per keystroke); not while the client is slow."""
        if transport.get_write_buffer_size() or transport.is_closing():
            return False
        deliver(payload)
        return True

    chunk = await stream.read()
    if chunk is not None:
        answer.first(chunk)  # (once, outside the loop)
    while chunk is not None:
        more = await stream.read_more()
        if more:
            chunk = b"".join([chunk, *more])
        deliver(chunk)
        await writer.drain()
        stream.direct = direct
        try:
            chunk = await stream.read()
        finally:
            stream.direct = None


async def _end_cut(conn: Connection, cut: CutStatus | SpdyCut, message: str) -> None:
    ending = cut.ending(f"cloudstream: {message}; the command's fate is unknown, run it again once the node is back")
    if not ending or conn.writer.transport.is_closing():
        return
    conn.writer.write(ending)
    try:
        async with asyncio.timeout(conn.config.connect_timeout):
            await conn.writer.drain()
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass


class _ClientGone(Exception):
    """The API server closed its side while we were streaming to it."""


def _end_if_gone(watcher: asyncio.Task[bytes], stream: CloudStream) -> None:
    if watcher.cancelled():
        return
    if watcher.exception() is not None or not watcher.result():  # EOF or reset: the client left
        stream.buffer.feed_eof(_ClientGone())


async def _cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it really ended (a StreamReader allows one waiter)."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:  # noqa: BLE001 - its outcome no longer matters
        pass
