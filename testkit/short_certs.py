"""Edge certificates with an exact validity window (the lab's own start 5 minutes in the
past): for renewal tests that need a certificate of, say, two minutes."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from streamcerts._x509 import PrivateKey, ip_sans, name

__all__ = ["issue_edge_cert"]


def issue_edge_cert(
    ca_cert: x509.Certificate, ca_key: PrivateKey, cn: str, ips: tuple[str, ...] = (),
    lifetime: float = 120.0, start: dt.datetime | None = None, organizations: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A client certificate for node ``cn`` valid from ``start`` (now) for ``lifetime`` seconds."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = start or dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(seconds=lifetime))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if ips:
        builder = builder.add_extension(ip_sans(ips), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key
