"""What a certificate says: subject, SANs, issuer, validity, key, fingerprint, and which CA it chains to.

``describe`` returns plain data (the ``--json`` form); ``render`` turns it into the text form.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .errors import CertificateError
from .files import load_certs

__all__ = [
    "ca_candidates", "chains_to", "describe", "describe_key", "is_ca", "issued_by", "key_info", "render", "sans",
]


def sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)] + [
        f"IP:{ip}" for ip in ext.get_values_for_type(x509.IPAddress)
    ]


def key_info(public_key: object) -> str:
    """``ECDSA P-256``, ``RSA 2048``, ..."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(public_key.curve.name)
        return f"ECDSA {curve or public_key.curve.name}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(public_key).__name__


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """``cert``'s signature verifies with ``ca``'s key and names ``ca`` as its issuer."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def ca_candidates(root: Path) -> list[Path]:
    """The CA files under a KubeEdge-layout directory (``ca/*.crt``), sorted."""
    return sorted(p for p in (Path(root) / "ca").glob("*.crt") if p.is_file())


def chains_to(cert: x509.Certificate, ca_files: Iterable[Path]) -> list[str]:
    """The CA files (by path) one of whose certificates signed ``cert`` (self-signed included)."""
    found: list[str] = []
    for path in ca_files:
        try:
            bundle = load_certs(path)
        except CertificateError:
            continue
        if any(issued_by(cert, ca) for ca in bundle):
            found.append(str(path))
    return found


def describe(cert: x509.Certificate, ca_files: Iterable[Path] = (), now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or dt.datetime.now(dt.UTC)
    left = cert.not_valid_after_utc - now
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "sans": sans(cert),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "days_left": round(left.total_seconds() / 86400, 1),
        "key": key_info(cert.public_key()),
        "is_ca": is_ca(cert),
        "self_signed": issued_by(cert, cert),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        "chains_to": chains_to(cert, ca_files),
    }


def describe_key(path: Path) -> dict[str, Any] | None:
    """A private key file's type and size (never its contents); None when it is not one."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError, OSError):
        return None
    return {"file": str(path), "private_key": key_info(key.public_key())}


def render(info: dict[str, Any]) -> str:
    if "private_key" in info:
        return f"{info['file']}\n  private key: {info['private_key']}"
    days = info["days_left"]
    state = "EXPIRED" if days < 0 else f"{days:g} days left"
    lines = [
        f"{info['file']}" + (f" [{info['index']}]" if info.get("index") else ""),
        f"  subject:   {info['subject']}",
        f"  issuer:    {info['issuer']}" + (" (self-signed)" if info["self_signed"] else ""),
        f"  SANs:      {', '.join(info['sans']) or '-'}",
        f"  serial:    {info['serial']}",
        f"  validity:  {info['not_before']} .. {info['not_after']} ({state})",
        f"  key:       {info['key']}" + ("  CA" if info["is_ca"] else ""),
        f"  sha256:    {info['sha256']}",
        f"  chains to: {', '.join(info['chains_to']) or 'no CA found under the directory'}",
    ]
    return "\n".join(lines)
