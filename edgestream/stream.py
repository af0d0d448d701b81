"""One stream on the edge: what a backend gets to answer one kubelet-API request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from streamproto.aio import StreamBuffer
from streamproto.kube_status import error_response
from streamproto.tunnel import ConnectRequest, FrameBuffer, MessageType, StreamClosed, TunnelClosed

if TYPE_CHECKING:
    from .session import AgentSession

__all__ = ["EdgeStream", "http_error_response"]

_UPGRADE_KINDS = frozenset({MessageType.EXEC_CONNECT, MessageType.ATTACH_CONNECT, MessageType.PORTFORWARD_CONNECT})


def http_error_response(code: int, message: str) -> bytes:
    """A complete HTTP/1.1 error response with a ``metav1.Status`` body, as the kubelet
    writes it, for upgrade streams (the cloud relays raw bytes)."""
    return error_response(code, message)


class EdgeStream:
    def __init__(self, session: AgentSession, connect_id: int, kind: MessageType, request: ConnectRequest) -> None:
        self.session = session
        self.connect_id = connect_id
        self.kind = kind
        self.request = request
        self.inbound = StreamBuffer(session.config.max_payload * 16)
        """Bytes from the cloud (exec stdin, SPDY frames), bounded."""
        self.started = time.monotonic()
        self.bytes_out = 0
        self.answered = False
        self.code = 0
        """The status this edge answered with (0: none yet; upgrades answer 101 in their bytes)."""
        self.removed_by_peer = False
        self.bulk = None if kind in _UPGRADE_KINDS else connect_id
        """Scheduler class: logs/metrics DATA is bulk (byte-fair), the rest goes first."""
        self.direct: Callable[[memoryview], bool] | None = None
        """Set by a backend while its reader waits with nothing buffered: the tunnel's callback
        hands it inbound bytes at once (True: taken), so a keystroke wakes no task."""

    def query(self) -> dict[str, list[str]]:
        from urllib.parse import parse_qs

        return parse_qs(self.request.raw_query, keep_blank_values=True)

    async def answer(self, code: int = 200, message: str = "") -> None:
        """Say how the request went, before any body byte.

        logs/metrics: with a kubeedge-stream cloud this becomes the HTTP status; a Go cloud
        already sent 200, so an error's text goes out as body: the user sees it either way.
        exec/attach/port-forward: the cloud relays raw bytes, so an error is a whole HTTP
        response (a success is the backend's own ``101``).
        """
        if self.answered:
            return
        self.answered = True
        self.code = code
        if self.kind in _UPGRADE_KINDS:
            if code != 200:
                await self.send(http_error_response(code, message))
            return
        status = self.session.mux.status(self.connect_id, code, message)
        if status is not None:
            await self.session.send(status)
        elif code != 200:
            await self.send(f"error: {message}\n".encode())

    async def send(self, data: bytes | memoryview) -> None:
        """Body bytes to the cloud, split into messages of at most ``max_payload``."""
        if not self.answered and self.kind in (MessageType.LOGS_CONNECT, MessageType.METRIC_CONNECT):
            await self.answer(200)
        if self.removed_by_peer:
            raise StreamClosed(self.connect_id, "the cloud ended the stream")
        self.bytes_out += len(data)
        self.answered = True  # bytes went out: an error can no longer be an HTTP answer
        await self.session.send_data(self.connect_id, data)

    async def read(self) -> bytes | memoryview | None:
        """The next bytes from the cloud (exec stdin, SPDY frames), or None at its end.
        Reading is what gives the cloud room to send more (flow feature)."""
        chunk = await self.inbound.read()
        if chunk:
            await self.session.grant(self.connect_id, len(chunk))
        return chunk

    def can_send_now(self, length: int) -> bool:
        """Whether ``send_now`` of ``length`` bytes would send them (nothing taken)."""
        session = self.session
        return (self.answered and not self.removed_by_peer and length <= session.pacer.piece
                and session.can_send_data_now(self.connect_id, length))

    def send_now(self, data: bytes) -> bool:
        """``send`` from a callback, if it needs no waiting (credit, an idle tunnel, a small
        message): True when sent. Answered streams only (an upgrade's 101 went out)."""
        length = len(data)
        if not self.can_send_now(length):
            return False
        session = self.session
        header = session.mux.data_header(self.connect_id, length)
        self.bytes_out += length
        try:
            return session.send_now(header + data)
        except TunnelClosed:  # (a callback must not raise; the stream ends the usual way)
            return False

    def frame(self, capacity: int | None = None) -> FrameBuffer:
        """A reusable buffer to read payloads into in place (see ``send_frame``)."""
        return FrameBuffer(capacity or self.session.config.max_payload)

    async def send_frame(self, frame: FrameBuffer, length: int) -> None:
        """Send the first ``length`` bytes of ``frame.writable()`` with no copy in our code."""
        if not self.answered and self.kind in (MessageType.LOGS_CONNECT, MessageType.METRIC_CONNECT):
            await self.answer(200)
        if self.removed_by_peer:
            raise StreamClosed(self.connect_id, "the cloud ended the stream")
        if length > self.session.pacer.piece:  # a slow path: smaller messages (a copy each)
            self.answered = True
            self.bytes_out += length
            await self.session.send_data(self.connect_id, frame.writable()[:length])
            return
        await self.session.wait_credit(self.connect_id, length)
        self.session.mux.data_header(self.connect_id, length)  # state check, credit and accounting
        self.bytes_out += length
        self.answered = True
        await self.session.send(frame.seal(self.connect_id, MessageType.DATA, length), self.bulk)
