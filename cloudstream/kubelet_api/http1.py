"""HTTP/1.1 request heads for the kubelet API, sans I/O: h11 parses, we add the kubelet's rules.

h11 (server role) decides what a well-formed head is and where it ends; on top of its verdict
we refuse what a kubelet endpoint must never pass on to an edge: a second or missing ``Host``
(it picks the node), a target that is not a plain path, control bytes in header values (Go's
``httpguts.ValidHeaderFieldValue``), ``Transfer-Encoding`` bodies, oversized bodies and heads
with too many headers. h11 only parses heads and bodies we discard: responses are written by
us, and after an upgrade head the connection becomes a raw relay (``RequestReader.leftover``
holds the bytes the client sent right behind the head).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus

import h11

__all__ = [
    "HeadLimits",
    "HttpError",
    "RequestHead",
    "RequestReader",
    "comma_tokens",
    "parse_request_head",
    "response_head",
]

MAX_HEAD = 64 * 1024
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
"""Control bytes other than HTAB: Go's net/http refuses them in header values, so do we."""


class HttpError(Exception):
    """A request we answer with ``status`` and close (``error_status_hint`` as in h11)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def error_status_hint(self) -> int:
        return self.status


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """The plain numbers the parser needs (from CloudConfig)."""

    max_head: int = MAX_HEAD
    """Request line + headers, bytes: 431 above."""
    max_headers: int = 100
    """Header lines: 431 above."""
    max_body: int = 1 << 20
    """Content-Length of a request we read and discard: 413 above."""


def comma_tokens(values: list[str]) -> list[str]:
    """``Connection: keep-alive, Upgrade`` -> ["keep-alive", "upgrade"] (RFC 9110 §5.6.1 lists)."""
    return [t.strip().lower() for v in values for t in v.split(",") if t.strip()]


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    version: str
    """``HTTP/1.1`` or ``HTTP/1.0``."""
    headers: tuple[tuple[str, str], ...]
    """As received (original case, order kept); values are ASCII or latin-1 obs-text."""

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

    def header_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]

    @property
    def connection_tokens(self) -> list[str]:
        return comma_tokens(self.header_values("Connection"))

    @property
    def is_upgrade(self) -> bool:
        """``Connection`` lists the token ``upgrade`` (not ``noupgrade``) and ``Upgrade`` is set."""
        return "upgrade" in self.connection_tokens and bool(self.header("Upgrade"))

    @property
    def keep_alive(self) -> bool:
        tokens = self.connection_tokens
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    @property
    def content_length(self) -> int:
        """h11 has already refused malformed or conflicting values; 0 when absent."""
        value = self.header("Content-Length")
        if value is None:
            return 0
        first = value.split(",", 1)[0].strip()
        if not first.isascii() or not first.isdigit():
            raise HttpError(400, f"bad Content-Length {value[:40]!r}")
        return int(first)


class RequestReader:
    """Feed bytes, get one ``RequestHead`` (or ``HttpError`` with the status to answer).

    One reader per request: the connection keeps the bytes after a request (``leftover``)
    and hands them to the next reader, so h11 never needs to see our responses.
    """

    def __init__(self, limits: HeadLimits = HeadLimits(), initial: bytes = b"") -> None:
        self.limits = limits
        self._conn: h11.Connection | None = None
        """Made with the first byte: an idle keep-alive or pre-head connection holds none."""
        self.head: RequestHead | None = None
        self.body_left = 0
        self._fed = 0
        if initial:
            self._receive(initial)

    def _receive(self, data: bytes) -> h11.Connection:
        if self._conn is None:
            self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head)
        self._fed += len(data)
        self._conn.receive_data(data)
        return self._conn

    @property
    def started(self) -> bool:
        """Whether any byte of this request has arrived (the idle clock becomes the head clock)."""
        return self._fed > 0

    def feed(self, data: bytes) -> RequestHead | None:
        """Add bytes (``b""`` at EOF); return the head once it is complete."""
        self._receive(data)
        return self.next_head()

    def next_head(self) -> RequestHead | None:
        if self.head is not None:
            return self.head
        conn = self._conn
        if conn is None:
            return None
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if "unexpectedly closed" in str(exc):
                raise EOFError("the client closed the connection inside a request head") from exc
            raise HttpError(exc.error_status_hint, f"malformed request: {exc}") from None
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.ConnectionClosed):
            raise EOFError("the client closed the connection")
        assert isinstance(event, h11.Request), event
        # h11 bounds only an incomplete head; one that arrives whole in a big read is measured here.
        size = self._fed - len(conn.trailing_data[0])
        if size > self.limits.max_head:
            raise HttpError(431, f"request head of {size} bytes; at most {self.limits.max_head} are accepted")
        self.head = _check(event, self.limits)
        self.body_left = self.head.content_length
        return self.head

    def discard_body(self, data: bytes = b"") -> bool:
        """Feed body bytes; return True once the whole body has been read (and dropped)."""
        conn = self._receive(data) if data else self._conn
        assert conn is not None, "discard_body() before the head"
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise EOFError(f"the request body was cut off: {exc}") from None
            if event is h11.NEED_DATA:
                return False
            if isinstance(event, h11.EndOfMessage):
                return True
            if isinstance(event, h11.ConnectionClosed):
                raise EOFError("the client closed the connection inside a request body")
            # h11.Data: dropped

    @property
    def leftover(self) -> bytes:
        """What arrived after the head (upgrade) or after the body (the next request)."""
        return bytes(self._conn.trailing_data[0]) if self._conn is not None else b""


def _check(event: h11.Request, limits: HeadLimits) -> RequestHead:
    raw = event.headers.raw_items()
    if len(raw) > limits.max_headers:
        raise HttpError(431, f"{len(raw)} request header fields; at most {limits.max_headers} are accepted")
    version = event.http_version.decode("ascii")
    if version not in ("1.1", "1.0"):
        raise HttpError(505, f"HTTP/{version} is not supported; the kubelet API speaks HTTP/1.1")
    target = event.target.decode("ascii")  # h11 allows only visible ASCII in the target
    if not target.startswith("/"):
        raise HttpError(400, f"request target {target[:80]!r} is not a path (origin-form)")
    hosts = 0
    for name, value in raw:
        lname = name.lower()
        if lname == b"host":
            hosts += 1
        if _CONTROL.search(value):
            raise HttpError(400, f"control character in the value of header {name.decode('ascii')!r}")
        if lname == b"transfer-encoding":
            if any(n.lower() == b"content-length" for n, _ in raw):
                raise HttpError(400, "both Transfer-Encoding and Content-Length: refused (request smuggling)")
            raise HttpError(501, "request bodies with Transfer-Encoding are not supported")
    if hosts != 1:  # h11 checks this for HTTP/1.1 only; the Host picks the node, so always
        raise HttpError(400, "a request needs exactly one Host header" + (f" (got {hosts})" if hosts else ""))
    headers = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in raw)
    head = RequestHead(event.method.decode("ascii"), target, "HTTP/" + version, headers)
    length = head.content_length
    if length > limits.max_body:
        raise HttpError(413, f"request body of {length} bytes; the kubelet API reads at most {limits.max_body}")
    return head


def parse_request_head(data: bytes, limits: HeadLimits = HeadLimits()) -> RequestHead:
    """Parse one complete head (bytes after it are ignored). Raises HttpError."""
    if len(data) > limits.max_head:
        raise HttpError(431, "request head too large")
    reader = RequestReader(limits)
    try:
        head = reader.feed(data)
    except EOFError as exc:
        raise HttpError(400, str(exc)) from None
    if head is None:
        raise HttpError(400, "incomplete request head")
    return head


def response_head(status: int, headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = ()) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
