"""Per-node kubelet serving certificates: a leaf for exactly one node IP, kept in memory.

The API server verifies a kubelet's certificate against ``--kubelet-certificate-authority``
and the address it dialled (the node's InternalIP; an IP, so no SNI and an IP SAN check).
cloudstream answers for every edge node, so it presents, per connection, a leaf for the
dialled IP signed by a serving CA: CN ``system:node:<node>``, O ``system:nodes`` (as the
kubelet's own serving certificate), ECDSA P-256. The key never touches a disk: the PEM goes
through an anonymous memory file (``memfd_create``) into ``load_cert_chain``.

Synchronous (``cryptography`` and OpenSSL); cloudstream runs it in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from ._x509 import name, new_key
from .errors import CertificateError
from .files import load_cert, load_key

__all__ = ["ServingCA", "ServingLeaf", "issue_serving_leaf"]

_SKEW = dt.timedelta(minutes=5)
_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
)


@dataclass(frozen=True, slots=True)
class ServingCA:
    """The CA that signs the per-node leaves (``--serving-ca-cert-file``/``--serving-ca-key-file``)."""

    cert: x509.Certificate
    key: object = field(repr=False)

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> ServingCA:
        cert, key = load_cert(cert_file), load_key(key_file)
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise CertificateError(f"serving CA key {key_file}: unsupported key type {type(key).__name__}")
        if cert.public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
            raise CertificateError(
                f"serving CA key {key_file} does not belong to the certificate {cert_file}: give the CA's own key"
            )
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise CertificateError(f"{cert_file} is not a CA certificate (basicConstraints CA:TRUE): use the serving CA")
        return cls(cert, key)


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True, slots=True)
class ServingLeaf:
    ip: str
    node: str
    serial: int
    not_after: dt.datetime
    context: ssl.SSLContext = field(repr=False)


def issue_serving_leaf(
    ca: ServingCA,
    ip: str,
    node: str,
    client_ca_file: Path | None,
    validity: dt.timedelta = dt.timedelta(days=7),
    alpn: Sequence[str] = ("http/1.1",),
) -> ServingLeaf:
    """Issue a leaf for ``ip`` (IP SAN) and node ``node`` and build the 10003 server context
    around it: client certificates verified against ``client_ca_file`` when offered."""
    address = ipaddress.ip_address(ip)
    now = dt.datetime.now(dt.UTC)
    if ca.cert.not_valid_after_utc <= now + _SKEW:
        raise CertificateError(
            f"the serving CA {ca.cert.subject.rfc4514_string()} expired at {ca.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: "
            "replace its files (they are reloaded) and point the API server's --kubelet-certificate-authority at the new one"
        )
    key = new_key()
    not_after = min(now + validity, ca.cert.not_valid_after_utc)
    subject = name(f"system:node:{node}", ["system:nodes"])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)  # type: ignore[attr-defined]
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(address)]), critical=False)
    )
    algorithm = None if isinstance(ca.key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()
    cert = builder.sign(ca.key, algorithm)  # type: ignore[arg-type]
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_pem_chain(ctx, pem)
    if client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(f"cannot load CA {client_ca_file}: {exc.strerror or exc}") from None
        ctx.verify_mode = ssl.CERT_OPTIONAL
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ServingLeaf(str(address), node, cert.serial_number, not_after, ctx)


def _load_pem_chain(ctx: ssl.SSLContext, pem: bytes) -> None:
    """``load_cert_chain`` reads files only: hand it an anonymous memory file (never on disk)."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None:
        fd = memfd("kes-serving-leaf", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
            return
        finally:
            os.close(fd)
    with tempfile.TemporaryDirectory() as tmp:  # not Linux: a private directory, removed at once
        path = Path(tmp) / "leaf.pem"
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        ctx.load_cert_chain(str(path))
