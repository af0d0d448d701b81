"""A whole lab PKI in one call (idempotent: existing files are kept)."""

from __future__ import annotations

from pathlib import Path

from .ca import create_ca
from .files import Layout, load_cert, load_key, write_pem
from .issue import issue_client_cert, issue_server_cert

__all__ = ["init_lab"]

DEFAULT_SANS = ["localhost", "127.0.0.1", "::1"]


def init_lab(root: Path, nodes: list[str], server_sans: list[str] | None = None) -> Layout:
    """Tunnel CA + cloud server cert + edge certs; stream CA + 10003 cert + API-server client cert."""
    layout = Layout(Path(root))
    sans = server_sans or DEFAULT_SANS

    def ensure_ca(cert_path: Path, key_path: Path, cn: str):  # type: ignore[no-untyped-def]
        if cert_path.exists() and key_path.exists():
            return load_cert(cert_path), load_key(key_path)
        cert, key = create_ca(cn)
        write_pem(cert_path, cert, key, key_path)
        return cert, key

    tunnel_ca = ensure_ca(layout.ca_cert, layout.ca_key, "KubeEdge")
    # The stream CA stands in for the cluster CA that signs the API server's kubelet-client cert.
    stream_ca = ensure_ca(layout.stream_ca, layout.stream_ca_key, "kubernetes")
    if not layout.server_cert.exists():
        write_pem(layout.server_cert, *issue_server_cert(*tunnel_ca, "cloudstream", sans), layout.server_key)
    if not layout.stream_cert.exists():
        write_pem(layout.stream_cert, *issue_server_cert(*stream_ca, "cloudstream-stream", sans), layout.stream_key)
    for node in nodes:
        if not layout.edge_cert(node).exists():
            write_pem(layout.edge_cert(node), *issue_client_cert(*tunnel_ca, node), layout.edge_key(node))
    if not layout.apiserver_client_cert.exists():
        cert, key = issue_client_cert(*stream_ca, "kube-apiserver-kubelet-client", ["system:masters"])
        write_pem(layout.apiserver_client_cert, cert, key, layout.apiserver_client_key)
    return layout
