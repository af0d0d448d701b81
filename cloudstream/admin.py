"""cloudstream's admin port: what ``/metrics`` collects, what ``/readyz`` checks, and the JSON
views of connected nodes and live streams (``streamops.admin.server`` serves them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from streamops.admin import AdminServer, Debug
from streamops.admin.certexpiry import CertExpiryCollector
from streamops.admin.labels import kind_name

from .config import CloudConfig
from .listener import Listener
from .metrics import CloudCollector
from .registry import SessionRegistry

__all__ = ["CloudAdmin"]


class CloudAdmin:
    """Readiness: both listeners serving and no shutdown begun."""

    def __init__(
        self, config: CloudConfig, registry: SessionRegistry, listeners: Callable[[], list[Listener]],
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config = config
        self.registry = registry
        self.listeners = listeners
        self.stopping = stopping
        """True from the first SIGTERM on (read in the handler itself: 503 at once, not a loop turn later)."""
        self.metrics: CollectorRegistry = registry.stats.registry
        self.metrics.register(CloudCollector(registry, listeners))
        self.metrics.register(CertExpiryCollector(self.cert_files))
        ProcessCollector(registry=self.metrics)
        PlatformCollector(registry=self.metrics)
        self.server = AdminServer(
            config.admin, self.metrics, Debug(ready=self.ready, nodes=self.nodes, streams=self.streams), name="cloudstream"
        )

    def cert_files(self) -> list[Path]:
        c = self.config
        return [c.tls_tunnel_cert_file, c.tls_tunnel_ca_file, c.tls_stream_cert_file, c.tls_stream_ca_file]

    def ready(self) -> str | None:
        if self.stopping():
            return "cloudstream is shutting down: running streams finish, nothing new is accepted"
        listeners = self.listeners()
        if len(listeners) < 2:
            return "the listeners are not bound yet"
        for listener in listeners:
            if not listener.is_serving():
                return f"the {listener.name} listener (port {listener.port}) is not serving"
        return None

    def nodes(self, limit: int) -> tuple[int, list[dict[str, object]]]:
        sessions = sorted(self.registry.sessions(), key=lambda s: s.node)
        now = time.time()
        items: list[dict[str, object]] = []
        for s in sessions[:limit]:
            items.append({
                "node": s.node,
                "ip": s.ip_claim.ip,
                "ip_announced": s.ip_claim.announced,
                "ip_verified": s.ip_claim.verified,
                "tunnel_age_seconds": round(now - s.connected_at, 3),
                "features": sorted(f.value for f in s.features),
                "peer": "kubeedge-stream" if s.features else "KubeEdge edgecore (no features)",
                "streams": len(s.streams),
                "send_queue_messages": len(s._queue),
                "messages_in": s.messages_in,
                "messages_out": s.messages_out,
            })
        return len(sessions), items

    def streams(self, limit: int) -> tuple[int, list[dict[str, object]]]:
        sessions = sorted(self.registry.sessions(), key=lambda s: s.node)
        now = time.monotonic()
        total = 0
        items: list[dict[str, object]] = []
        for s in sessions:
            total += len(s.streams)
            for cid, stream in list(s.streams.items()):
                if len(items) >= limit:
                    break
                state = s.mux.streams.get(cid)
                items.append({
                    "node": s.node,
                    "connect_id": cid,
                    "kind": kind_name(stream.kind),
                    "state": state.state.value if state is not None else "closing",
                    "age_seconds": round(now - stream.opened, 3),
                    "bytes_received": state.bytes_in if state is not None else 0,
                    "bytes_sent": state.bytes_out if state is not None else 0,
                })
        return total, items
