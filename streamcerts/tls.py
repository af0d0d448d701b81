"""TLS contexts: the only place that reads key files for TLS."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from ._x509 import cert_ips
from .errors import CertificateError

__all__ = ["Identity", "client_context", "peer_identity", "server_context"]


class _HasPeerCert(Protocol):
    """``ssl.SSLObject`` or ``ssl.SSLSocket``: anything that can hand over the peer's DER."""

    def getpeercert(self, binary_form: bool = ...) -> object: ...


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified peer certificate names: CN, organizations (Kubernetes groups) and the
    IP addresses among its SANs (an edge's internal IPs, canonical strings)."""

    common_name: str
    organizations: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


def _load_chain(ctx: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"cannot load certificate {cert_file} with key {key_file}: {exc.strerror or exc}") from None


def _load_ca(ctx: ssl.SSLContext, ca_file: Path) -> None:
    try:
        ctx.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"cannot load CA {ca_file}: {exc.strerror or exc}") from None


def server_context(
    cert_file: Path,
    key_file: Path,
    client_ca_file: Path | None,
    require_client_cert: bool = True,
    alpn: Sequence[str] | None = ("http/1.1",),
) -> ssl.SSLContext:
    """TLS >= 1.2. With a CA: client certificates are verified (required or optional).

    Without a CA no client certificate is asked for. ``alpn=None`` offers no ALPN at all.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert_file, key_file)
    if client_ca_file is not None:
        _load_ca(ctx, client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def client_context(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None, verify: bool = True
) -> ssl.SSLContext:
    """A client context with an optional client certificate.

    ``verify=False`` trusts any server, as a Go edgecore does: a man in the middle can then
    read every stream. It exists for interop tests, not for production.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        if ca_file is not None:
            _load_ca(ctx, ca_file)
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if (cert_file is None) != (key_file is None):
        # Silently dropping half a pair would turn into a confusing "no client certificate" refusal.
        raise CertificateError(f"a client certificate needs both files: cert={cert_file}, key={key_file}")
    if cert_file is not None and key_file is not None:
        _load_chain(ctx, cert_file, key_file)
    return ctx


def peer_identity(peer: bytes | _HasPeerCert) -> Identity:
    """Who the (TLS-verified) peer is: from its DER certificate or an SSL object/socket."""
    der = peer if isinstance(peer, (bytes, bytearray, memoryview)) else peer.getpeercert(binary_form=True)
    if not der:
        raise CertificateError("the peer presented no certificate")
    try:
        cert = x509.load_der_x509_certificate(bytes(der))  # type: ignore[call-overload]  # getpeercert(True) is bytes
    except ValueError as exc:
        raise CertificateError(f"unparsable peer certificate: {exc}") from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return Identity(str(cns[0].value) if cns else "", tuple(str(o.value) for o in orgs), cert_ips(cert))
