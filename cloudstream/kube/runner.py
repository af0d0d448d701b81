"""The Kubernetes side of one cloudstream replica: claim, write node ports, follow the record, release."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from streamproto.aio.ratelog import RateLimitedLog
from streamproto.tunnel.errors import ConfigError

from ..registry import SessionRegistry
from .client import core_v1
from .node_port import KubeletPortWriter
from .settings import KubeSettings
from .tunnelport import Claim, KubeApiError, TunnelPortClaimer
from .watch import watch_record

__all__ = ["KubeSide"]

logger = logging.getLogger("cloudstream.kube")

CLAIM_RETRY = 10.0
"""Seconds between claim attempts after one failed whole (RBAC missing, API down)."""
RELEASE_TIMEOUT = 5.0


class KubeSide:
    def __init__(
        self, settings: KubeSettings, registry: SessionRegistry,
        on_routes: Callable[[list[tuple[int, str]]], None] | None = None,
    ) -> None:
        self.settings, self.registry, self.on_routes = settings, registry, on_routes
        self.claim: Claim | None = None
        self.claimed = asyncio.Event()
        self.writer: KubeletPortWriter | None = None

    async def run(self) -> None:
        """Until cancelled; a cancel (clean shutdown) releases our record entry first."""
        try:
            await self._run()
        except ConfigError as exc:  # a kubeconfig that does not load: say so, keep serving tunnels
            logger.error("! Kubernetes API: %s; serving without the tunnel-port scheme", exc)

    async def _run(self) -> None:
        log = RateLimitedLog(logger, interval=60.0)
        async with core_v1(self.settings) as core:
            claimer = TunnelPortClaimer(core, self.settings)
            try:
                while self.claim is None:  # bounded: one whole claim per CLAIM_RETRY
                    try:
                        self.claim = await claimer.claim()
                    except (KubeApiError, ConfigError) as exc:
                        log.event(("claim",), "! tunnel port: %s; retrying every %.0f s", exc, CLAIM_RETRY)
                        await asyncio.sleep(CLAIM_RETRY)
                self.claimed.set()
                self.writer = KubeletPortWriter(core, self.settings, self.registry, self.claim.port)
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self.writer.run())
                    if self.on_routes is not None:
                        on_routes = self.on_routes
                        tg.create_task(watch_record(core, self.settings, lambda r: on_routes(r.routes())))
            finally:
                if claimer.port is not None:
                    try:
                        async with asyncio.timeout(RELEASE_TIMEOUT):
                            await claimer.release()
                    except Exception as exc:  # the entry stays; KubeEdge's pod-deletion cleanup or a restart takes it
                        logger.warning("! tunnel port %d of %s not released: %s", claimer.port, claimer.ip, exc)
