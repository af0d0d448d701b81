"""The kubelet backend: forward each stream to the node's kubelet-like server, as KubeEdge's
EdgeStream forwards to edged's read-only port (127.0.0.1:10350).

logs / metrics: a plain GET; the status becomes the answer (a real HTTP error with a
kubeedge-stream cloud, not an error body inside a 200) and the body is streamed, chunked or not.
exec / attach / port-forward: the request head is replayed on a raw connection and bytes are
spliced (edged's own ``101`` goes back unchanged), exactly as for containerd's streaming server.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from proto.tunnel import BackendError, MessageType

from ..config import EdgeConfig
from ..stream import EdgeStream
from . import relay
from .base import BaseBackend

__all__ = ["KubeletBackend"]

logger = logging.getLogger(__name__)

_MAX_HEAD = 64 * 1024


class KubeletBackend(BaseBackend):
    def __init__(self, config: EdgeConfig) -> None:
        host, _, port = config.kubelet_address.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self.timeout = config.cri_timeout
        self.what = f"the kubelet (edged) at {config.kubelet_address}"

    async def serve(self, stream: EdgeStream) -> None:
        request = stream.request
        host = f"{self.host}:{self.port}"
        if stream.kind in (MessageType.LOGS_CONNECT, MessageType.METRIC_CONNECT):
            # identity: edged would gzip metrics otherwise (KubeEdge forces it too).
            head = relay.build_head(
                stream, "GET", request.target, host, (("Accept-Encoding", "identity"), ("Connection", "close")),
                drop=relay.DROP_HEADERS | {"accept-encoding", "connection"},
            )
            sock = await relay.connect(self.host, self.port, self.timeout, self.what)
            try:
                await self._get(stream, sock, head)
            finally:
                sock.close()
            return
        try:
            sock = await relay.connect(self.host, self.port, self.timeout, self.what)
        except relay.Unreachable as exc:
            await stream.answer(exc.error_status_hint, str(exc))
            return
        await relay.relay_plain(stream, sock, relay.build_head(stream, request.method or "GET", request.target, host))

    async def _get(self, stream: EdgeStream, sock: socket.socket, head: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, head)
        reader = _SocketReader(loop, sock)
        status_line = await reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise BackendError(f"{self.what} answered something that is not HTTP: {status_line[:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 200:
            body = await reader.read_body(headers, limit=4096)
            await stream.answer(status, f"{self.what}: {body.decode(errors='replace').strip() or status}")
            return
        await stream.answer(200)
        async for chunk in reader.body(headers):
            await stream.send(chunk)


class _SocketReader:
    """Just enough of an HTTP/1.1 response reader over a non-blocking socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    async def _fill(self) -> bool:
        if self.eof:
            return False
        data = await self.loop.sock_recv(self.sock, relay.RELAY_READ)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    async def readline(self) -> bytes:
        while (i := self.buf.find(b"\n")) < 0:
            if len(self.buf) > _MAX_HEAD or not await self._fill():
                line = bytes(self.buf)
                self.buf.clear()
                return line
        line = bytes(self.buf[: i + 1])
        del self.buf[: i + 1]
        return line

    async def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._fill():
                raise BackendError("the kubelet closed the connection mid-body")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def body(self, headers: dict[str, str]):  # type: ignore[no-untyped-def]
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                yield await self.readexactly(size)
                await self.readline()
        elif "content-length" in headers:
            remaining = int(headers["content-length"])
            while remaining:
                if not self.buf and not await self._fill():
                    return
                piece = bytes(self.buf[:remaining])
                del self.buf[: len(piece)]
                remaining -= len(piece)
                yield piece
        else:
            while True:
                if self.buf:
                    piece = bytes(self.buf)
                    self.buf.clear()
                    yield piece
                if not await self._fill():
                    return

    async def read_body(self, headers: dict[str, str], limit: int) -> bytes:
        out = b""
        async for piece in self.body(headers):
            out += piece
            if len(out) >= limit:
                break
        return out[:limit]
