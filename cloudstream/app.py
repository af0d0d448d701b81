"""cloudstream's process: owns both servers, the session registry and the shutdown order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from streamcerts import server_context
from streamcerts.expiry import watch_cloud

from .cert_signer import CertSigner
from .admin import CloudAdmin
from .cert_reload import CloudCertificates
from .config import CloudConfig
from .egress.front import EgressFront
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
    admin_port: int = 0
    """0: no admin server."""


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
    """Run until SIGINT/SIGTERM (or ``stop`` is set), then shut down in order: stop accepting,
    let running streams finish for ``shutdown_grace`` (a second signal cuts it short), end the
    rest with an error to their clients, close the tunnels."""
    stop = stop or asyncio.Event()
    now = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    registry = SessionRegistry()
    kubelet_api: KubeletApiServer | None = None
    tunnel_listener: Listener | None = None
    egress: EgressFront | None = None

    def on_signal() -> None:
        (now if stop.is_set() else stop).set()

    certificates: CloudCertificates | None = None
    handlers: dict[int, Callable[[], None]] = {
        signal.SIGINT: on_signal, signal.SIGTERM: on_signal,
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
    stop_expiry = watch_cloud(loop, config)  # warnings 30/7/1 days ahead, checked daily
    kubelet_api = KubeletApiServer(config, registry, stream_tls)
    tunnel = await start_tunnel_server(config, registry, tunnel_tls, signer=CertSigner.from_config(config))
    tunnel_listener = tunnel.server if isinstance(tunnel.server, Listener) else None
    iptables_task: asyncio.Task[None] | None = None
    admin = CloudAdmin(
        config, registry, lambda: [x for x in (kubelet_api.server if kubelet_api else None, tunnel_listener) if x],
        stop.is_set,
    )
    kube_task: asyncio.Task[None] | None = None
    try:
        admin_port = await admin.server.start() if config.admin.enabled else 0
        # Hot reload (changed files, SIGHUP) and, with a serving CA, per-node certificates on 10003.
        certificates = CloudCertificates(config, registry, tunnel_tls, stream_tls)
        api = await kubelet_api.start()
        certificates.attach(tunnel_listener, kubelet_api)
        egress = EgressFront(config, registry, kubelet_api) if config.egress.enabled else None
        if egress is not None:
            await egress.start()
        running = Running(_port(tunnel), _port(api), registry, stop, admin_port)
        kubelet_api.tunnel_port = running.tunnel_port  # what 503s tell operators to check
        logger.info(
            "cloudstream ready: kubelet API on %s:%d, tunnel on %s:%d",
            config.stream_address, running.stream_port, config.tunnel_address, running.tunnel_port,
        )
        if config.iptables is not None:  # --manage-iptables: DNAT rules follow the connected tunnels
            from .iptables.loop import IptablesLoop

            iptables_loop = IptablesLoop(config.iptables, registry, running.stream_port)
            iptables_task = asyncio.create_task(iptables_loop.run())
        if config.kube is not None:  # KubeEdge's tunnel-port scheme (cloudstream/kube)
            from .kube.runner import KubeSide

            routes = iptables_loop.set_port_routes if config.iptables is not None else None
            kube_task = asyncio.create_task(KubeSide(config.kube, registry, routes).run())
        if on_ready is not None:
            on_ready(running)
        await stop.wait()
        if egress is not None:
            egress.stop_accepting()
        await _drain(config, kubelet_api, tunnel, registry, now)
    finally:
        if kube_task is not None:  # first: release our tunnel-port entry while the API is still ours
            kube_task.cancel()
            await asyncio.gather(kube_task, return_exceptions=True)
        if iptables_task is not None:
            iptables_task.cancel()
            await asyncio.gather(iptables_task, return_exceptions=True)
        if certificates is not None:
            certificates.detach()
        # 1. stop accepting, 2. end the streams left (their clients get the error), 3. end
        # API-server connections (egress front, then 10003), 4. close tunnels, 5. wait.
        tunnel.close(close_connections=False)
        kubelet_api.stop_accepting()
        if egress is not None:
            egress.stop_accepting()
        reason = "cloudstream is shutting down"
        for session in registry.sessions():
            if session.streams:  # the exec/attach relays tell their clients why (cut_status)
                session.closed_reason = session.closed_reason or f"{reason}: the streams' grace period is over"
            session.end_streams(session.closed_reason or reason)
        await kubelet_api.wait_busy(min(config.shutdown_timeout, 2.0))
        if egress is not None:
            await egress.close()
        await kubelet_api.close()
        sessions = registry.sessions()
        if sessions:
            await asyncio.wait([asyncio.ensure_future(s.close(reason)) for s in sessions], timeout=config.shutdown_timeout)
        await admin.server.close()
        try:
            async with asyncio.timeout(config.shutdown_timeout):
                await tunnel.wait_closed()
        except TimeoutError:
            logger.warning("! tunnels did not close within %.0f s", config.shutdown_timeout)
        stop_expiry()
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _drain(
    config: CloudConfig, kubelet_api: KubeletApiServer, tunnel: object, registry: SessionRegistry, now: asyncio.Event
) -> None:
    """Stop accepting on both ports; running streams go on for ``shutdown_grace``."""
    tunnel.close(close_connections=False)  # type: ignore[attr-defined]
    kubelet_api.stop_accepting()
    running = len(kubelet_api.busy)
    logger.info(
        "x shutting down: listeners closed, %d tunnels open, %d requests running get up to %g s to finish "
        "(--shutdown-grace; a second SIGTERM ends them now)", len(registry), running, config.shutdown_grace,
    )
    if running:
        left = await kubelet_api.wait_busy(config.shutdown_grace, now)
        if left:
            logger.warning("x ending %d streams still running after the grace period: their clients get an error", left)
