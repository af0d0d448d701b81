"""certs: the PKI (CA, server and client certificates, KubeEdge's file layout, TLS contexts).

Synchronous code on ``cryptography``; callers on an event loop use ``asyncio.to_thread``.
"""

from __future__ import annotations

from .ca import create_ca
from .errors import CertificateError
from .files import Layout, load_cert, load_key, write_pem
from .issue import issue_client_cert, issue_server_cert
from .lab import init_lab
from .tls import Identity, client_context, peer_identity, server_context

__all__ = [
    "CertificateError",
    "Identity",
    "Layout",
    "client_context",
    "create_ca",
    "init_lab",
    "issue_client_cert",
    "issue_server_cert",
    "load_cert",
    "load_key",
    "peer_identity",
    "server_context",
    "write_pem",
]
