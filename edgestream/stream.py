"""One stream on the edge: what a backend gets to answer one kubelet-API request."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from proto.aio import StreamBuffer
from proto.tunnel import ConnectRequest, FrameBuffer, MessageType, StreamClosed

if TYPE_CHECKING:
    from .session import AgentSession

__all__ = ["EdgeStream"]


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
        self.removed_by_peer = False

    def query(self) -> dict[str, list[str]]:
        from urllib.parse import parse_qs

        return parse_qs(self.request.raw_query, keep_blank_values=True)

    async def answer(self, code: int = 200, message: str = "") -> None:
        """Say how the request went, before any body byte (logs/metrics only).

        With a kubeedge-stream cloud this becomes the HTTP status; a Go cloud already sent
        200, so an error's text goes out as body: the user sees it either way.
        """
        if self.answered:
            return
        self.answered = True
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
        await self.session.send_data(self.connect_id, data)

    def frame(self, capacity: int | None = None) -> FrameBuffer:
        """A reusable buffer to read payloads into in place (see ``send_frame``)."""
        return FrameBuffer(capacity or self.session.config.max_payload)

    async def send_frame(self, frame: FrameBuffer, length: int) -> None:
        """Send the first ``length`` bytes of ``frame.writable()`` with no copy in our code."""
        if not self.answered and self.kind in (MessageType.LOGS_CONNECT, MessageType.METRIC_CONNECT):
            await self.answer(200)
        if self.removed_by_peer:
            raise StreamClosed(self.connect_id, "the cloud ended the stream")
        self.session.mux.data_header(self.connect_id, length)  # state check and accounting
        self.bytes_out += length
        await self.session.send(frame.seal(self.connect_id, MessageType.DATA, length))
