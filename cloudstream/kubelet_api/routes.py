"""The kubelet API routes cloudstream serves, and what each becomes on the tunnel.

KubeEdge's stream server routes (spec §6) plus port-forward, which KubeEdge lacks.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from proto.tunnel import MessageType

__all__ = ["Route", "RouteKind", "match_route"]


class RouteKind(enum.Enum):
    LOGS = "logs"
    METRICS = "metrics"
    EXEC = "exec"
    ATTACH = "attach"
    PORTFORWARD = "portforward"


_TUNNEL_TYPE = {
    RouteKind.LOGS: MessageType.LOGS_CONNECT,
    RouteKind.METRICS: MessageType.METRIC_CONNECT,
    RouteKind.EXEC: MessageType.EXEC_CONNECT,
    RouteKind.ATTACH: MessageType.ATTACH_CONNECT,
    RouteKind.PORTFORWARD: MessageType.PORTFORWARD_CONNECT,
}


@dataclass(frozen=True, slots=True)
class Route:
    kind: RouteKind
    methods: tuple[str, ...]
    namespace: str = ""
    pod: str = ""
    container: str = ""

    @property
    def tunnel_type(self) -> MessageType:
        return _TUNNEL_TYPE[self.kind]

    @property
    def upgrade(self) -> bool:
        return self.kind in (RouteKind.EXEC, RouteKind.ATTACH, RouteKind.PORTFORWARD)


_SEG = r"([^/]+)"
_PATTERNS: list[tuple[re.Pattern[str], RouteKind, tuple[str, ...], tuple[str, ...]]] = [
    (re.compile(rf"^/containerLogs/{_SEG}/{_SEG}/{_SEG}$"), RouteKind.LOGS, ("GET",), ("namespace", "pod", "container")),
    (re.compile(rf"^/(exec|attach)/{_SEG}/{_SEG}/{_SEG}$"), RouteKind.EXEC, ("GET", "POST"), ("namespace", "pod", "container")),
    (
        re.compile(rf"^/(exec|attach)/{_SEG}/{_SEG}/{_SEG}/{_SEG}$"),
        RouteKind.EXEC,
        ("GET", "POST"),
        ("namespace", "pod", "", "container"),
    ),
    (re.compile(rf"^/portForward/{_SEG}/{_SEG}(?:/{_SEG})?$"), RouteKind.PORTFORWARD, ("GET", "POST"), ("namespace", "pod")),
    (
        re.compile(r"^/(stats|stats/summary|stats/container|metrics|metrics/cadvisor|metrics/probes|metrics/resource)/?$"),
        RouteKind.METRICS,
        ("GET",),
        (),
    ),
    # The kubelet's health checks (/healthz, /healthz/ping|log|syncloop), answered by the edge
    # from its own state; under the "metrics" access rule, as a node-proxy read.
    (re.compile(rf"^/healthz(?:/{_SEG})?$"), RouteKind.METRICS, ("GET",), ()),
    (re.compile(rf"^/stats/{_SEG}/{_SEG}$"), RouteKind.METRICS, ("GET",), ()),
    (re.compile(rf"^/stats/{_SEG}/{_SEG}/{_SEG}/{_SEG}$"), RouteKind.METRICS, ("GET",), ()),
]


def match_route(path: str) -> Route | None:
    """The route for ``path`` (the raw path, no query), or None (answer 404)."""
    for pattern, kind, methods, names in _PATTERNS:
        m = pattern.match(path)
        if m is None:
            continue
        groups = list(m.groups())
        if kind is RouteKind.EXEC:
            if groups.pop(0) == "attach":
                kind = RouteKind.ATTACH
        fields = {name: value for name, value in zip(names, groups, strict=False) if name and value is not None}
        return Route(kind, methods, **fields)
    return None
