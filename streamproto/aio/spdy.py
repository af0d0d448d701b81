"""The thin asyncio layer over ``streamproto.spdy.Session``: streams you can read and write.

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
    # client role: answer = await upgrade(reader, writer, "/exec/ns/pod/c?command=ls&output=1", host=...,
    #   protocols=["v5.channel.k8s.io", ...]); conn = answer.conn (None when refused: answer.status/.body)
    #   stream = await conn.open_stream([("streamtype", "error")]); await stream.wait_reply()

Backpressure and windows: a stream's buffer (``buffer``) over its high mark pauses the reader.
With ``SendFlow.AUTO`` toward a Go peer no window binds (Go never sends WINDOW_UPDATE); toward a
peer that does flow control, ``write`` waits for WINDOW_UPDATE. Keep ``buffer`` above the
64 KiB window, so that a window-respecting peer never makes the reader pause.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from streamproto.spdy import (
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
from streamproto.tunnel.errors import StreamClosed

from .buffer import StreamBuffer

__all__ = ["SpdyConnection", "SpdyStream", "UpgradeAnswer", "upgrade"]

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
        self.direct: Callable[[bytes], bool] | None = None
        """Takes bytes that ``receive_now`` hands over, in the transport's callback (True: taken,
        e.g. echoed; else they are buffered for ``read``)."""

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
        try:
            await self.conn._command(lambda s: s.consumed(self.id, len(chunk)))
        except ConnectionError:
            pass  # the peer closed after its last bytes (a Go kubelet does): the data still counts
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
            await self.conn._command(lambda s, p=piece: s.send_data(self.id, p))  # type: ignore[misc]  # p binds this piece
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
                 buffer: int = 256 * 1024, accept_queue: int = 64,
                 write_now: tuple[Callable[[int], bool], Callable[[bytes], bool]] | None = None) -> None:
        """``write_now``: (can the transport take this many bytes without waiting, take them),
        for ``command_now``."""
        self.session = Session(role, config or SessionConfig())
        self.streams: dict[int, SpdyStream] = {}
        self._read, self._write = read, write
        self._write_now = write_now
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

    def command_now(self, apply: Callable[[Session], object], length: int) -> bool:
        """``_command`` from a callback, when it needs no waiting: no other command's bytes in
        flight (frames leave in the order they were made) and the transport takes ``length``
        bytes (what ``apply`` makes, at most) now. False: nothing applied."""
        if self._write_now is None or self._lock.locked() or self.session.closed:
            return False
        can, write = self._write_now
        if not can(length):
            return False
        apply(self.session)
        data = self.session.data_to_send()
        if data:
            write(data)  # taken, as checked; False only if the transport is closing (the session ends too)
        return True

    def receive_now(self, data: bytes | memoryview) -> bool:
        """From the transport's callback while ``run`` waits for bytes: take ``data`` if it is
        whole DATA frames (no FIN) for open streams with room, and hand each piece to its stream
        (``direct``, else its buffer) with no task woken: a keystroke of an exec. False: nothing
        taken (control frames, a partial frame...): ``run`` reads it as usual."""
        session = self.session
        if session.closed or not session.at_frame_boundary or session.config.enforce_receive_window:
            return False
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        sizes: dict[int, int] = {}
        while pos < end:
            if end - pos < 8:
                return False
            sid, rest = int.from_bytes(view[pos : pos + 4], "big"), int.from_bytes(view[pos + 4 : pos + 8], "big")
            length = rest & 0xFFFFFF
            if sid & 0x80000000 or rest >> 24 or not length or pos + 8 + length > end:
                return False  # a control frame, a flag (FIN), an empty or a partial frame
            sizes[sid] = sizes.get(sid, 0) + length
            pos += 8 + length
        for sid, size in sizes.items():
            stream, state = self.streams.get(sid), session.streams.get(sid)
            if (stream is None or stream.discard or state is None or state.remote_closed
                    or stream.inbound.size + size > stream.inbound.high):
                return False
        session.receive_data(view)
        for event in session.events_received():
            if not isinstance(event, DataReceived):
                continue  # none: whole DATA frames without flags, for open streams, make only data
            stream = self.streams[event.stream_id]
            if stream.direct is None or stream.inbound.size or not stream.direct(event.data):
                stream.inbound.feed(event.data)
        return True

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


@dataclass(slots=True)
class UpgradeAnswer:
    """What the server answered to a SPDY upgrade: ``conn`` is set (not yet running) on 101."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    conn: SpdyConnection | None = None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, *, host: str,
                  protocols: list[str], headers: list[tuple[str, str]] | None = None, method: str = "POST",
                  config: SessionConfig | None = None, max_head: int = 64 * 1024,
                  max_body: int = 1 << 20) -> UpgradeAnswer:
    """Client: send the upgrade request as client-go does (``Connection: Upgrade``, ``Upgrade:
    SPDY/3.1``, one ``X-Stream-Protocol-Version`` line per protocol) and read the answer; on
    ``101`` the bytes that follow belong to the returned ``SpdyConnection`` (start its ``run``).
    A refusal's body is read (bounded) so its text can be shown to the user."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Content-Length: 0", "Connection: Upgrade",
             "Upgrade: SPDY/3.1"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    lines += [f"X-Stream-Protocol-Version: {p}" for p in protocols]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise StreamClosed(0, "SPDY upgrade answer head too long") from None
    except asyncio.IncompleteReadError:
        raise ConnectionError("the server closed the connection before answering the upgrade") from None
    if len(head) > max_head:
        raise StreamClosed(0, "SPDY upgrade answer head too long")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise StreamClosed(0, f"not an HTTP answer to the SPDY upgrade: {status_line[:80]!r}")
    answer = UpgradeAnswer(int(parts[1]), [(k.strip(), v.strip()) for k, _, v in
                                           (line.partition(":") for line in header_lines if line)])
    if answer.status == 101:

        async def read() -> bytes | None:
            return await reader.read(65536) or None

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        answer.conn = SpdyConnection(Role.CLIENT, read, write, config)
        return answer
    length = answer.header("Content-Length")
    try:
        if length is not None and length.isdigit():
            answer.body = await reader.readexactly(min(int(length), max_body))
        else:
            answer.body = await reader.read(max_body)
    except asyncio.IncompleteReadError as exc:
        answer.body = exc.partial
    return answer
