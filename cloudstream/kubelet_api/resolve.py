"""Which edge node a kubelet-API request is for.

KubeEdge resolves logs/exec through a pod GET against the Kubernetes API and metrics through
the Host header. We need no Kubernetes client: the API server dials the node's own address
(``InternalIP:kubeletPort``), so the node is, in order,
1. the original destination of a DNAT'd connection (iptables rule edgeIP:10250 -> 10003),
2. the node name in ``X-Forwarded-Uri: /api/v1/nodes/<node>/proxy/...`` (node proxy),
3. the Host header: an IP (the node's) or a name (the node name, handy in labs).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from .http1 import RequestHead

__all__ = ["NodeKey", "original_destination", "request_node_keys"]

_SO_ORIGINAL_DST = 80

NodeKey = tuple[str, str]
"""("ip", address) or ("node", name)."""


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


def request_node_keys(head: RequestHead, dnat_ip: str | None) -> list[NodeKey]:
    """Candidate keys, best first."""
    keys: list[NodeKey] = []
    if dnat_ip:
        keys.append(("ip", dnat_ip))
    forwarded = head.header("X-Forwarded-Uri") or ""
    parts = forwarded.split("/")
    if forwarded.startswith("/api/v1/nodes/") and len(parts) > 4 and parts[4]:
        keys.append(("node", parts[4]))
    host_key = _host_key(head.header("Host") or "")
    if host_key is not None:
        keys.append(host_key)
    return keys
