"""The manager's settings and flags, shared by ``cloudstream --manage-iptables`` and ``cloudstream iptables``."""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass

from streamproto.tunnel.errors import ConfigError

from .rules import CHAIN, RuleConfig

__all__ = ["BACKENDS", "IptablesSettings", "add_rule_arguments", "add_server_arguments", "rule_config", "server_settings"]

BACKENDS = ("auto", "nft", "legacy")


@dataclass(frozen=True, slots=True, kw_only=True)
class IptablesSettings:
    """The server loop (``--manage-iptables``): rules follow the connected tunnels."""

    rules: RuleConfig
    backend: str = "auto"
    debounce: float = 0.2
    """Seconds without a tunnel coming or going before a sync (a reconnect wave is one write)."""
    max_delay: float = 1.0
    """Seconds after the first change at most, however busy the tunnels: a new node waits no longer."""
    resync_interval: float = 60.0
    """Seconds between syncs without a change: repairs rules someone else removed (``iptables -F``)."""
    retry_interval: float = 5.0
    """Seconds before a failed sync is tried again (doubling up to ``resync_interval``)."""
    startup_grace: float = 30.0
    """Seconds after start during which rules of nodes not yet reconnected are kept (a restart
    keeps the API server's connections coming to us, not to the unreachable node IPs)."""
    allow: tuple[ipaddress.IPv4Network, ...] = ()
    """Node IPs that may get a rule (empty: any). An edge announces its IP; a rule for the IP of a
    node that is *not* an edge would take that node's kubelet traffic, so fence edges' ranges."""
    verified_only: bool = False
    """Rules only for IPs the edge's certificate proves (IP SAN), not merely announced ones."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"iptables backend {self.backend!r}: one of {', '.join(BACKENDS)}")
        for name in ("debounce", "max_delay", "resync_interval", "retry_interval"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"iptables {name} must be positive")
        if self.startup_grace < 0:
            raise ConfigError("iptables startup_grace must not be negative")


def default_target(stream_address: str | None) -> str:
    """cloudstream's listen address when it is one IPv4 address, else loopback."""
    try:
        ip = ipaddress.IPv4Address(stream_address or "")
    except ValueError:
        return "127.0.0.1"
    return "127.0.0.1" if ip.is_unspecified else str(ip)


def rule_config(
    *, to_address: str | None, stream_address: str | None, stream_port: int | None, kubelet_port: int | None,
    chain: str | None, prerouting: bool,
) -> RuleConfig:
    target = to_address or default_target(stream_address)
    config = RuleConfig(
        to_address=target, to_port=stream_port or 10003, kubelet_port=kubelet_port or 10250, chain=chain or CHAIN,
        prerouting=prerouting,
    )
    if prerouting and ipaddress.IPv4Address(config.to_address).is_loopback:
        raise ConfigError(
            f"DNAT target {config.to_address} is a loopback address: packets from other hosts (PREROUTING) "
            "cannot be sent there (the kernel drops them unless route_localnet=1); give the target address "
            "(--to-address / --iptables-to-address) as an address of this host where cloudstream listens"
        )
    return config


def add_rule_arguments(parser: argparse.ArgumentParser, prefix: str = "--") -> None:
    """The rule's flags: ``--to-address`` etc. for the command, ``--iptables-to-address`` etc. in the server."""
    parser.add_argument(
        f"{prefix}to-address", dest="iptables_to_address", metavar="ADDR",
        help="DNAT target: the IPv4 address of cloudstream's kubelet API as the API server's host reaches it "
             "(default: the stream address when it is one IPv4 address, else 127.0.0.1)",
    )
    parser.add_argument(
        "--kubelet-port", type=int, metavar="PORT",
        help="the port the API server dials on a node, matched by the rules (default 10250)",
    )
    parser.add_argument(
        f"{prefix}chain", dest="iptables_chain", metavar="NAME", help=f"our nat chain (default {CHAIN})",
    )
    parser.add_argument(
        f"{prefix}prerouting", dest="iptables_prerouting", action="store_true",
        help="also jump from PREROUTING, for an API server on another host or in a pod network (off: OUTPUT only)",
    )
    parser.add_argument(
        f"{prefix}backend", dest="iptables_backend", choices=BACKENDS, default="auto",
        help="iptables backend to write: nft, legacy, or auto (default: auto, the one whose nat table holds "
             "more rules, else the one `iptables` points to)",
    )


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--manage-iptables", action="store_true",
        help="keep nat DNAT rules nodeIP:kubelet-port -> this server for the connected edge nodes (off); "
             "the same rules as `cloudstream iptables sync`",
    )
    add_rule_arguments(parser, prefix="--iptables-")
    parser.add_argument(
        "--iptables-allow-cidr", action="append", default=[], metavar="CIDR",
        help="only node IPs in this range get a rule (repeat; default: any announced IPv4)",
    )
    parser.add_argument(
        "--iptables-verified-only", action="store_true",
        help="rules only for node IPs the edge certificate carries as IP SANs (off: announced IPs too)",
    )
    parser.add_argument(
        "--iptables-startup-grace", type=float, metavar="SECONDS",
        help="after start, keep rules of nodes not yet reconnected this long (default 30)",
    )


def server_settings(ns: argparse.Namespace, stream_address: str, stream_port: int) -> IptablesSettings | None:
    if not getattr(ns, "manage_iptables", False):
        return None
    rules = rule_config(
        to_address=ns.iptables_to_address, stream_address=stream_address, stream_port=stream_port,
        kubelet_port=ns.kubelet_port, chain=ns.iptables_chain, prerouting=ns.iptables_prerouting,
    )
    grace = {} if ns.iptables_startup_grace is None else {"startup_grace": ns.iptables_startup_grace}
    try:
        allow = tuple(ipaddress.IPv4Network(c, strict=False) for c in ns.iptables_allow_cidr)
    except ValueError as exc:
        raise ConfigError(f"--iptables-allow-cidr: {exc} (an IPv4 range, e.g. 192.168.0.0/16)") from None
    return IptablesSettings(
        rules=rules, backend=ns.iptables_backend, allow=allow, verified_only=ns.iptables_verified_only, **grace
    )
