"""The admin HTTP server (aiohttp) each process runs on its own port, apart from the tunnel
and the kubelet API.

``/metrics``: the process's ``CollectorRegistry`` in Prometheus' text format (collected at
scrape time from state the process keeps anyway: nothing is counted per message for it).
``/healthz``: the process is alive and its event loop turns (the lag of one loop iteration
is measured and must stay under ``max_loop_lag``). ``/readyz``: the process's own readiness
(cloud: both listeners serving; edge: tunnel up), 503 with the reason otherwise.
``/debug/nodes``, ``/debug/streams``: JSON views with a cap (``?limit=``, at most
``MAX_DEBUG_ITEMS``); a capped view says ``"truncated": true`` and the total.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .config import AdminConfig

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["DEFAULT_DEBUG_ITEMS", "MAX_DEBUG_ITEMS", "AdminServer", "Debug"]

logger = logging.getLogger(__name__)

DEFAULT_DEBUG_ITEMS = 100
MAX_DEBUG_ITEMS = 1000


@dataclass(frozen=True, slots=True)
class Debug:
    """What the process shows on the admin port besides its metrics."""

    ready: Callable[[], str | None]
    """None when ready, else why not (the 503's body)."""
    nodes: Callable[[int], tuple[int, list[dict[str, object]]]]
    """(total, the first ``limit`` entries)."""
    streams: Callable[[int], tuple[int, list[dict[str, object]]]]


class AdminServer:
    def __init__(
        self, config: AdminConfig, registry: CollectorRegistry, debug: Debug, *, name: str,
        max_loop_lag: float = 2.0,
    ) -> None:
        self.config = config
        self.registry = registry
        self.debug = debug
        self.name = name
        self.max_loop_lag = max_loop_lag
        self.port = 0
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        from aiohttp import web  # imported when the port is on: it costs a process 0.2-1 s to start

        app = web.Application(client_max_size=1024)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/debug/nodes", self._nodes)
        app.router.add_get("/debug/streams", self._streams)
        return app

    async def start(self) -> int:
        """Listen; returns the bound port. An address that cannot be bound is fatal (OSError)."""
        from aiohttp import web

        # No access log: a prober every few seconds would fill the log with nothing.
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.address, self.config.port or 0, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(
                exc.errno, f"cannot serve the admin port on {self.config.address}:{self.config.port} "
                f"({exc.strerror or exc}): pick another --admin-port, or leave it off",
            ) from exc
        server = site._server  # aiohttp keeps the asyncio.Server there; the only way to read port 0 back
        sockets = getattr(server, "sockets", None) or ()
        self.port = int(sockets[0].getsockname()[1]) if sockets else int(self.config.port or 0)
        logger.info(
            "%s admin on http://%s:%d (/metrics /healthz /readyz /debug/nodes /debug/streams)%s",
            self.name, self.config.address, self.port, "" if self.config.loopback else "; not loopback: reachable "
            "from other hosts",
        )
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # ------------------------------------------------------------------ handlers

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        loop = asyncio.get_running_loop()
        began = time.monotonic()
        turned: asyncio.Future[None] = loop.create_future()
        loop.call_soon(turned.set_result, None)
        await turned
        lag = time.monotonic() - began
        if lag > self.max_loop_lag:
            return web.Response(status=503, text=f"event loop lag {lag:.3f} s (limit {self.max_loop_lag:g} s)\n")
        return web.Response(text=f"ok (event loop lag {lag * 1000:.1f} ms)\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        problem = self.debug.ready()
        if problem is not None:
            return web.Response(status=503, text=f"not ready: {problem}\n")
        return web.Response(text="ok\n")

    async def _nodes(self, request: web.Request) -> web.Response:
        return self._listing(request, "nodes", self.debug.nodes)

    async def _streams(self, request: web.Request) -> web.Response:
        return self._listing(request, "streams", self.debug.streams)

    def _listing(
        self, request: web.Request, key: str, source: Callable[[int], tuple[int, list[dict[str, object]]]]
    ) -> web.Response:
        from aiohttp import web

        try:
            limit = int(request.query.get("limit", DEFAULT_DEBUG_ITEMS))
        except ValueError:
            return web.json_response({"error": "limit must be an integer"}, status=400)
        limit = max(0, min(limit, MAX_DEBUG_ITEMS))
        total, items = source(limit)
        items = items[:limit]
        return web.json_response({"total": total, "truncated": total > len(items), "limit": limit, key: items})
