"""The Kubernetes side's settings and flags (``--kubeconfig``, ``--kubeedge-tunnel-port``, ...)."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from streamproto.tunnel.errors import ConfigError

from .record import CONFIGMAP, NAMESPACE

__all__ = ["KubeSettings", "add_kube_arguments", "default_replica_ip", "kube_settings"]

logger = logging.getLogger("cloudstream.kube")

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeSettings:
    kubeconfig: Path | None = None
    """A kubeconfig file; None: the in-cluster service account."""
    replica_ip: str
    """This replica's IP as the record holds it (the DNAT target of its port)."""
    tunnel_port: bool = True
    """Take part in ``kubeedge/tunnelport`` and write connected nodes' kubelet endpoint port."""
    namespace: str = NAMESPACE
    configmap: str = CONFIGMAP
    claim_attempts: int = 30
    """Optimistic-concurrency rounds (a 409 Conflict, a lost create) before giving up."""
    retry_base: float = 0.02
    retry_max: float = 1.0
    """Jittered backoff between rounds: uniform(0, min(retry_max, retry_base * 2**round))."""
    node_update_interval: float = 20.0
    node_update_timeout: float = 120.0
    """cloudcore's DefaultRetrySleepTime and DefaultNodeStatusUpdateTimeout for the node port write."""
    request_timeout: float = 10.0
    """One API request (a watch's read excepted)."""

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.replica_ip)
        except ValueError:
            raise ConfigError(f"--replica-ip {self.replica_ip!r} is not an IP address") from None
        if self.claim_attempts < 1 or self.retry_base <= 0 or self.retry_max < self.retry_base:
            raise ConfigError("claim_attempts >= 1 and 0 < retry_base <= retry_max")


def default_replica_ip() -> str:
    """``$POD_IP`` (the downward API), else the address of the default-route interface, as
    KubeEdge's ``util.GetLocalIP`` finds it (the host IP under hostNetwork, the pod IP otherwise)."""
    env = os.environ.get("POD_IP", "").strip()
    if env:
        return env
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:  # connect() on UDP sends nothing: it only picks the route and the source address
            probe.connect(("192.0.2.1", 9))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def add_kube_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", metavar="PATH",
        help="kubeconfig for the Kubernetes API (default: the in-cluster service account when "
             "KUBERNETES_SERVICE_HOST is set and a token is mounted, else no Kubernetes API; needs the [kube] extra)",
    )
    parser.add_argument(
        "--kubeedge-tunnel-port", choices=["auto", "on", "off"], default="auto",
        help="take part in KubeEdge's kubeedge/tunnelport ConfigMap (claim a port for --replica-ip, release it "
             "on shutdown) and set each connected node's kubeletEndpoint port to it, as cloudcore does "
             "(default: auto, on whenever a Kubernetes API is configured)",
    )
    parser.add_argument(
        "--replica-ip", metavar="IP",
        help="this replica's IP in the tunnel-port record, where API-server hosts DNAT its port to "
             "(default: $POD_IP, else the default-route interface address)",
    )


def kube_settings(ns: argparse.Namespace) -> KubeSettings | None:
    mode = getattr(ns, "kubeedge_tunnel_port", "auto")
    path = getattr(ns, "kubeconfig", None)
    # In a pod whose account has a token (automountServiceAccountToken): the in-cluster API.
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and Path(SERVICE_ACCOUNT_TOKEN).exists()
    if mode == "off" or (path is None and not in_cluster):
        if mode == "on":
            raise ConfigError("--kubeedge-tunnel-port on needs --kubeconfig (or running in a pod)")
        return None
    if importlib.util.find_spec("kubernetes_asyncio") is None:
        hint = "install the [kube] extra: pip install 'kubeedge-stream[kube]'"
        if mode == "on" or path is not None:
            raise ConfigError(f"the Kubernetes API (--kubeconfig, --kubeedge-tunnel-port) needs kubernetes-asyncio; {hint}")
        logger.warning("running in a pod, but kubernetes-asyncio is not installed: no tunnel-port scheme (%s)", hint)
        return None
    return KubeSettings(kubeconfig=Path(path) if path else None, replica_ip=getattr(ns, "replica_ip", None) or default_replica_ip())
