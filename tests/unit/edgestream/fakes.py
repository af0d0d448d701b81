"""A stand-in for ``EdgeStream`` that collects what a backend sends (no session, no tunnel)."""

from __future__ import annotations

from edgestream.stream import _UPGRADE_KINDS, http_error_response

import asyncio
import time
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

from streamproto.aio import StreamBuffer
from streamproto.tunnel import ConnectRequest, FrameBuffer, MessageType


class FakeStream:
    """Quacks like ``edgestream.stream.EdgeStream`` for a backend under test.

    ``status`` is what ``answer`` was given, ``body`` every byte sent (``send`` and
    ``send_frame``), ``frames`` the size of each message. Feed ``inbound`` to play the cloud.
    """

    def __init__(
        self,
        path: str,
        raw_query: str = "",
        *,
        kind: MessageType = MessageType.LOGS_CONNECT,
        headers: Iterable[tuple[str, str]] = (),
        method: str | None = None,
        max_payload: int = 64 * 1024,
    ) -> None:
        self.connect_id = 1
        self.kind = kind
        self.request = ConnectRequest(
            connect_id=1, path=path, raw_query=raw_query, headers=tuple(headers), method=method
        )
        self.inbound = StreamBuffer(1 << 22)
        self.max_payload = max_payload
        self.answered = False
        self.status: tuple[int, str] | None = None
        self.chunks: list[bytes] = []
        self.frames: list[int] = []
        self.started = time.monotonic()
        self._grew = asyncio.Event()
        self.direct: Callable[[memoryview], bool] | None = None
        self.now_ok = True
        """Whether ``send_now`` finds the tunnel idle (else the backend must ``send``)."""
        self.sent_now = 0
        self.taken_direct = 0

    def deliver(self, data: bytes) -> None:
        """Bytes from the cloud, as ``AgentSession.data_nowait`` hands them: to the backend's
        ``direct`` callback while it waits with nothing buffered, else into ``inbound``."""
        if self.direct is not None and not self.inbound.size and self.direct(memoryview(data)):
            self.taken_direct += 1
            return
        self.inbound.feed(data)

    def can_send_now(self, length: int) -> bool:
        return self.now_ok

    def send_now(self, data: bytes) -> bool:
        if not self.now_ok:
            return False
        self.chunks.append(bytes(data))
        self.frames.append(len(data))
        self.sent_now += 1
        self._grew.set()
        return True

    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.request.raw_query, keep_blank_values=True)

    async def answer(self, code: int = 200, message: str = "") -> None:
        if self.answered:
            return
        self.answered = True
        self.status = (code, message)
        if self.kind in _UPGRADE_KINDS and code != 200:  # as EdgeStream.answer does
            await self.send(http_error_response(code, message))

    async def send(self, data: bytes | memoryview) -> None:
        if not self.answered and self.kind in (MessageType.LOGS_CONNECT, MessageType.METRIC_CONNECT):
            await self.answer(200)
        self.chunks.append(bytes(data))
        self.frames.append(len(data))
        self._grew.set()

    async def read(self) -> bytes | memoryview | None:
        return await self.inbound.read()

    def frame(self, capacity: int | None = None) -> FrameBuffer:
        return FrameBuffer(capacity or self.max_payload)

    async def send_frame(self, frame: FrameBuffer, length: int) -> None:
        assert 0 < length <= frame.capacity, length
        if not self.answered and self.kind in (MessageType.LOGS_CONNECT, MessageType.METRIC_CONNECT):
            await self.answer(200)
        self.chunks.append(bytes(frame.writable()[:length]))
        self.frames.append(length)
        self._grew.set()

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    async def wait_for(self, needle: bytes, timeout: float = 10.0) -> bytes:
        """Wait until ``needle`` was sent; return the body so far."""
        deadline = time.monotonic() + timeout
        while needle not in self.body:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not sent within {timeout}s; body: {self.body[-2000:]!r}")
            self._grew.clear()
            try:
                await asyncio.wait_for(self._grew.wait(), left)
            except TimeoutError:
                pass
        return self.body
