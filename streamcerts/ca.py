"""Certificate authorities."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from ._x509 import SIGN_HASH, PrivateKey, builder, name, new_key

__all__ = ["create_ca"]


def create_ca(
    common_name: str = "KubeEdge", days: float = 3650, key_type: str = "ecdsa"
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed CA (keadm's tunnel CA is ``CN=KubeEdge``)."""
    key = new_key(key_type)
    subject = name(common_name)
    cert = (
        builder(subject, subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, SIGN_HASH)
    )
    return cert, key
