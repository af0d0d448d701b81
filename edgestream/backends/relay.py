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

from proto.tunnel import BackendError, StreamClosed

from ..stream import EdgeStream

__all__ = ["RELAY_READ", "Unreachable", "build_head", "connect", "relay_plain"]

RELAY_READ = 64 * 1024
DROP_HEADERS = frozenset(
    {"host", "authorization", "proxy-authorization", "proxy-connection", "keep-alive", "transfer-encoding", "te", "trailer"}
)
_BREAKS_LINE = re.compile(r"[\r\n\0]")


class Unreachable(BackendError):
    """The local server did not take the connection."""

    error_status_hint = 502


def build_head(stream: EdgeStream, method: str, target: str, host: str, extra: tuple[tuple[str, str], ...] = (),
               drop: frozenset[str] = DROP_HEADERS) -> bytes:
    """The request head to replay; a header with CR/LF is dropped, never split into two."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [
        f"{name}: {value}"
        for name, value in stream.request.headers
        if name.lower() not in drop and not _BREAKS_LINE.search(name + value)
    ]
    lines += [f"{name}: {value}" for name, value in extra]
    # UTF-8 gives back the bytes Go's JSON carried.
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace")


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
