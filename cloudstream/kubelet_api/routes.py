"""The kubelet API routes cloudstream serves, and what each becomes on the tunnel.

KubeEdge's stream server routes (spec §6) plus port-forward, which KubeEdge lacks.

Names in a pod path are percent-decoded once by ``streamproto.kubelet_path``, the function the edge
calls too: ``p1%2Fx`` is refused (an encoded ``/`` is never a pod name), as are ``.``, ``..``,
empty names and control characters. What is routed, audited and forwarded (``Route.path``,
re-encoded from the decoded names) is what the edge serves: it decodes the forwarded path
once and gets the same names.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import quote

from streamproto.kubelet_path import BadPath, decode_segment, parse_pod_path
from streamproto.tunnel import MessageType

from .http1 import HttpError

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
    path: str = ""
    """The path to forward: names decoded once and re-encoded canonically."""

    @property
    def tunnel_type(self) -> MessageType:
        return _TUNNEL_TYPE[self.kind]

    @property
    def upgrade(self) -> bool:
        return self.kind in (RouteKind.EXEC, RouteKind.ATTACH, RouteKind.PORTFORWARD)


_POD_ROUTES = {
    "containerLogs": (RouteKind.LOGS, ("GET",)),
    "exec": (RouteKind.EXEC, ("GET", "POST")),
    "attach": (RouteKind.ATTACH, ("GET", "POST")),
    "portForward": (RouteKind.PORTFORWARD, ("GET", "POST")),
}
_FIXED_METRICS = re.compile(
    r"^/(stats|stats/summary|stats/container|metrics|metrics/cadvisor|metrics/probes|metrics/resource)/?$"
    # The kubelet's health checks (/healthz, /healthz/ping|log|syncloop), answered by the edge
    # from its own state; under the "metrics" access rule, as a node-proxy read.
    r"|^/healthz(?:/[^/]+)?$"
)
_STATS_LAYOUTS = {2: ("pod", "container"), 4: ("namespace", "pod", "uid", "container")}
"""``/stats/{pod}/{container}`` and ``/stats/{namespace}/{pod}/{uid}/{container}``."""
_PCHAR_SAFE = "!$&'()*+,;=:@-._~"
"""RFC 3986 pchar characters kept as they are when re-encoding a name."""


def _encode(*segments: str) -> str:
    return "/" + "/".join(quote(s, safe=_PCHAR_SAFE) for s in segments)


def match_route(path: str) -> Route | None:
    """The route for ``path`` (the raw path, no query), or None (answer 404).

    Raises HttpError(400) naming the segment when a name in a routed path is refused.
    """
    if _FIXED_METRICS.match(path):
        return Route(RouteKind.METRICS, ("GET",), path=path)
    try:
        pod_path = parse_pod_path(path)
        if pod_path is not None:
            kind, methods = _POD_ROUTES[pod_path.route]
            names = [pod_path.namespace, pod_path.pod]
            if pod_path.uid is not None:
                names.append(pod_path.uid)
            if pod_path.container is not None:
                names.append(pod_path.container)
            return Route(
                kind, methods, namespace=pod_path.namespace, pod=pod_path.pod, container=pod_path.container or "",
                path=_encode(pod_path.route, *names),
            )
        parts = path.split("/")
        if len(parts) >= 2 and parts[:2] == ["", "stats"] and (layout := _STATS_LAYOUTS.get(len(parts) - 2)):
            if any(not p for p in parts[2:]):
                return None  # as the kubelet's router: an empty segment matches no route
            return Route(RouteKind.METRICS, ("GET",), path=_encode("stats", *(
                decode_segment(raw, what) for what, raw in zip(layout, parts[2:], strict=True)
            )))
    except BadPath as exc:
        raise HttpError(400, str(exc)) from None
    return None
