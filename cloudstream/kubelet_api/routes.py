"""The kubelet API routes cloudstream serves, and what each becomes on the tunnel.

KubeEdge's stream server routes (spec §6) plus port-forward, which KubeEdge lacks.

Names in the path are percent-decoded once, here: ``p1%2Fx`` is refused (an encoded ``/``
is never a pod name), as are ``.``, ``..``, empty names and control characters. What is
routed, audited and forwarded (``Route.path``, re-encoded from the decoded names) is what the
edge serves: the edge decodes the forwarded path once and gets the same names.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from proto.tunnel import MessageType

from .http1 import HttpError

__all__ = ["Route", "RouteKind", "decode_segment", "match_route"]


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


# A shape is the literal first segment(s) then named segments; "" names a segment we check
# and forward but do not keep (a pod UID).
_SHAPES: list[tuple[tuple[str, ...], tuple[str, ...], RouteKind, tuple[str, ...]]] = [
    (("containerLogs",), ("namespace", "pod", "container"), RouteKind.LOGS, ("GET",)),
    (("exec",), ("namespace", "pod", "container"), RouteKind.EXEC, ("GET", "POST")),
    (("exec",), ("namespace", "pod", "", "container"), RouteKind.EXEC, ("GET", "POST")),
    (("attach",), ("namespace", "pod", "container"), RouteKind.ATTACH, ("GET", "POST")),
    (("attach",), ("namespace", "pod", "", "container"), RouteKind.ATTACH, ("GET", "POST")),
    (("portForward",), ("namespace", "pod"), RouteKind.PORTFORWARD, ("GET", "POST")),
    (("portForward",), ("namespace", "pod", ""), RouteKind.PORTFORWARD, ("GET", "POST")),
    (("stats",), ("pod", "container"), RouteKind.METRICS, ("GET",)),
    (("stats",), ("namespace", "pod", "", "container"), RouteKind.METRICS, ("GET",)),
]
_FIXED_METRICS = re.compile(r"^/(stats|stats/summary|stats/container|metrics|metrics/cadvisor|metrics/probes|metrics/resource)/?$")
_PCHAR_SAFE = "!$&'()*+,;=:@-._~"
"""RFC 3986 pchar characters kept as they are when re-encoding a name."""
_SEGMENT_LABEL = {"namespace": "namespace", "pod": "pod name", "container": "container name", "": "pod UID"}


def decode_segment(raw: str, label: str) -> str:
    """Percent-decode one path segment once; refuse what no Kubernetes name can be (400)."""
    if "%" in raw and re.search(r"%(?![0-9A-Fa-f]{2})", raw):
        raise HttpError(400, f"{label} {raw!r}: malformed percent-encoding")
    try:
        name = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, f"{label} {raw!r} is not UTF-8 once decoded") from None
    if not name:
        raise HttpError(400, f"{label} is empty")
    if "/" in name:
        raise HttpError(400, f"{label} {raw!r} contains an encoded '/' (refused: no Kubernetes name has one)")
    if name in (".", ".."):
        raise HttpError(400, f"{label} {raw!r} is {name!r}, not a name")
    if not name.isprintable() or any(c.isspace() for c in name):
        raise HttpError(400, f"{label} {raw!r} contains a control or space character")
    return name


def match_route(path: str) -> Route | None:
    """The route for ``path`` (the raw path, no query), or None (answer 404).

    Raises HttpError(400) naming the segment when a name in a routed path is refused.
    """
    if _FIXED_METRICS.match(path):
        return Route(RouteKind.METRICS, ("GET",), path=path)
    segments = path.split("/")
    if len(segments) < 2 or segments[0] != "":
        return None
    segments = segments[1:]
    for literals, names, kind, methods in _SHAPES:
        if len(segments) != len(literals) + len(names) or tuple(segments[: len(literals)]) != literals:
            continue
        fields: dict[str, str] = {}
        encoded = list(literals)
        for name, raw in zip(names, segments[len(literals):], strict=True):
            value = decode_segment(raw, _SEGMENT_LABEL[name])
            if name and kind is not RouteKind.METRICS:
                fields[name] = value
            encoded.append(quote(value, safe=_PCHAR_SAFE))
        return Route(kind, methods, path="/" + "/".join(encoded), **fields)
    return None
