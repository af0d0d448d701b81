"""Leaf certificates: servers (with SANs) and clients (edge nodes, the API server)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from ._x509 import SIGN_HASH, PrivateKey, builder, ip_sans, name, new_key, san

__all__ = ["issue_client_cert", "issue_server_cert"]


def _usage(key: PrivateKey) -> x509.KeyUsage:
    # RSA keys may also carry TLS 1.2's RSA key exchange (keyEncipherment); ECDSA only signs.
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    ca_cert: x509.Certificate, ca_key: PrivateKey, subject: x509.Name, days: float, usages: list[x509.ObjectIdentifier],
    key_type: str,
) -> tuple[x509.CertificateBuilder, PrivateKey]:
    key = new_key(key_type)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    b = (
        builder(subject, ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(key), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(aki, critical=False)
    )
    return b, key


def issue_server_cert(
    ca_cert: x509.Certificate, ca_key: PrivateKey, common_name: str, sans: list[str], days: float = 365,
    key_type: str = "ecdsa",
) -> tuple[x509.Certificate, PrivateKey]:
    """A server certificate; ``sans`` may mix DNS names and IP addresses."""
    b, key = _leaf(
        ca_cert, ca_key, name(common_name), days, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        key_type,
    )
    if sans:
        b = b.add_extension(san(sans), critical=False)
    return b.sign(ca_key, SIGN_HASH), key


def issue_client_cert(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    common_name: str,
    organizations: list[str] | tuple[str, ...] = (),
    days: float = 365,
    ips: list[str] | tuple[str, ...] = (),
    key_type: str = "ecdsa",
) -> tuple[x509.Certificate, PrivateKey]:
    """A client certificate: an edge node (CN = node name) or the API server's kubelet client.

    ``ips``: the node's internal IPs as IP SANs. cloudstream then accepts a tunnel from this
    certificate only when the IP it announces (``SessionInternalIP``) is one of them.
    """
    b, key = _leaf(ca_cert, ca_key, name(common_name, organizations), days, [ExtendedKeyUsageOID.CLIENT_AUTH], key_type)
    if ips:
        b = b.add_extension(ip_sans(ips), critical=False)
    return b.sign(ca_key, SIGN_HASH), key
