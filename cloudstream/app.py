"""cloudstream's process: owns both servers, the session registry and the shutdown order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from certs import server_context

from .cert_reload import CloudCertificates
from .config import CloudConfig
from .kubelet_api.server import KubeletApiServer
from .listener import Listener
from .registry import SessionRegistry
from .tunnel_server import start_tunnel_server

__all__ = ["Running", "serve"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Running:
    """Handed to ``on_ready``: where the servers listen (tests bind port 0)."""

    tunnel_port: int
    stream_port: int
    registry: SessionRegistry
    stop: asyncio.Event


def state(
    registry: SessionRegistry, api: KubeletApiServer | None = None, tunnel_listener: Listener | None = None
) -> dict[str, int]:
    """What this process holds right now: what an operator (and every leak test) asks first."""
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - not Linux
        fds = -1
    sessions = registry.sessions()
    return {
        "tunnels": len(sessions),
        "streams": sum(len(s.streams) for s in sessions),
        "mux_streams": sum(len(s.mux.streams) for s in sessions),
        "api_connections": len(api.connections) if api is not None else 0,
        "api_pending": api.server.pending if api is not None and api.server is not None else 0,
        "tunnel_pending": tunnel_listener.pending if tunnel_listener is not None else 0,
        "tasks": len(asyncio.all_tasks()),
        "fds": fds,
    }


def log_state(
    registry: SessionRegistry, api: KubeletApiServer | None = None, tunnel_listener: Listener | None = None
) -> None:
    """SIGUSR1: one line with the process's tunnels, streams, connections, tasks and descriptors."""
    logger.info("state %s", " ".join(f"{k}={v}" for k, v in state(registry, api, tunnel_listener).items()))


def _port(server: object) -> int:
    sockets = getattr(server, "sockets", None) or ()
    return int(next(iter(sockets)).getsockname()[1]) if sockets else 0


async def serve(config: CloudConfig, on_ready: Callable[[Running], None] | None = None, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or ``stop`` is set), then shut down in order."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    registry = SessionRegistry()
    kubelet_api: KubeletApiServer | None = None
    tunnel_listener: Listener | None = None
    certificates: CloudCertificates | None = None
    handlers: dict[int, Callable[[], None]] = {
        signal.SIGINT: stop.set, signal.SIGTERM: stop.set,
        signal.SIGUSR1: lambda: log_state(registry, kubelet_api, tunnel_listener),
    }
    for sig, handler in handlers.items():
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    tunnel_tls = server_context(
        config.tls_tunnel_cert_file, config.tls_tunnel_private_key_file, config.tls_tunnel_ca_file,
        require_client_cert=True, alpn=None,
    )
    # 10003: verify a certificate when one is offered; answer 401 ourselves when none is.
    stream_tls = server_context(
        config.tls_stream_cert_file, config.tls_stream_private_key_file, config.tls_stream_ca_file,
        require_client_cert=False, alpn=["http/1.1"],
    )
    kubelet_api = KubeletApiServer(config, registry, stream_tls)
    tunnel = await start_tunnel_server(config, registry, tunnel_tls)
    tunnel_listener = tunnel.server if isinstance(tunnel.server, Listener) else None
    try:
        # Hot reload (changed files, SIGHUP) and, with a serving CA, per-node certificates on 10003.
        certificates = CloudCertificates(config, registry, tunnel_tls, stream_tls)
        api = await kubelet_api.start()
        certificates.attach(tunnel_listener, kubelet_api)
        running = Running(_port(tunnel), _port(api), registry, stop)
        logger.info(
            "cloudstream ready: kubelet API on %s:%d, tunnel on %s:%d",
            config.stream_address, running.stream_port, config.tunnel_address, running.tunnel_port,
        )
        if on_ready is not None:
            on_ready(running)
        await stop.wait()
        logger.info("x shutting down: %d tunnels open", len(registry))
    finally:
        if certificates is not None:
            certificates.detach()
        # 1. stop accepting, 2. end API-server connections, 3. close tunnels, 4. wait.
        tunnel.close(close_connections=False)
        await kubelet_api.close()
        for session in registry.sessions():
            await session.close("cloudstream is shutting down")
        try:
            async with asyncio.timeout(config.shutdown_timeout):
                await tunnel.wait_closed()
        except TimeoutError:
            logger.warning("! tunnels did not close within %.0f s", config.shutdown_timeout)
        for sig in installed:
            loop.remove_signal_handler(sig)
