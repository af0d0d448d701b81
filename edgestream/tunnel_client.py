"""Dial cloudstream, keep the tunnel up, redial with backoff, say why it failed.

The dial carries what a Go edgecore sends (``SessionHostNameOverride``, ``SessionInternalIP``,
no Origin, no subprotocol, no compression) plus ``X-Kubeedge-Stream-Features``, which a Go
cloud ignores. Unlike a Go edge we verify the cloud's certificate (``verify_server``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Iterator

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from proto.aio.keepalive import shared_keepalive
from proto.aio.sockets import tune_tunnel_socket
from proto.tunnel import FEATURES_HEADER, Feature, backoff, format_features, parse_features

from .backends.base import Backend
from .cert_renewal import CertRenewal, tls_context
from .config import EdgeConfig
from .session import AgentSession

__all__ = ["SUPPORTED_FEATURES", "describe_dial_error", "run_tunnel"]

logger = logging.getLogger(__name__)

SUPPORTED_FEATURES = frozenset({Feature.STATUS, Feature.PORTFORWARD, Feature.FLOW})
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


async def run_tunnel(
    config: EdgeConfig,
    backend: Backend,
    stop: asyncio.Event,
    on_session: Callable[[AgentSession | None], None] | None = None,
    drain: asyncio.Event | None = None,
    on_dial_error: Callable[[str], None] | None = None,
) -> None:
    """Keep one tunnel up until ``stop`` is set. When ``drain`` is set first, refuse new
    streams and let running ones finish (up to ``drain_timeout``), then stop.
    ``on_dial_error`` hears why each failed dial failed (the admin port's readiness says it)."""
    tls = tls_context(config)
    renewal = CertRenewal(config)
    headers = {
        "SessionHostNameOverride": config.node_name,
        "SessionInternalIP": config.node_ip,
        FEATURES_HEADER: format_features(SUPPORTED_FEATURES | renewal.offer),
    }
    delays = _delays(config)
    failures = 0
    while not stop.is_set():
        if drain is not None and drain.is_set():
            return  # draining with no tunnel: nothing runs, so we are done
        tls = tls_context(config, tls)  # the files as they are now: a renewed pair from here on
        try:
            ws = await connect(
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
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            failures += 1
            delay = next(delays)
            if on_dial_error is not None:
                on_dial_error(describe_dial_error(exc, config))
            log = logger.warning if failures <= 3 or failures % 20 == 0 else logger.debug
            log("! tunnel to %s failed (attempt %d): %s; retrying in %.1f s", config.server, failures,
                describe_dial_error(exc, config), delay)
            await _sleep_or_stop(delay, stop, drain)
            continue
        features = parse_features(ws.response.headers.get(FEATURES_HEADER) if ws.response else None)
        keepalive = shared_keepalive()
        keepalive.add(ws, config.ping_interval, config.ping_timeout if features else config.ping_timeout_go)
        tune_tunnel_socket(ws.transport.get_extra_info("socket"))
        session = AgentSession(ws, config, features, backend)
        session.peer = f"cloudstream at {config.server}"  # names the other side in misbehaviour warnings
        logger.info(
            "= tunnel up to %s as node %s, features [%s]",
            config.server, config.node_name, format_features(features) or "none: Go cloudcore",
        )
        if on_session is not None:
            on_session(session)
        began = time.monotonic()
        runner = asyncio.create_task(session.run())
        stopper = asyncio.create_task(_drained_or_stopped(session, config, stop, drain))
        renewer = asyncio.create_task(renewal.watch(session))  # True: a renewed pair, no stream running
        renewed = False
        try:
            await asyncio.wait((runner, stopper, renewer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            keepalive.discard(ws)
            stopper.cancel()
            renewer.cancel()
            renewed = renewer.done() and not renewer.cancelled() and renewer.exception() is None and renewer.result()
            if not runner.done():
                await (ws.close(1000, "edge certificate renewed: redialling") if renewed
                       else ws.close(1001, "edge shutting down"))
                await runner
            await asyncio.gather(renewer, return_exceptions=True)
            if on_session is not None:
                on_session(None)
        (logger.info if renewed else logger.warning)("x tunnel to %s ended: %s", config.server, session.closed_reason)
        if time.monotonic() - began > _STABLE_AFTER:
            delays = _delays(config)
            failures = 0
        if not stop.is_set() and not renewed:
            await _sleep_or_stop(next(delays), stop, drain)


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
