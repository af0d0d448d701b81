"""The tunnel endpoint edges dial (10004): mTLS, identity check, one session per node.

Wire facts (spec ``kubeedge-tunnel.md``): the edge sends ``GET /v1/kubeedge/connect`` with
``SessionHostNameOverride`` and ``SessionInternalIP``; no subprotocol, no compression; the
payload of every message is binary in a TEXT frame. KubeEdge never checks that the client
certificate belongs to the announced node; we do (``verify_node_identity``), and bind the
node's internal IP to it (``registry``): an IP SAN in the certificate proves it, else the first
live claim holds it. Every refusal is logged with the peer's address, rate-limited.
"""

from __future__ import annotations

import http
import logging
import ssl
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from streamcerts import peer_identity
from streamproto.aio import RateLimitedLog
from streamproto.aio.connection import POLICY_VIOLATION
from streamproto.aio.keepalive import shared_keepalive
from streamproto.aio.sockets import tune_tunnel_socket
from streamops.admin.labels import close_reason, reason_label
from streamproto.tunnel import FEATURES_HEADER, Budget, Feature, format_features, negotiate, parse_features
from streamproto.tunnel.replicas import HELD_HEADER, REPLICA_HEADER, format_announcement, parse_held

from .cert_signer import CertSigner, describe_certificate
from .config import CloudConfig
from .edge_session import EdgeSession, IPClaim
from .listener import Limits, Listener, Slot
from .registry import IPClaimConflict, SessionRegistry, canonical_ip
from .stats import CloudStats
from .peers import PEER_PATH, PeerLookup, answer_peer, asked_node, own_common_name
from .replicas import ReplicaDirectory

__all__ = ["SUPPORTED_FEATURES", "start_tunnel_server"]

logger = logging.getLogger(__name__)

SUPPORTED_FEATURES = frozenset({Feature.STATUS, Feature.PORTFORWARD, Feature.FLOW, Feature.REPLICAS})
_PATHS = ("/v1/kubeedge/connect", "/v1/kubeedge/connect/")
_NODE_HEADER = "SessionHostNameOverride"
_IP_HEADER = "SessionInternalIP"


class _Refusals:
    """Every refused dial is logged with the peer's address and the reason, rate-limited per
    (peer, kind): a peer dialling in a loop costs one line per interval, not one per dial."""

    def __init__(self, stats: CloudStats) -> None:
        self.log = RateLimitedLog(logger)
        self.stats = stats

    def __call__(self, connection: ServerConnection, status: http.HTTPStatus, kind: str, reason: str) -> Response:
        peer = _peer(connection)
        connection.kes_refused = True  # type: ignore[attr-defined]
        self.stats.refusals["tunnel", reason_label(kind)] += 1
        self.log.event((peer, kind), "! refused a tunnel dial from %s with %d: %s", peer, status.value, reason)
        return connection.respond(status, reason + "\n")

    def handshake(self, connection: ServerConnection, response: Response) -> None:
        """A dial websockets itself rejected after our checks (bad Sec-WebSocket-Key or version, ...)."""
        peer = _peer(connection)
        self.stats.refusals["tunnel", "handshake"] += 1
        error = connection.protocol.handshake_exc
        reason = str(error) if error is not None else response.body.decode("utf-8", "replace").strip()[:200]
        self.log.event((peer, "handshake"), "! refused a tunnel dial from %s with %d: invalid WebSocket handshake: %s",
                       peer, response.status_code, reason)


def _held_here(replicas: ReplicaDirectory, connection: ServerConnection, request: Request) -> Response | None:
    """HA mode: an edge that already holds a tunnel to this replica (its dial through the load
    balancer landed here again) gets a 409 before the upgrade: the tunnel it has is kept, and
    nothing is logged (it is how an edge finds the replicas it lacks, not a fault)."""
    held = parse_held(request.headers.get(HELD_HEADER))
    connection.kes_held = held  # type: ignore[attr-defined]
    if replicas.replica_id not in held:
        return None
    node = request.headers.get(_NODE_HEADER, "").strip()
    connection.kes_refused = True  # type: ignore[attr-defined]
    return connection.respond(
        http.HTTPStatus.CONFLICT,
        f"node {node} already holds a tunnel to cloudstream replica {replicas.replica_id}; "
        f"dial again for another replica\n",
    )


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else "?"


def _check_request(
    config: CloudConfig, registry: SessionRegistry, refuse: _Refusals, connection: ServerConnection, request: Request
) -> Response | None:
    """Refuse what is not a dial of a node by that node; on success leave the node's
    ``IPClaim`` on the connection (``kes_claim``) for ``handler``."""
    path = request.path.split("?", 1)[0]
    if path not in _PATHS:
        shown = path if len(path) <= 80 else path[:80] + "..."
        return refuse(connection, http.HTTPStatus.NOT_FOUND, "path",
                      f"no tunnel endpoint at {shown!r}; edges dial {_PATHS[0]}")
    headers = request.headers
    if "upgrade" not in headers.get("Connection", "").lower():
        return refuse(connection, http.HTTPStatus.BAD_REQUEST, "upgrade", "a tunnel dial must be a WebSocket upgrade")
    node = headers.get(_NODE_HEADER, "").strip()
    if not node:
        return refuse(connection, http.HTTPStatus.BAD_REQUEST, "node",
                      f"the dial has no {_NODE_HEADER} header (node name)")
    origin = headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1] != headers.get("Host", ""):
        return refuse(connection, http.HTTPStatus.FORBIDDEN, "origin", "cross-origin tunnel dial refused")
    announced = canonical_ip(headers.get(_IP_HEADER, ""))
    verified = False
    if config.verify_node_identity:
        ssl_object = connection.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der is None:
            return refuse(connection, http.HTTPStatus.UNAUTHORIZED, "no cert", "no client certificate")
        identity = peer_identity(der)
        if identity.common_name not in (node, f"system:node:{node}"):
            return refuse(
                connection,
                http.HTTPStatus.FORBIDDEN,
                "cn",
                f"certificate CN={identity.common_name!r} may not register node {node!r}: "
                f"issue the edge a certificate with CN={node!r} (streamcerts client --cn {node})",
            )
        if identity.ips:  # the certificate says which IPs are this node's
            if announced not in identity.ips:
                return refuse(
                    connection,
                    http.HTTPStatus.FORBIDDEN,
                    "ip san",
                    f"node {node!r} announces internal IP {announced or '(none)'} but its certificate lists only "
                    f"{', '.join(identity.ips)}: set the edge's node IP to one of them (edgecore modules.edged.nodeIP, "
                    f"edgestream --node-ip), or reissue its certificate with this IP "
                    f"(streamcerts client --cn {node} --ip {announced or 'IP'})",
                )
            verified = True
    penalty = registry.quarantined(node)
    if penalty > 0:
        return refuse(
            connection, http.HTTPStatus.TOO_MANY_REQUESTS, "quarantine",
            f"node {node!r} sent too many malformed tunnel messages; its dials are refused for another "
            f"{penalty:.0f} s: check the edge's software (a Go edgecore or edgestream never sends them)",
        )
    claim = IPClaim(announced, verified=verified) if announced else IPClaim(_peer(connection), announced=False)
    try:
        registry.check_claim(node, claim)
    except IPClaimConflict as exc:
        return refuse(connection, http.HTTPStatus.FORBIDDEN, "ip taken", str(exc))
    connection.kes_claim = claim  # type: ignore[attr-defined]
    return None


async def start_tunnel_server(
    config: CloudConfig,
    registry: SessionRegistry,
    ssl_context: ssl.SSLContext,
    on_session: Callable[[EdgeSession], None] | None = None,
    signer: CertSigner | None = None,
) -> Server:
    """Start listening; the returned Server is closed by the caller (app.serve). With a
    ``signer`` the ``renew`` feature is offered (edge certificate renewal)."""
    supported = SUPPORTED_FEATURES | ({Feature.RENEW} if signer is not None else set())
    Budget(max_violations=config.tunnel_max_violations, window=config.tunnel_violation_window)  # fail at start
    refuse = _Refusals(registry.stats)
    # websockets logs every connection and every rejection at INFO, without the reason: a peer
    # dialling in a loop would write lines at its pace. Ours say why, rate-limited; keep its
    # lines for DEBUG runs.
    websockets_log = logging.getLogger("websockets.server")
    if not websockets_log.isEnabledFor(logging.DEBUG):
        websockets_log.setLevel(logging.WARNING)
    # Shared by every session: an edge that redials after each close still gets one line per interval.
    warnings = RateLimitedLog(logger)
    if registry.replicas is None:
        registry.replicas = ReplicaDirectory(config.replica_id, config.replicas)
    replicas = registry.replicas
    if config.replica_peers and replicas.lookup is None:
        replicas.lookup = PeerLookup(
            config.replica_peers, config.tls_tunnel_ca_file, config.tls_tunnel_cert_file,
            config.tls_tunnel_private_key_file, config.replica_id,
        ).holders
    own_cn = own_common_name(config.tls_tunnel_cert_file)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] == PEER_PATH:  # a peer replica asks (peers.py), not a tunnel dial
            node = asked_node(request)
            return answer_peer(replicas, own_cn, None if node is None else registry.get(node) is not None,
                               connection, request)
        refusal = _check_request(config, registry, refuse, connection, request)
        if refusal is None:
            offered = parse_features(request.headers.get(FEATURES_HEADER))
            features = negotiate(offered, supported)
            connection.kes_features = features  # type: ignore[attr-defined]
            if Feature.REPLICAS in features:
                refusal = _held_here(replicas, connection, request)
        return refusal

    def process_response(connection: ServerConnection, request: Request, response: Response) -> Response:
        if response.status_code != 101 and not getattr(connection, "kes_refused", False):
            refuse.handshake(connection, response)
        features: frozenset[Feature] = getattr(connection, "kes_features", frozenset())
        if response.status_code in (101, 409) and features:
            headers = Headers(response.headers)
            if response.status_code == 101:
                headers[FEATURES_HEADER] = format_features(features)
            if Feature.REPLICAS in features:
                headers[REPLICA_HEADER] = format_announcement(replicas.announcement())
            return Response(response.status_code, response.reason_phrase, headers, response.body)
        return response

    async def handler(connection: ServerConnection) -> None:
        node = (connection.request.headers.get(_NODE_HEADER, "") if connection.request else "").strip()
        claim: IPClaim = getattr(connection, "kes_claim", None) or IPClaim(_peer(connection), announced=False)
        ip = claim.ip
        features: frozenset[Feature] = getattr(connection, "kes_features", frozenset())
        _forget_handshake(connection)
        # Our edges answer pings at once; a Go edge's reader may stall for minutes.
        connection.ping_timeout = config.ping_timeout if features else config.ping_timeout_go
        keepalive = shared_keepalive()  # one timer for every tunnel instead of a task each
        tune_tunnel_socket(connection.transport.get_extra_info("socket"))
        ssl_object = connection.transport.get_extra_info("ssl_object")
        peer_der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        session = EdgeSession(
            connection, node=node, internal_ip=ip, features=features, config=config, next_id=registry.next_id,
            ip_claim=claim, warnings=warnings, signer=signer if Feature.RENEW in features else None, peer_cert=peer_der,
            stats=registry.stats,
        )
        try:
            old = registry.register(session)
        except IPClaimConflict as exc:  # another dial took the IP between the check and now
            registry.stats.refusals["tunnel", "ip_taken"] += 1
            refuse.log.event((_peer(connection), "ip taken"), "! refused a tunnel from %s: %s", _peer(connection), exc)
            await connection.close(POLICY_VIOLATION, f"internal IP {ip} is held by node {exc.holder}"[:120])
            return
        if old is not None:
            logger.warning("= node %s dialled again from %s; the previous tunnel is replaced", node, ip)
            await old.close(f"replaced by a new tunnel from node {node} ({ip})")
        logger.info(
            "= tunnel up: node %s (%s), features [%s]%s", node, ip, format_features(features) or "none: KubeEdge mode",
            describe_certificate(peer_der), extra={"node": node},
        )
        registry.stats.tunnel_connects += 1
        if Feature.REPLICAS in features:
            replicas.tunnel_up(node, getattr(connection, "kes_held", ()))
        if on_session is not None:
            on_session(session)
        keepalive.add(connection, config.ping_interval, connection.ping_timeout)
        try:
            await session.run()
        finally:
            keepalive.discard(connection)
            registry.unregister(session)
            _count_end(registry.stats, session)
            if registry.get(node) is None:
                replicas.tunnel_down(node)
            if session.over_budget:
                registry.quarantine(node, config.tunnel_violation_window)
            logger.info("x tunnel down: node %s (%s): %s", node, ip, session.closed_reason, extra={"node": node})

    # websockets' serve() would accept through loop.create_server; our accept layer accepts
    # instead (caps, handshake timeout, refusals logged) and builds each connection object
    # as serve() does, with the same settings, through websockets' public classes.
    connection_settings: dict[str, Any] = dict(
        ping_interval=None,  # streamproto.aio.keepalive pings every tunnel from one task (see handler)
        ping_timeout=config.ping_timeout_go,
        close_timeout=2,
        max_queue=64,
    )
    max_size = 2 << 20  # a Go peer's message is at most 1 MiB of data plus the header
    server = serve(
        handler,
        process_request=process_request,
        process_response=process_response,
        compression=None,
        max_size=max_size,
        server_header=None,
        open_timeout=10,
        **connection_settings,
    )

    def factory(slot: Slot) -> ServerConnection:
        connection = _TrackedConnection(ServerProtocol(max_size=max_size), server, **connection_settings)
        connection.slot = slot
        return connection

    listener = Listener(
        name="tunnel",
        host=config.tunnel_address,
        port=config.tunnel_port,
        ssl_context=ssl_context,
        limits=Limits.from_config(config),
        protocol_factory=factory,
        shutdown_timeout=config.shutdown_timeout,
        ca=f"the tunnel CA {config.tls_tunnel_ca_file} (--tls-tunnel-ca-file)",
    )
    server.create_server = listener.start  # type: ignore[assignment]
    return await server


def _count_end(stats: CloudStats, session: EdgeSession) -> None:
    """A tunnel ended: its own counters join the process's totals (as it leaves the registry)."""
    stats.tunnel_disconnects[close_reason(session.closed_reason, session.over_budget)] += 1
    stats.stalls_done["credit"] += session.credit_stalls
    stats.stalls_done["slow_reader"] += session.reader_stalls
    stats.violations_done += session.violations.total
def _forget_handshake(connection: ServerConnection) -> None:
    """Empty the upgrade's request and response headers (about 5 KB a tunnel, kept for the
    connection's life: by the connection, and by the suspended frame of websockets' parser,
    whose local still names the request): what we need of them is read. Emptied in place, as
    that frame cannot be reached; ``request`` stays set (websockets tells the handshake from
    later frames by it)."""
    if connection.request is not None:
        connection.request.headers.clear()
    if connection.response is not None:
        connection.response.headers.clear()
        connection.response = None


class _TrackedConnection(ServerConnection):
    """Gives the accept layer its slot back when the TCP connection is gone."""

    slot: Slot | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            if self.slot is not None:
                self.slot.release()
