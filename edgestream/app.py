"""edgestream's process: the backend and the tunnel loop, with a two-stage stop."""

from __future__ import annotations

import asyncio
import logging
import signal

from .backends import make_backend
from .config import EdgeConfig
from .node_endpoints import NodeEndpoints
from .tunnel_client import reload_certificates, run_tunnel

__all__ = ["serve"]

logger = logging.getLogger(__name__)


async def serve(config: EdgeConfig, stop: asyncio.Event | None = None) -> None:
    """Two-stage stop: the first SIGTERM/SIGINT drains (running streams finish, new ones get
    503), the second one, or ``drain_timeout``, stops."""
    stop = stop or asyncio.Event()
    drain = asyncio.Event()
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
    try:
        await run_tunnel(config, backend, stop, on_session=backend.on_session, drain=drain)
    finally:
        await backend.close()
        for sig in installed:
            loop.remove_signal_handler(sig)
