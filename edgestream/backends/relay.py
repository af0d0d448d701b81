"""Replaying a kubelet-API request to a local HTTP server and splicing the bytes: shared by the
CRI backend (containerd's streaming server) and the kubelet backend (edged on 127.0.0.1:10350).

The request head is rebuilt from the connect payload (method, target, the API server's headers
minus hop-by-hop and credentials); the answer - ``101`` and the upgraded protocol, or a refusal -
travels back as raw bytes, read straight into the tunnel frame.

The backend's socket is a protocol (``_Splice``), not a task per read: a keystroke's echo is sent
from the read callback when the tunnel takes it now, and a keystroke from the cloud is written from
the tunnel's callback while nothing waits before it. Everything else (a 101, a log, bulk) goes
through two pump tasks, with backpressure both ways, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket

import h11

from streamproto.tunnel import BackendError, StreamClosed

from ..stream import EdgeStream

__all__ = ["RELAY_READ", "BadRequest", "Unreachable", "build_head", "build_request", "connect", "relay_plain"]

RELAY_READ = 64 * 1024
DROP_HEADERS = frozenset(
    {"host", "authorization", "proxy-authorization", "proxy-connection", "keep-alive", "transfer-encoding", "te", "trailer"}
)
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_BREAKS_LINE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class BadRequest(BackendError):
    """The request cannot be replayed as HTTP/1.1 (a control byte in its target, say)."""

    error_status_hint = 400


class Unreachable(BackendError):
    """The local server did not take the connection."""

    error_status_hint = 502


def build_request(
    stream: EdgeStream, method: str, target: str, host: str, extra: tuple[tuple[str, str], ...] = (),
    drop: frozenset[str] = DROP_HEADERS,
) -> h11.Request:
    """The request to replay, checked by h11. A forwarded header h11 would refuse (CR/LF/NUL,
    a bad name) is dropped, never split in two; a method or target it refuses is a 400."""
    headers: list[tuple[bytes, bytes]] = [(b"Host", host.encode("ascii", "replace"))]
    for name, value in stream.request.headers:
        if name.lower() in drop:
            continue
        # UTF-8 gives back the bytes Go's JSON carried.
        raw_name, raw_value = name.encode("utf-8", "replace"), value.encode("utf-8", "replace").strip(b" \t")
        if _TOKEN.fullmatch(raw_name) and not _BREAKS_LINE.search(raw_value):
            headers.append((raw_name, raw_value))
    headers += [(name.encode(), value.encode()) for name, value in extra]
    try:
        return h11.Request(method=method.encode("ascii"), target=target.encode("ascii"), headers=headers)
    except (UnicodeEncodeError, h11.LocalProtocolError) as exc:
        shown = f"{method} {target}".encode("ascii", "backslashreplace").decode()[:200]
        raise BadRequest(f"cannot forward the request {shown!r}: {exc}") from None


def build_head(stream: EdgeStream, method: str, target: str, host: str, extra: tuple[tuple[str, str], ...] = (),
               drop: frozenset[str] = DROP_HEADERS) -> bytes:
    """The request head to replay on a raw connection (see ``build_request``)."""
    request = build_request(stream, method, target, host, extra, drop)
    return h11.Connection(h11.CLIENT).send(request) or b""


async def connect(host: str, port: int, timeout: float, what: str) -> socket.socket:
    """A connected non-blocking socket, or ``Unreachable`` naming ``what``."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise Unreachable(f"cannot reach {what} at {host}:{port}: {exc}") from None
    try:
        sock.setblocking(False)
        if family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # keystrokes, not segments
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, address)
    except (TimeoutError, OSError) as exc:
        sock.close()
        raise Unreachable(f"cannot reach {what} at {host}:{port}: {exc or 'timed out'}") from None
    return sock


SEND_NOW = 4096
"""Reads up to this size go out from the read callback when the tunnel takes them now (a copy:
small); larger ones, and any the tunnel cannot take now, through the pump (no copy)."""


async def relay_plain(stream: EdgeStream, sock: socket.socket, head: bytes) -> None:
    """Send ``head``, then splice until either side ends. Closes ``sock``."""
    loop = asyncio.get_running_loop()
    transport: asyncio.Transport | None = None
    try:
        await loop.sock_sendall(sock, head)
        splice = _Splice(stream)
        transport, _ = await loop.create_connection(lambda: splice, sock=sock)
        down = asyncio.create_task(splice.pump_down(), name=f"relay-down-{stream.connect_id}")
        up = asyncio.create_task(splice.pump_up(), name=f"relay-up-{stream.connect_id}")
        await first_of(down, up)
    except ConnectionError:
        pass
    finally:
        if transport is not None:
            transport.abort()  # as a closed socket: what the backend has not taken is dropped
        else:
            sock.close()


class _Splice(asyncio.BufferedProtocol):
    """The backend's socket, spliced to ``stream``: reads land in the tunnel frame itself."""

    def __init__(self, stream: EdgeStream) -> None:
        self.stream = stream
        self.frame = stream.frame(RELAY_READ)
        self.area = self.frame.writable()
        self.transport: asyncio.Transport | None = None
        self.pending = 0
        """Bytes read into the frame that ``pump_down`` must send (reading is paused meanwhile)."""
        self.ended = False
        self.error: Exception | None = None
        self.wake = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop: no subclass of Transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.area

    def buffer_updated(self, nbytes: int) -> None:
        if nbytes <= SEND_NOW and self.stream.send_now(bytes(self.area[:nbytes])):
            return  # an echo, a prompt: gone with no task woken
        self.pending = nbytes
        assert self.transport is not None
        self.transport.pause_reading()
        self.wake.set()

    def eof_received(self) -> bool:
        self._end(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)
        self.writable.set()

    def _end(self, exc: Exception | None) -> None:
        if not self.ended:
            self.ended, self.error = True, exc
            self.wake.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def pump_down(self) -> None:
        """backend -> cloud: what the read callback could not send, then the end."""
        stream = self.stream
        while True:  # the pending bytes first, then the end (both may have come before one wake)
            if self.pending:
                length, self.pending = self.pending, 0
                await stream.send_frame(self.frame, length)  # returns once the bytes were copied out
                if not self.ended and self.transport is not None:
                    self.transport.resume_reading()
            elif self.ended:
                if self.error is not None:
                    raise ConnectionError(f"the backend's connection failed: {self.error}")
                return
            else:
                await self.wake.wait()
                self.wake.clear()

    def direct(self, data: memoryview) -> bool:
        """A keystroke from the tunnel's callback, while ``pump_up`` waits with nothing unread."""
        transport = self.transport
        if transport is None or self.ended or not self.writable.is_set() or transport.is_closing():
            return False
        transport.write(bytes(data))
        return True

    async def pump_up(self) -> None:
        """cloud -> backend, until the cloud's side ends (then a half-close)."""
        stream, transport = self.stream, self.transport
        assert transport is not None
        while True:
            stream.direct = self.direct
            try:
                chunk = await stream.read()
            finally:
                stream.direct = None
            if chunk is None:
                if transport.can_write_eof() and not transport.is_closing():
                    with contextlib.suppress(OSError, RuntimeError):
                        transport.write_eof()
                return
            if self.ended:
                raise ConnectionError("the backend closed its connection")
            transport.write(bytes(chunk))
            await self.writable.wait()


async def first_of(down: asyncio.Task[None], up: asyncio.Task[None]) -> None:
    """Wait for either pump; cancel the other; re-raise a real failure."""
    try:
        done, _ = await asyncio.wait((down, up), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)
    for task in done:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is not None and not isinstance(exc, (StreamClosed, ConnectionError)):
            raise exc
