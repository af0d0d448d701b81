"""Keep one tunnel per cloudstream replica (our HA mode), or one tunnel (a Go cloudcore).

The edge dials the one (load-balanced) tunnel address, one dial at a time. Each ``101`` of a
kubeedge-stream cloud names its replica and the replica count (``proto/tunnel/replicas.py``);
each dial names the replicas the edge already holds, so a replica it holds refuses with ``409``
before the upgrade (no session, the held tunnel untouched). The edge keeps dialling, with
jittered backoff, until it holds one tunnel per replica:

- a 409 (the balancer sent us to a replica we hold) waits ``uniform(initial, 3 * previous)``
  up to ``BUSY_STRETCH * reconnect_max`` (``proto/tunnel/backoff.py``): spread, bounded, and it
  converges with round-robin or leastconn because every dial is a fresh TCP connection the
  balancer places;
- a failed dial or a lost tunnel waits the ordinary reconnect backoff;
- never two tunnels to the same replica: a 101 from a replica already held (a cloud that did
  not refuse) is closed at once with 1000, before any stream.

While it holds every replica it knows of, an edge dials once every ``replica_probe_interval``
(300 s, jittered): a 409 refreshes the count, a new replica (scale-up) accepts. A cloud that
names no replica (Go cloudcore, or ``--single-tunnel``) gets exactly one tunnel.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from functools import partial

from websockets.exceptions import InvalidHandshake, InvalidStatus

from certs.watch import ReloadingContext, shared_watch
from proto.tunnel import Feature, backoff
from proto.tunnel.replicas import HELD_HEADER, REPLICA_HEADER, format_held, parse_announcement

from .backends.base import Backend
from .cert_renewal import CertRenewal, tls_context
from .config import EdgeConfig
from .session import AgentSession
from .tunnel_client import _STABLE_AFTER, _delays, _sleep_or_stop, describe_dial_error, dial, dial_headers, hold

__all__ = ["run_tunnels"]

logger = logging.getLogger("edgestream.tunnel_client")

_UNNAMED = ""
"""The key of a tunnel to a cloud that names no replica (a Go cloudcore): at most one."""


class _Tunnels:
    """The tunnels held now, by replica id, and the single ``on_session`` view of them: the
    newest live session, or None when none is up."""

    def __init__(self, on_session: Callable[[AgentSession | None], None] | None) -> None:
        self.tasks: dict[str, asyncio.Task[tuple[AgentSession, bool]]] = {}
        self.sessions: dict[str, AgentSession] = {}
        self.changed = asyncio.Event()
        self._on_session = on_session

    def reporter(self, replica: str) -> Callable[[AgentSession | None], None]:
        def report(session: AgentSession | None) -> None:
            if session is None:
                self.sessions.pop(replica, None)
            else:
                self.sessions[replica] = session
            if self._on_session is not None:
                self._on_session(session if session is not None else next(reversed(self.sessions.values()), None))
        return report


async def run_tunnels(
    config: EdgeConfig,
    backend: Backend,
    stop: asyncio.Event,
    on_session: Callable[[AgentSession | None], None] | None = None,
    drain: asyncio.Event | None = None,
    on_dial_error: Callable[[str], None] | None = None,
) -> None:
    # Hot reload: changed files (or SIGHUP) give the next dial a new context; tunnels up keep theirs.
    tls = ReloadingContext(
        f"edge {config.node_name} TLS",
        [config.tls_tunnel_cert_file, config.tls_tunnel_private_key_file, config.tls_tunnel_ca_file],
        partial(tls_context, config),  # (tls_context also finishes a renewal a crash interrupted)
    )
    file_watch = shared_watch(asyncio.get_running_loop())
    file_watch.interval = config.cert_watch_interval
    file_watch.add(tls)
    renewal = CertRenewal(config)
    offer = renewal.offer | ({Feature.REPLICAS} if config.ha else frozenset())
    tunnels = _Tunnels(on_session)
    target = 1
    failures = 0
    delays = _delays(config)
    busy_delays = _busy_delays(config)
    wait = 0.0  # before the next dial
    watcher: str | None = None  # the replica whose tunnel watches the certificate
    probing = False  # all known replicas held, and it is time to look for a new one
    try:
        while not stop.is_set():
            wait, delays, failures = _after_losses(tunnels, config, delays, failures, wait)
            if drain is not None and drain.is_set():
                if not tunnels.tasks:
                    return  # drained: every tunnel ended after its streams
                await _wait_change(tunnels, stop, None)
                continue
            if len(tunnels.tasks) >= target and not probing:
                probe = _probe_after(config) if _UNNAMED not in tunnels.tasks else None
                probing = not await _wait_change(tunnels, stop, drain, probe)
                continue
            was_probe, probing = probing, False
            if wait > 0:
                await _sleep_or_stop(wait, stop, drain)
                wait = 0.0
                if stop.is_set() or (drain is not None and drain.is_set()):
                    continue
            tls.check()  # the files as they are now (a renewed pair from here on), if they changed and load
            headers = dial_headers(config, offer)
            held = [r for r in tunnels.tasks if r != _UNNAMED]
            if config.ha and held:
                headers[HELD_HEADER] = format_held(held)
            try:
                ws = await dial(config, tls.current, headers)
            except InvalidStatus as exc:
                busy = parse_announcement(exc.response.headers.get(REPLICA_HEADER))
                if exc.response.status_code == 409 and busy is not None:
                    target = busy.replicas if config.ha else 1
                    # the balancer sent us to a replica we hold (a probe's 409 only refreshed the count)
                    wait = 0.0 if was_probe else next(busy_delays)
                    logger.debug("= dial landed on replica %s again (held: %s); next dial in %.1f s",
                                 exc.response.headers.get(REPLICA_HEADER), format_held(held), wait)
                    continue
                failures, wait = _failed(exc, config, failures, delays, on_dial_error)
                continue
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                failures, wait = _failed(exc, config, failures, delays, on_dial_error)
                continue
            announced = parse_announcement(ws.response.headers.get(REPLICA_HEADER) if ws.response else None)
            replica = announced.replica_id if announced is not None else _UNNAMED
            if replica in tunnels.tasks:  # never two to one replica: close before any stream
                await ws.close(1000, f"node {config.node_name} already holds a tunnel to replica {replica or '?'}")
                wait = next(busy_delays)
                continue
            target = announced.replicas if announced is not None and config.ha else 1
            busy_delays = _busy_delays(config)
            # one tunnel watches the certificate (a renewal is one CSR per edge, not per replica)
            watch = renewal if watcher not in tunnels.tasks else None
            if watch is not None:
                watcher = replica
            task = asyncio.create_task(
                hold(ws, config, backend, stop, drain, watch, tunnels.reporter(replica), replica),
                name=f"tunnel-{config.node_name}-{replica or 'cloud'}",
            )
            task.kes_began = time.monotonic()  # type: ignore[attr-defined]
            tunnels.tasks[replica] = task
            task.add_done_callback(lambda _t: tunnels.changed.set())
            if announced is not None and len(tunnels.tasks) < target:
                logger.info("= node %s holds %d of %d replicas", config.node_name, len(tunnels.tasks), target)
    finally:
        file_watch.discard(tls)
        if tunnels.tasks and stop.is_set():
            # each hold() sees ``stop`` and closes its tunnel: a cancel here would cut that close
            # handshake short and leave the cloud's side waiting for it
            await asyncio.wait(tunnels.tasks.values(), timeout=config.handshake_timeout + 2)
        for task in tunnels.tasks.values():
            task.cancel()  # we were cancelled (or a close hung): hold() still closes its tunnel
        if tunnels.tasks:
            await asyncio.gather(*tunnels.tasks.values(), return_exceptions=True)


BUSY_STRETCH = 2.5
"""A 409 means a live replica did a TLS handshake for nothing: while a replica stays away
(killed, rolling update) the edges' dials land on the others. So 409s back off to a longer cap
than failed dials, ``BUSY_STRETCH * reconnect_max`` (15 s by default): N edges cost about
N / 9 handshakes per second meanwhile, and an edge re-attaches within a few such waits after
the replica is back (at once with ``balance leastconn``, which sends new dials to the replica
with the fewest tunnels: the one that just came back)."""


def _busy_delays(config: EdgeConfig) -> Iterator[float]:
    """After a 409: short and spread at first (the balancer's next pick is likely another
    replica), then up to the longer busy cap while the missing replica stays away."""
    initial = min(0.2, config.reconnect_initial)
    return backoff(initial, max(initial, BUSY_STRETCH * config.reconnect_max), first_window=initial * 2)


def _failed(
    exc: BaseException, config: EdgeConfig, failures: int, delays: Iterator[float],
    on_dial_error: Callable[[str], None] | None,
) -> tuple[int, float]:
    failures += 1
    delay = next(delays)
    why = describe_dial_error(exc, config)
    if on_dial_error is not None:
        on_dial_error(why)
    log = logger.warning if failures <= 3 or failures % 20 == 0 else logger.debug
    log("! tunnel to %s failed (attempt %d): %s; retrying in %.1f s", config.server, failures, why, delay)
    return failures, delay


def _after_losses(
    tunnels: _Tunnels, config: EdgeConfig, delays: Iterator[float], failures: int, wait: float
) -> tuple[float, Iterator[float], int]:
    """Reap ended tunnels; a lost one waits the reconnect backoff before its redial (a renewed
    one redials at once), a tunnel that lived long resets that backoff."""
    for replica, task in list(tunnels.tasks.items()):
        if not task.done():
            continue
        del tunnels.tasks[replica]
        renewed = False
        if not task.cancelled() and task.exception() is None:
            renewed = task.result()[1]
        elif not task.cancelled():
            logger.error("! tunnel to replica %s crashed: %r", replica or config.server, task.exception())
        if time.monotonic() - getattr(task, "kes_began", 0.0) > _STABLE_AFTER:
            delays = _delays(config)
            failures = 0
        if not renewed:
            wait = max(wait, next(delays))
    return wait, delays, failures


def _probe_after(config: EdgeConfig) -> float | None:
    """Seconds until a probe dial (uniform over 0.8-1.2 of the interval: N edges spread out)."""
    if not config.ha or config.replica_probe_interval <= 0:
        return None
    return config.replica_probe_interval * (0.8 + 0.4 * random.random())


async def _wait_change(
    tunnels: _Tunnels, stop: asyncio.Event, drain: asyncio.Event | None, timeout: float | None = None
) -> bool:
    """Until a tunnel ends, or stop (or drain) is set: True; False when ``timeout`` passed first."""
    waits = [asyncio.ensure_future(tunnels.changed.wait()), asyncio.ensure_future(stop.wait())]
    if drain is not None:
        waits.append(asyncio.ensure_future(drain.wait()))
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    tunnels.changed.clear()
    return bool(done)
