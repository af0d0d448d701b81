"""CloudConfig: everything cloudstream needs, as plain frozen data.

Field names follow cloudcore.yaml's ``modules.cloudStream`` section; defaults are KubeEdge's.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from streamops.admin.config import AdminConfig, add_admin_arguments
from streamops.kubeedge_config import cloudstream_settings, load_yaml
from streamproto.tunnel.errors import ConfigError
from streamproto.tunnel.replicas import MAX_REPLICAS, valid_replica_id

from .egress.settings import EgressConfig, add_egress_arguments
from .iptables.settings import IptablesSettings, add_server_arguments, server_settings
from .kube.settings import KubeSettings, add_kube_arguments, kube_settings

__all__ = ["ALL_ROUTES", "AccessRule", "CloudConfig", "add_arguments"]

logger = logging.getLogger(__name__)

ALL_ROUTES = frozenset({"logs", "metrics", "exec", "attach", "portforward"})


@dataclass(frozen=True, slots=True)
class AccessRule:
    """Who may use which kubelet-API routes on 10003: ``cn:NAME`` or ``group:NAME``."""

    kind: str
    """``cn`` (certificate common name) or ``group`` (certificate organization)."""
    name: str
    routes: frozenset[str] = ALL_ROUTES

    @classmethod
    def parse(cls, text: str) -> AccessRule:
        """``cn:metrics-server=metrics,logs`` or ``group:system:masters`` (all routes)."""
        subject, _, routes = text.partition("=")
        kind, sep, name = subject.partition(":")
        if kind not in ("cn", "group") or not sep or not name:
            raise ConfigError(f"access rule {text!r}: expected cn:NAME[=routes] or group:NAME[=routes]")
        wanted = frozenset(r.strip() for r in routes.split(",") if r.strip()) if routes else ALL_ROUTES
        unknown = wanted - ALL_ROUTES
        if unknown:
            raise ConfigError(f"access rule {text!r}: unknown routes {sorted(unknown)}; known: {sorted(ALL_ROUTES)}")
        return cls(kind, name, wanted)

    def __str__(self) -> str:
        routes = "*" if self.routes == ALL_ROUTES else ",".join(sorted(self.routes))
        return f"{self.kind}:{self.name}={routes}"


DEFAULT_ACCESS = (AccessRule("cn", "kube-apiserver-kubelet-client"), AccessRule("group", "system:masters"))

SECONDS = 1.0
KiB = 1024
MiB = 1024 * KiB


def default_replica_id() -> str:
    """The pod's name in a Deployment (the downward API sets $POD_NAME), else the hostname
    (a pod's hostname is its name too)."""
    name = os.environ.get("POD_NAME", "") or socket.gethostname()
    return name if valid_replica_id(name) else "cloudstream"


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudConfig:
    tunnel_address: str = "0.0.0.0"
    tunnel_port: int = 10004
    """Where edges dial in (``tunnelPort``)."""
    stream_address: str = "0.0.0.0"
    stream_port: int = 10003
    """The kubelet API the API server reaches (``streamPort``)."""
    tls_tunnel_ca_file: Path = Path("/etc/kubeedge/ca/rootCA.crt")
    tls_tunnel_cert_file: Path = Path("/etc/kubeedge/certs/server.crt")
    tls_tunnel_private_key_file: Path = field(default=Path("/etc/kubeedge/certs/server.key"), repr=False)
    tls_stream_ca_file: Path = Path("/etc/kubeedge/ca/streamCA.crt")
    """The cluster CA that signs the API server's kubelet-client certificate."""
    tls_stream_cert_file: Path = Path("/etc/kubeedge/certs/stream.crt")
    tls_stream_private_key_file: Path = field(default=Path("/etc/kubeedge/certs/stream.key"), repr=False)
    serving_ca_cert_file: Path | None = None
    """A CA (certificate) that signs a per-node 10003 certificate for each dialled node IP; None: the
    stream certificate is presented to every connection (KubeEdge's way)."""
    serving_ca_key_file: Path | None = field(default=None, repr=False)
    serving_cert_cache: int = 1024
    """Per-node serving certificates kept (LRU; about 25 KB each)."""
    cert_watch_interval: float = 3 * SECONDS
    """Seconds between checks of the certificate, key and CA files (hot reload; SIGHUP reloads at once)."""
    verify_node_identity: bool = True
    """Refuse an edge whose certificate CN is not its announced node name (KubeEdge never checks)."""
    access: tuple[AccessRule, ...] = DEFAULT_ACCESS
    """Who may use which routes of 10003; default: the API server's kubelet-client identity."""
    ping_interval: float = 10 * SECONDS
    ping_timeout_go: float = 150 * SECONDS
    """Pong timeout for Go edges: a Go edge's reader may stall for long (spec: >120 s)."""
    ping_timeout: float = 20 * SECONDS
    """Pong timeout for our own edges (they answer at once): dead tunnels go within ~30 s."""
    connect_timeout: float = 30 * SECONDS
    """How long a stream waits for the edge's first answer before a 504."""
    stall_timeout: float = 10 * SECONDS
    """How long the tunnel reader waits for one stream's slow client before failing that stream."""
    stream_buffer: int = 1 * MiB
    """Per-stream receive buffer (high mark) between the tunnel and the API-server connection."""
    max_payload: int = 64 * KiB
    max_streams_per_node: int = 10_000
    shutdown_timeout: float = 5 * SECONDS
    shutdown_grace: float = 30 * SECONDS
    """After SIGTERM: how long running streams may go on (listeners already closed) before they are
    ended with an error to their client (a kubelet's default grace is 30 s too)."""
    admin: AdminConfig = AdminConfig()
    """The admin HTTP server (/metrics, /healthz, /readyz, /debug): off unless a port is given."""
    # -- connection hygiene on both ports (the accept layer, cloudstream/listener.py) --
    tls_handshake_timeout: float = 5 * SECONDS
    """From TCP accept to a finished TLS handshake, ClientHello included; then the peer is closed."""
    max_connections: int = 10_000
    """Open connections per port (10003 and 10004 each), pending ones included; more are refused.
    Lowered at start to what the open-file limit can hold (logged); the ports also share that
    limit's budget, each keeping a quarter of it (``descriptors.py``)."""
    max_pending_handshakes: int = 1_000
    """Unauthenticated connections per port (TLS handshake not done, or no client certificate on
    10003); when a new one comes at this cap, the oldest is closed."""
    max_pending_per_ip: int = 100
    """Unauthenticated connections per port from one source address; more from it are refused."""

    # --- misbehaviour budget of a tunnel (issue 15, finding 5) ---
    tunnel_max_violations: int = 100
    """Malformed tunnel messages an edge may send per window; one more closes its tunnel (1008)."""
    tunnel_violation_window: float = 10 * SECONDS
    """The window of ``tunnel_max_violations``, in seconds."""

    # --- 10003's HTTP (cloudstream/kubelet_api) ---
    request_head_timeout: float = 10 * SECONDS
    """How long a client may take to send a whole request head (and a body we discard); for the
    first request the clock starts when the TLS handshake ends (a slow client holds little)."""
    keepalive_idle_timeout: float = 120 * SECONDS
    """How long a keep-alive connection may sit idle between requests: above Go's 90 s
    ``IdleConnTimeout``, so the API server's client closes first and never races our close."""
    max_request_head: int = 64 * KiB
    """Request line + headers, bytes; 431 above."""
    max_request_headers: int = 100
    """Header fields per request; 431 above."""
    max_request_body: int = 1 * MiB
    """The largest Content-Length we read (and drop) on a logs/metrics request; 413 above."""

    # --- edge certificate renewal over the tunnel (cloudstream/cert_signer.py) ---
    tunnel_ca_key_file: Path | None = field(default=None, repr=False)
    """The tunnel CA's key (keadm: /etc/kubeedge/ca/rootCA.key); None: renewal off."""
    renew_max_days: float = 365.0
    """Longest validity of a renewed edge certificate, days (else the old one's lifetime)."""
    renew_max_per_hour: int = 6
    """Renewal requests one node may make per sliding hour (refused ones count too)."""

    egress: EgressConfig = EgressConfig()
    """The egress-selector front (HTTP CONNECT for kube-apiserver; off by default)."""
    # --- the iptables manager (cloudstream/iptables) ---
    iptables: IptablesSettings | None = None
    """``--manage-iptables``: keep one nat DNAT rule per connected node; None: off."""
    kube: KubeSettings | None = None
    """The Kubernetes API (``--kubeconfig`` or in-cluster): KubeEdge's tunnel-port scheme; None: off."""
    # --- HA mode (cloudstream/replicas.py) ---
    replica_id: str = field(default_factory=default_replica_id)
    """This replica's stable name, told to our edges at dial time (default: $POD_NAME, else the hostname)."""
    replicas: int = 1
    """How many replicas serve the tunnel address; our edges keep one tunnel to each."""
    replica_peers: tuple[str, ...] = ()
    """``host:port`` tunnel addresses of the replicas (a headless Service name resolves to all):
    asked which one holds a node that has no tunnel here (``peers.py``); empty: never asked."""

    def __post_init__(self) -> None:
        _check_http_limits(self)
        for peer in self.replica_peers:
            host, _, port = peer.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) <= 65535:
                raise ConfigError(f"replica peer {peer!r} is not HOST:PORT (a replica's tunnel address)")
        if not valid_replica_id(self.replica_id) or not 1 <= self.replicas <= MAX_REPLICAS:
            raise ConfigError(f"replica id {self.replica_id!r} must be a pod-name-like name and replicas "
                              f"({self.replicas}) 1..{MAX_REPLICAS}")
        if self.renew_max_days <= 0 or self.renew_max_per_hour < 1:
            raise ConfigError("renew_max_days must be positive and renew_max_per_hour at least 1")
        _check_certificates(self)
        for name in ("tunnel_port", "stream_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{name} {port} is not a TCP port")
        if self.shutdown_grace < 0:
            raise ConfigError(f"--shutdown-grace {self.shutdown_grace} must not be negative")
        if not 0 < self.max_payload < 1 << 20:
            raise ConfigError("max_payload must stay below KubeEdge's 1 MiB message limit")
        if self.tls_handshake_timeout <= 0:
            raise ConfigError(f"tls_handshake_timeout {self.tls_handshake_timeout} must be positive")
        if not 0 < self.max_pending_per_ip <= self.max_pending_handshakes < self.max_connections:
            raise ConfigError(
                f"connection caps must satisfy 0 < max_pending_per_ip ({self.max_pending_per_ip}) <= "
                f"max_pending_handshakes ({self.max_pending_handshakes}) < max_connections ({self.max_connections})"
            )

    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> CloudConfig:
        """defaults < cloudcore.yaml (``--config``) < command-line flags."""
        settings: dict[str, object] = {}
        if ns.config:
            enabled, settings = cloudstream_settings(load_yaml(Path(ns.config)))
            if not enabled:
                logger.warning(
                    "modules.cloudStream.enable is false in %s; starting anyway (cloudstream was run explicitly)", ns.config
                )
        if ns.pki_dir:  # a streamcerts lab directory, KubeEdge's layout under it
            pki = Path(ns.pki_dir)
            settings.update(
                tls_tunnel_ca_file=pki / "ca/rootCA.crt",
                tls_tunnel_cert_file=pki / "certs/server.crt",
                tls_tunnel_private_key_file=pki / "certs/server.key",
                tls_stream_ca_file=pki / "ca/streamCA.crt",
                tls_stream_cert_file=pki / "certs/stream.crt",
                tls_stream_private_key_file=pki / "certs/stream.key",
            )
        for key in _PATH_FIELDS:
            if getattr(ns, key, None):
                settings[key] = Path(getattr(ns, key))
        flags = {
            "tunnel_address": ns.tunnel_address, "tunnel_port": ns.tunnel_port, "stream_address": ns.stream_address,
            "stream_port": ns.stream_port, "ping_interval": ns.ping_interval, "ping_timeout": ns.ping_timeout,
        }
        settings.update({k: v for k, v in flags.items() if v is not None})
        # --- misbehaviour budget of a tunnel ---
        budget = {"tunnel_max_violations": ns.tunnel_max_violations, "tunnel_violation_window": ns.tunnel_violation_window}
        settings.update({k: v for k, v in budget.items() if v is not None})
        settings.update({k: getattr(ns, k) for k in _HYGIENE_FIELDS if getattr(ns, k, None) is not None})
        # --- edge certificate renewal ---
        if getattr(ns, "tunnel_ca_key_file", None):
            settings["tunnel_ca_key_file"] = Path(ns.tunnel_ca_key_file)
        settings.update({k: getattr(ns, k) for k in ("renew_max_days", "renew_max_per_hour") if getattr(ns, k, None) is not None})
        settings.update({k: getattr(ns, k) for k in ("replica_id", "replicas") if getattr(ns, k, None) is not None})
        if getattr(ns, "replica_peers", None):
            settings["replica_peers"] = tuple(p.strip() for arg in ns.replica_peers for p in arg.split(",") if p.strip())
        settings["iptables"] = server_settings(
            ns, str(settings.get("stream_address", "0.0.0.0")), int(settings.get("stream_port", 10003))  # type: ignore[call-overload]
        )
        if getattr(ns, "admin_address", None) is not None:  # (tests build namespaces by hand)
            settings["admin"] = AdminConfig.from_args(ns)
        if getattr(ns, "shutdown_grace", None) is not None:
            settings["shutdown_grace"] = ns.shutdown_grace
        settings["kube"] = kube_settings(ns)
        settings.update({k: getattr(ns, k) for k in _RELOAD_FIELDS if getattr(ns, k, None) is not None})
        return cls(
            egress=EgressConfig.from_args(ns),
            verify_node_identity=not ns.no_verify_node_identity,
            access=(() if ns.no_default_access else DEFAULT_ACCESS) + tuple(AccessRule.parse(r) for r in ns.allow),
            **settings,  # type: ignore[arg-type]
        )


def _check_certificates(config: CloudConfig) -> None:
    if (config.serving_ca_cert_file is None) != (config.serving_ca_key_file is None):
        raise ConfigError("per-node serving certificates need both --serving-ca-cert-file and --serving-ca-key-file")
    if config.serving_cert_cache < 1 or not config.cert_watch_interval > 0:
        raise ConfigError("serving_cert_cache and cert_watch_interval must be positive")


def _check_http_limits(config: CloudConfig) -> None:
    for name in ("request_head_timeout", "keepalive_idle_timeout", "max_request_head", "max_request_headers"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name} must be positive, not {getattr(config, name)!r}")
    if config.max_request_body < 0:
        raise ConfigError("max_request_body must not be negative")


_PATH_FIELDS = (
    "tls_tunnel_ca_file",
    "tls_tunnel_cert_file",
    "tls_tunnel_private_key_file",
    "tls_stream_ca_file",
    "tls_stream_cert_file",
    "tls_stream_private_key_file",
    "serving_ca_cert_file",
    "serving_ca_key_file",
)


_PATH_HELP = (
    "CA that signs the edges' certificates (10004)",
    "the tunnel's server certificate",
    "its private key",
    "CA that signs the API server's kubelet-client certificate (10003)",
    "10003's server certificate",
    "its private key",
)

_SERVING_HELP = {
    "serving_ca_cert_file": "CA certificate that signs a per-node 10003 certificate for each dialled node IP; point "
    "the API server's --kubelet-certificate-authority at it (default: none, the stream certificate for all)",
    "serving_ca_key_file": "the serving CA's private key (default: none)",
}
_RELOAD_FIELDS = ("serving_cert_cache", "cert_watch_interval")


def _add_certificate_arguments(parser: argparse.ArgumentParser) -> None:
    # --serving-ca-cert-file / --serving-ca-key-file come with the other _PATH_FIELDS
    parser.add_argument(
        "--serving-cert-cache", type=int, metavar="N", help="per-node serving certificates kept, LRU (default 1024)"
    )
    parser.add_argument(
        "--cert-watch-interval", type=float, metavar="SECONDS",
        help="seconds between checks of the certificate/key/CA files for hot reload (default 3; SIGHUP reloads at once)",
    )


_HYGIENE_FIELDS = ("tls_handshake_timeout", "max_connections", "max_pending_handshakes", "max_pending_per_ip")


def _add_hygiene_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-handshake-timeout", type=float, help="seconds from accept to a finished TLS handshake (default 5)")
    parser.add_argument("--max-connections", type=int, help="open connections per port (default 10000; fitted to the open-file limit)")
    parser.add_argument(
        "--max-pending-handshakes", type=int, help="unauthenticated connections per port; the oldest goes first (default 1000)"
    )
    parser.add_argument("--max-pending-per-ip", type=int, help="unauthenticated connections per port and source address (default 100)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_hygiene_arguments(parser)
    add_egress_arguments(parser)
    add_server_arguments(parser)
    add_admin_arguments(parser, example_port=10005)
    parser.add_argument(
        "--shutdown-grace", type=float, metavar="SECONDS",
        help="after SIGTERM, how long running streams may finish before they are ended with an error "
        "(default 30; a second SIGTERM ends them at once)",
    )
    add_kube_arguments(parser)
    # Flags default to None so that cloudcore.yaml (--config) fills what they leave out.
    parser.add_argument(
        "--config", help="cloudcore.yaml: reads modules.cloudStream (default: none; e.g. /etc/kubeedge/config/cloudcore.yaml)"
    )
    parser.add_argument("--tunnel-address", help="listen address for edges (default 0.0.0.0)")
    parser.add_argument("--tunnel-port", type=int, help="tunnelPort (default 10004)")
    parser.add_argument("--stream-address", help="listen address for the API server (default 0.0.0.0)")
    parser.add_argument("--stream-port", type=int, help="streamPort (default 10003)")
    parser.add_argument(
        "--pki-dir", help="a `streamcerts lab` directory, KubeEdge's file layout under it (default: none: /etc/kubeedge)"
    )
    for name, what in zip(_PATH_FIELDS, _PATH_HELP, strict=False):
        default = CloudConfig.__dataclass_fields__[name].default
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=f"{what} (default {default}, or under --pki-dir)")
    for name in _PATH_FIELDS[len(_PATH_HELP):]:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=_SERVING_HELP.get(name))
    _add_certificate_arguments(parser)
    parser.add_argument(
        "--allow", action="append", default=[], metavar="RULE",
        help="let a client identity use routes: cn:NAME[=logs,metrics,exec,attach,portforward] or group:NAME[=...] "
        "(repeat; default: only the rules below)",
    )
    parser.add_argument("--ping-interval", type=float, help="seconds between keepalive pings (default 10)")
    parser.add_argument("--ping-timeout", type=float, help="pong timeout with our edges (default 20; Go edges get 150)")
    parser.add_argument(
        "--no-default-access", action="store_true",
        help="drop the default rules (cn:kube-apiserver-kubelet-client, group:system:masters; default: off)",
    )
    parser.add_argument(
        "--no-verify-node-identity",
        action="store_true",
        help="accept an edge certificate whose CN differs from its node name (old keadm certs; default: off)",
    )
    # --- edge certificate renewal over the tunnel ---
    parser.add_argument(
        "--tunnel-ca-key-file", metavar="PATH",
        help="the tunnel CA's private key (keadm: /etc/kubeedge/ca/rootCA.key): sign renewed edge certificates "
        "over the tunnel (default: empty, renewal off)",
    )
    parser.add_argument("--renew-max-days", type=float, metavar="DAYS",
                        help="longest validity of a renewed edge certificate (default 365; else the old one's lifetime)")
    parser.add_argument("--renew-max-per-hour", type=int, metavar="N",
                        help="renewal requests per node per hour, refused ones included (default 6)")
    # --- HA mode ---
    parser.add_argument("--replica-id", metavar="NAME",
                        help="this replica's stable name, told to edges (default: $POD_NAME, else the hostname)")
    parser.add_argument("--replicas", type=int, metavar="N",
                        help="replicas behind the tunnel address; our edges keep a tunnel to each (default 1)")
    parser.add_argument("--replica-peers", action="append", metavar="HOST:PORT",
                        help="the replicas' tunnel addresses (repeat, or a headless Service name:port), asked "
                        "which replica holds a node that has no tunnel here (default: none, not asked)")
    # --- misbehaviour budget of a tunnel ---
    parser.add_argument(
        "--tunnel-max-violations", type=int, metavar="N",
        help="malformed tunnel messages an edge may send per window before its tunnel is closed (default 100)",
    )
    parser.add_argument(
        "--tunnel-violation-window", type=float, metavar="SECONDS", help="the window of --tunnel-max-violations (default 10)"
    )
