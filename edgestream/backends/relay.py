"""Replaying a kubelet-API request to a local HTTP server and splicing the bytes: shared by the
CRI backend (containerd's streaming server) and the kubelet backend (edged on 127.0.0.1:10350).

The request head is rebuilt from the connect payload (method, target, the API server's headers
minus hop-by-hop and credentials); the answer - ``101`` and the upgraded protocol, or a refusal -
travels back as raw bytes, read straight into the tunnel frame (``sock_recv_into``).
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
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, address)
    except (TimeoutError, OSError) as exc:
        sock.close()
        raise Unreachable(f"cannot reach {what} at {host}:{port}: {exc or 'timed out'}") from None
    return sock


async def relay_plain(stream: EdgeStream, sock: socket.socket, head: bytes) -> None:
    """Send ``head``, then splice until either side ends. Closes ``sock``."""
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, head)
        down = asyncio.create_task(_down(loop, sock, stream), name=f"relay-down-{stream.connect_id}")
        up = asyncio.create_task(_up(loop, sock, stream), name=f"relay-up-{stream.connect_id}")
        await first_of(down, up)
    except ConnectionError:
        pass
    finally:
        sock.close()


async def _down(loop: asyncio.AbstractEventLoop, sock: socket.socket, stream: EdgeStream) -> None:
    frame = stream.frame(RELAY_READ)
    area = frame.writable()
    while True:
        n = await loop.sock_recv_into(sock, area)
        if not n:
            return
        await stream.send_frame(frame, n)  # returns once the bytes were copied out


async def _up(loop: asyncio.AbstractEventLoop, sock: socket.socket, stream: EdgeStream) -> None:
    while True:
        chunk = await stream.read()
        if chunk is None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            return
        await loop.sock_sendall(sock, chunk)


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
