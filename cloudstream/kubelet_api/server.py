"""The HTTPS kubelet-API server (10003): authenticate, route, and carry each request as
one tunnel stream to the edge that owns the node.

Per TLS connection: HTTP/1.1 with keep-alive for logs/metrics; an upgrade (exec, attach,
port-forward) turns the connection into a raw two-way relay, the edge's own ``101`` (or
refusal) coming back byte for byte, as KubeEdge's hijack does.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time


from certs import Identity, peer_identity
from proto.tunnel import ConnectRequest, Feature, StreamClosed, TunnelClosed, TunnelError

from ..config import CloudConfig
from ..listener import Limits, Listener, Slot
from ..edge_session import CloudStream, EdgeSession
from ..registry import SessionRegistry
from .relay import HandoffReader, ToEdgeProtocol
from .http1 import HttpError, RequestHead, error_body, parse_request_head, response_head
from .resolve import local_address, original_destination, request_node_keys
from .routes import Route, RouteKind, match_route

__all__ = ["KubeletApiServer"]

logger = logging.getLogger(__name__)
audit = logging.getLogger("cloudstream.audit")

_IDLE_TIMEOUT = 300.0
_HOP_BY_HOP = frozenset({"keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"})
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
"""Not forwarded to the edge: no backend needs them (edged's 10350 checks nothing), and a
bearer token crossing the tunnel is one more place to leak it (KubeEdge forwards it)."""


class KubeletApiServer:
    def __init__(self, config: CloudConfig, registry: SessionRegistry, ssl_context: ssl.SSLContext | None) -> None:
        self.config = config
        self.registry = registry
        self.ssl_context = ssl_context
        self.connections: set[asyncio.Task[None]] = set()
        self.server: Listener | None = None

    async def start(self) -> Listener:
        """Listen on 10003 through the accept layer (caps, handshake timeout, refusals logged)."""
        if self.ssl_context is None:
            raise ValueError("the kubelet API (10003) serves TLS only: no TLS context was given")
        loop = asyncio.get_running_loop()

        def factory(slot: Slot) -> asyncio.StreamReaderProtocol:
            reader = HandoffReader(limit=64 * 1024, loop=loop)
            return asyncio.StreamReaderProtocol(
                reader, lambda r, w: self._on_connection(r, w, slot), loop=loop  # type: ignore[misc]
            )

        self.server = Listener(
            name="kubelet API",
            host=self.config.stream_address,
            port=self.config.stream_port,
            ssl_context=self.ssl_context,
            limits=Limits.from_config(self.config),
            protocol_factory=factory,
            shutdown_timeout=self.config.shutdown_timeout,
            ca=f"the cluster CA {self.config.tls_stream_ca_file} (--tls-stream-ca-file)",
        )
        return await self.server.start()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(self.connections, timeout=self.config.shutdown_timeout)
        if self.server is not None:
            await self.server.wait_closed()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: Slot | None = None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await Connection(self, reader, writer).serve()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug: log it, end this connection, keep serving the others
            logger.exception("! kubelet API connection from %s failed", writer.get_extra_info("peername"))
        finally:
            self.connections.discard(task)
            writer.close()
            try:
                async with asyncio.timeout(2):
                    await writer.wait_closed()
            except (TimeoutError, ConnectionError, ssl.SSLError):
                writer.transport.abort()
            finally:
                if slot is not None:
                    slot.release()


class Connection:
    """One TLS connection from the API server."""

    def __init__(self, server: KubeletApiServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.config = server.config
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.dnat_ip = original_destination(writer.get_extra_info("socket"))
        self.local_ip = local_address(writer.get_extra_info("socket"))
        self.identity: Identity | None = None
        self._pushback = b""
        """A byte the client-gone watcher read that belongs to the next request."""
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.identity = peer_identity(der)

    # ------------------------------------------------------------------ the loop

    async def serve(self) -> None:
        while True:
            try:
                async with asyncio.timeout(_IDLE_TIMEOUT):
                    raw = self._pushback + await self.reader.readuntil(b"\r\n\r\n")
                    self._pushback = b""
            except (asyncio.IncompleteReadError, TimeoutError):
                return
            except asyncio.LimitOverrunError:
                await self._reply_error(431, "request head too large", close=True)
                return
            try:
                head = parse_request_head(raw)
            except HttpError as exc:
                await self._reply_error(exc.status, str(exc), close=True)
                return
            keep_alive = await self._handle(head)
            if not keep_alive or not head.keep_alive:
                return

    async def _handle(self, head: RequestHead) -> bool:
        """Serve one request; return whether the connection may carry another."""
        route = match_route(head.path)
        denied = self._authorize(route)
        if denied is not None:
            status, message = denied
            logger.warning("! %s %s from %s refused: %s", head.method, head.path, self.peer, message)
            await self._reply_error(status, message, close=True)
            return False
        if route is None:
            await self._reply_error(404, f"no kubelet API route {head.path}")
            return await self._discard_body(head)
        if head.method not in route.methods:
            await self._reply_error(405, f"{head.method} is not allowed on {head.path}", [("Allow", ", ".join(route.methods))])
            return await self._discard_body(head)
        session, problem = self._find_session(head)
        if session is None:
            await self._reply_error(503, problem)
            return await self._discard_body(head)
        if route.upgrade:
            await self._relay_upgrade(head, route, session)
            return False
        if not await self._discard_body(head):
            return False
        return await self._relay_response(head, route, session)

    # ------------------------------------------------------------------ checks

    def _authorize(self, route: Route | None) -> tuple[int, str] | None:
        identity = self.identity
        if identity is None:
            return 401, "a client certificate signed by the cluster CA is required (the API server's --kubelet-client-certificate)"
        allowed: set[str] = set()
        for rule in self.config.access:
            if (rule.kind == "cn" and rule.name == identity.common_name) or (
                rule.kind == "group" and rule.name in identity.organizations
            ):
                allowed |= rule.routes
        if route is None and allowed:
            return None  # known caller, unknown path: a 404 is more useful than a 403
        if route is not None and route.kind.value in allowed:
            return None
        wanted = route.kind.value if route is not None else "any route"
        return 403, (
            f"certificate CN={identity.common_name!r} O={list(identity.organizations)!r} may not use {wanted}; "
            f"access rules: {', '.join(map(str, self.config.access)) or 'none'} (cloudstream --allow)"
        )

    def _find_session(self, head: RequestHead) -> tuple[EdgeSession | None, str]:
        registry = self.server.registry
        keys = request_node_keys(head, self.dnat_ip, self.local_ip, registry)
        for kind, value in keys:
            session = registry.get_by_ip(value) if kind == "ip" else registry.get(value)
            if session is not None:
                return session, ""
        wanted = " or ".join(f"{'IP' if k == 'ip' else 'node'} {v}" for k, v in keys) or "(no Host header)"
        sessions = registry.sessions()
        connected = ", ".join(f"{s.node} ({s.internal_ip})" for s in sessions[:10]) or "none"
        if len(sessions) > 10:
            connected += f" and {len(sessions) - 10} more"
        return None, (
            f"no edge node with {wanted} has a tunnel to this cloudstream. "
            f"Check that edgestream runs on that node and reaches tunnel port {self.config.tunnel_port} "
            f"(its log says why it cannot connect). Connected nodes: {connected}"
        )

    async def _discard_body(self, head: RequestHead) -> bool:
        try:
            length = head.content_length
        except HttpError:
            return False
        if length > 1 << 20:
            return False
        if length:
            await self.reader.readexactly(length)
        return True

    # ------------------------------------------------------------------ answers

    async def _reply_error(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None, close: bool = False
    ) -> None:
        body = error_body(status, message)
        all_headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
        if close:
            all_headers.append(("Connection", "close"))
        all_headers.extend(headers or ())
        self.writer.write(response_head(status, all_headers) + body)
        await self.writer.drain()

    def _connect_request(self, head: RequestHead, method: str | None) -> ConnectRequest:
        headers = tuple(
            (k, v) for k, v in head.headers if k.lower() not in _HOP_BY_HOP and k.lower() not in _SECRET_HEADERS
        )
        return ConnectRequest(connect_id=0, path=head.path, raw_query=head.raw_query, headers=headers, method=method)

    async def _relay_response(self, head: RequestHead, route: Route, session: EdgeSession) -> bool:
        """logs / metrics: the edge's body, streamed as a chunked 200 (or its error status)."""
        try:
            stream = await session.open(route.tunnel_type, self._connect_request(head, None))
        except TunnelError as exc:
            await self._reply_error(503, f"node {session.node}: {exc}")
            return True
        started = time.monotonic()
        sent = 0
        watcher = asyncio.create_task(self._watch_client_gone())
        try:
            try:
                code, message = await stream.wait_status(self.config.connect_timeout)
            except TimeoutError:
                await self._reply_error(
                    504, f"node {session.node}: the edge did not answer {head.path} within {self.config.connect_timeout:.0f} s"
                )
                return True
            except TunnelError as exc:
                await self._reply_error(502, f"node {session.node}: {exc}")
                return True
            if code != 200:
                await self._reply_error(code, f"node {session.node}: {message}")
                return True
            content_type = "text/plain" if route.kind is RouteKind.LOGS else "text/plain; charset=utf-8"
            if route.kind is RouteKind.METRICS and head.path.startswith("/stats"):
                content_type = "application/json"
            self.writer.write(
                response_head(200, [("Content-Type", content_type), ("Transfer-Encoding", "chunked")])
            )
            write = self.writer.write
            # One watcher for the whole response (not a task per chunk): when the client
            # leaves, it ends the stream's buffer and the read below wakes with _ClientGone.
            watcher.add_done_callback(lambda t: _end_if_gone(t, stream))
            while (chunk := await stream.read()) is not None:
                # Coalesce what is already buffered (a Go edge sends 256-byte messages).
                more = await stream.read_more()
                parts = [chunk, *more] if more else [chunk]
                size = sum(len(p) for p in parts)
                write(b"".join([b"%x\r\n" % size, *parts, b"\r\n"]))
                sent += size
                await self.writer.drain()
            write(b"0\r\n\r\n")
            await self.writer.drain()
            if watcher.done():  # the next request began while we answered: keep its first byte
                self._pushback = b"" if watcher.exception() is not None else watcher.result()
                return bool(self._pushback)
            return True
        except _ClientGone:
            return False
        except (TunnelClosed, StreamClosed) as exc:
            # Status already sent: break the chunked body so the client sees an error.
            logger.warning("! %s on node %s ended early: %s", head.path, session.node, exc)
            self.writer.transport.abort()
            return False
        finally:
            await _cancel_and_wait(watcher)
            await stream.close()
            logger.info(
                "stream %d %s %s node=%s bytes=%d %.3fs", stream.connect_id, head.method, head.path, session.node, sent,
                time.monotonic() - started,
            )

    async def _watch_client_gone(self) -> bytes:
        """Completes when the API server closes its side (b"") or starts its next request
        (that byte is handed back through ``_pushback``)."""
        return await self.reader.read(1)

    async def _relay_upgrade(self, head: RequestHead, route: Route, session: EdgeSession) -> None:
        """exec / attach / port-forward: forward the head, then relay raw bytes both ways."""
        if route.kind is RouteKind.PORTFORWARD and Feature.PORTFORWARD not in session.features:
            await self._reply_error(
                501,
                f"node {session.node} runs KubeEdge's Go edgecore, which has no port-forward; "
                "run kubeedge-stream's edgestream on that node for port-forward",
                close=True,
            )
            return
        if not head.is_upgrade:
            await self._reply_error(400, f"{head.path} needs an HTTP upgrade (SPDY/3.1 or WebSocket)", close=True)
            return
        try:
            stream = await session.open(route.tunnel_type, self._connect_request(head, head.method))
        except TunnelError as exc:
            await self._reply_error(503, f"node {session.node}: {exc}", close=True)
            return
        started = time.monotonic()
        counts = [0, 0]
        who = self.identity.common_name if self.identity else "?"
        audit.info(
            "open %s node=%s ns=%s pod=%s container=%s query=%s caller=%s end-user=%s stream=%d",
            route.kind.value, session.node, route.namespace, route.pod, route.container, head.raw_query, who,
            head.header("X-Forwarded-For") or head.header("Kubectl-Session") or "-", stream.connect_id,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                up = tg.create_task(self._client_to_edge(stream, counts))
                down = tg.create_task(self._edge_to_client(stream, counts))
                done, _ = await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
                # Either side finished: the stream is over (KubeEdge has no half-close on the tunnel).
                for task in (up, down):
                    task.cancel()
        except* (ConnectionError, TunnelError, ssl.SSLError):
            pass
        finally:
            await stream.close()
            audit.info(
                "close %s node=%s pod=%s/%s stream=%d bytes_in=%d bytes_out=%d duration=%.3fs",
                route.kind.value, session.node, route.namespace, route.pod, stream.connect_id, counts[0], counts[1],
                time.monotonic() - started,
            )

    async def _client_to_edge(self, stream: CloudStream, counts: list[int]) -> None:
        """API server -> edge: what was buffered behind the head, then zero-copy reads."""
        reader = self.reader
        if isinstance(reader, HandoffReader):
            early = reader.take_buffered()
            if early:
                counts[0] += len(early)
                await stream.send(early)
            transport = self.writer.transport
            relay = ToEdgeProtocol(stream, transport.get_protocol(), self.config.max_payload)
            relay.attach(transport)  # type: ignore[arg-type]
            counts[0] += await relay.wait()
            return
        while data := await reader.read(self.config.max_payload):
            counts[0] += len(data)
            await stream.send(data)

    async def _edge_to_client(self, stream: CloudStream, counts: list[int]) -> None:
        writer = self.writer
        while True:
            chunk = await stream.read()
            if chunk is None:
                return
            more = await stream.read_more()
            if more:
                chunk = b"".join([chunk, *more])
            counts[1] += len(chunk)
            writer.write(chunk)
            await writer.drain()




class _ClientGone(Exception):
    """The API server closed its side while we were streaming to it."""


def _end_if_gone(watcher: asyncio.Task[bytes], stream: CloudStream) -> None:
    if watcher.cancelled():
        return
    if watcher.exception() is not None or not watcher.result():  # EOF or reset: the client left
        stream.buffer.feed_eof(_ClientGone())


async def _cancel_and_wait(task: asyncio.Future[object]) -> None:
    """Cancel ``task`` and wait until it really ended (a StreamReader allows one waiter)."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:  # noqa: BLE001 - its outcome no longer matters
        pass
