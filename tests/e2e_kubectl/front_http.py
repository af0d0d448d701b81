"""HTTP pieces of the API-server front: h11 on asyncio streams, the kubelet dial, Go-shaped
request heads and ``metav1.Status`` bodies (field order of Go's ``json.Marshal``).

Nothing here imports cloudstream: the front is the reference our server is tested against,
so it parses with h11 (spec ``apiserver-observed.md`` for every header it writes).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field

import h11

__all__ = [
    "DialError",
    "EgressVia",
    "HttpStream",
    "KubeletDial",
    "Upstream",
    "bad_request",
    "go_header_name",
    "internal_error",
    "server_response_error",
    "status_body",
]

READ_CHUNK = 65536
MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 30.0


def go_header_name(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: ``sec-websocket-key`` -> ``Sec-Websocket-Key``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def status_body(status: str = "Failure", message: str = "", reason: str = "", details: dict | None = None,
                code: int = 0, typed: bool = True) -> dict:
    """A ``metav1.Status`` as Go marshals it (omitempty fields left out, Go's field order)."""
    out: dict = {"kind": "Status", "apiVersion": "v1"} if typed else {}
    out["metadata"] = {}
    out["status"] = status
    if message:
        out["message"] = message
    if reason:
        out["reason"] = reason
    if details:
        out["details"] = details
    if code:
        out["code"] = code
    return out


def internal_error(message: str, typed: bool = True) -> dict:
    """``apierrors.NewInternalError(err)``."""
    return status_body(message=f"Internal error occurred: {message}", reason="InternalError",
                       details={"causes": [{"message": message}]}, code=500, typed=typed)


def bad_request(message: str) -> dict:
    return status_body(message=message, reason="BadRequest", code=400)


_GENERIC = {
    404: ("NotFound", "the server could not find the requested resource"),
    401: ("Unauthorized", "the server has asked for the client to provide credentials"),
    405: ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted, but may still be "
                     "processing the request"),
}


def server_response_error(code: int, resource: str, name: str, body: str) -> dict:
    """What the API server makes of a kubelet's non-2xx answer to a streamed GET (logs):
    ``GenericHttpResponseChecker`` -> ``NewInternalError`` / ``NewBadRequest`` /
    ``NewGenericServerResponse`` (which keeps the kubelet's text only for 403 and 5xx)."""
    if code == 500:
        return internal_error(body)
    if code == 400:
        return bad_request(body)
    reason, message = _GENERIC.get(code, ("", f"the server responded with the status code {code} but did not "
                                              "return more information"))
    if code == 403:
        reason, message = "Forbidden", body
    elif code > 500 and code not in _GENERIC:
        reason, message = "InternalError", f"an error on the server ({json.dumps(body)}) has prevented the request " \
                                           "from succeeding"
    return status_body(message=f"{message} ( {resource} {name})", reason=reason or "Unknown",
                       details={"name": name, "kind": resource}, code=code)


class HttpStream:
    """One HTTP/1.1 connection driven by h11 (either role) over an asyncio stream pair."""

    def __init__(self, role: type[h11.CLIENT] | type[h11.SERVER], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.h11 = h11.Connection(role, max_incomplete_event_size=MAX_HEAD)
        self.reader = reader
        self.writer = writer

    async def next_event(self, timeout: float | None = None) -> object:
        """The next h11 event; raises ``h11.RemoteProtocolError`` for a malformed peer."""
        async with asyncio.timeout(timeout):
            while True:
                event = self.h11.next_event()
                if event is not h11.NEED_DATA:
                    return event
                self.h11.receive_data(await self.reader.read(READ_CHUNK))

    async def send(self, *events: object) -> None:
        for event in events:
            data = self.h11.send(event)
            if data:
                self.writer.write(data)
        await self.writer.drain()

    def trailing(self) -> bytes:
        """Bytes after a protocol switch (the first frames of the new protocol)."""
        return bytes(self.h11.trailing_data[0])

    def close(self) -> None:
        self.writer.close()


def _raw(event: h11.Response | h11.InformationalResponse) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()]


@dataclass(frozen=True)
class Upstream:
    """The kubelet's answer to an upgrade request: the 101 head, or the refusal and its body."""

    status: int
    raw_headers: list[tuple[str, str]]
    """As the kubelet wrote them (names in its casing)."""
    body: bytes
    stream: HttpStream

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(k.lower(), v) for k, v in self.raw_headers]

    def header(self, name: str) -> str:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), "")


class DialError(ConnectionError):
    """The kubelet endpoint could not be reached; ``str()`` reads as Go's net error."""


@dataclass(frozen=True)
class EgressVia:
    """kube-apiserver with ``--egress-selector-config-file`` (egress ``cluster``, HTTPConnect):
    every kubelet dial goes through the front at ``tcp`` (mutual TLS with ``tls``) or ``uds``."""

    tls: ssl.SSLContext | None = None
    tcp: tuple[str, int] | None = None
    uds: str | None = None

    @property
    def proxy_address(self) -> str:
        return self.uds if self.uds is not None else f"{self.tcp[0]}:{self.tcp[1]}"  # type: ignore[index]


@dataclass(frozen=True)
class KubeletDial:
    """How the API server dials a node's kubelet endpoint: ``https://address:port``, the
    kubelet-client certificate, no SNI for an IP; ALPN h2+http/1.1 for plain requests and
    http/1.1 only for upgrades (spec section 1). We speak HTTP/1.1 only: a server that picks
    h2 fails the request loudly, as it would break a real API server's answer parsing here."""

    tls: ssl.SSLContext
    tls_upgrade: ssl.SSLContext
    heads: list[tuple[str, str, list[tuple[str, str]]]] = field(default_factory=list)
    """Every request head sent to a kubelet endpoint: (method, target, headers in wire order)."""
    egress: EgressVia | None = None

    def record(self, request: h11.Request) -> None:
        self.heads.append((request.method.decode(), request.target.decode("latin-1"),
                           [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw_items()]))

    async def open(self, address: str, port: int, upgrade: bool) -> HttpStream:
        """Raises ``DialError`` (Go's wording). Plain requests give up on a TLS handshake after
        10 s; upgrades have no timeout at all and hang with the connection (spec section 3)."""
        ctx = self.tls_upgrade if upgrade else self.tls
        try:
            async with asyncio.timeout(None if upgrade else 10.0):
                if self.egress is not None:
                    reader, writer = await self._via_egress(address, port, ctx)
                else:
                    reader, writer = await asyncio.open_connection(address, port, ssl=ctx, server_hostname=address)
        except DialError:
            raise
        except TimeoutError as exc:
            raise DialError("net/http: TLS handshake timeout") from exc
        except ConnectionRefusedError as exc:
            raise DialError(f"dial tcp {address}:{port}: connect: connection refused") from exc
        except (OSError, ssl.SSLError) as exc:
            raise DialError(f"dial tcp {address}:{port}: {exc.strerror or exc}") from exc
        chosen = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        if chosen not in (None, "http/1.1"):
            writer.close()
            raise ConnectionError(f"the kubelet endpoint {address}:{port} selected ALPN {chosen!r}; this front "
                                  "speaks HTTP/1.1 only")
        return HttpStream(h11.CLIENT, reader, writer)

    async def _via_egress(self, address: str, port: int, ctx: ssl.SSLContext) -> tuple[asyncio.StreamReader,
                                                                                        asyncio.StreamWriter]:
        """k8s.io/apiserver's ``tunnelHTTPConnect``, with its error wording."""
        from testkit.egress import EgressRefused, egress_dial

        via = self.egress
        assert via is not None
        addr = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        try:
            return await egress_dial(addr, inner_tls=ctx, tcp=via.tcp, outer_tls=via.tls, uds=via.uds,
                                     server_hostname=via.tcp[0] if via.tcp else None, timeout=30.0)
        except EgressRefused as exc:
            raise DialError(f"proxy error from {via.proxy_address} while dialing {addr}, code {exc.status}: "
                            f"{exc.status_text}") from exc

    async def upgrade(self, address: str, port: int, request: h11.Request) -> Upstream:
        """Send an upgrade request; return the 101 (the stream is switched, ``trailing()`` holds
        the first protocol bytes) or the refusal with its whole body (bounded)."""
        self.record(request)
        stream = await self.open(address, port, upgrade=True)
        try:
            await stream.send(request, h11.EndOfMessage())
            event = await stream.next_event(HEAD_TIMEOUT)
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                return Upstream(101, _raw(event), b"", stream)
            if not isinstance(event, h11.Response):
                raise ConnectionError(f"unexpected answer to an upgrade: {event!r}")
            body = bytearray()
            while isinstance(data := await stream.next_event(HEAD_TIMEOUT), h11.Data):
                if len(body) < 50_000:  # maxReadLength of the API server's checkers
                    body += data.data
            stream.close()
            return Upstream(event.status_code, _raw(event), bytes(body), stream)
        except BaseException:
            stream.close()
            raise
