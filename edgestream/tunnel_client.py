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
from websockets.protocol import State

from streamcerts.watch import shared_watch
from streamproto.aio.keepalive import shared_keepalive
from streamproto.aio.sockets import tune_tunnel_socket
from streamproto.tunnel import FEATURES_HEADER, Feature, backoff, format_features, parse_features

from .backends.base import Backend
from .cert_renewal import CertRenewal
from .config import EdgeConfig
from .session import AgentSession
from .stop import on_set

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
    # The reader runs in this task; stop, drain and a renewal close the tunnel from callbacks.
    closing: list[asyncio.Task[None]] = []
    renewed = False

    def close(code: int = 1001, reason: str = "edge shutting down") -> None:
        if not closing and ws.state is not State.CLOSED:
            closing.append(asyncio.create_task(ws.close(code, reason), name="tunnel-close"))

    def on_renewed() -> None:
        nonlocal renewed
        renewed = True
        close(1000, "edge certificate renewed: redialling")

    drainer: list[asyncio.Task[None]] = []

    def start_drain() -> None:
        drainer.append(asyncio.create_task(_drain_then_close(session, config, close), name="tunnel-drain"))

    removes = [on_set(stop, close)] + ([on_set(drain, start_drain)] if drain is not None else [])
    watch = renewal.start(session, on_renewed) if renewal is not None else None
    try:
        await session.run()
    except BaseException:  # cancelled (or a bug): still close the tunnel
        close()
        raise
    finally:
        keepalive.discard(ws)
        for remove in removes:
            remove()
        for task in drainer:
            task.cancel()
        looking = watch.cancel() if watch is not None else None
        await asyncio.gather(*drainer, *([looking] if looking else []), *closing, return_exceptions=True)
        if session.closed_reason is None:  # ended before its reader ran (cancelled): still ended
            session.closed_reason = "tunnel ended before it was served"
        if on_session is not None:
            on_session(None)
    # a warning when the tunnel was lost; the edge's own close (stop, drain, renewal) is news, not trouble
    (logger.info if renewed or closing else logger.warning)("x tunnel to %s ended: %s", where, session.closed_reason)
    return session, renewed


def _delays(config: EdgeConfig) -> Iterator[float]:
    return backoff(config.reconnect_initial, config.reconnect_max, config.reconnect_window)


async def _drain_then_close(session: AgentSession, config: EdgeConfig, close: Callable[[], None]) -> None:
    """``drain`` was set: refuse new streams, close when none is left (or after ``drain_timeout``)."""
    session.draining = True
    logger.info("x draining: %d streams running, new ones refused (up to %.0f s)", len(session.streams),
                config.drain_timeout)
    try:
        async with asyncio.timeout(config.drain_timeout):
            await session.idle.wait()
    except TimeoutError:
        pass
    close()


async def _sleep_or_stop(delay: float, stop: asyncio.Event, drain: asyncio.Event | None = None) -> None:
    """``delay`` seconds, or less when ``stop`` (or ``drain``) is set: a timer and callbacks, no task."""
    woken = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    removes = [on_set(e, wake) for e in (stop, drain) if e is not None]
    try:
        await asyncio.wait([woken], timeout=delay)
    finally:
        for remove in removes:
            remove()
        woken.cancel()
