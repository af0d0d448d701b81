"""EdgeConfig: everything edgestream needs, as plain frozen data.

Field names follow edgecore.yaml's ``modules.edgeStream``; defaults are KubeEdge's.
"""

from __future__ import annotations

import argparse
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from streamops.admin.config import AdminConfig, add_admin_arguments
from streamops.kubeedge_config import edgestream_settings, load_yaml
from streamproto.tunnel.errors import ConfigError

__all__ = ["EdgeConfig", "EmulatorConfig", "add_arguments"]

logger = logging.getLogger(__name__)

SECONDS = 1.0
KiB = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulatorConfig:
    pods: tuple[tuple[str, str, str], ...] = (("default", "demo", "app"),)
    """(namespace, pod, container) triples the emulator pretends to run."""
    log_rate: float = 10.0
    """Log lines per second per container; 0 writes as fast as the tunnel takes them."""
    history: int = 100
    """Lines each container has already written when the edge starts."""
    line_size: int = 0
    """Pad lines to this many bytes (benchmarks); 0 keeps them natural."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeConfig:
    server: str = "127.0.0.1:10004"
    """cloudstream's tunnel address, ``host:port`` (``edgeStream.server``)."""
    node_name: str = field(default_factory=socket.gethostname)
    """``modules.edged.hostnameOverride``: must equal the CN of the client certificate."""
    node_ip: str = ""
    """Announced as SessionInternalIP; empty lets the cloud use the peer address."""
    tls_tunnel_ca_file: Path = Path("/etc/kubeedge/ca/rootCA.crt")
    tls_tunnel_cert_file: Path = Path("/etc/kubeedge/certs/server.crt")
    tls_tunnel_private_key_file: Path = field(default=Path("/etc/kubeedge/certs/server.key"), repr=False)
    cert_watch_interval: float = 3 * SECONDS
    """Seconds between checks of the certificate, key and CA files; the next dial uses changed ones (SIGHUP: now)."""
    verify_server: bool = True
    """Check cloudstream's certificate against the CA (a Go edge never does)."""
    server_name: str | None = None
    """Name expected in the cloud's certificate; defaults to the host part of ``server``."""
    handshake_timeout: float = 30 * SECONDS
    ping_interval: float = 5 * SECONDS
    ping_timeout: float = 20 * SECONDS
    """Pong timeout when the cloud is kubeedge-stream (it answers at once)."""
    ping_timeout_go: float = 150 * SECONDS
    """Pong timeout for a Go cloudcore, which reads nothing for up to 120 s after a dial."""
    reconnect_initial: float = 0.5 * SECONDS
    ha: bool = True
    """Offer our HA mode: keep one tunnel per cloudstream replica when the cloud announces them."""
    replica_probe_interval: float = 300 * SECONDS
    """HA mode: while the edge holds every replica it knows of, one dial about this often (jittered)
    learns the current count and finds a replica added by a scale-up (0: never)."""
    reconnect_max: float = 6 * SECONDS
    """Longest redial delay, and so the longest wait after the cloud is back (see streamproto/tunnel/backoff.py)."""
    reconnect_window: float = 2 * SECONDS
    """The first redial after a lost tunnel is spread over this, so a fleet does not redial at once."""
    max_payload: int = 64 * KiB
    backend: str = "cri"
    """``cri`` (containerd), ``emulator`` or ``kubelet``."""
    emulator: EmulatorConfig = EmulatorConfig()
    cri_endpoint: str = "unix:///run/containerd/containerd.sock"
    cri_timeout: float = 10 * SECONDS
    """Seconds per CRI call (and per connect to a local server)."""
    kubelet_address: str = "127.0.0.1:10350"
    """The kubelet backend's target: edged's read-only port, as KubeEdge's EdgeStream uses."""
    drain_timeout: float = 10 * SECONDS
    stall_timeout: float = 10 * SECONDS
    """How long the tunnel reader waits for one stream's backend before ending that stream."""
    cert_renewal: bool = True
    """Offer ``renew``: ask a cloudstream that holds the tunnel CA key for a new certificate
    when the current one nears expiry (edgestream/cert_renewal.py)."""
    renew_fraction: float = 2 / 3
    """Renew once this fraction of the certificate's lifetime has passed ..."""
    renew_min_left: float = 24 * 3600 * SECONDS
    """... or when fewer seconds than this remain (never before half the lifetime)."""
    admin: AdminConfig = AdminConfig()
    """The admin HTTP server (/metrics, /healthz, /readyz, /debug): off unless a port is given."""

    def __post_init__(self) -> None:
        host, sep, port = self.server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"edgeStream.server {self.server!r} must be host:port")
        if not self.cert_watch_interval > 0:
            raise ConfigError(f"cert_watch_interval {self.cert_watch_interval} must be positive")
        if not self.node_name:
            raise ConfigError("the node name is empty")
        if self.backend not in ("cri", "emulator", "kubelet"):
            raise ConfigError(f"unknown backend {self.backend!r}: use cri, emulator or kubelet")
        if not 0 < self.renew_fraction < 1 or self.renew_min_left < 0:
            raise ConfigError(f"--renew-at {self.renew_fraction} must be between 0 and 1, --renew-min-left >= 0")

    @property
    def url(self) -> str:
        return f"wss://{self.server}/v1/kubeedge/connect"

    @property
    def host(self) -> str:
        return self.server.rpartition(":")[0].strip("[]")

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> EdgeConfig:
        """defaults < edgecore.yaml (``--config``) < command-line flags."""
        settings: dict[str, object] = {}
        if ns.config:
            enabled, settings = edgestream_settings(load_yaml(Path(ns.config)))
            if not enabled:
                logger.warning(
                    "modules.edgeStream.enable is false in %s; starting anyway (edgestream was run explicitly)", ns.config
                )
        flags = {
            "server": ns.server, "node_name": ns.node_name, "node_ip": ns.node_ip, "backend": ns.backend,
            "cri_endpoint": ns.cri_endpoint, "cri_timeout": ns.cri_timeout, "drain_timeout": ns.drain_timeout,
            "kubelet_address": ns.kubelet_address, "ping_interval": ns.ping_interval, "ping_timeout": ns.ping_timeout,
            "cert_watch_interval": getattr(ns, "cert_watch_interval", None),
        }
        settings.update({k: v for k, v in flags.items() if v is not None})
        node = str(settings.get("node_name") or socket.gethostname())
        if ns.pki_dir:
            pki = Path(ns.pki_dir)
            settings.update(
                tls_tunnel_ca_file=pki / "ca/rootCA.crt",
                tls_tunnel_cert_file=pki / f"edge/{node}/server.crt",
                tls_tunnel_private_key_file=pki / f"edge/{node}/server.key",
            )
        for key in ("tls_tunnel_ca_file", "tls_tunnel_cert_file", "tls_tunnel_private_key_file"):
            if getattr(ns, key, None):
                settings[key] = Path(getattr(ns, key))
        if ns.insecure_skip_verify:
            settings["verify_server"] = False
        if getattr(ns, "no_cert_renewal", False):
            settings["cert_renewal"] = False
        if getattr(ns, "single_tunnel", False):
            settings["ha"] = False
        if getattr(ns, "replica_probe_interval", None) is not None:
            settings["replica_probe_interval"] = ns.replica_probe_interval
        renew = {"renew_fraction": getattr(ns, "renew_at", None), "renew_min_left": getattr(ns, "renew_min_left", None)}
        settings.update({k: v for k, v in renew.items() if v is not None})
        pods = tuple(_parse_pod(p) for p in (ns.emulate or ["default/demo/app"]))
        if getattr(ns, "admin_address", None) is not None:  # (tests build namespaces by hand)
            settings["admin"] = AdminConfig.from_args(ns)
        settings["emulator"] = EmulatorConfig(
            pods=pods, log_rate=ns.emulate_log_rate, history=ns.emulate_history, line_size=ns.emulate_line_size
        )
        return cls(**settings)  # type: ignore[arg-type]


def _parse_pod(text: str) -> tuple[str, str, str]:
    parts = text.split("/")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"--emulate {text!r}: expected namespace/pod/container")
    return parts[0], parts[1], parts[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_admin_arguments(parser, example_port=10006)
    # Flags default to None so that edgecore.yaml (--config) fills what they leave out.
    parser.add_argument(
        "--config",
        help="edgecore.yaml: reads modules.edgeStream and modules.edged (default: none; e.g. /etc/kubeedge/config/edgecore.yaml)",
    )
    parser.add_argument("--server", help="cloudstream tunnel host:port (default 127.0.0.1:10004)")
    parser.add_argument("--node-name", help="node name (default: modules.edged.hostnameOverride, else the hostname)")
    parser.add_argument(
        "--node-ip", help="SessionInternalIP announced to the cloud (default: modules.edged.nodeIP, else the peer address)"
    )
    parser.add_argument("--pki-dir", help="a `streamcerts lab` directory (default: none: /etc/kubeedge)")
    for name, what in (
        ("tls_tunnel_ca_file", "CA that signs cloudstream's tunnel certificate"),
        ("tls_tunnel_cert_file", "this node's client certificate (CN = node name)"),
        ("tls_tunnel_private_key_file", "its private key"),
    ):
        default = EdgeConfig.__dataclass_fields__[name].default
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=f"{what} (default {default}, or under --pki-dir)")
    parser.add_argument("--single-tunnel", action="store_true",
                        help="keep one tunnel even when cloudstream announces replicas (default: one per replica)")
    parser.add_argument("--replica-probe-interval", type=float, metavar="SECONDS",
                        help="HA mode: seconds between dials that look for a new replica while all are held (default 300)")
    parser.add_argument(
        "--cert-watch-interval", type=float, metavar="SECONDS",
        help="seconds between checks of the certificate/key/CA files; the next dial uses new ones (default 3; SIGHUP: at once)",
    )
    parser.add_argument(
        "--insecure-skip-verify", action="store_true", help="do not verify the cloud, as a Go edge (default: off, verify)"
    )
    parser.add_argument("--ping-interval", type=float, help="seconds between keepalive pings (default 5)")
    parser.add_argument("--ping-timeout", type=float, help="pong timeout with our cloud (default 20; a Go cloud gets 150)")
    parser.add_argument("--backend", choices=["cri", "emulator", "kubelet"], help="where streams are served (default cri)")
    parser.add_argument("--kubelet-address", help="kubelet backend: edged's host:port (default 127.0.0.1:10350)")
    parser.add_argument("--drain-timeout", type=float, help="seconds running streams get after the first SIGTERM (default 10)")
    parser.add_argument("--cri-timeout", type=float, help="seconds per CRI call (default: edgecore.yaml, else 10)")
    parser.add_argument("--cri-endpoint", help="containerd's CRI socket (default: edgecore.yaml, else containerd's)")
    parser.add_argument("--no-cert-renewal", action="store_true",
                        help="never ask the cloud for a renewed tunnel certificate (default: ask when due)")
    parser.add_argument("--renew-at", type=float, metavar="FRACTION",
                        help="renew the tunnel certificate after this fraction of its lifetime (default 0.667)")
    parser.add_argument("--renew-min-left", type=float, metavar="SECONDS",
                        help="... or when fewer seconds remain, but not before half its lifetime (default 86400)")
    parser.add_argument(
        "--emulate", action="append", metavar="NS/POD/CONTAINER", help="an emulated container (repeat; default default/demo/app)"
    )
    parser.add_argument("--emulate-log-rate", type=float, default=10.0, help="lines per second; 0 = unlimited")
    parser.add_argument("--emulate-history", type=int, default=100, help="log lines each container has at start")
    parser.add_argument("--emulate-line-size", type=int, default=0, help="pad log lines to this many bytes")
