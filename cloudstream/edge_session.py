"""One edge node's tunnel, seen from the cloud, and the streams carried over it.

The session owns its streams: when the tunnel ends, every stream ends with ``TunnelClosed``
naming the reason. Each stream has one bounded buffer between the tunnel reader and the
handler that writes to the API server. Head of line: when one stream's buffer is full the
reader waits up to ``stall_timeout`` for its client, then fails that stream alone (a Go
cloud blocks the whole node forever). Credits (issue: flow control) will remove the wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection

from streamproto.aio import RateLimitedLog, StreamBuffer, TunnelConnection
from streamproto.tunnel import (
    Budget,
    ConnectRequest,
    DataReceived,
    Event,
    FLOW_WINDOW,
    Feature,
    FrameBuffer,
    MessageType,
    Mux,
    RenewalRequested,
    Role,
    StatusReceived,
    StreamClosed,
    StreamRemoved,
    TunnelClosed,
)

from .cert_signer import CertSigner
from .config import CloudConfig
from .stats import CloudStats

__all__ = ["CloudStream", "EdgeSession", "IPClaim"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IPClaim:
    """The internal IP a session answers for, and how much we believe it (``registry``)."""

    ip: str
    announced: bool = True
    """The edge sent it (``SessionInternalIP``); False: the dial's peer address stands in."""
    verified: bool = False
    """The edge certificate carries it as an IP SAN."""


class CloudStream:
    """One kubelet-API request carried to the edge under one connect ID."""

    def __init__(self, session: EdgeSession, connect_id: int, kind: MessageType, high: int) -> None:
        self.session = session
        self.connect_id = connect_id
        self.kind = kind
        self.buffer = StreamBuffer(high)
        self.status: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.opened = time.monotonic()
        self._closed = False
        self.direct: Callable[[memoryview], bool] | None = None
        """Set while this stream's writer waits with nothing buffered: writes a payload straight
        to the client (True) or declines (False: it goes through the buffer)."""

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, data: bytes | memoryview) -> None:
        """Bytes from the API server to the edge (exec stdin, SPDY frames)."""
        if self._closed:
            raise StreamClosed(self.connect_id, "closed")
        await self.session.send_data(self.connect_id, data)

    async def send_frame(self, frame: FrameBuffer, length: int) -> None:
        """Send the first ``length`` payload bytes of ``frame`` with no copy in our code."""
        if self._closed:
            raise StreamClosed(self.connect_id, "closed")
        await self.session.wait_credit(self.connect_id, length)
        self.session.mux.data_header(self.connect_id, length)  # state check, credit and accounting
        # exec/attach/port-forward stdin: always the urgent class (see TunnelConnection.send)
        await self.session.send(frame.seal(self.connect_id, MessageType.DATA, length))

    def send_frame_now(self, frame: FrameBuffer, length: int) -> bool:
        """``send_frame`` from a protocol callback, if it needs no waiting (credit and room
        now): True when sent. Raises as ``send_frame`` does when the tunnel is gone."""
        session, cid = self.session, self.connect_id
        if self._closed or session.data_header_now(cid, length) is None:
            return False
        return session.send_now(frame.seal(cid, MessageType.DATA, length))

    async def read(self) -> bytes | memoryview | None:
        """The next chunk from the edge, or None when the edge ended the stream."""
        chunk = await self.buffer.read()
        if chunk:
            await self.session.grant(self.connect_id, len(chunk))
        return chunk

    async def read_more(self) -> list[bytes | memoryview]:
        """Whatever else is already buffered (to coalesce small messages into one write)."""
        chunks = self.buffer.read_nowait()
        if chunks:
            await self.session.grant(self.connect_id, sum(len(c) for c in chunks))
        return chunks

    async def wait_status(self, timeout: float) -> tuple[int, str]:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self.status)

    def _resolve_status(self, code: int, message: str) -> None:
        if not self.status.done():
            self.status.set_result((code, message))

    def fail(self, error: BaseException) -> None:
        """End the stream from the tunnel's side (tunnel lost, stalled client)."""
        if not self.status.done():
            self.status.set_exception(error)
            self.status.exception()  # mark retrieved: nobody may be waiting
        self.buffer.feed_eof(error)

    async def close(self) -> None:
        """End our side: REMOVE_CONNECT once, forget the stream. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.buffer.feed_eof()
        await self.session.release(self)


class EdgeSession(TunnelConnection):
    """The tunnel of one edge node."""

    def __init__(
        self,
        ws: ServerConnection,
        *,
        node: str,
        internal_ip: str,
        features: frozenset[Feature],
        config: CloudConfig,
        next_id: Any,
        ip_claim: IPClaim | None = None,
        warnings: RateLimitedLog | None = None,
        signer: CertSigner | None = None,
        peer_cert: bytes | None = None,
        stats: CloudStats | None = None,
    ) -> None:
        """``ip_claim``: how the IP was learnt (default: announced, unproven); ``warnings``:
        the rate limiter the tunnel server shares across sessions; ``signer``: answers
        renewal requests (``renew`` negotiated) for ``peer_cert``, the tunnel's certificate."""
        mux = Mux(
            Role.CLOUD,
            features=features,
            max_streams=config.max_streams_per_node,
            max_payload=config.max_payload,
            next_id=next_id,
            # A window never outgrows the stream's buffer: a full window is not a stall.
            stream_window_max=max(FLOW_WINDOW, config.stream_buffer),
        )
        super().__init__(
            ws, mux, logging.LoggerAdapter(logger, {"node": node}),
            budget=Budget(max_violations=config.tunnel_max_violations, window=config.tunnel_violation_window),
            warnings=warnings, peer=f"node {node}",
        )
        self.node = node
        self.internal_ip = internal_ip
        self.ip_claim = ip_claim if ip_claim is not None else IPClaim(internal_ip)
        self.features = features
        self.config = config
        self.streams: dict[int, CloudStream] = {}
        self.connected_at = time.time()
        self.signer = signer
        self.peer_cert = peer_cert
        self.stats = stats if stats is not None else CloudStats()
        """The process's totals (the registry's): streams hand their bytes over when they end."""
        self.reader_stalls = 0
        """Times the tunnel reader waited for one stream's slow API-server client."""

    def __repr__(self) -> str:
        return f"<EdgeSession {self.node} {self.internal_ip} streams={len(self.streams)}>"

    async def open(self, kind: MessageType, request: ConnectRequest) -> CloudStream:
        if self.closed_reason is not None:
            raise TunnelClosed(self.closed_reason)
        cid, message = self.mux.open_stream(kind, request)
        stream = CloudStream(self, cid, kind, self.config.stream_buffer)
        self.streams[cid] = stream
        if Feature.STATUS not in self.features or kind not in (MessageType.LOGS_CONNECT, MessageType.METRIC_CONNECT):
            stream._resolve_status(200, "")  # a Go edge has no way to say anything else
        try:
            await self.send(message)
        except BaseException:
            self.streams.pop(cid, None)
            self.mux.forget(cid)
            raise
        if self.debug:
            self.log.debug("> %s stream %d %s", kind.name, cid, request.path)
        return stream

    async def release(self, stream: CloudStream) -> None:
        self.streams.pop(stream.connect_id, None)
        state = self.mux.streams.get(stream.connect_id)
        message = self.mux.close_stream(stream.connect_id)
        if message is not None and self.closed_reason is None:
            try:
                await self.send(message)
            except TunnelClosed:
                pass
        # We do not wait for the edge's echo: forget the state now (Go clouds leak it).
        self.mux.forget(stream.connect_id)
        if state is not None:  # counted live until here, in the totals from here
            self.stats.stream_done(state)

    def data_nowait(self, connect_id: int, payload: memoryview) -> bool:
        stream = self.streams.get(connect_id)
        if stream is None:
            return False
        buffer = stream.buffer
        if self.deliver_direct(stream.direct, buffer.size, connect_id, payload):
            return True
        if buffer.size + len(payload) > buffer.high:
            return False  # the reader task waits for the client (stall policy)
        if not stream.status.done():
            stream._resolve_status(200, "")
        buffer.feed(payload)
        return True

    async def handle_event(self, event: Event) -> None:
        match event:
            case DataReceived(connect_id=cid, data=data):
                stream = self.streams.get(cid)
                if stream is None:
                    return
                stream._resolve_status(200, "")
                if stream.buffer.feed(data):
                    await self._wait_for_slow_client(stream)
            case StreamRemoved(connect_id=cid):  # (credit waiters were woken by the reader)
                stream = self.streams.get(cid)
                if stream is not None:
                    stream._resolve_status(200, "")
                    stream.buffer.feed_eof()
            case StatusReceived(connect_id=cid, code=code, message=message):
                stream = self.streams.get(cid)
                if stream is not None:
                    stream._resolve_status(code, message)
            case RenewalRequested(request_id=rid, csr_der=csr) if self.signer is not None:
                # Signing takes well under a millisecond (ECDSA) and is rate-limited per node: inline.
                answer = self.signer.answer(self.node, self.peer_cert, csr)
                try:
                    await self.send(self.mux.renewal_answer(rid, answer))
                except TunnelClosed:
                    pass
            case _:
                pass

    async def _wait_for_slow_client(self, stream: CloudStream) -> None:
        self.reader_stalls += 1
        try:
            async with asyncio.timeout(self.config.stall_timeout):
                await stream.buffer.wait_drained()
        except TimeoutError:
            self.log.warning(
                "! stream %d: the API-server client read nothing for %.0f s; ending that stream only",
                stream.connect_id,
                self.config.stall_timeout,
            )
            self.stats.errors["slow_client"] += 1
            stream.fail(StreamClosed(stream.connect_id, "client too slow"))
            await stream.close()

    async def run(self) -> None:
        """Serve the tunnel until it closes; then fail every stream it carried."""
        try:
            await self.run_reader()
        finally:
            reason = self.closed_reason or "tunnel closed"
            self.end_streams(f"the tunnel from node {self.node} closed ({reason})")

    def end_streams(self, reason: str) -> None:
        error = TunnelClosed(reason)
        for stream in list(self.streams.values()):
            stream.fail(error)
            state = self.mux.streams.get(stream.connect_id)
            self.mux.forget(stream.connect_id)
            if state is not None:
                self.stats.stream_done(state)
        self.streams.clear()

    async def close(self, reason: str, code: int = 1001) -> None:
        """Close the tunnel (replaced by a newer dial, or shutdown)."""
        if self.closed_reason is None:
            self.closed_reason = reason
        self.end_streams(reason)
        await self.ws.close(code, reason[:120])
