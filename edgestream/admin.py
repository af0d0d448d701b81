"""edgestream's admin port (one node, or a whole ``emulate`` fleet): ``/metrics`` from
``metrics.EdgeCollector``, ``/readyz`` = every node's tunnel up and not draining, and the JSON
views of this process's tunnels and live streams."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from streamops.admin import AdminConfig, AdminServer, Debug
from streamops.admin.certexpiry import CertExpiryCollector
from streamops.admin.labels import kind_name

from .metrics import EdgeCollector
from .node_endpoints import NodeEndpoints

__all__ = ["EdgeAdmin"]


class EdgeAdmin:
    def __init__(
        self, config: AdminConfig, nodes: Callable[[], list[NodeEndpoints]], draining: Callable[[], bool] = lambda: False,
        name: str = "edgestream",
    ) -> None:
        self.nodes_of = nodes
        self.draining = draining
        self.metrics = CollectorRegistry(auto_describe=True)
        self.metrics.register(EdgeCollector(nodes))
        self.metrics.register(CertExpiryCollector(self.cert_files))
        ProcessCollector(registry=self.metrics)
        PlatformCollector(registry=self.metrics)
        self.server = AdminServer(config, self.metrics, Debug(self.ready, self.nodes, self.streams), name=name)

    def cert_files(self) -> list[Path]:
        files: dict[Path, None] = {}
        for node in self.nodes_of():
            files[node.config.tls_tunnel_cert_file] = None
            files[node.config.tls_tunnel_ca_file] = None
        return list(files)

    def ready(self) -> str | None:
        if self.draining():
            return "edgestream is draining (SIGTERM): running streams finish, new ones are refused"
        nodes = self.nodes_of()
        down = [n for n in nodes if n.session is None]
        if not nodes:
            return "no node configured"
        if down:
            first = down[0].config
            if len(nodes) == 1:
                why = down[0].last_dial_error or "not dialled yet, or the tunnel just ended"
                return f"no tunnel to cloudstream at {first.server} for node {first.node_name}: {why}"
            return f"{len(down)} of {len(nodes)} nodes have no tunnel (first: {first.node_name} to {first.server})"
        draining = [n for n in nodes if n.session is not None and n.session.draining]
        if draining:
            return f"{len(draining)} nodes are draining"
        return None

    def nodes(self, limit: int) -> tuple[int, list[dict[str, object]]]:
        nodes = self.nodes_of()
        now = time.time()
        items: list[dict[str, object]] = []
        for node in nodes[:limit]:
            session = node.session
            items.append({
                "node": node.config.node_name,
                "server": node.config.server,
                "tunnel_up": session is not None,
                "tunnel_age_seconds": round(now - node.connected_at, 3) if session is not None else None,
                "features": sorted(f.value for f in session.features) if session is not None else [],
                "streams": len(session.streams) if session is not None else 0,
                "connects": node.connects,
                "draining": bool(session is not None and session.draining),
            })
        return len(nodes), items

    def streams(self, limit: int) -> tuple[int, list[dict[str, object]]]:
        now = time.monotonic()
        total = 0
        items: list[dict[str, object]] = []
        for node in self.nodes_of():
            live = list(node._live.items())
            total += len(live)
            for stream, state in live:
                if len(items) >= limit:
                    break
                items.append({
                    "node": node.config.node_name,
                    "connect_id": stream.connect_id,
                    "kind": kind_name(stream.kind),
                    "path": stream.request.decoded_path[:200],
                    "age_seconds": round(now - stream.started, 3),
                    "bytes_received": state.bytes_in if state is not None else 0,
                    "bytes_sent": state.bytes_out if state is not None else stream.bytes_out,
                })
        return total, items
