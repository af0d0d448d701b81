"""Ask the other replicas which one holds a node (HA mode, ``--replica-peers``).

An edge of ours tells every replica which others it holds (``replicas.py``); a Go edgecore
keeps one tunnel and tells nothing. So when a request for a node lands on a replica without
its tunnel and the node's own reports say nothing, this replica asks its peers, on their tunnel
port (mTLS with the tunnel CA, which every replica already has):

    GET /v1/kubeedge-stream/replica?node=NAME   ->  200 {"replica": ID, "holds": true|false}

Who may ask: a client certificate with this replica's own CN (the replicas of a Deployment share
one server certificate, which carries clientAuth); edges (CN = node name) get a 403. Where the
peers are: ``--replica-peers HOST:PORT`` (repeatable); a name that resolves to several addresses
(a headless Service: Kubernetes DNS keeps the list of ready pods) is asked at each of them.

Bounded: one lookup per node at a time (callers share it), answers cached for a few seconds
(an API server retrying a miss costs no new round trip), at most ``MAX_PEERS`` addresses, one
second per peer, all peers at once, a short body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import h11
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from streamcerts import client_context, peer_identity
from streamcerts.errors import CertificateError
from streamproto.aio import RateLimitedLog

from .replicas import ReplicaDirectory

__all__ = ["PEER_PATH", "PeerLookup", "answer_peer"]

logger = logging.getLogger(__name__)

PEER_PATH = "/v1/kubeedge-stream/replica"
MAX_PEERS = 16
PEER_TIMEOUT = 1.0
CACHE_FOR = 3.0
"""Seconds an answer (found or not) serves further misses for the same node."""
MAX_CACHED = 10_000
_MAX_BODY = 4096
_refusals = RateLimitedLog(logger)


def own_common_name(cert_file: Path) -> str:
    """The CN of this replica's tunnel certificate: peers present the same one."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        return peer_identity(cert.public_bytes(Encoding.DER)).common_name
    except (OSError, ValueError, CertificateError) as exc:
        logger.warning("! cannot read the CN of %s (%s): replica peers cannot ask this replica", cert_file, exc)
        return ""


def answer_peer(
    directory: ReplicaDirectory, own_cn: str, holds: bool | None, connection: ServerConnection, request: Request
) -> Response:
    """The tunnel server's answer to a peer's question (``holds`` None: the node name is missing)."""
    ssl_object = connection.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    try:
        cn = peer_identity(der).common_name if der else ""
    except CertificateError:
        cn = ""
    # not a tunnel dial: the tunnel server's handshake log line is not for this
    connection.kes_refused = True  # type: ignore[attr-defined]
    if not cn or cn != own_cn:
        peer = connection.remote_address[0] if connection.remote_address else "?"
        _refusals.event((peer, "peer"), "! refused a replica question from %s: certificate CN=%r is not this "
                        "replica's (%r)", peer, cn, own_cn)
        return connection.respond(403, f"only cloudstream replicas (certificate CN={own_cn!r}) may ask this\n")
    if holds is None:
        return connection.respond(400, "which node? ?node=NAME\n")
    body = json.dumps({"replica": directory.replica_id, "holds": holds}).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                       ("Connection", "close")])
    return Response(200, "OK", headers, body)


def asked_node(request: Request) -> str | None:
    values = parse_qs(urlsplit(request.path).query).get("node")
    return values[0] if values and values[0] else None


class PeerLookup:
    def __init__(self, peers: Iterable[str], ca_file: Path, cert_file: Path, key_file: Path, own_id: str) -> None:
        self.peers = tuple(peers)
        self.own_id = own_id
        self._tls = client_context(ca_file, cert_file, key_file)
        self._tls.check_hostname = False  # peers are pod addresses; the chain and the CN prove them
        self._cache: OrderedDict[str, tuple[float, tuple[str, ...]]] = OrderedDict()
        self._running: dict[str, asyncio.Future[tuple[str, ...]]] = {}
        self._log = RateLimitedLog(logger)

    async def holders(self, node: str) -> tuple[str, ...]:
        """The ids of the peer replicas that hold ``node`` now (empty: none, or no answer)."""
        cached = self._cache.get(node)
        if cached is not None and time.monotonic() - cached[0] < CACHE_FOR:
            return cached[1]
        running = self._running.get(node)
        if running is None:
            running = asyncio.ensure_future(self._ask_all(node))
            self._running[node] = running
            running.add_done_callback(lambda _f: self._running.pop(node, None))
        return await asyncio.shield(running)

    async def _ask_all(self, node: str) -> tuple[str, ...]:
        addresses = await self._addresses()
        answers = await asyncio.gather(*(self._ask(host, port, node) for host, port in addresses))
        found = tuple(sorted({a for a in answers if a is not None and a != self.own_id}))
        self._cache[node] = (time.monotonic(), found)
        self._cache.move_to_end(node)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
        return found

    async def _addresses(self) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        out: list[tuple[str, int]] = []
        for peer in self.peers:
            host, _, port = peer.rpartition(":")
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM), PEER_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as exc:
                self._log.event(("resolve", peer), "! replica peer %s does not resolve: %s", peer, exc)
                continue
            for info in infos:
                address = (str(info[4][0]), int(info[4][1]))
                if address not in out:
                    out.append(address)
        return out[:MAX_PEERS]

    async def _ask(self, host: str, port: int, node: str) -> str | None:
        """The peer's replica id when it holds ``node``; None otherwise or on any failure."""
        writer = None
        try:
            async with asyncio.timeout(PEER_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, port, ssl=self._tls, server_hostname=host)
                writer.write(f"GET {PEER_PATH}?node={quote(node, safe='')} HTTP/1.1\r\nHost: {host}\r\n"
                             f"Connection: close\r\n\r\n".encode())
                raw = await reader.read(_MAX_BODY)
                while len(raw) < _MAX_BODY and (more := await reader.read(_MAX_BODY - len(raw))):
                    raw += more
            answer = _parse(raw)
        except (OSError, TimeoutError, ssl.SSLError, ValueError, h11.ProtocolError) as exc:
            self._log.event(("ask", host, port), "! replica peer %s:%d did not answer: %s", host, port,
                            exc or type(exc).__name__)
            return None
        finally:
            if writer is not None:
                writer.close()
        if answer.get("holds") is True and isinstance(answer.get("replica"), str):
            return str(answer["replica"])[:253]
        return None


def _parse(raw: bytes) -> dict[str, object]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target=PEER_PATH, headers=[("Host", "peer")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    status, body = 0, b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif event is h11.NEED_DATA or isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)) or event is h11.PAUSED:
            break
    if status != 200:
        raise ValueError(f"HTTP {status}")
    value = json.loads(body)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value
