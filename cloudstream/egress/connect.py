"""The CONNECT head and where its target goes, sans I/O.

kube-apiserver's egress dialler (``tunnelHTTPConnect`` in k8s.io/apiserver's egressselector)
writes exactly ``CONNECT <host>:<port> HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n`` and reads the
answer with Go's ``http.ReadResponse``: status 200 and not one byte more (it fails on buffered
data: the TLS client inside speaks first). Any other status fails the dial with
``proxy error from <proxy> while dialing <target>, code N: <status line text>``, so our reason
phrase is what the API server's error (and kubectl) shows; the body says the rest.

h11 parses the head (bounded, strict); ``decide`` says where a target goes:
an edge node's kubelet (served as on 10003), a direct dial, or a refusal naming target,
reason and fix.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import h11

from .settings import IPNetwork

__all__ = [
    "ConnectHeadReader",
    "ConnectRefused",
    "ConnectTarget",
    "Decision",
    "ESTABLISHED",
    "Route",
    "decide",
    "parse_target",
    "refusal_response",
]

ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
"""Exactly the head, nothing behind it (Go checks ``br.Buffered() == 0``)."""
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


class ConnectRefused(Exception):
    """A CONNECT we answer with ``status`` and close; ``phrase`` goes in the status line."""

    def __init__(self, status: int, phrase: str, detail: str, kind: str) -> None:
        super().__init__(detail)
        self.status = status
        self.phrase = phrase
        self.detail = detail
        self.kind = kind
        """Groups refusals in the rate-limited log."""

    @property
    def error_status_hint(self) -> int:
        return self.status


@dataclass(frozen=True, slots=True)
class ConnectTarget:
    host: str
    """A canonical IP address, or a name (lower case)."""
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


def parse_target(authority: str) -> ConnectTarget:
    """``10.0.0.9:10250``, ``[fd00::9]:10250`` or ``node-1:10250`` (authority form, RFC 9110 9.3.6)."""
    text = authority.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConnectRefused(400, "bad CONNECT target", f"CONNECT target {authority[:100]!r} is not host:port", "bad-target")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if text.startswith("[") or not _NAME.match(host.lower()):
            raise ConnectRefused(400, "bad CONNECT target", f"CONNECT target host {host[:100]!r} is neither an IP "
                                 "address nor a DNS name", "bad-target") from None
        host = host.lower()
    return ConnectTarget(host, int(port))


class ConnectHeadReader:
    """Feed bytes until ``target`` is set (or ``ConnectRefused`` says what to answer).

    No h11 state before the first byte; ``early`` holds bytes sent behind the head, which a
    client may not send before our answer (the TLS client inside speaks only after the 200).
    """

    def __init__(self, max_head: int) -> None:
        self.max_head = max_head
        self._conn: h11.Connection | None = None
        self.target: ConnectTarget | None = None
        self.early = b""
        self.started = False

    def feed(self, data: bytes) -> ConnectTarget | None:
        if self.target is not None:
            self.early += data
            return self.target
        if not data:
            raise EOFError("closed before a complete CONNECT head")
        if self._conn is None:
            self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        self.started = True
        conn = self._conn
        try:
            conn.receive_data(data)
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            raise ConnectRefused(status, "bad CONNECT head", f"malformed CONNECT head: {exc}", "malformed") from None
        if event is h11.NEED_DATA:
            return None
        if not isinstance(event, h11.Request):  # pragma: no cover - a server's first event is a Request
            raise ConnectRefused(400, "bad CONNECT head", f"unexpected {type(event).__name__}", "malformed")
        if event.method != b"CONNECT":
            method = event.method.decode("ascii", "replace")[:20]
            raise ConnectRefused(405, "only CONNECT", f"this is kube-apiserver's egress-selector front: it answers "
                                 f"HTTP CONNECT only, not {method}", "method")
        self.target = parse_target(event.target.decode("ascii", "replace"))
        self.early, _closed = conn.trailing_data
        return self.target


class Route(enum.Enum):
    EDGE = "edge"
    """A connected edge node's kubelet: answer 200, then serve the inner TLS as 10003."""
    DIRECT = "direct"
    """Dial the target and splice."""


@dataclass(frozen=True, slots=True)
class Decision:
    route: Route
    target: ConnectTarget
    node: str | None = None


class _Session(Protocol):
    node: str
    internal_ip: str


class _Registry(Protocol):
    def get(self, node: str) -> _Session | None: ...

    def get_by_ip(self, ip: str) -> _Session | None: ...

    def sessions(self) -> Iterable[_Session]: ...


def in_networks(host: str, networks: Iterable[IPNetwork]) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


def decide(
    target: ConnectTarget, registry: _Registry, kubelet_ports: tuple[int, ...], direct: tuple[IPNetwork, ...]
) -> Decision:
    """Where ``target`` goes; raises ``ConnectRefused`` (target, reason and fix in its detail)."""
    session = registry.get_by_ip(target.host) if target.is_ip else registry.get(target.host)
    ports = ", ".join(map(str, kubelet_ports))
    if session is not None:
        if target.port in kubelet_ports:
            return Decision(Route.EDGE, target, session.node)
        raise ConnectRefused(
            403, f"edge node {session.node} serves only its kubelet port",
            f"CONNECT {target}: {target.host} is edge node {session.node}, whose tunnel carries only its kubelet API "
            f"(port {ports}); port {target.port} cannot be reached through it. If {target.port} is that node's "
            f"kubeletEndpoint port, add --egress-kubelet-port {target.port}",
            "edge-port",
        )
    if target.is_ip and in_networks(target.host, direct):
        return Decision(Route.DIRECT, target)
    if not target.is_ip and direct:
        return Decision(Route.DIRECT, target)  # the front resolves the name and checks its addresses
    sessions = list(registry.sessions())
    connected = ", ".join(f"{s.node} ({s.internal_ip})" for s in sessions[:10]) or "none"
    if len(sessions) > 10:
        connected += f" and {len(sessions) - 10} more"
    what = "IP" if target.is_ip else "name"
    raise ConnectRefused(
        503, f"no edge node {target.host} connected",
        f"CONNECT {target}: no edge node with {what} {target.host} has a tunnel to this cloudstream, and "
        f"{target.host} is not in a --egress-direct network ({', '.join(map(str, direct)) or 'none configured'}). "
        f"If it is an edge node, check that edgestream runs there and announces {target.host} (--node-ip); if it "
        f"is a cloud node, pod or webhook, let cloudstream dial it: --egress-direct <its CIDR>. "
        f"Connected nodes: {connected}",
        "no-node" if target.is_ip else "no-node-name",
    )


def refusal_response(status: int, phrase: str, detail: str) -> bytes:
    """A complete answer: the short reason in the status line (the API server quotes it), the
    whole story (target, reason, fix) in a text body, then close."""
    phrase = _UNPRINTABLE.sub("?", phrase)[:120]
    body = f"cloudstream egress: {detail}\n".encode("utf-8", "replace")
    head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body
