"""One TLS connection from the API server on 10003: read heads (h11), check, route, answer.

Keep-alive for logs/metrics (each request's leftover bytes start the next one); an upgrade
(exec, attach, port-forward) ends the HTTP part and the connection becomes a raw relay
(``forward.relay_upgrade``). Every refusal is answered as a ``metav1.Status`` and logged
through one rate-limited log: a hostile client decides how often we refuse, not how often
we write a line.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from streamcerts import Identity, peer_identity
from streamops.admin.labels import reason_label
from streamproto.aio.ratelog import RateLimitedLog
from streamproto.aio.sockets import tune_client_socket

from .authz import NO_CERTIFICATE, authorize
from .forward import relay_response, relay_upgrade
from .http1 import HeadLimits, HttpError, RequestHead, RequestReader
from .resolve import ResolvedTarget, local_address, original_destination, request_node_keys
from .routes import match_route
from .status import error_response

if TYPE_CHECKING:
    from ..edge_session import EdgeSession
    from .server import KubeletApiServer

__all__ = ["Connection"]

logger = logging.getLogger(__name__)

_READ = 64 * 1024
_LINGER = 0.5
"""Seconds a refused connection keeps reading before it closes."""
_MAX_REQUESTS = 100_000
"""Requests per keep-alive connection; then we close and the client dials again (bounds the loop)."""
_refusals: RateLimitedLog | None = None


def refusal_log() -> RateLimitedLog:
    """One per process: the first refusal of each kind at once, then a counted summary."""
    global _refusals
    if _refusals is None:
        _refusals = RateLimitedLog(logger)
    return _refusals


class Connection:
    """One TLS connection from the API server."""

    def __init__(
        self, server: KubeletApiServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        target: ResolvedTarget | None = None,
    ) -> None:
        self.server = server
        self.config = server.config
        self.reader = reader
        self.writer = writer
        self.target = target
        """Set when the node is known before any request (the egress front's CONNECT target)."""
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer and isinstance(peer, tuple) else "?"
        if target is not None:
            self.peer = target.via
            self.dnat_ip = self.local_ip = None  # the socket's addresses are the egress front's, not the node's
        else:
            sock = writer.get_extra_info("socket")
            self.dnat_ip = original_destination(sock)
            self.local_ip = local_address(sock)
            tune_client_socket(sock)
        self.identity: Identity | None = None
        self.limits = HeadLimits(
            max_head=self.config.max_request_head,
            max_headers=self.config.max_request_headers,
            max_body=self.config.max_request_body,
        )
        self.leftover = b""
        self._wanted_nodes: list[str] = []
        """The node names the last request without a tunnel asked for (HA mode's error)."""
        self.errors_as_status = True
        """Errors of the current request as Status JSON (upgrades, and before any head) or as
        plain text (logs, stats, metrics: what the kubelet writes there)."""
        """Bytes already read that belong to the next request (pipelining, the gone-watcher's byte)."""
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.identity = peer_identity(der)

    @property
    def caller(self) -> str:
        return self.identity.common_name if self.identity is not None else "?"

    # ------------------------------------------------------------------ the loop

    async def serve(self) -> None:
        if self.identity is None:
            # No certificate: nothing this client sends can change the answer, so give it now
            # rather than waiting for a head (an anonymous slow client holds nothing).
            await self.refuse(401, "no client certificate", "connection", NO_CERTIFICATE, close=True)
            return
        first = True
        for _ in range(_MAX_REQUESTS):
            request = RequestReader(self.limits, self.leftover)
            self.leftover = b""
            self.errors_as_status = True
            try:
                head = await self._read_head(request, first)
            except HttpError as exc:
                await self.refuse(exc.status, "malformed request", "-", str(exc), close=True)
                return
            except TimeoutError:
                if first or request.started:
                    self.server.registry.stats.refusals["kubelet_api", "head_timeout"] += 1
                    refusal_log().event(
                        "head-timeout", "! 10003 %s (%s): no complete request head within %.0f s; closed",
                        self.peer, self.caller, self.config.request_head_timeout,
                    )
                return
            except (EOFError, asyncio.IncompleteReadError):
                return
            first = False
            task = asyncio.current_task()
            busy = self.server.busy
            if task is not None:
                busy.add(task)  # type: ignore[arg-type]
            try:
                again = await self._handle(head, request)
            finally:
                busy.discard(task)  # type: ignore[arg-type]
            if not again or not head.keep_alive or self.server.draining:
                return

    async def _read_head(self, request: RequestReader, first: bool) -> RequestHead:
        head = request.next_head()
        if head is not None:
            return head
        if not first and not request.started:
            # Keep-alive: wait for the next request's first byte, then give it the head timeout.
            async with asyncio.timeout(self.config.keepalive_idle_timeout):
                data = await self.reader.read(_READ)
            head = request.feed(data)
            if head is not None:
                return head
        async with asyncio.timeout(self.config.request_head_timeout):
            while head is None:
                head = request.feed(await self.reader.read(_READ))
        return head

    async def _handle(self, head: RequestHead, request: RequestReader) -> bool:
        """Serve one request; return whether the connection may carry another."""
        try:
            route, bad_path = match_route(head.path), None
        except HttpError as exc:
            route, bad_path = None, exc
        self.errors_as_status = route.upgrade if route is not None else head.is_upgrade
        denied = authorize(self.identity, route, self.config.access)
        if denied is not None:
            status, message = denied
            await self.refuse(status, "forbidden", head.method + " " + head.path, message, close=True)
            return False
        if bad_path is not None:
            await self.refuse(400, "bad path", head.method + " " + head.path, f"{head.path}: {bad_path}", close=True)
            return False
        if route is None:
            await self.reply_error(404, f"no kubelet API route {head.path}")
            return await self._discard_body(request)
        if head.method not in route.methods:
            await self.refuse(
                405, "method", head.method + " " + head.path, f"{head.method} is not allowed on {head.path}",
                headers=[("Allow", ", ".join(route.methods))],
            )
            return await self._discard_body(request)
        session, problem = self._find_session(head)
        if session is None:
            if self.server.registry.replicas is not None:  # HA mode: name this replica and where the node is
                problem += " " + await self.server.registry.replicas.miss(self._wanted_nodes)
            await self.refuse(503, "no node", head.method + " " + head.path, problem)
            return await self._discard_body(request)
        if route.upgrade:
            await relay_upgrade(self, head, route, session, request.leftover)
            return False
        if not await self._discard_body(request):
            return False
        return await relay_response(self, head, route, session)

    def _find_session(self, head: RequestHead) -> tuple[EdgeSession | None, str]:
        registry = self.server.registry
        keys = request_node_keys(head, self.dnat_ip, self.local_ip, registry, self.target)
        for kind, value in keys:
            session = registry.get_by_ip(value) if kind == "ip" else registry.get(value)
            if session is not None:
                return session, ""
        wanted = " or ".join(f"{'IP' if k == 'ip' else 'node'} {v}" for k, v in keys) or "(no Host header)"
        if self.target is not None:
            wanted += f" (the API server's {self.target.via})"
        elif (self.local_ip and ("ip", self.local_ip) not in keys and self.dnat_ip is None
                and self.local_ip != self.config.stream_address):
            # Without DNAT the address the API server dialled is the node's IP (no-DNAT wiring).
            wanted += f" (this connection reached cloudstream on {self.local_ip})"
        sessions = registry.sessions()
        connected = ", ".join(f"{s.node} ({s.internal_ip})" for s in sessions[:10]) or "none"
        if len(sessions) > 10:
            connected += f" and {len(sessions) - 10} more"
        self._wanted_nodes = [v for k, v in keys if k != "ip"]
        return None, (
            f"no edge node with {wanted} has a tunnel to this cloudstream. "
            f"Check that edgestream runs on that node and reaches tunnel port {self.server.tunnel_port} "
            f"(its log says why it cannot connect). Connected nodes: {connected}."
        )

    async def _discard_body(self, request: RequestReader) -> bool:
        """Read and drop the request body (at most ``max_request_body``, checked with the head)."""
        if request.body_left:
            try:
                async with asyncio.timeout(self.config.request_head_timeout):
                    done = request.discard_body()
                    while not done:
                        done = request.discard_body(await self.reader.read(_READ))
            except (TimeoutError, EOFError):
                return False
        else:
            request.discard_body()
        self.leftover = request.leftover
        return True

    # ------------------------------------------------------------------ answers

    async def reply_error(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None, close: bool = False
    ) -> None:
        self.writer.write(error_response(status, message, headers or (), close=close, as_status=self.errors_as_status))
        await self.writer.drain()

    async def refuse(
        self, status: int, kind: str, what: str, message: str, headers: list[tuple[str, str]] | None = None,
        close: bool = False,
    ) -> None:
        """Answer a refusal and log it (rate-limited per kind, with peer and reason)."""
        self.server.registry.stats.refusals["kubelet_api", reason_label(kind)] += 1
        refusal_log().event(
            (status, kind), "! 10003 %s from %s (%s) refused %d: %s", what[:200], self.peer, self.caller, status,
            message[:500],
        )
        await self.reply_error(status, message, headers, close=close)
        if close:
            await self._linger()

    async def _linger(self) -> None:
        """Before closing on a refusal, read (and drop) what the client is still sending, for a
        moment: closing with unread bytes sends a reset, which can destroy our answer in
        flight (Go's net/http does the same ``closeWriteAndWait``)."""
        total = 0
        try:
            async with asyncio.timeout(_LINGER):
                while total < _READ and (data := await self.reader.read(_READ)):
                    total += len(data)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass
