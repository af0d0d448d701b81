"""Just enough HTTP/1.1 for a kubelet endpoint, sans I/O: request heads in, response heads out.

We parse heads ourselves because exec/attach/port-forward are upgrades whose bytes we relay
untouched: after the head, the connection is a raw pipe (as Go's Hijack gives KubeEdge).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

__all__ = ["HttpError", "RequestHead", "error_body", "parse_request_head", "response_head"]

MAX_HEAD = 64 * 1024
_TOKEN_OK = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    raw: bytes
    """The head exactly as received (forwarded verbatim for upgrades where useful)."""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def raw_query(self) -> str:
        _, _, query = self.target.partition("?")
        return query

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    @property
    def is_upgrade(self) -> bool:
        connection = self.header("Connection") or ""
        return "upgrade" in connection.lower() and self.header("Upgrade") is not None

    @property
    def keep_alive(self) -> bool:
        connection = (self.header("Connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection

    @property
    def content_length(self) -> int:
        value = self.header("Content-Length")
        if value is None:
            return 0
        if not value.isdigit():
            raise HttpError(400, f"bad Content-Length {value!r}")
        return int(value)


def parse_request_head(data: bytes) -> RequestHead:
    """Parse ``data`` (ending with CRLF CRLF). Raises HttpError with the status to answer."""
    if len(data) > MAX_HEAD:
        raise HttpError(431, "request head too large")
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
        raise HttpError(400, "undecodable request head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[1].startswith("/") or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if not method or not all(ord(c) in _TOKEN_OK for c in method):
        raise HttpError(400, "malformed method")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or not all(ord(c) in _TOKEN_OK for c in name):
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip()))
    head = RequestHead(method, target, version, tuple(headers), data)
    if head.header("Transfer-Encoding") is not None:
        raise HttpError(501, "request bodies with Transfer-Encoding are not supported")
    return head


def response_head(status: int, headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = ()) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_body(status: int, message: str) -> bytes:
    """Plain text, as a kubelet answers errors: the API server shows it to the user."""
    return f"cloudstream: {message}\n".encode()
