"""FleetProfile: what ``edgestream emulate`` runs, as frozen data (YAML file < flags).

A profile file (every key optional)::

    nodes: 1000
    server: 127.0.0.1:10004
    pki_dir: /tmp/fleet-pki        # a `streamcerts lab` directory; missing node certs are issued
    name: "edge-{i:05d}"           # node i's name (str.format with i)
    cidr: 10.128.0.0/16            # node i gets the i-th host address of it (its IP SAN)
    pods: [default/demo/app]       # every node runs these containers ...
    pods_per_node: 0               # ... plus default/pod-<j>/app for j < pods_per_node
    log_rate: 10                   # lines per second per container (0: as fast as read)
    line_size: 0                   # pad log lines to this many bytes
    history: 100                   # lines written before the node started
    ramp: 200                      # dials per second at start (N dials never land at once)
    churn: {rate: 0, down: 5}      # nodes leaving per second, seconds each stays away
    ping_interval: 10
    ping_timeout: 20
    report_every: 10               # seconds between "fleet ..." summary lines (0: never)

Exec runs the emulator's shell (echo, cat, seq, sh -c ...), port-forward reaches an echo
service on every port, stats and metrics are the emulator's: see ``backends/emulator.py``.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass, fields, replace
from pathlib import Path

from streamops.kubeedge_config import load_yaml
from streamproto.tunnel.errors import ConfigError

from .config import EmulatorConfig

__all__ = ["FleetProfile", "add_arguments"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetProfile:
    nodes: int = 10
    server: str = "127.0.0.1:10004"
    server_name: str | None = None
    """Name expected in the cloud's certificate (default: the host part of ``server``)."""
    pki_dir: Path = Path("fleet-pki")
    name: str = "edge-{i:05d}"
    cidr: str = "10.128.0.0/16"
    pods: tuple[str, ...] = ("default/demo/app",)
    pods_per_node: int = 0
    log_rate: float = 10.0
    line_size: int = 0
    history: int = 100
    ramp: float = 200.0
    churn_rate: float = 0.0
    churn_down: float = 5.0
    ping_interval: float = 10.0
    ping_timeout: float = 20.0
    reconnect_max: float = 30.0
    report_every: float = 10.0
    replica_probe: float = 300.0
    """HA mode: seconds between dials looking for a new replica while a node holds all it knows."""

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ConfigError(f"nodes must be at least 1, not {self.nodes}")
        try:
            network = ipaddress.ip_network(self.cidr, strict=False)
        except ValueError:
            raise ConfigError(f"cidr {self.cidr!r} is not a network (e.g. 10.128.0.0/16)") from None
        if network.num_addresses - 2 < self.nodes:
            raise ConfigError(f"cidr {self.cidr} has fewer than {self.nodes} host addresses: one per node")
        try:
            names = {self.node_name(0), self.node_name(self.nodes - 1)}
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"name pattern {self.name!r}: {exc} (use {{i}}, e.g. edge-{{i:05d}})") from None
        if len(names) < 2 and self.nodes > 1:
            raise ConfigError(f"name pattern {self.name!r} gives every node the same name: put {{i}} in it")
        if self.ramp <= 0:
            raise ConfigError("ramp (dials per second) must be positive")
        if self.churn_rate < 0 or self.churn_down < 0:
            raise ConfigError("churn rate and down time must not be negative")
        for text in self.pods:
            if len(text.split("/")) != 3 or not all(text.split("/")):
                raise ConfigError(f"pod {text!r}: expected namespace/pod/container")

    def node_name(self, i: int) -> str:
        return self.name.format(i=i)

    def node_ip(self, i: int) -> str:
        network = ipaddress.ip_network(self.cidr, strict=False)
        return str(network.network_address + 1 + i)

    def emulator(self) -> EmulatorConfig:
        pods = [tuple(p.split("/")) for p in self.pods]
        pods += [("default", f"pod-{j}", "app") for j in range(self.pods_per_node)]
        return EmulatorConfig(
            pods=tuple(dict.fromkeys(pods)),  # type: ignore[arg-type]
            log_rate=self.log_rate, history=self.history, line_size=self.line_size,
        )

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> FleetProfile:
        """defaults < the profile file (``--profile``) < command-line flags."""
        settings: dict[str, object] = {}
        if ns.profile:
            settings.update(_from_yaml(Path(ns.profile)))
        for f in fields(cls):
            value = getattr(ns, f.name, None)
            if value is not None:
                settings[f.name] = value
        if "pki_dir" in settings:
            settings["pki_dir"] = Path(str(settings["pki_dir"]))
        pods = settings.get("pods")
        if isinstance(pods, list):
            settings["pods"] = tuple(str(p) for p in pods)
        try:
            return replace(cls(), **settings)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"profile: {exc}") from None


def _from_yaml(path: Path) -> dict[str, object]:
    data = load_yaml(path)
    churn = data.pop("churn", None)
    if isinstance(churn, dict):
        if "rate" in churn:
            data["churn_rate"] = churn.pop("rate")
        if "down" in churn:
            data["churn_down"] = churn.pop("down")
        if churn:
            raise ConfigError(f"{path}: unknown churn keys {sorted(churn)} (rate, down)")
    elif churn is not None:
        raise ConfigError(f"{path}: churn must be a mapping {{rate: R, down: S}}")
    known = {f.name: f for f in fields(FleetProfile)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    casts = {"nodes": int, "pods_per_node": int, "line_size": int, "history": int}
    out: dict[str, object] = {}
    for key, value in data.items():
        try:
            if key in casts:
                out[key] = casts[key](value)
            elif known[key].type in ("float",):
                out[key] = float(value)
            else:
                out[key] = value
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: {key}: {value!r} is not a number") from None
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="a YAML profile (see edgestream/fleet_profile.py); flags override it (default: none)")
    parser.add_argument("--nodes", type=int, help="how many emulated nodes (default 10)")
    parser.add_argument("--server", help="cloudstream tunnel host:port (default 127.0.0.1:10004)")
    parser.add_argument("--server-name", help="name in the cloud's certificate (default: the host of --server)")
    parser.add_argument("--pki-dir", help="a `streamcerts lab` directory; missing node certificates are issued (default fleet-pki)")
    parser.add_argument("--name", help="node name pattern, str.format with i (default edge-{i:05d})")
    parser.add_argument("--cidr", help="node IPs: node i gets the i-th host address (default 10.128.0.0/16)")
    parser.add_argument("--pod", dest="pods", action="append", metavar="NS/POD/CONTAINER",
                        help="a container on every node (repeat; default default/demo/app)")
    parser.add_argument("--pods-per-node", type=int, help="extra pods default/pod-<j>/app per node (default 0)")
    parser.add_argument("--log-rate", type=float, help="log lines per second per container; 0 = unlimited (default 10)")
    parser.add_argument("--line-size", type=int, help="pad log lines to this many bytes (default 0)")
    parser.add_argument("--history", type=int, help="log lines already written at start (default 100)")
    parser.add_argument("--ramp", type=float, help="dials per second while the fleet comes up (default 200)")
    parser.add_argument("--churn-rate", type=float, help="nodes leaving per second (default 0: no churn)")
    parser.add_argument("--churn-down", type=float, help="seconds a churned node stays away (default 5)")
    parser.add_argument("--ping-interval", type=float, help="seconds between keepalive pings (default 10)")
    parser.add_argument("--ping-timeout", type=float, help="pong timeout (default 20)")
    parser.add_argument("--reconnect-max", type=float, help="longest redial backoff, seconds (default 30)")
    parser.add_argument("--replica-probe", type=float,
                        help="HA mode: seconds between dials looking for a new replica while all are held (default 300)")
    parser.add_argument("--report-every", type=float, help="seconds between fleet summary lines (default 10; 0 = never)")
