"""The admin port's settings and flags (both processes)."""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass

from streamproto.tunnel.errors import ConfigError

__all__ = ["AdminConfig", "add_admin_arguments"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminConfig:
    """Off unless a port is given; loopback unless an address is given.

    Off by default: a new listening port on every edge host may clash with what already runs
    there (edgecore's 10350/10550, a second edgestream), and /debug names nodes and addresses
    without authentication. Loopback by default once on: a probe or a node-local Prometheus
    agent reaches it; exposing it beyond the host is a choice (``--admin-address 0.0.0.0`` in a
    pod, where the kubelet's probes come from outside the container's loopback).
    """

    address: str = "127.0.0.1"
    port: int | None = None
    """None: no admin server; 0: any free port (logged)."""

    def __post_init__(self) -> None:
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ConfigError(f"--admin-port {self.port} is not a TCP port")

    @property
    def enabled(self) -> bool:
        return self.port is not None

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return self.address == "localhost"

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> AdminConfig:
        return cls(address=ns.admin_address, port=ns.admin_port)


def add_admin_arguments(parser: argparse.ArgumentParser, example_port: int) -> None:
    parser.add_argument(
        "--admin-address", default="127.0.0.1", metavar="ADDR",
        help="listen address of the admin HTTP server (default 127.0.0.1: this host only)",
    )
    parser.add_argument(
        "--admin-port", type=int, default=None, metavar="PORT",
        help=f"serve /metrics, /healthz, /readyz, /debug/nodes, /debug/streams on this port, e.g. {example_port} "
        "(default: off; 0 picks a free port and logs it)",
    )
