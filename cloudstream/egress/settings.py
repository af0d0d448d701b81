"""EgressConfig: the egress-selector front's flags, as plain frozen data (off by default)."""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from streamproto.tunnel.errors import ConfigError

__all__ = ["EgressConfig", "IPNetwork", "add_egress_arguments", "parse_allow"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
KUBELET_PORT = 10250


def parse_allow(text: str) -> tuple[str, str]:
    """``cn:NAME`` or ``group:NAME`` -> (kind, name)."""
    kind, sep, name = text.partition(":")
    if kind not in ("cn", "group") or not sep or not name:
        raise ConfigError(f"--egress-allow {text!r}: expected cn:NAME or group:NAME")
    return kind, name


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressConfig:
    address: str = "127.0.0.1"
    """Listen address of the TCP (mTLS) front."""
    port: int | None = None
    """TCP port of the front; None: no TCP front (0: any free port, for tests)."""
    uds: Path | None = None
    """Unix socket of the front (plain HTTP CONNECT, file mode 0600); None: none."""
    ca_file: Path | None = None
    """CA the API server's proxy client certificate must chain to; None: the stream CA."""
    cert_file: Path | None = None
    key_file: Path | None = None
    """The TCP front's server certificate (its SANs must name the URL's host); None: 10003's."""
    allow: tuple[tuple[str, str], ...] = ()
    """Client identities ((``cn``|``group``, name)) that may CONNECT over TCP; empty: the identities
    of 10003's access rules (the API server's kubelet-client identity by default)."""
    kubelet_ports: tuple[int, ...] = (KUBELET_PORT,)
    """CONNECT ports that mean "the kubelet of the node with this IP" (the nodes'
    ``daemonEndpoints.kubeletEndpoint.Port``)."""
    direct: tuple[IPNetwork, ...] = ()
    """Targets that are no connected edge node but lie in these networks are dialled directly and
    spliced (cloud nodes' kubelets, pods, webhooks); everything else is refused."""
    head_timeout: float = 10.0
    """Seconds from the connection's start (TLS done) to a complete CONNECT head."""
    max_head: int = 8 * 1024
    """CONNECT request line + headers, bytes (Go writes about 50)."""
    dial_timeout: float = 10.0
    """Seconds to dial a direct target."""

    @property
    def enabled(self) -> bool:
        return self.port is not None or self.uds is not None

    def __post_init__(self) -> None:
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ConfigError(f"--egress-port {self.port} is not a TCP port")
        for port in self.kubelet_ports:
            if not 0 < port <= 65535:
                raise ConfigError(f"--egress-kubelet-port {port} is not a TCP port")
        if not self.kubelet_ports:
            raise ConfigError("the egress front needs at least one kubelet port")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("--egress-cert-file and --egress-key-file go together")
        for name in ("head_timeout", "dial_timeout", "max_head"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"egress {name} must be positive")

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> EgressConfig:
        settings: dict[str, object] = {}
        if ns.egress_address is not None:
            settings["address"] = ns.egress_address
        for key in ("uds", "ca_file", "cert_file", "key_file"):
            value = getattr(ns, "egress_" + key)
            if value:
                settings[key] = Path(value)
        if ns.egress_kubelet_port:
            settings["kubelet_ports"] = tuple(dict.fromkeys(ns.egress_kubelet_port))
        try:
            settings["direct"] = tuple(ipaddress.ip_network(c, strict=False) for c in ns.egress_direct)
        except ValueError as exc:
            raise ConfigError(f"--egress-direct: {exc}") from None
        settings["allow"] = tuple(parse_allow(r) for r in ns.egress_allow)
        if ns.egress_head_timeout is not None:
            settings["head_timeout"] = ns.egress_head_timeout
        return cls(port=ns.egress_port, **settings)  # type: ignore[arg-type]


def add_egress_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("egress-selector front (off unless --egress-port or --egress-uds is given)")
    group.add_argument(
        "--egress-port", type=int, metavar="PORT",
        help="serve kube-apiserver's egress selector (HTTP CONNECT over mTLS) on PORT (default: off)",
    )
    group.add_argument("--egress-address", help="listen address of --egress-port (default: 127.0.0.1)")
    group.add_argument(
        "--egress-uds", metavar="PATH", help="serve the egress selector on a unix socket, mode 0600 (default: off)"
    )
    group.add_argument(
        "--egress-ca-file", help="CA of the API server's proxy client certificate (default: the stream CA)"
    )
    group.add_argument("--egress-cert-file", help="server certificate of --egress-port (default: 10003's)")
    group.add_argument("--egress-key-file", help="its key (default: 10003's)")
    group.add_argument(
        "--egress-allow", action="append", default=[], metavar="RULE",
        help="cn:NAME or group:NAME that may CONNECT over TCP (repeatable; default: the identities of the --allow rules)",
    )
    group.add_argument(
        "--egress-kubelet-port", type=int, action="append", default=[], metavar="PORT",
        help="CONNECT port that means a node's kubelet (repeatable; default: 10250)",
    )
    group.add_argument(
        "--egress-head-timeout", type=float, metavar="SECONDS",
        help="time from connect (TLS done) to a complete CONNECT head, then the peer is closed (default: 10)",
    )
    group.add_argument(
        "--egress-direct", action="append", default=[], metavar="CIDR",
        help="dial targets in CIDR directly when no edge node has their IP (repeatable; default: none, refuse them)",
    )
