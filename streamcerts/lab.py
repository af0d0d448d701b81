"""A whole lab PKI in one call (idempotent: existing, still valid files are kept)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import partial
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ._x509 import PrivateKey, cert_ips
from .ca import create_ca
from .errors import CertificateError
from .files import Layout, load_cert, load_key, write_pem
from .issue import issue_client_cert, issue_server_cert

__all__ = ["DEFAULT_SANS", "init_lab", "parse_node"]

DEFAULT_SANS = ["localhost", "127.0.0.1", "::1"]

_Pair = tuple[x509.Certificate, PrivateKey]


def _ensure_ca(cert_path: Path, key_path: Path, cn: str) -> _Pair:
    if cert_path.exists() and key_path.exists():
        return load_cert(cert_path), load_key(key_path)
    cert, key = create_ca(cn)
    write_pem(cert_path, cert, key, key_path)
    return cert, key


def _ensure_leaf(
    cert_path: Path, key_path: Path, ca: _Pair, issue: Callable[[], _Pair], ips: tuple[str, ...] | None = None
) -> None:
    """Keep a leaf that chains to ``ca`` (and, with ``ips``, carries exactly those IP SANs)."""
    if cert_path.exists() and key_path.exists():
        try:
            cert = load_cert(cert_path)
            cert.verify_directly_issued_by(ca[0])
            if ips is None or sorted(cert_ips(cert)) == sorted(ips):
                return
        except (CertificateError, ValueError, TypeError, InvalidSignature):
            pass  # unreadable, or left over from a CA that was since recreated: useless, reissue
    write_pem(cert_path, *issue(), key_path)


def parse_node(text: str) -> tuple[str, tuple[str, ...]]:
    """``NAME`` or ``NAME=IP[,IP...]`` (the node's internal IPs, for its certificate's IP SANs)."""
    node, sep, ips = text.partition("=")
    node = node.strip()
    if not node:
        raise CertificateError(f"--node {text!r}: expected NAME or NAME=IP[,IP]")
    if not sep:
        return node, ()
    parsed = tuple(_canonical_ip(ip, text) for ip in ips.split(",") if ip.strip())
    if not parsed:
        raise CertificateError(f"--node {text!r}: no IP after '='")
    return node, parsed


def _canonical_ip(ip: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        raise CertificateError(f"--node {text!r}: {ip.strip()!r} is not an IP address") from None


def init_lab(
    root: Path, nodes: list[str], server_sans: list[str] | None = None, node_ips: dict[str, list[str]] | None = None
) -> Layout:
    """Tunnel CA + cloud server cert + edge certs; stream CA + 10003 cert + API-server client cert.

    ``server_sans`` defaults to :data:`DEFAULT_SANS` (loopback). ``node_ips`` gives nodes their
    internal IPs as IP SANs (cloudstream then binds those IPs to the node). Files already there
    are kept unless a leaf no longer chains to its CA (the CA was deleted and recreated) or a
    node's certificate does not carry the IPs asked for.
    """
    node_ips = node_ips or {}
    layout = Layout(Path(root))
    sans = DEFAULT_SANS if server_sans is None else list(server_sans)
    tunnel_ca = _ensure_ca(layout.ca_cert, layout.ca_key, "KubeEdge")
    # The stream CA stands in for the cluster CA that signs the API server's kubelet-client cert.
    stream_ca = _ensure_ca(layout.stream_ca, layout.stream_ca_key, "kubernetes")
    _ensure_leaf(layout.server_cert, layout.server_key, tunnel_ca,
                 lambda: issue_server_cert(*tunnel_ca, "cloudstream", sans))
    _ensure_leaf(layout.stream_cert, layout.stream_key, stream_ca,
                 lambda: issue_server_cert(*stream_ca, "cloudstream-stream", sans))
    for node in nodes:
        ips = tuple(node_ips.get(node, ()))
        _ensure_leaf(layout.edge_cert(node), layout.edge_key(node), tunnel_ca,
                     partial(issue_client_cert, *tunnel_ca, node, ips=ips), ips if node in node_ips else None)
    _ensure_leaf(layout.apiserver_client_cert, layout.apiserver_client_key, stream_ca,
                 lambda: issue_client_cert(*stream_ca, "kube-apiserver-kubelet-client", ["system:masters"]))
    return layout
