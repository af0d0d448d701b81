"""Keep one tunnel per cloudstream replica (our HA mode), or one tunnel (a Go cloudcore).

The edge dials the one (load-balanced) tunnel address, one dial at a time. Each ``101`` of a
kubeedge-stream cloud names its replica and the replica count (``streamproto/tunnel/replicas.py``);
each dial names the replicas the edge already holds, so a replica it holds refuses with ``409``
before the upgrade (no session, the held tunnel untouched). The edge keeps dialling, with
jittered backoff, until it holds one tunnel per replica:

- a 409 (the balancer sent us to a replica we hold) waits ``uniform(initial, 3 * previous)``
  up to ``BUSY_STRETCH * reconnect_max`` (``streamproto/tunnel/backoff.py``): spread, bounded, and it
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
from collections.abc import Callable, Coroutine, Iterator
from functools import partial
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidHandshake, InvalidStatus

from streamcerts.watch import ReloadingContext, shared_watch
from streamproto.tunnel import Feature, backoff
from streamproto.tunnel.replicas import HELD_HEADER, REPLICA_HEADER, format_held, parse_announcement

from .backends.base import Backend
from .cert_renewal import CertRenewal, tls_context
from .config import EdgeConfig
from .session import AgentSession
from .stop import on_set
from .tunnel_client import _STABLE_AFTER, _delays, _sleep_or_stop, describe_dial_error, dial, dial_headers, hold

__all__ = ["run_tunnels"]

logger = logging.getLogger("edgestream.tunnel_client")

_UNNAMED = ""
"""The key of a tunnel to a cloud that names no replica (a Go cloudcore): at most one."""


class _Tunnels:
    """The tunnels held now, by replica id (each a task, or for the tunnel the supervisor's own
    task serves, a future it completes), and the single ``on_session`` view of them: the newest
    live session, or None when none is up."""

    def __init__(self, on_session: Callable[[AgentSession | None], None] | None) -> None:
        self.tasks: dict[str, asyncio.Future[tuple[AgentSession, bool]]] = {}
        self.began: dict[str, float] = {}
        self.sessions: dict[str, AgentSession] = {}
        self._on_session = on_session

    def add(self, replica: str, held: asyncio.Future[tuple[AgentSession, bool]]) -> None:
        self.tasks[replica] = held
        self.began[replica] = time.monotonic()

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
    await _Supervisor(config, backend, stop, drain, on_session, on_dial_error).run()


class _Supervisor:
    """The dial loop (``_dial_loop``) and the tunnels it holds.

    Tasks: the caller's task runs the loop and, once every wanted tunnel is held, serves the
    last one dialled itself (``_serve_inline``); each other tunnel is a task. While it serves,
    timers and callbacks wake nothing until there is work: a tunnel lost or a probe due starts
    a helper task that runs the same loop until every wanted tunnel is held again. An idle
    edge with one tunnel is one task; with N replicas, N tasks."""

    def __init__(
        self, config: EdgeConfig, backend: Backend, stop: asyncio.Event, drain: asyncio.Event | None,
        on_session: Callable[[AgentSession | None], None] | None, on_dial_error: Callable[[str], None] | None,
    ) -> None:
        self.config, self.backend, self.stop, self.drain = config, backend, stop, drain
        self.on_dial_error = on_dial_error
        # Hot reload: changed files (or SIGHUP) give the next dial a new context; tunnels up keep theirs.
        self.tls = ReloadingContext(
            f"edge {config.node_name} TLS",
            [config.tls_tunnel_cert_file, config.tls_tunnel_private_key_file, config.tls_tunnel_ca_file],
            partial(tls_context, config),  # (tls_context also finishes a renewal a crash interrupted)
        )
        self.renewal = CertRenewal(config)
        self.offer = self.renewal.offer | ({Feature.REPLICAS} if config.ha else frozenset())
        self.tunnels = _Tunnels(on_session)
        self.target = 1
        self.failures = 0
        self.delays = _delays(config)
        self.busy_delays = _busy_delays(config)
        self.wait = 0.0  # before the next dial
        self.watcher: str | None = None  # the replica whose tunnel watches the certificate
        self.probing = False  # all known replicas held, and it is time to look for a new one
        self.inline: str | None = None  # the replica whose tunnel the caller's task serves
        self.helper: asyncio.Task[None] | None = None  # runs the loop meanwhile
        self._probe: asyncio.TimerHandle | None = None
        self._changed = False
        self._waiter: asyncio.Future[None] | None = None

    async def run(self) -> None:
        watch = shared_watch(asyncio.get_running_loop())
        watch.interval = self.config.cert_watch_interval
        watch.add(self.tls)
        try:
            await self._dial_loop(helper=False)
        finally:
            watch.discard(self.tls)
            if self.helper is not None:
                self.helper.cancel()
            held = [t for t in self.tunnels.tasks.values() if not t.done()]
            if held and self.stop.is_set():
                # each hold() saw ``stop`` and closes its tunnel: a cancel here would cut that close
                # handshake short and leave the cloud's side waiting for it
                await asyncio.wait(held, timeout=self.config.handshake_timeout + 2)
            pending: list[asyncio.Future[Any]] = list(self.tunnels.tasks.values())
            if self.helper is not None:
                pending.append(self.helper)
            for task in pending:
                task.cancel()  # we were cancelled (or a close hung): hold() still closes its tunnel
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    def _held_all(self) -> bool:
        return len(self.tunnels.tasks) >= self.target and not self.probing

    async def _dial_loop(self, helper: bool) -> None:
        """Dial until one tunnel per replica is held. The caller's task then waits for a change
        (or serves a tunnel inline); a helper returns."""
        config, tunnels, stop, drain = self.config, self.tunnels, self.stop, self.drain
        while not stop.is_set():
            if helper and self.inline is None:
                return  # the caller's task is free again: it takes the loop back
            self.wait, self.delays, self.failures = _after_losses(tunnels, config, self.delays, self.failures, self.wait)
            if drain is not None and drain.is_set():
                if helper or not tunnels.tasks:
                    return  # drained: every tunnel ended after its streams
                await self._wait_change(None)
                continue
            if self._held_all():
                if helper:
                    return
                probe = _probe_after(config) if _UNNAMED not in tunnels.tasks else None
                self.probing = not await self._wait_change(probe)
                continue
            was_probe, self.probing = self.probing, False
            if self.wait > 0:
                await _sleep_or_stop(self.wait, stop, drain)
                self.wait = 0.0
                if stop.is_set() or (drain is not None and drain.is_set()):
                    continue
            self.tls.check()  # the files as they are now (a renewed pair from here on), if they changed and load
            headers = dial_headers(config, self.offer)
            held = [r for r in tunnels.tasks if r != _UNNAMED]
            if config.ha and held:
                headers[HELD_HEADER] = format_held(held)
            try:
                ws = await dial(config, self.tls.current, headers)
            except InvalidStatus as exc:
                busy = parse_announcement(exc.response.headers.get(REPLICA_HEADER))
                if exc.response.status_code == 409 and busy is not None:
                    self.target = busy.replicas if config.ha else 1
                    # the balancer sent us to a replica we hold (a probe's 409 only refreshed the count)
                    self.wait = 0.0 if was_probe else next(self.busy_delays)
                    logger.debug("= dial landed on replica %s again (held: %s); next dial in %.1f s",
                                 exc.response.headers.get(REPLICA_HEADER), format_held(held), self.wait)
                    continue
                self.failures, self.wait = _failed(exc, config, self.failures, self.delays, self.on_dial_error)
                continue
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self.failures, self.wait = _failed(exc, config, self.failures, self.delays, self.on_dial_error)
                continue
            announced = parse_announcement(ws.response.headers.get(REPLICA_HEADER) if ws.response else None)
            replica = announced.replica_id if announced is not None else _UNNAMED
            if replica in tunnels.tasks:  # never two to one replica: close before any stream
                await ws.close(1000, f"node {config.node_name} already holds a tunnel to replica {replica or '?'}")
                self.wait = next(self.busy_delays)
                continue
            self.target = announced.replicas if announced is not None and config.ha else 1
            self.busy_delays = _busy_delays(config)
            if announced is not None and len(tunnels.tasks) + 1 < self.target:
                logger.info("= node %s holds %d of %d replicas", config.node_name, len(tunnels.tasks) + 1, self.target)
            if not helper and self.inline is None and len(tunnels.tasks) + 1 >= self.target:
                await self._serve_inline(ws, replica)
            else:
                task = asyncio.create_task(self._hold(ws, replica), name=f"tunnel-{config.node_name}-{replica or 'cloud'}")
                tunnels.add(replica, task)
                task.add_done_callback(self._tunnel_ended)

    def _hold(self, ws: ClientConnection, replica: str) -> Coroutine[Any, Any, tuple[AgentSession, bool]]:
        # one tunnel watches the certificate (a renewal is one CSR per edge, not per replica)
        renewal = self.renewal if self.watcher not in self.tunnels.tasks else None
        if renewal is not None:
            self.watcher = replica
        return hold(ws, self.config, self.backend, self.stop, self.drain, renewal,
                    self.tunnels.reporter(replica), replica)

    async def _serve_inline(self, ws: ClientConnection, replica: str) -> None:
        """Serve the tunnel in this task; a helper task dials meanwhile when there is work."""
        held: asyncio.Future[tuple[AgentSession, bool]] = asyncio.get_running_loop().create_future()
        serving = self._hold(ws, replica)
        self.tunnels.add(replica, held)
        self.inline = replica
        self._arm_probe()
        try:
            held.set_result(await serving)
        except asyncio.CancelledError:
            held.cancel()
            raise
        except Exception as exc:  # a bug: _after_losses says so, and the loop goes on
            held.set_exception(exc)
        finally:
            self.inline = None
            if self._probe is not None:
                self._probe.cancel()
                self._probe = None
        if self.helper is not None:  # one loop at a time: it returns once every tunnel is held
            if self.stop.is_set():
                self.helper.cancel()
            await asyncio.gather(self.helper, return_exceptions=True)

    def _arm_probe(self) -> None:
        probe = _probe_after(self.config) if _UNNAMED not in self.tunnels.tasks else None
        if probe is not None:
            self._probe = asyncio.get_running_loop().call_later(probe, self._probe_due)

    def _probe_due(self) -> None:
        self._probe = None
        self.probing = True
        self._start_helper()

    def _quiet(self) -> bool:
        """Nothing for a helper to do: no tunnel served inline, or stopping, or draining."""
        return self.inline is None or self.stop.is_set() or (self.drain is not None and self.drain.is_set())

    def _start_helper(self) -> None:
        if self.helper is not None or self._quiet():
            return
        self.helper = asyncio.create_task(self._dial_loop(helper=True), name=f"dial-{self.config.node_name}")
        self.helper.add_done_callback(self._helper_done)

    def _helper_done(self, task: asyncio.Task[None]) -> None:
        self.helper = None
        if not task.cancelled() and task.exception() is not None:
            logger.error("! node %s: dial loop crashed: %r", self.config.node_name, task.exception())
            return
        if self._quiet():
            return
        if not self._held_all() or any(t.done() for t in self.tunnels.tasks.values()):
            self._start_helper()  # a tunnel ended just as it returned
        elif self._probe is None:
            self._arm_probe()

    def _tunnel_ended(self, _task: asyncio.Future[Any]) -> None:
        self._changed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._start_helper()

    async def _wait_change(self, timeout: float | None) -> bool:
        """Until a tunnel ends, or stop (or drain) is set: True; False when ``timeout`` passed
        first. A future that callbacks complete, no task."""
        if not self._changed:
            self._waiter = waiter = asyncio.get_running_loop().create_future()

            def wake() -> None:
                if not waiter.done():
                    waiter.set_result(None)

            removes = [on_set(e, wake) for e in (self.stop, self.drain) if e is not None]
            try:
                await asyncio.wait([waiter], timeout=timeout)
            finally:
                self._waiter = None
                for remove in removes:
                    remove()
                waiter.cancel()
            if not waiter.done() or waiter.cancelled():
                return False
        self._changed = False
        return True


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
        if time.monotonic() - tunnels.began.pop(replica, 0.0) > _STABLE_AFTER:
            delays = _delays(config)
            failures = 0
        if not renewed:
            wait = max(wait, next(delays))
    return wait, delays, failures


def _probe_after(config: EdgeConfig) -> float | None:
    """Seconds until a probe dial: uniform over 0.5-1.5 of the interval. The spread matters
    behind a round-robin balancer: with 0.8-1.2 the edges' order persisted for rounds, so an
    edge whose probe kept being another replica's turn missed a new replica for dozens of
    intervals (1 scale-up in 17 took over 40; tests/unit/edgestream/test_probe_spread.py)."""
    if not config.ha or config.replica_probe_interval <= 0:
        return None
    return config.replica_probe_interval * (0.5 + random.random())
