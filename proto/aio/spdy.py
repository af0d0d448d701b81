"""The thin asyncio layer over ``proto.spdy.Session``: streams you can read and write.

Transport-agnostic: give it ``read()`` (bytes, or None at EOF) and ``write(bytes)``, e.g. an
``asyncio.StreamReader/Writer`` pair (the API-server front's client role) or a tunnel stream
(the emulator's server role). ``run()`` is the one reader task; it feeds each stream's bounded
buffer and, when a consumer falls behind, stops reading the connection, as Go's spdystream
does (its data channel is unbuffered): the peer is held back by TCP, memory stays bounded.

::

    conn = SpdyConnection(Role.SERVER, read, write)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(conn.run())
        while (stream := await conn.accept()) is not None:   # the peer's SYN_STREAMs
            await stream.reply()                             # SYN_REPLY
            data = await stream.read()                       # None at the peer's FIN or a reset
            await stream.write(b"out"); await stream.close() # DATA, then FIN
    # client role: stream = await conn.open_stream([("streamtype", "error")]); await stream.wait_reply()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from proto.spdy import (
    DataReceived,
    GoAwayReceived,
    GoAwayStatus,
    HeadersReceived,
    Headers,
    PingAcknowledged,
    Role,
    RstStatus,
    Session,
    SessionConfig,
    SessionTerminated,
    StreamEnded,
    StreamOpened,
    StreamReplied,
    StreamReset,
    WindowUpdated,
)
from proto.tunnel.errors import StreamClosed

from .buffer import StreamBuffer

__all__ = ["SpdyConnection", "SpdyStream"]

logger = logging.getLogger(__name__)


class SpdyStream:
    def __init__(self, conn: SpdyConnection, stream_id: int, headers: Headers, high: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self.reply_headers: Headers = ()
        self.inbound = StreamBuffer(high)
        self.replied = asyncio.Event()
        self.reset_status: int | None = None
        self.discard = False
        """Drop what arrives (a stream whose bytes nobody wants must not hold the others back)."""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    async def reply(self, headers: Headers = ()) -> None:
        await self.conn._command(lambda s: s.reply(self.id, headers))

    async def wait_reply(self) -> Headers:
        """Client: the SYN_REPLY's headers; raises ``StreamClosed`` if the stream was reset."""
        await self.replied.wait()
        if self.reset_status is not None:
            raise StreamClosed(self.id, f"reset by the peer (status {self.reset_status})")
        return self.reply_headers

    async def read(self) -> bytes | None:
        chunk = await self.inbound.read()
        if chunk is None:
            return None
        await self.conn._command(lambda s: s.consumed(self.id, len(chunk)))
        return bytes(chunk)

    async def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        while True:
            if self.reset_status is not None or self.conn.session.closed:
                raise StreamClosed(self.id, "reset" if self.reset_status is not None else "session closed")
            room = self.conn.session.send_window(self.id)
            if room == 0 and self.id not in self.conn.session.streams:
                raise StreamClosed(self.id, "ended")
            if room == 0:
                self.conn._window.clear()
                await self.conn._window.wait()
                continue
            piece, view = view[:room], view[room:]
            await self.conn._command(lambda s, p=piece: s.send_data(self.id, p))
            if not view:
                return

    async def close(self) -> None:
        """Half-close: our FIN (no-op when already ended or reset, or the connection is gone)."""
        try:
            await self.conn._command(lambda s: s.end_stream(self.id))
        except ConnectionError:
            pass  # the peer closed the connection: nothing left to end
        self.conn.forget(self)

    async def reset(self, status: RstStatus = RstStatus.CANCEL) -> None:
        if self.reset_status is None:
            self.reset_status = int(status)
            self.inbound.feed_eof()
            self.replied.set()
            self.conn.streams.pop(self.id, None)
            try:
                await self.conn._command(lambda s: s.reset(self.id, status))
            except ConnectionError:
                pass  # a Go server closes the connection right after the result (the kubelet does)


class SpdyConnection:
    def __init__(self, role: Role, read: Callable[[], Awaitable[bytes | memoryview | None]],
                 write: Callable[[bytes], Awaitable[None]], config: SessionConfig | None = None,
                 buffer: int = 256 * 1024, accept_queue: int = 64) -> None:
        self.session = Session(role, config or SessionConfig())
        self.streams: dict[int, SpdyStream] = {}
        self._read, self._write = read, write
        self._buffer = buffer
        self._lock = asyncio.Lock()
        self._window = asyncio.Event()
        self._incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue(accept_queue)
        self._pings: dict[int, asyncio.Future[None]] = {}
        self.closed = asyncio.Event()
        self.goaway_received = False
        self.error: str | None = None

    async def _command(self, apply: Callable[[Session], object]) -> None:
        async with self._lock:
            apply(self.session)
            data = self.session.data_to_send()
            if data:
                await self._write(data)

    async def flush(self) -> None:
        await self._command(lambda s: None)

    async def open_stream(self, headers: Headers | list[tuple[str, str]], *, fin: bool = False) -> SpdyStream:
        box: list[int] = []
        await self._command(lambda s: box.append(s.open_stream(headers, fin=fin)))
        stream = SpdyStream(self, box[0], tuple(headers), self._buffer)
        self.streams[stream.id] = stream
        return stream

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened, or None once the session is over."""
        if self.closed.is_set() and self._incoming.empty():
            return None
        return await self._incoming.get()

    async def ping(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        box: list[int] = []
        await self._command(lambda s: box.append(s.ping()))
        self._pings[box[0]] = fut
        try:
            await fut
        finally:
            self._pings.pop(box[0], None)

    async def goaway(self, status: GoAwayStatus = GoAwayStatus.OK) -> None:
        await self._command(lambda s: s.goaway(status))

    async def run(self) -> None:
        """Read until EOF or a session error; then end every stream. Never raises for the peer."""
        try:
            while not self.session.closed:
                data = await self._read()
                if data is None:
                    self.session.receive_eof()
                else:
                    self.session.receive_data(data)
                for event in self.session.events_received():
                    await self._handle(event)
                await self.flush()
        except (ConnectionError, StreamClosed) as exc:
            self.error = self.error or f"connection lost: {exc}"
        finally:
            self._finish()

    def _finish(self) -> None:
        self.session.closed = True
        self.closed.set()
        self._window.set()
        for stream in self.streams.values():
            stream.inbound.feed_eof()
            if not stream.replied.is_set():
                stream.reset_status = int(RstStatus.CANCEL)
                stream.replied.set()
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(StreamClosed(0, "SPDY session closed"))
        while True:  # wake accept(): put() would block on a full queue
            try:
                self._incoming.put_nowait(None)
                break
            except asyncio.QueueFull:
                self._incoming.get_nowait()

    async def _handle(self, event: object) -> None:
        match event:
            case DataReceived(stream_id=sid, data=data):
                stream = self.streams.get(sid)
                if stream is None or stream.discard:
                    await self._command(lambda s: s.consumed(sid, len(data)))
                elif stream.inbound.feed(data):
                    await stream.inbound.wait_drained()  # holds the peer back (TCP), like spdystream
            case StreamOpened(stream_id=sid, headers=headers, fin=fin):
                stream = SpdyStream(self, sid, headers, self._buffer)
                self.streams[sid] = stream
                if fin:
                    stream.inbound.feed_eof()
                await self._incoming.put(stream)
            case StreamReplied(stream_id=sid, headers=headers, fin=fin):
                stream = self.streams.get(sid)
                if stream is not None:
                    stream.reply_headers = headers
                    stream.replied.set()
                    if fin:
                        stream.inbound.feed_eof()
            case HeadersReceived(stream_id=sid, fin=fin) if fin and sid in self.streams:
                self.streams[sid].inbound.feed_eof()
            case StreamEnded(stream_id=sid):
                stream = self.streams.get(sid)
                if stream is not None:
                    stream.inbound.feed_eof()
                    if sid not in self.session.streams:
                        self.streams.pop(sid, None)
            case StreamReset(stream_id=sid, status=status):
                stream = self.streams.pop(sid, None)
                if stream is not None:
                    stream.reset_status = status
                    stream.inbound.feed_eof()
                    stream.replied.set()
                self._window.set()
            case WindowUpdated():
                self._window.set()
            case PingAcknowledged(ping_id=pid):
                fut = self._pings.get(pid)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            case GoAwayReceived():
                self.goaway_received = True
            case SessionTerminated(error=error, remote=remote):
                if not remote:
                    self.error = error

    def forget(self, stream: SpdyStream) -> None:
        """Drop our handle once both sides are done (the session forgets on its own)."""
        if stream.id not in self.session.streams:
            self.streams.pop(stream.id, None)
