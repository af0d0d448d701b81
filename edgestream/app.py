"""edgestream's process: the backend and the tunnel loop, with a two-stage stop."""

from __future__ import annotations

import asyncio
import logging
import signal

from streamcerts.expiry import watch_edge

from .admin import EdgeAdmin
from .backends import make_backend
from .config import EdgeConfig
from .node_endpoints import NodeEndpoints
from .stop import StopEvent
from .tunnel_client import reload_certificates, run_tunnel

__all__ = ["serve"]

logger = logging.getLogger(__name__)


async def serve(config: EdgeConfig, stop: asyncio.Event | None = None) -> None:
    """Two-stage stop: the first SIGTERM/SIGINT drains (running streams finish, new ones get
    503), the second one, or ``drain_timeout``, stops."""
    stop = stop or StopEvent()
    drain = StopEvent()  # callbacks, not a watching task per tunnel (edgestream/stop.py)
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if drain.is_set():
            stop.set()
        else:
            drain.set()

    installed = []
    for sig, handler in ((signal.SIGINT, on_signal), (signal.SIGTERM, on_signal), (signal.SIGHUP, reload_certificates)):
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    backend = NodeEndpoints(make_backend(config), config)  # /healthz, /metrics, stream counts
    logger.info("edgestream node %s, backend %s, cloud %s", config.node_name, config.backend, config.server)
    stop_expiry = watch_edge(loop, config)  # warnings 30/7/1 days ahead, checked daily
    admin = EdgeAdmin(config.admin, lambda: [backend], drain.is_set)
    try:
        if config.admin.enabled:
            await admin.server.start()
        await run_tunnel(config, backend, stop, on_session=backend.on_session, drain=drain,
                         on_dial_error=backend.on_dial_error)
    finally:
        stop_expiry()
        await admin.server.close()
        await backend.close()
        for sig in installed:
            loop.remove_signal_handler(sig)
