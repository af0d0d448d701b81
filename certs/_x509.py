"""Shared x509 building blocks (ECDSA P-256: KubeEdge's tunnel allows only ECDSA on TLS 1.2)."""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .errors import CertificateError

__all__ = ["SIGN_HASH", "PrivateKey", "builder", "cert_ips", "ip_sans", "name", "new_key", "san"]

PrivateKey = ec.EllipticCurvePrivateKey
_SKEW = dt.timedelta(minutes=5)
"""Certificates start a little in the past: edge clocks drift."""


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name(common_name: str, organizations: list[str] | tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def san(entries: list[str]) -> x509.SubjectAlternativeName:
    general: list[x509.GeneralName] = []
    for entry in entries:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            general.append(x509.DNSName(entry))
    return x509.SubjectAlternativeName(general)


def ip_sans(entries: list[str] | tuple[str, ...]) -> x509.SubjectAlternativeName:
    """IP addresses only: a node's internal IPs (anything else is an error, not a DNS name)."""
    general: list[x509.GeneralName] = []
    for entry in entries:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(entry.strip())))
        except ValueError:
            raise CertificateError(f"{entry!r} is not an IP address (a node IP SAN)") from None
    return x509.SubjectAlternativeName(general)


def cert_ips(cert: x509.Certificate) -> tuple[str, ...]:
    """The IP SANs of ``cert`` as canonical strings (empty without a SAN extension)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))


def builder(subject: x509.Name, issuer: x509.Name, public_key: object, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
    )


SIGN_HASH = hashes.SHA256()
