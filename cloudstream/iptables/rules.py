"""The nat rules that bring the API server's kubelet traffic to cloudstream, sans-I/O.

Input: what ``iptables-save -t nat`` printed and the edge nodes we want. Output: ONE
``iptables-restore --noflush`` input (or ``None`` when the table already is as wanted). Nothing
here runs a process; ``backend`` does.

Theory of operation:

* Our rules live in one dedicated chain (``KUBEEDGE-STREAM``), one rule per node::

      -A KUBEEDGE-STREAM -d 10.0.0.7/32 -p tcp -m tcp --dport 10250 \\
         -m comment --comment "kubeedge-stream node edge-7" -j DNAT --to-destination 10.0.0.1:10003

  KubeEdge's iptables-manager uses ``TUNNEL-PORT`` for a different scheme (one rule per cloudcore
  replica, matched by a per-replica *port*, any destination) and flushes that chain when it
  starts; a chain of our own never fights it, and says whose rules these are.
* Built-in chains (OUTPUT; PREROUTING when configured) get exactly one jump to it. We never
  declare a built-in chain in the restore input (that would reset its policy) and never touch a
  rule that does not jump to our chain.
* ``--noflush`` with ``:KUBEEDGE-STREAM - [0:0]`` creates or flushes our chain alone; the rules
  follow in the same input, so the chain is rewritten whole, in one kernel transaction (legacy:
  one table replace; nft: one batch). Without the final ``COMMIT`` line iptables-restore applies
  nothing, so a writer killed midway leaves the table as it was; the next run converges.
* Rules are rendered exactly as ``iptables-save`` prints them, so "already as wanted" is a string
  comparison and a second run writes nothing (the table stays byte-identical).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamproto.tunnel.errors import ConfigError

__all__ = [
    "CHAIN", "EdgeNode", "NatTable", "Plan", "PortRoute", "RuleConfig", "comment_name", "parse_save", "plan_cleanup",
    "plan_sync", "save_quote",
]

CHAIN = "KUBEEDGE-STREAM"
JUMP_COMMENT = "kubeedge-stream"
NODE_COMMENT = "kubeedge-stream node "
PORT_COMMENT = "kubeedge-stream tunnel-port "
BUILTIN = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")
_CHAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,28}")
_NO_QUOTE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_COMMENT_SAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_NAME = 200
"""xt_comment holds 256 bytes; node names are at most 253 (DNS subdomain): a longer one is cut."""


def save_quote(text: str) -> str:
    """A string argument as ``iptables-save`` prints it (xtables_save_string): bare when only
    letters, digits, ``_`` and ``-``; else in double quotes with ``"``, ``\\`` and ``'`` escaped."""
    if text and all(c in _NO_QUOTE for c in text):
        return text
    return '"' + re.sub(r"([\"\\'])", r"\\\1", text) + '"'


def comment_name(node: str) -> str:
    """A node name fit for a rule comment. Names come from edges (certificate CN, announced name):
    anything outside ``[A-Za-z0-9._-]`` becomes ``_``, so no name can end a line or a quote."""
    return _COMMENT_SAFE.sub("_", node)[:MAX_NAME] or "_"


def _ipv4(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not an IP address") from None
    if not isinstance(ip, ipaddress.IPv4Address):
        raise ConfigError(f"{what} {text} is IPv6: the manager writes IPv4 nat rules (iptables) only")
    if ip.is_unspecified or ip.is_multicast:
        raise ConfigError(f"{what} {text} cannot be a DNAT match or target")
    return ip


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleConfig:
    """What the rules say besides the nodes."""

    to_address: str
    """Where cloudstream's kubelet API listens, as the DNAT target (an IPv4 address)."""
    to_port: int = 10003
    """cloudstream's ``streamPort``."""
    kubelet_port: int = 10250
    """The port the API server dials on a node (``kubeletEndpoint.Port``)."""
    chain: str = CHAIN
    prerouting: bool = False
    """Also jump from PREROUTING: traffic from other hosts or containers (the API server in a pod
    without hostNetwork); OUTPUT covers an API server on this host."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "to_address", str(_ipv4(self.to_address, "DNAT target address")))
        for name in ("to_port", "kubelet_port"):
            if not 0 < getattr(self, name) <= 65535:
                raise ConfigError(f"{name} {getattr(self, name)} is not a TCP port")
        if not _CHAIN_NAME.fullmatch(self.chain) or self.chain in BUILTIN:
            raise ConfigError(f"chain name {self.chain!r}: 1-28 of A-Z a-z 0-9 _ -, not a built-in chain")

    @property
    def jump_from(self) -> tuple[str, ...]:
        return ("PREROUTING", "OUTPUT") if self.prerouting else ("OUTPUT",)

    def jump_rule(self, source: str) -> str:
        return f"-A {source} -m comment --comment {save_quote(JUMP_COMMENT)} -j {self.chain}"

    def node_rule(self, node: EdgeNode) -> str:
        return (
            f"-A {self.chain} -d {node.ip}/32 -p tcp -m tcp --dport {self.kubelet_port} -m comment --comment "
            f"{save_quote(NODE_COMMENT + comment_name(node.name))} -j DNAT --to-destination {self.to_address}:{self.to_port}"
        )

    def port_rule(self, route: PortRoute) -> str:
        """KubeEdge's TUNNEL-PORT rule (``-p tcp --dport <port> -j DNAT --to <ip>:<streamPort>``, any
        destination, as its iptables-manager writes it), in our chain."""
        return (
            f"-A {self.chain} -p tcp -m tcp --dport {route.port} -m comment --comment "
            f"{save_quote(PORT_COMMENT + route.ip)} -j DNAT --to-destination {route.ip}:{self.to_port}"
        )


@dataclass(frozen=True, slots=True)
class PortRoute:
    """One entry of KubeEdge's tunnel-port record: the API server dials ``<node ip>:port`` for the
    nodes of the replica at ``ip``; that replica's kubelet API gets it (``cloudstream/kube``)."""

    port: int
    ip: str

    def __post_init__(self) -> None:
        if not 0 < self.port <= 65535:
            raise ConfigError(f"tunnel port {self.port} is not a TCP port")
        object.__setattr__(self, "ip", str(_ipv4(self.ip, f"tunnel port {self.port}: replica IP")))


@dataclass(frozen=True, slots=True)
class EdgeNode:
    """One node the API server reaches at ``ip`` (IPv4, canonical spelling)."""

    name: str
    ip: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "ip", str(_ipv4(self.ip, f"node {self.name!r}: internal IP")))

    @property
    def sort_key(self) -> tuple[int, str]:
        return int(ipaddress.IPv4Address(self.ip)), self.name

    @classmethod
    def parse(cls, text: str) -> EdgeNode:
        """``NAME=IP``, as ``--node`` takes it."""
        name, sep, ip = text.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--node {text!r}: expected NAME=IP, e.g. edge-1=192.168.1.20")
        return cls(name.strip(), ip)


@dataclass(slots=True)
class NatTable:
    """The nat table as ``iptables-save`` printed it: chain names and the ``-A`` lines in order."""

    chains: set[str] = field(default_factory=set)
    rules: list[str] = field(default_factory=list)

    def chain_rules(self, chain: str) -> list[str]:
        prefix = f"-A {chain} "
        return [r for r in self.rules if r.startswith(prefix)]

    def jumps_to(self, chain: str) -> list[str]:
        """Rules of other chains whose target is ``chain``."""
        return [r for r in self.rules if r.endswith(f" -j {chain}") and not r.startswith(f"-A {chain} ")]

    def nodes(self, config: RuleConfig) -> dict[str, str]:
        """ip -> node name, read back from our chain (names as the comments hold them)."""
        found = {}
        for rule in self.chain_rules(config.chain):
            m = _NODE_RULE.search(rule)
            if m:
                found[m.group(1)] = m.group(2) or m.group(3)
        return found


_NODE_RULE = re.compile(r" -d (\d+\.\d+\.\d+\.\d+)/32 .*--comment (?:\"kubeedge-stream node ([^\"]*)\"|kubeedge-stream node(\S*))")


def parse_save(text: str) -> NatTable:
    """The ``*nat`` section of ``iptables-save`` output (other tables and comments ignored)."""
    table = NatTable()
    in_nat = False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            in_nat = line == "*nat"
        elif not in_nat or not line or line.startswith("#"):
            continue
        elif line == "COMMIT":
            in_nat = False
        elif line.startswith(":"):
            table.chains.add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            table.rules.append(line)
    return table


@dataclass(frozen=True, slots=True)
class Plan:
    """What one run changes: ``restore`` is the iptables-restore input, None when nothing changes."""

    restore: str | None
    added: tuple[str, ...] = ()
    """Node IPs that get a rule."""
    removed: tuple[str, ...] = ()
    """Node IPs whose rule goes."""
    jumps_added: tuple[str, ...] = ()
    jumps_removed: int = 0
    rules: int = 0
    """Node rules in our chain after the run."""

    @property
    def changes(self) -> bool:
        return self.restore is not None


def unique_nodes(nodes: Iterable[EdgeNode]) -> list[EdgeNode]:
    """One node per IP, sorted by address; two names for one IP is the caller's error."""
    by_ip: dict[str, EdgeNode] = {}
    for node in sorted(nodes, key=lambda n: n.sort_key):
        other = by_ip.setdefault(node.ip, node)
        if other.name != node.name:
            raise ConfigError(f"nodes {other.name!r} and {node.name!r} both claim internal IP {node.ip}")
    return list(by_ip.values())


def _jump_plan(config: RuleConfig, current: NatTable) -> tuple[list[str], list[str]]:
    """(``-D`` lines, ``-A`` lines) that leave exactly one jump per wanted source chain."""
    deletes, adds = [], []
    wanted = {config.jump_rule(source) for source in config.jump_from}
    seen: set[str] = set()
    for rule in current.jumps_to(config.chain):
        if rule in wanted and rule not in seen:
            seen.add(rule)
        else:  # a duplicate, a jump from a chain no longer configured, or an old spelling
            deletes.append("-D " + rule[3:])
    adds = [r for r in (config.jump_rule(s) for s in config.jump_from) if r not in seen]
    return deletes, adds


def plan_sync(
    config: RuleConfig, nodes: Iterable[EdgeNode], current: NatTable, ports: Iterable[PortRoute] = ()
) -> Plan:
    """The restore input that makes our chain hold exactly ``nodes``' rules (then one rule per
    tunnel-port ``ports`` entry, by port), jumped to once."""
    wanted = unique_nodes(nodes)
    by_port = {route.port: route for route in sorted(ports, key=lambda r: (r.port, r.ip))}
    rules = [config.node_rule(node) for node in wanted] + [config.port_rule(r) for _, r in sorted(by_port.items())]
    have = current.chain_rules(config.chain)
    deletes, adds = _jump_plan(config, current)
    if config.chain in current.chains and have == rules and not deletes and not adds:
        return Plan(None, rules=len(rules))
    old_ips, new_ips = set(current.nodes(config)), {node.ip for node in wanted}
    lines = ["*nat", f":{config.chain} - [0:0]", *rules, *deletes, *adds, "COMMIT", ""]
    return Plan(
        "\n".join(lines),
        added=tuple(sorted(new_ips - old_ips, key=ipaddress.IPv4Address)),
        removed=tuple(sorted(old_ips - new_ips, key=ipaddress.IPv4Address)),
        jumps_added=tuple(r.split(" ", 2)[1] for r in adds),
        jumps_removed=len(deletes),
        rules=len(rules),
    )


def plan_cleanup(config: RuleConfig, current: NatTable) -> Plan:
    """The restore input that removes our chain and every jump to it (None: nothing there)."""
    jumps = current.jumps_to(config.chain)
    if config.chain not in current.chains and not jumps:
        return Plan(None)
    lines = ["*nat", *("-D " + r[3:] for r in jumps), f":{config.chain} - [0:0]", f"-X {config.chain}", "COMMIT", ""]
    return Plan("\n".join(lines), removed=tuple(sorted(current.nodes(config))), jumps_removed=len(jumps))
