"""Shared x509 building blocks. Keys are ECDSA P-256 by default (KubeEdge's certgen.sh
default, ``KEY_TYPE=ec``); RSA on request (``rsa``, ``rsa:3072``)."""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .errors import CertificateError

__all__ = [
    "KEY_TYPES", "SIGN_HASH", "PrivateKey", "builder", "cert_ips", "ip_sans", "name", "new_key", "parse_key_type", "san",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
KEY_TYPES = ("ecdsa", "rsa", "rsa:2048", "rsa:3072", "rsa:4096")
_RSA_BITS = (2048, 3072, 4096)
_SKEW = dt.timedelta(minutes=5)
"""Certificates start a little in the past: edge clocks drift."""


def parse_key_type(text: str) -> tuple[str, int]:
    """``ecdsa`` (P-256, also ``ec``/``ecdsa:p256``) or ``rsa[:2048|3072|4096]`` -> (kind, bits)."""
    kind, _, size = text.strip().lower().partition(":")
    if kind in ("ec", "ecdsa") and size in ("", "p256", "256"):
        return "ecdsa", 256
    if kind == "rsa":
        bits = int(size) if size.isdigit() else (2048 if not size else 0)
        if bits in _RSA_BITS:
            return "rsa", bits
    raise CertificateError(f"key type {text!r}: use ecdsa (P-256) or rsa[:2048|3072|4096]")


def new_key(key_type: str = "ecdsa") -> PrivateKey:
    kind, bits = parse_key_type(key_type)
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
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


def builder(subject: x509.Name, issuer: x509.Name, public_key: object, days: float) -> x509.CertificateBuilder:
    if not days > 0:
        raise CertificateError(f"validity of {days} days: must be positive")
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
