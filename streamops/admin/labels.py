"""Label values with a bounded vocabulary: a peer decides the reason strings, never the series."""

from __future__ import annotations

from streamproto.tunnel.messages import MessageType

__all__ = ["CLOSE_REASONS", "KIND_NAMES", "close_reason", "kind_name", "reason_label"]

KIND_NAMES = {
    MessageType.LOGS_CONNECT: "logs",
    MessageType.EXEC_CONNECT: "exec",
    MessageType.ATTACH_CONNECT: "attach",
    MessageType.METRIC_CONNECT: "metrics",
    MessageType.PORTFORWARD_CONNECT: "portforward",
}
CLOSE_REASONS = (
    "closed_by_peer", "connection_lost", "keepalive_timeout", "misbehaviour", "other", "replaced", "shutdown",
)
"""Every value ``close_reason`` returns (exported from 0, so a rate() has a series to start from)."""


def kind_name(kind: MessageType) -> str:
    return KIND_NAMES.get(kind, "other")


def reason_label(kind: object) -> str:
    """A refusal kind (``"ip-cap"``, ``"no node"``, ``(403, "forbidden")``) as a label value."""
    text = kind[-1] if isinstance(kind, tuple) else kind
    return str(text).strip().lower().replace(" ", "_").replace("-", "_")[:40] or "other"


def close_reason(reason: str | None, over_budget: bool = False) -> str:
    """Why a tunnel ended, from its ``closed_reason`` text, as one of a few label values."""
    text = (reason or "").lower()
    if over_budget:
        return "misbehaviour"
    if "shutting down" in text:
        return "shutdown"
    if "replaced" in text:
        return "replaced"
    if "keepalive" in text or "ping" in text or "pong" in text:
        return "keepalive_timeout"
    if "no close frame" in text or "connection lost" in text or "write failed" in text:
        return "connection_lost"
    if "closed with code" in text:
        return "closed_by_peer"
    return "other"
