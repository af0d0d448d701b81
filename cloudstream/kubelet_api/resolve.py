"""Which edge node a kubelet-API request is for.

KubeEdge resolves logs/exec through a pod GET against the Kubernetes API and metrics through
the Host header. We need no Kubernetes client: the API server dials the node's own address
(``InternalIP:kubeletPort``), so the node is, in order,

1. the original destination of a DNAT'd connection (iptables rule edgeIP:10250 -> 10003);
2. the connection's local address (``getsockname``) when a node announced it: the API server
   dialled ``nodeIP:<kubeletEndpoint.Port>`` and that address is this host's (the port points
   straight at cloudstream, or the node IP is routed here) — see ``local_node_key``;
3. the node name in ``X-Forwarded-Uri: /api/v1/nodes/<node>/proxy/...`` (node proxy);
4. the Host header: an IP (the node's) or a name (the node name, handy in labs).

Exec/attach passthrough (kubectl <= 1.29) and port-forward carry ``Host: <the API server>``,
so without DNAT only 2. can find their node.

A connection that came through the egress-selector front (``cloudstream/egress``) knows its
node before any request: the CONNECT target, handed in as a ``ResolvedTarget``; it alone decides.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .http1 import RequestHead

__all__ = [
    "NodeKey", "ResolvedTarget", "local_address", "local_node_key", "original_destination", "request_node_keys",
]

_SO_ORIGINAL_DST = 80

NodeKey = tuple[str, str]
"""("ip", address) or ("node", name)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedTarget:
    """Where the API server meant a connection to go, known before its first request (the
    egress front's CONNECT target): the only key for every request on that connection."""

    key: NodeKey
    port: int
    via: str
    """How it was resolved, for logs and errors (``egress CONNECT 10.0.0.9:10250 from ...``)."""


class _Session(Protocol):
    node: str
    internal_ip: str


class _Registry(Protocol):
    def get(self, node: str) -> _Session | None: ...

    def get_by_ip(self, ip: str) -> _Session | None: ...

    def sessions(self) -> Iterable[_Session]: ...


def original_destination(sock: socket.socket | None) -> str | None:
    """The pre-DNAT destination IP of an accepted IPv4 connection, if it was rewritten."""
    if sock is None or sock.family != socket.AF_INET:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, 16)
        local_ip, local_port = sock.getsockname()[:2]
    except OSError:
        return None
    port = struct.unpack_from("!H", raw, 2)[0]
    ip = socket.inet_ntoa(raw[4:8])
    if ip == local_ip and port == local_port:
        return None  # not DNAT'd: this is our own listening address
    return ip


def local_address(sock: socket.socket | None) -> str | None:
    """The address this connection reached us on, canonical (``::ffff:a.b.c.d`` -> ``a.b.c.d``)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        addr = ipaddress.ip_address(sock.getsockname()[0].split("%", 1)[0])
    except (OSError, ValueError):
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return None if addr.is_unspecified else str(addr)


def _host_key(host: str) -> NodeKey | None:
    host = host.strip()
    if not host:
        return None
    if host.startswith("["):  # [v6]:port
        addr = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        addr = host.split(":", 1)[0]
    else:
        addr = host
    try:
        return ("ip", str(ipaddress.ip_address(addr)))
    except ValueError:
        return ("node", addr)


def _forwarded_node(head: RequestHead) -> str | None:
    forwarded = head.header("X-Forwarded-Uri") or ""
    parts = forwarded.split("/")
    if forwarded.startswith("/api/v1/nodes/") and len(parts) > 4 and parts[4]:
        return parts[4]
    return None


def _bare_name(host: str) -> str | None:
    """A Host that is a plain name, no port and no IP: how labs name a node."""
    host = host.strip()
    if not host or ":" in host or host.startswith("["):
        return None
    key = _host_key(host)
    return key[1] if key is not None and key[0] == "node" else None


def local_node_key(head: RequestHead, local_ip: str | None, registry: _Registry) -> NodeKey | None:
    """``("ip", local_ip)`` when the local address really is one node's IP, else None.

    A local address is also cloudstream's own address (127.0.0.1, the host's IP) when clients
    reach it directly, and a lab edge on the same host may announce exactly that address.
    Such a shared address says nothing about the node, so it is not used when
    * several connected nodes announce it (which one?);
    * ``X-Forwarded-Uri`` names another node: the API server's node proxy says which it meant;
    * the Host is a bare name (no port) of another node: a connected node always; on a
      loopback address any name, so a lab asking for a node that is not there gets 503, not
      its neighbour's answer. On a real address a bare name that is no connected node may be
      the API server's own host name (a kubeconfig without a port), so it does not count.
    A Host *address* (IP, or name:port) never outvotes the local address: for exec passthrough
    and port-forward it is the API server's own, which may well be some lab node's IP too.
    """
    if not local_ip:
        return None
    owner = registry.get_by_ip(local_ip)
    if owner is None:
        return None
    if sum(1 for s in registry.sessions() if s.internal_ip == local_ip) > 1:
        return None
    forwarded = _forwarded_node(head)
    if forwarded and forwarded != owner.node:
        return None
    name = _bare_name(head.header("Host") or "")
    if name and name != owner.node and (registry.get(name) is not None or ipaddress.ip_address(local_ip).is_loopback):
        return None
    return ("ip", local_ip)


def request_node_keys(
    head: RequestHead, dnat_ip: str | None, local_ip: str | None = None, registry: _Registry | None = None,
    target: ResolvedTarget | None = None,
) -> list[NodeKey]:
    """Candidate keys, best first (the local address only when ``registry`` is given)."""
    if target is not None:
        return [target.key]  # the API server named the node's address itself: nothing outvotes it
    keys: list[NodeKey] = []
    if dnat_ip:
        keys.append(("ip", dnat_ip))
    if registry is not None and not dnat_ip:
        local_key = local_node_key(head, local_ip, registry)
        if local_key is not None:
            keys.append(local_key)
    node = _forwarded_node(head)
    if node:
        keys.append(("node", node))
    host_key = _host_key(head.header("Host") or "")
    if host_key is not None:
        keys.append(host_key)
    return keys
