"""A whole lab PKI in one call (idempotent: existing, still valid files are kept)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from ._x509 import PrivateKey
from .ca import create_ca
from .errors import CertificateError
from .files import Layout, load_cert, load_key, write_pem
from .issue import issue_client_cert, issue_server_cert

__all__ = ["DEFAULT_SANS", "init_lab"]

DEFAULT_SANS = ["localhost", "127.0.0.1", "::1"]

_Pair = tuple[x509.Certificate, PrivateKey]


def _ensure_ca(cert_path: Path, key_path: Path, cn: str) -> _Pair:
    if cert_path.exists() and key_path.exists():
        return load_cert(cert_path), load_key(key_path)
    cert, key = create_ca(cn)
    write_pem(cert_path, cert, key, key_path)
    return cert, key


def _ensure_leaf(cert_path: Path, key_path: Path, ca: _Pair, issue: Callable[[], _Pair]) -> None:
    if cert_path.exists() and key_path.exists():
        try:
            load_cert(cert_path).verify_directly_issued_by(ca[0])
            return
        except (CertificateError, ValueError, TypeError, InvalidSignature):
            pass  # unreadable, or left over from a CA that was since recreated: useless, reissue
    write_pem(cert_path, *issue(), key_path)


def init_lab(root: Path, nodes: list[str], server_sans: list[str] | None = None) -> Layout:
    """Tunnel CA + cloud server cert + edge certs; stream CA + 10003 cert + API-server client cert.

    ``server_sans`` defaults to :data:`DEFAULT_SANS` (loopback). Files already there are kept
    unless a leaf no longer chains to its CA (the CA was deleted and recreated).
    """
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
        _ensure_leaf(layout.edge_cert(node), layout.edge_key(node), tunnel_ca,
                     partial(issue_client_cert, *tunnel_ca, node))
    _ensure_leaf(layout.apiserver_client_cert, layout.apiserver_client_key, stream_ca,
                 lambda: issue_client_cert(*stream_ca, "kube-apiserver-kubelet-client", ["system:masters"]))
    return layout
