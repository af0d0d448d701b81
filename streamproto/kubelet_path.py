"""The kubelet API's pod routes, parsed one way on both sides of the tunnel (pure, no I/O).

``/containerLogs/{ns}/{pod}/{container}``, ``/exec|attach/{ns}/{pod}[/{uid}]/{container}`` and
``/portForward/{ns}/{pod}[/{uid}]``. The path is split on its literal slashes first and each
segment is percent-decoded exactly once, so ``p1%2Fx`` is one segment that decodes to ``p1/x``:
a name with a slash in it, refused (400), never pod ``p1``. Also refused: empty names, ``.`` and
``..``, control characters, bad percent escapes and bytes that are not UTF-8. Kubernetes names
never contain any of these, so a refusal only ever meets a request nobody can mean.

cloudstream (before routing and audit) and edgestream (before serving) call the same function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from .tunnel.errors import TunnelError

__all__ = ["POD_ROUTES", "BadPath", "PodPath", "decode_segment", "parse_pod_path"]


class BadPath(TunnelError):
    """A pod route whose namespace, pod, uid or container segment is not a possible name."""

    error_status_hint = 400

    def __init__(self, message: str, *, segment: str, raw: str) -> None:
        super().__init__(message)
        self.segment = segment
        """Which part: ``namespace``, ``pod``, ``uid`` or ``container``."""
        self.raw = raw
        """The segment as it came, percent-encoded."""


POD_ROUTES: dict[str, tuple[tuple[str, ...], ...]] = {
    # route -> the segment layouts it accepts (the uid forms drop nothing: callers may check it)
    "containerLogs": (("namespace", "pod", "container"), ("namespace", "pod", "uid", "container")),
    "exec": (("namespace", "pod", "container"), ("namespace", "pod", "uid", "container")),
    "attach": (("namespace", "pod", "container"), ("namespace", "pod", "uid", "container")),
    "portForward": (("namespace", "pod"), ("namespace", "pod", "uid")),
}

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class PodPath:
    route: str
    """``containerLogs``, ``exec``, ``attach`` or ``portForward``."""
    namespace: str
    pod: str
    uid: str | None = None
    container: str | None = None
    """None for ``portForward``."""


def decode_segment(raw: str, what: str) -> str:
    """One path segment, percent-decoded once; ``BadPath`` naming ``what`` if it cannot be a name."""
    shown = raw.encode("ascii", "backslashreplace").decode("ascii")
    shown = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", shown)
    if _BAD_ESCAPE.search(raw):
        raise BadPath(f"{what} name {shown!r}: malformed percent escape", segment=what, raw=raw)
    try:
        value = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadPath(f"{what} name {shown!r} is not UTF-8", segment=what, raw=raw) from None
    if not value:
        raise BadPath(f"empty {what} name", segment=what, raw=raw)
    if value in (".", ".."):
        raise BadPath(f"{what} name {shown!r} is a dot segment", segment=what, raw=raw)
    if "/" in value:
        raise BadPath(f"{what} name {shown!r} contains an encoded slash (%2F)", segment=what, raw=raw)
    if _CONTROL.search(value):
        raise BadPath(f"{what} name {shown!r} contains a control character", segment=what, raw=raw)
    return value


def parse_pod_path(raw_path: str) -> PodPath | None:
    """Parse the raw (still percent-encoded) path of a pod route.

    Returns None when ``raw_path`` is not one of ``POD_ROUTES`` or has the wrong number of
    segments (the kubelet answers 404 there); raises ``BadPath`` (400) when it is a pod route
    with a segment that cannot be a name. The query must already be cut off.
    """
    if not raw_path.startswith("/"):
        return None
    route, sep, rest = raw_path[1:].partition("/")
    layouts = POD_ROUTES.get(route)
    if layouts is None or not sep:
        return None
    parts = rest.split("/")
    layout = next((names for names in layouts if len(names) == len(parts)), None)
    if layout is None:
        return None
    values = {name: decode_segment(raw, name) for name, raw in zip(layout, parts, strict=True)}
    return PodPath(route=route, **values)
