"""The HTTP side of the emulator's upgrades: metav1.Status refusals and the SPDY handshake.

The handshake is the kubelet's (apimachinery ``httpstream.Handshake`` + ``spdy.ResponseUpgrader``):
``X-Stream-Protocol-Version`` values (repeated lines and/or comma lists) are matched in the
client's order against ours; none offered is a 400, no common one a 403 that lists ours in
``X-Accepted-Stream-Protocol-Versions``; a request without ``Connection: upgrade`` and
``Upgrade: SPDY/3.1`` is a 400. Success is ``101`` with ``Connection: Upgrade``,
``Upgrade: SPDY/3.1`` and the chosen version, then SPDY/3.1 on the same bytes.
"""

from __future__ import annotations

import http
import json
import logging

from streamproto.aio.ratelog import RateLimitedLog

from ..stream import EdgeStream

__all__ = ["SPDY_UPGRADE", "negotiate_spdy", "refuse", "status_json", "status_response"]

SPDY_UPGRADE = "SPDY/3.1"
_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 408: "Timeout", 500: "InternalError"}

logger = logging.getLogger(__name__)
refusals = RateLimitedLog(logger, level=logging.INFO)


def status_json(code: int, message: str, reason: str = "") -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason or _REASONS.get(code, "InternalError"),
                       "code": code}).encode()


def status_response(code: int, message: str, reason: str = "", extra: list[tuple[str, str]] | None = None) -> bytes:
    """A whole HTTP/1.1 error response whose body is a metav1.Status (the cloud relays raw bytes)."""
    body = status_json(code, message, reason)
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = "Error"
    lines = [f"HTTP/1.1 {code} {phrase}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in extra or []]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def refuse(stream: EdgeStream, code: int, message: str, reason: str = "",
                 extra: list[tuple[str, str]] | None = None) -> None:
    """Refuse an upgrade with a metav1.Status; logged once per kind (peers choose how often)."""
    refusals.event((code, stream.request.path.strip("/").split("/")[0]), "emulator refused %s %s: %d %s", stream.request.method, stream.request.path, code, message)
    if not stream.answered:
        await stream.send(status_response(code, message, reason, extra))


def offered_protocols(stream: EdgeStream) -> list[str]:
    return [p.strip() for line in stream.request.header_values("X-Stream-Protocol-Version")
            for p in line.split(",") if p.strip()]


async def negotiate_spdy(stream: EdgeStream, supported: list[str]) -> str | None:
    """Answer the SPDY upgrade: the chosen protocol after our ``101``, or None after a refusal."""
    request = stream.request
    upgrade = (request.header("Upgrade") or "").lower()
    connection = ",".join(request.header_values("Connection")).lower()
    if upgrade != SPDY_UPGRADE.lower() or "upgrade" not in connection:
        await refuse(stream, 400, f"unable to upgrade: missing upgrade headers in request: Upgrade {upgrade!r}, "
                     f"Connection {connection!r} (expected Upgrade: SPDY/3.1)")
        return None
    offered = offered_protocols(stream)
    if not offered:
        await refuse(stream, 400, "unable to upgrade: X-Stream-Protocol-Version is required")
        return None
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None:
        await refuse(stream, 403, f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                     f"server accepts {supported}", extra=[("X-Accepted-Stream-Protocol-Versions", p) for p in supported])
        return None
    await stream.send(("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                       f"X-Stream-Protocol-Version: {chosen}\r\n\r\n").encode("latin-1"))
    return chosen
