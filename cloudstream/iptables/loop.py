"""``cloudstream --manage-iptables``: the nat rules follow the connected tunnels.

The registry calls back on every binding change; the loop waits for the tunnels to be quiet for
``debounce`` seconds (at most ``max_delay`` after the first change), then runs one sync in a
thread: one ``iptables-save`` and at most one ``iptables-restore`` per round, whatever the churn
(a reconnect wave of 1,000 edges is a handful of writes). Without a change it still syncs every
``resync_interval`` (a rule someone flushed comes back); a failed sync is retried with doubling
delays, logged once per cause (rate-limited). On shutdown the rules stay: the API server's
connections keep coming here (and are refused quickly) rather than to unreachable node IPs, and a
restarted cloudstream takes over the same rules; ``cloudstream iptables cleanup`` removes them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time

from streamproto.aio.ratelog import RateLimitedLog
from streamproto.tunnel.errors import ConfigError

from ..registry import SessionRegistry
from . import manager
from .backend import Iptables, IptablesError, choose
from .rules import EdgeNode, PortRoute, RuleConfig
from .settings import IptablesSettings

__all__ = ["IptablesLoop"]

logger = logging.getLogger("cloudstream.iptables")


class IptablesLoop:
    def __init__(
        self, settings: IptablesSettings, registry: SessionRegistry, stream_port: int,
        tables: tuple[Iptables, list[Iptables]] | None = None,
    ) -> None:
        self.settings = settings
        self.rules: RuleConfig = dataclasses.replace(settings.rules, to_port=stream_port)
        self.registry = registry
        self._tables = tables
        self._changed = asyncio.Event()
        self._inherited: dict[str, str] | None = None
        """ip -> name of rules found at start, kept for ``startup_grace`` unless the node comes back."""
        self._log = RateLimitedLog(logger, interval=60.0)
        self.syncs = 0
        self.writes = 0
        self.port_routes: tuple[PortRoute, ...] = ()
        """KubeEdge tunnel-port entries (``cloudstream/kube``): one DNAT rule per replica port."""

    def set_port_routes(self, routes: list[tuple[int, str]]) -> None:
        """The tunnel-port record changed: (port, replica IP) pairs; resync when they differ."""
        wanted = []
        for port, ip in routes:
            try:
                wanted.append(PortRoute(port, ip))
            except ConfigError as exc:
                self._log.event(("port-route", port), "tunnel port %d gets no DNAT rule: %s", port, exc)
        if tuple(wanted) != self.port_routes:
            self.port_routes = tuple(wanted)
            self._changed.set()

    def desired(self, now: float, started: float) -> list[EdgeNode]:
        nodes: dict[str, EdgeNode] = {}
        for ip, name in self.registry.bound_ips(self.settings.verified_only).items():
            try:
                node = EdgeNode(name, ip)
            except ConfigError as exc:  # an IPv6 node IP, say: ip6tables is not managed
                self._log.event(("skip", name), "node %s gets no DNAT rule: %s", name, exc)
                continue
            if self.settings.allow and not any(ipaddress.IPv4Address(node.ip) in net for net in self.settings.allow):
                self._log.event(("outside", name), "node %s gets no DNAT rule: its IP %s is outside --iptables-allow-cidr %s",
                                name, ip, ",".join(map(str, self.settings.allow)))
                continue
            nodes[node.ip] = node
        if self._inherited is not None:
            if now - started >= self.settings.startup_grace:
                self._inherited = None
            else:
                for ip in list(self._inherited):
                    if ip in nodes:  # the node is back: from now on its tunnel decides
                        del self._inherited[ip]
                    else:
                        nodes[ip] = EdgeNode(self._inherited[ip], ip)
        return list(nodes.values())

    async def run(self) -> None:
        """Until cancelled; never raises an iptables failure (it is logged and retried)."""
        unwatch = self.registry.watch(self._changed.set)
        started = time.monotonic()
        delay = self.settings.retry_interval
        try:
            if self._tables is None:
                tables, others, why = await asyncio.to_thread(choose, self.settings.backend, chain=self.rules.chain)
                self._tables = (tables, others)
                logger.info("iptables backend %s (%s); chain %s, DNAT to %s:%d", tables.name, why, self.rules.chain,
                            self.rules.to_address, self.rules.to_port)
            timeout = 0.0
            while True:  # bounded: one sync per wake-up, wake-ups spaced by the debounce or the resync interval
                if timeout:
                    try:
                        async with asyncio.timeout(timeout):
                            await self._changed.wait()
                        await self._settle()
                    except TimeoutError:
                        pass
                self._changed.clear()
                try:
                    await self.sync_once(started)
                    delay, timeout = self.settings.retry_interval, self.settings.resync_interval
                    if self._inherited:  # wake up when the grace ends, to drop what did not come back
                        grace_left = started + self.settings.startup_grace - time.monotonic()
                        timeout = max(0.01, min(timeout, grace_left + 0.01))
                except IptablesError as exc:
                    self._log.event(("failed", type(exc)), "iptables sync failed (retrying): %s", exc)
                    timeout, delay = delay, min(delay * 2, self.settings.resync_interval)
        except (IptablesError, ConfigError) as exc:  # no usable backend: nothing to retry
            logger.error("! --manage-iptables: %s; serving without managed rules", exc)
        finally:
            unwatch()
            if self._tables is not None:
                logger.info("iptables rules left in place (cloudstream iptables cleanup removes them)")

    async def _settle(self) -> None:
        """Wait until no change for ``debounce`` seconds, ``max_delay`` at most."""
        deadline = time.monotonic() + self.settings.max_delay
        while True:
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                async with asyncio.timeout(min(self.settings.debounce, left)):
                    await self._changed.wait()
            except TimeoutError:
                return

    async def sync_once(self, started: float) -> None:
        assert self._tables is not None
        tables, others = self._tables
        if self._inherited is None and self.syncs == 0:
            current = await asyncio.to_thread(tables.read)
            self._inherited = current.nodes(self.rules)
        nodes = self.desired(time.monotonic(), started)
        outcome = await asyncio.to_thread(manager.sync, self.rules, nodes, tables, others, False, self.port_routes)
        self.syncs += 1
        if outcome.changes:
            self.writes += 1
            logger.info("%s (%d nodes)", outcome.summary(), len(nodes))
