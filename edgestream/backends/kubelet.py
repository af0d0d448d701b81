"""The kubelet backend: forward each stream to the node's kubelet-like server, as KubeEdge's
EdgeStream forwards to edged's read-only port (127.0.0.1:10350).

logs / metrics: a plain GET; the status becomes the answer (a real HTTP error with a
kubeedge-stream cloud, not an error body inside a 200) and the body is streamed, chunked or not.
The response is parsed by h11 (client role): a malformed answer (``Content-Length: -1``, a chunk
size ``0x5``) is a 502 naming the kubelet, the head is bounded in size and must arrive within
``cri_timeout``, and at most one socket read (64 KiB) is held at a time, so a hostile kubelet can
neither stall the edge's loop nor make it buffer.
exec / attach / port-forward: the request head is replayed on a raw connection and bytes are
spliced (edged's own ``101`` goes back unchanged), exactly as for containerd's streaming server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator

import h11

from streamproto.tunnel import BackendError, MessageType

from ..config import EdgeConfig
from ..stream import EdgeStream
from . import relay
from .base import BaseBackend, pod_route

__all__ = ["KubeletBackend", "KubeletBadAnswer", "KubeletTimeout"]

logger = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
"""Largest response head (or chunk header, or trailer) accepted from the kubelet."""
MAX_ERROR_BODY = 4096
"""Bytes of a non-200 answer's body quoted in the error."""
_MAX_INFORMATIONAL = 16
"""1xx answers skipped before the real one."""


class KubeletBadAnswer(BackendError):
    """The kubelet answered something that is not valid HTTP/1.1."""

    error_status_hint = 502


class KubeletTimeout(BackendError):
    error_status_hint = 504


class KubeletBackend(BaseBackend):
    def __init__(self, config: EdgeConfig) -> None:
        host, _, port = config.kubelet_address.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self.timeout = config.cri_timeout
        """Connect, and response head, within this many seconds."""
        self.what = f"the kubelet (edged) at {config.kubelet_address}"

    async def serve(self, stream: EdgeStream) -> None:
        request = stream.request
        host = f"{self.host}:{self.port}"
        pod_route(stream)  # BadPath (400) for p1%2Fx, "..", empty names: never forwarded
        if stream.kind in (MessageType.LOGS_CONNECT, MessageType.METRIC_CONNECT):
            # identity: edged would gzip metrics otherwise (KubeEdge forces it too).
            get = relay.build_request(
                stream, "GET", request.target, host, (("Accept-Encoding", "identity"), ("Connection", "close")),
                drop=relay.DROP_HEADERS | {"accept-encoding", "connection"},
            )
            sock = await relay.connect(self.host, self.port, self.timeout, self.what)
            try:
                await self._get(stream, sock, get)
            finally:
                sock.close()
            return
        head = relay.build_head(stream, request.method or "GET", request.target, host)
        try:
            sock = await relay.connect(self.host, self.port, self.timeout, self.what)
        except relay.Unreachable as exc:
            await stream.answer(exc.error_status_hint, str(exc))
            return
        await relay.relay_plain(stream, sock, head)

    async def _get(self, stream: EdgeStream, sock: socket.socket, request: h11.Request) -> None:
        answer = _Answer(sock, self.what)
        await answer.send_request(request)
        try:
            async with asyncio.timeout(self.timeout):
                response = await answer.head()
        except TimeoutError:
            raise KubeletTimeout(
                f"{self.what} sent no complete answer head within {self.timeout:g} s: is it overloaded or hung?"
            ) from None
        if response.status_code != 200:
            text = await answer.error_text(self.timeout)
            await stream.answer(response.status_code, f"{self.what}: {text or response.status_code}")
            return
        first = answer.first_look()  # what came with the head: a bad chunk there is still a 502
        await stream.answer(200)
        if first:
            await stream.send(first)
        async for piece in answer.body():
            await stream.send(piece)


class _Answer:
    """The kubelet's response to one GET, parsed by h11 over a non-blocking socket."""

    def __init__(self, sock: socket.socket, what: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.what = what
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.done = False

    async def send_request(self, request: h11.Request) -> None:
        data = (self.conn.send(request) or b"") + (self.conn.send(h11.EndOfMessage()) or b"")
        try:
            await self.loop.sock_sendall(self.sock, data)
        except OSError as exc:
            raise relay.Unreachable(f"{self.what} closed the connection before taking the request: {exc}") from None

    def _next(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            return self.conn.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                reason = f"a response head over {MAX_HEAD // 1024} KiB"
            else:
                reason = f"malformed HTTP ({exc})"
            raise KubeletBadAnswer(f"{self.what} answered {reason}: check the kubelet on this node") from None

    async def _fill(self) -> None:
        """One socket read into h11 (at EOF h11 is told, and turns it into an event or an error)."""
        try:
            data = await self.loop.sock_recv(self.sock, relay.RELAY_READ)
        except OSError as exc:
            raise KubeletBadAnswer(f"{self.what} broke the connection: {exc}") from None
        self.conn.receive_data(data)

    async def head(self) -> h11.Response:
        informational = 0
        while True:
            event = self._next()
            if event is h11.NEED_DATA:
                await self._fill()
            elif isinstance(event, h11.Response):
                if event.status_code >= 600:  # h11 takes any three digits; HTTP stops at 599
                    raise KubeletBadAnswer(f"{self.what} answered status {event.status_code}, which HTTP has not")
                return event
            elif isinstance(event, h11.InformationalResponse) and informational < _MAX_INFORMATIONAL:
                informational += 1
            else:
                raise KubeletBadAnswer(f"{self.what} closed the connection without an answer")

    def _ready(self) -> tuple[list[bytes], bool]:
        """Body bytes h11 can give without reading: (pieces, whether more must be read)."""
        pieces: list[bytes] = []
        while not self.done:
            event = self._next()
            if event is h11.NEED_DATA:
                return pieces, True
            if isinstance(event, h11.Data):
                pieces.append(event.data)
            else:  # EndOfMessage (or PAUSED/ConnectionClosed after it)
                self.done = True
        return pieces, False

    def first_look(self) -> bytes:
        pieces, _ = self._ready()
        return b"".join(pieces)

    async def body(self) -> AsyncIterator[bytes]:
        """The rest of the body: one piece per socket read (many tiny chunks become one message)."""
        while True:
            pieces, more = self._ready()
            if pieces:
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if not more:
                return
            await self._fill()

    async def error_text(self, timeout: float) -> str:
        """The start of a non-200 answer's body: the kubelet's message (a Status' ``message``).
        Whatever came within ``timeout`` is quoted; a malformed rest is ignored."""
        data = bytearray()
        try:
            async with asyncio.timeout(timeout):
                while len(data) < MAX_ERROR_BODY:
                    pieces, more = self._ready()
                    for piece in pieces:
                        data += piece
                    if not more:
                        break
                    await self._fill()
        except (TimeoutError, KubeletBadAnswer):
            pass
        text = bytes(data[:MAX_ERROR_BODY]).decode("utf-8", "replace").strip()
        try:
            status = json.loads(text)
        except ValueError:
            return text
        if isinstance(status, dict) and isinstance(status.get("message"), str):
            return status["message"]
        return text
