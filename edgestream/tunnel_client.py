"""Dial cloudstream, keep the tunnel up, redial with backoff, say why it failed.

The dial carries what a Go edgecore sends (``SessionHostNameOverride``, ``SessionInternalIP``,
no Origin, no subprotocol, no compression) plus ``X-Kubeedge-Stream-Features``, which a Go
cloud ignores. Unlike a Go edge we verify the cloud's certificate (``verify_server``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterator

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from certs.watch import shared_watch
from proto.aio.keepalive import shared_keepalive
from proto.aio.sockets import tune_tunnel_socket
from proto.tunnel import FEATURES_HEADER, Feature, backoff, format_features, parse_features

from .backends.base import Backend
from .cert_renewal import CertRenewal
from .config import EdgeConfig
from .session import AgentSession

__all__ = ["SUPPORTED_FEATURES", "describe_dial_error", "dial", "dial_headers", "hold", "reload_certificates", "run_tunnel"]

logger = logging.getLogger(__name__)

SUPPORTED_FEATURES = frozenset({Feature.STATUS, Feature.PORTFORWARD, Feature.FLOW})
"""Always offered; ``replicas`` is added when the edge may keep several tunnels (``EdgeConfig.ha``)."""
_STABLE_AFTER = 30.0
"""A tunnel that lived this long resets the backoff."""


def describe_dial_error(exc: BaseException, config: EdgeConfig) -> str:
    """One line a person can act on."""
    if isinstance(exc, InvalidStatus):
        body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
        return f"cloudstream at {config.server} refused the tunnel with HTTP {exc.response.status_code}: {body or '(no reason)'}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"cloudstream's certificate at {config.server} failed verification ({exc.verify_message}): "
            f"check {config.tls_tunnel_ca_file} is the CA that signed it"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {config.server} failed ({exc.reason}): is the edge certificate signed by the cloud's tunnel CA?"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens on {config.server}: is cloudstream running, and is its tunnel port reachable?"
    if isinstance(exc, TimeoutError):
        return f"no answer from {config.server} within {config.handshake_timeout:.0f} s (firewall? wrong address?)"
    if isinstance(exc, OSError):
        return f"cannot reach {config.server}: {exc.strerror or exc}"
    if isinstance(exc, InvalidHandshake):
        return f"{config.server} does not speak the tunnel protocol: {exc}"
    return f"{type(exc).__name__}: {exc}"


def reload_certificates() -> None:
    """SIGHUP: every tunnel of this process takes its certificate, key and CA files anew for its next dial."""
    shared_watch(asyncio.get_running_loop()).reload_all()


async def run_tunnel(
    config: EdgeConfig,
    backend: Backend,
    stop: asyncio.Event,
    on_session: Callable[[AgentSession | None], None] | None = None,
    drain: asyncio.Event | None = None,
    on_dial_error: Callable[[str], None] | None = None,
) -> None:
    """Keep the tunnel(s) up until ``stop`` is set: one per cloudstream replica when the cloud
    announces replicas (our HA mode, ``replicas.py``), else one, as KubeEdge. When ``drain`` is
    set first, refuse new streams and let running ones finish (up to ``drain_timeout``), then stop.
    ``on_dial_error`` hears why each failed dial failed (a 409 of HA mode is not a failure)."""
    from .replicas import run_tunnels  # the supervisor builds on dial() and hold() below

    await run_tunnels(config, backend, stop, on_session, drain, on_dial_error)


def dial_headers(config: EdgeConfig, offer: frozenset[Feature]) -> dict[str, str]:
    return {
        "SessionHostNameOverride": config.node_name,
        "SessionInternalIP": config.node_ip,
        FEATURES_HEADER: format_features(SUPPORTED_FEATURES | offer),
    }


async def dial(config: EdgeConfig, tls: ssl.SSLContext, headers: dict[str, str]) -> ClientConnection:
    return await connect(
        config.url,
        ssl=tls,
        server_hostname=config.server_name or (config.host if config.verify_server else None),
        additional_headers=headers,
        user_agent_header="Go-http-client/1.1",
        compression=None,
        origin=None,
        open_timeout=config.handshake_timeout,
        ping_interval=None,  # the process's shared keepalive pings (no task per tunnel)
        ping_timeout=None,
        max_size=2 << 20,
        max_queue=64,
        close_timeout=2,
    )


async def hold(
    ws: ClientConnection,
    config: EdgeConfig,
    backend: Backend,
    stop: asyncio.Event,
    drain: asyncio.Event | None,
    renewal: CertRenewal | None,
    on_session: Callable[[AgentSession | None], None] | None,
    replica: str = "",
) -> tuple[AgentSession, bool]:
    """Serve one dialled tunnel until it ends, ``stop``, or (after ``drain``) its streams are
    done. Returns the session and whether it ended for a renewed certificate (redial at once).
    Only one tunnel of an edge watches the certificate (``renewal``)."""
    features = parse_features(ws.response.headers.get(FEATURES_HEADER) if ws.response else None)
    keepalive = shared_keepalive()
    keepalive.add(ws, config.ping_interval, config.ping_timeout if features else config.ping_timeout_go)
    tune_tunnel_socket(ws.transport.get_extra_info("socket"))
    session = AgentSession(ws, config, features, backend)
    where = f"cloudstream at {config.server}" + (f" (replica {replica})" if replica else "")
    session.peer = where  # names the other side in misbehaviour warnings
    logger.info(
        "= tunnel up to %s as node %s, features [%s]",
        where, config.node_name, format_features(features) or "none: Go cloudcore",
    )
    if on_session is not None:
        on_session(session)
    mine = asyncio.Event()  # this tunnel's own end after a drain; ``stop`` ends them all
    runner = asyncio.create_task(session.run())
    stopper = asyncio.create_task(_drained_or_stopped(session, config, mine, drain))
    stopped = asyncio.create_task(stop.wait())
    renewer = asyncio.create_task(renewal.watch(session) if renewal is not None else asyncio.Event().wait())
    renewed = False
    try:
        await asyncio.wait((runner, stopper, stopped, renewer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        keepalive.discard(ws)
        stopper.cancel()
        stopped.cancel()
        renewer.cancel()
        renewed = bool(renewer.done() and not renewer.cancelled() and renewer.exception() is None and renewer.result())
        if not runner.done():
            await (ws.close(1000, "edge certificate renewed: redialling") if renewed
                   else ws.close(1001, "edge shutting down"))
            await runner
        await asyncio.gather(renewer, stopper, stopped, return_exceptions=True)
        if on_session is not None:
            on_session(None)
    (logger.info if renewed else logger.warning)("x tunnel to %s ended: %s", where, session.closed_reason)
    return session, renewed


def _delays(config: EdgeConfig) -> Iterator[float]:
    return backoff(config.reconnect_initial, config.reconnect_max, config.reconnect_window)


async def _drained_or_stopped(
    session: AgentSession, config: EdgeConfig, stop: asyncio.Event, drain: asyncio.Event | None
) -> None:
    """Returns when the tunnel should close: ``stop``, or ``drain`` and then no streams left."""
    waits = [asyncio.ensure_future(stop.wait())]
    if drain is not None:
        waits.append(asyncio.ensure_future(drain.wait()))
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            return
        session.draining = True
        logger.info("x draining: %d streams running, new ones refused (up to %.0f s)", len(session.streams),
                    config.drain_timeout)
        idle = asyncio.ensure_future(session.idle.wait())
        waits.append(idle)
        await asyncio.wait([waits[0], idle], timeout=config.drain_timeout, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
    finally:
        for w in waits:
            w.cancel()


async def _sleep_or_stop(delay: float, stop: asyncio.Event, drain: asyncio.Event | None = None) -> None:
    events = [asyncio.ensure_future(stop.wait())]
    if drain is not None:
        events.append(asyncio.ensure_future(drain.wait()))
    try:
        await asyncio.wait(events, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for event in events:
            event.cancel()
