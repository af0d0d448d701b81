"""Zero-copy relay from the API server's socket into the tunnel, for upgraded streams.

After an upgrade head, the connection's transport is switched (``set_protocol``) to a
``BufferedProtocol`` whose buffer is the payload area of a tunnel ``FrameBuffer``: the TLS layer
decrypts straight into it, ``seal`` puts the message header in the headroom, and websockets
takes it from there. No copy in our code between the API server and the WebSocket (asyncio's
StreamReader would add two: into its buffer, then out as ``bytes``).

One frame is in flight per stream: reading pauses while it is sent (the tunnel's write
buffer is the backpressure point) and resumes after. Flow-control callbacks and
``connection_lost`` still reach the original ``StreamReaderProtocol``, because its
``StreamWriter`` keeps writing the edge's bytes to the same transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from streamproto.tunnel import FrameBuffer

from ..edge_session import CloudStream

__all__ = ["HandoffReader", "ToEdgeProtocol"]


class HandoffReader(asyncio.StreamReader):
    """A StreamReader that can hand over what it already buffered when the connection
    stops being HTTP (the client may have sent bytes right behind the upgrade head)."""

    def take_buffered(self) -> bytes:
        data = bytes(self._buffer)  # type: ignore[attr-defined]  # the one place that looks inside StreamReader
        self._buffer.clear()  # type: ignore[attr-defined]
        return data


class ToEdgeProtocol(asyncio.BufferedProtocol):
    def __init__(self, stream: CloudStream, previous: Any, capacity: int) -> None:
        self.stream = stream
        self.previous = previous
        """The StreamReaderProtocol: keeps serving the StreamWriter's drain()."""
        self.frame = FrameBuffer(capacity)
        self.area = self.frame.writable()
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.bytes = 0
        self._sending: asyncio.Task[None] | None = None
        self.observe: Callable[[memoryview], bool] | None = None
        """Sees each read before it is sent, until it returns False (``spdy_cut``'s client side)."""

    def attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.set_protocol(self)

    # BufferedProtocol

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.area

    def buffer_updated(self, nbytes: int) -> None:
        assert self.transport is not None
        if self.observe is not None and not self.observe(self.area[:nbytes]):
            self.observe = None
        try:  # a keystroke with credit and an idle tunnel goes now, no task in between
            sent = self._sending is None and self.stream.send_frame_now(self.frame, nbytes)
        except Exception as exc:  # noqa: BLE001 - the stream is over either way
            self._finish(exc)
            return
        if sent:
            self.bytes += nbytes
            return
        self.transport.pause_reading()  # the frame is ours until it has been sent
        self._sending = asyncio.ensure_future(self._send(nbytes))

    async def _send(self, nbytes: int) -> None:
        try:
            await self.stream.send_frame(self.frame, nbytes)
        except Exception as exc:  # noqa: BLE001 - the stream is over either way
            self._finish(exc)
            return
        self.bytes += nbytes
        self._sending = None
        if not self.done.done() and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        self._finish(None)
        return True  # keep our write side: the owner closes the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc)
        self.previous.connection_lost(exc)

    # flow control of the writing side belongs to the StreamWriter's protocol

    def pause_writing(self) -> None:
        self.previous.pause_writing()

    def resume_writing(self) -> None:
        self.previous.resume_writing()

    def _finish(self, exc: BaseException | None) -> None:
        if self.done.done():
            return
        if exc is None or isinstance(exc, (ConnectionError, OSError)):
            self.done.set_result(None)
        else:
            self.done.set_exception(exc)

    async def wait(self) -> int:
        """Until the API server stops sending; returns the bytes relayed."""
        try:
            await self.done
        finally:
            if self._sending is not None and not self._sending.done():
                await asyncio.wait([self._sending], timeout=5)
        return self.bytes
