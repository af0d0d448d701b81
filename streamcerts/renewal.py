"""Edge certificate renewal: the CSR the edge makes, the policy the cloud applies, the
certificate it signs, and the checks the edge makes on what comes back.

Policy (cloud, ``vet_csr``): a renewal never grows what the edge may claim. The CSR must be
signed by its own key (proof of possession), carry a new key (ECDSA P-256/P-384 or RSA
2048-4096; not the current one), the same subject as the certificate the tunnel was
authenticated with, a CN that names the tunnel's node, and IP SANs only, each one already in
the current certificate. Each refusal is a ``CsrRefused`` whose ``kind`` groups it for
rate-limited logging and whose message says how to fix it.

Validity (``sign_csr``): the old certificate's lifetime, capped; it starts a little in the
past (1 % of the lifetime, at most 5 minutes) for edge clocks that drift.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._x509 import SIGN_HASH, PrivateKey, cert_ips, ip_sans
from .errors import CertificateError

__all__ = [
    "CsrRefused",
    "check_issued",
    "make_csr",
    "renewal_due",
    "serial_hex",
    "sign_csr",
    "vet_csr",
]

_MAX_SKEW = dt.timedelta(minutes=5)
_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
)


class CsrRefused(CertificateError):
    """The cloud will not sign this CSR. ``kind``: a short tag (``cn``, ``ip``, ...);
    ``bad_request``: the CSR itself is unusable (as opposed to a policy refusal)."""

    def __init__(self, kind: str, message: str, *, bad_request: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.bad_request = bad_request


def serial_hex(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:x}"


def _common_name(subject: x509.Name) -> str | None:
    cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if len(cns) == 1 else None


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# ---------------------------------------------------------------------------- edge side


def make_csr(key: PrivateKey, subject: x509.Name, ips: Iterable[str]) -> bytes:
    """A PKCS#10 CSR (DER) for ``subject`` with ``ips`` as IP SANs, signed by ``key``."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    ips = list(ips)
    if ips:
        builder = builder.add_extension(ip_sans(ips), critical=False)
    return builder.sign(key, SIGN_HASH).public_bytes(serialization.Encoding.DER)


def renewal_due(not_before: float, not_after: float, fraction: float, min_left: float) -> float:
    """When (epoch seconds) to renew a certificate valid from ``not_before`` to ``not_after``:
    once ``fraction`` of its lifetime has passed, or when ``min_left`` seconds remain, whichever
    comes first; the second rule never before half the lifetime (a certificate shorter than
    ``min_left`` would otherwise be renewed the moment it arrives)."""
    lifetime = max(0.0, not_after - not_before)
    by_fraction = not_before + fraction * lifetime
    by_margin = max(not_before + lifetime / 2, not_after - min_left)
    return min(by_fraction, by_margin)


def check_issued(
    chain_pem: bytes, key: PrivateKey, current: x509.Certificate, ips: Sequence[str],
    trusted: Sequence[x509.Certificate] = (), now: dt.datetime | None = None,
) -> list[x509.Certificate]:
    """The edge's checks of the cloud's answer, before anything is written: the leaf holds our
    new key, keeps our subject, carries exactly the IPs we asked for, is valid now, and was
    signed by the CA that signed our current certificate (found in ``trusted`` or in the chain).
    Returns the chain (leaf first); raises CertificateError saying what does not fit."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertificateError(f"the cloud's answer is not a PEM certificate chain: {exc}") from None
    leaf = chain[0]
    now = now or dt.datetime.now(dt.UTC)
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise CertificateError("the renewed certificate is not for the key this edge generated")
    if leaf.subject != current.subject:
        raise CertificateError(
            f"the renewed certificate names {leaf.subject.rfc4514_string()}, not {current.subject.rfc4514_string()}"
        )
    if sorted(cert_ips(leaf)) != sorted(ips):
        raise CertificateError(f"the renewed certificate carries IPs {list(cert_ips(leaf))}, not {list(ips)}")
    if not leaf.not_valid_before_utc <= now + _MAX_SKEW or leaf.not_valid_after_utc <= now:
        raise CertificateError(
            f"the renewed certificate is valid {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} .. "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC, not now: check the clocks of edge and cloud"
        )
    if leaf.issuer != current.issuer:
        raise CertificateError(
            f"the renewed certificate was issued by {leaf.issuer.rfc4514_string()}, "
            f"the current one by {current.issuer.rfc4514_string()}"
        )
    for issuer in [*trusted, *chain[1:]]:
        if issuer.subject != leaf.issuer:
            continue
        try:
            leaf.verify_directly_issued_by(issuer)
            return chain
        except (ValueError, TypeError, InvalidSignature):
            continue
    raise CertificateError(f"the renewed certificate's signature does not verify with {leaf.issuer.rfc4514_string()}")


# ---------------------------------------------------------------------------- cloud side


def vet_csr(csr_der: bytes, node: str, current: x509.Certificate) -> x509.CertificateSigningRequest:
    """Apply the renewal policy (module doc); return the CSR or raise ``CsrRefused``."""
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except ValueError:
        raise CsrRefused("unparsable", "the request is not a DER PKCS#10 CSR", bad_request=True) from None
    if not csr.is_signature_valid:
        raise CsrRefused("signature", "the CSR's signature does not verify (no proof of the key)", bad_request=True)
    public = csr.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name not in ("secp256r1", "secp384r1"):
            raise CsrRefused("key type", f"ECDSA curve {public.curve.name} is not accepted: use P-256", bad_request=True)
    elif isinstance(public, rsa.RSAPublicKey):
        if not 2048 <= public.key_size <= 4096:
            raise CsrRefused("key type", f"RSA-{public.key_size} is not accepted: use ECDSA P-256", bad_request=True)
    else:
        raise CsrRefused("key type", f"{type(public).__name__} keys are not accepted: use ECDSA P-256", bad_request=True)
    if _spki(public) == _spki(current.public_key()):
        raise CsrRefused("key reuse", "the CSR reuses the current key: generate a new key for each renewal")
    current_cn = _common_name(current.subject)
    if current_cn not in (node, f"system:node:{node}"):
        raise CsrRefused(
            "cn", f"the tunnel's certificate CN={current_cn!r} does not name node {node!r} (accepted with "
            f"--no-verify-node-identity): issue this node a certificate with CN={node!r} by hand "
            f"(streamcerts client --cn {node})",
        )
    cn = _common_name(csr.subject)
    if cn is None or cn not in (node, f"system:node:{node}"):
        raise CsrRefused(
            "cn", f"the CSR asks for CN={cn!r} but this tunnel is node {node!r}: a renewal keeps the node's name"
        )
    if csr.subject != current.subject:
        raise CsrRefused(
            "subject", f"the CSR asks for {csr.subject.rfc4514_string()!r}; the current certificate is "
            f"{current.subject.rfc4514_string()!r}: a renewal keeps the subject",
        )
    _vet_sans(csr, current)
    return csr


def _vet_sans(csr: x509.CertificateSigningRequest, current: x509.Certificate) -> None:
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    except ValueError:
        raise CsrRefused("san", "the CSR's extensions do not parse", bad_request=True) from None
    others = [n for n in sans if not isinstance(n, x509.IPAddress)]
    if others:
        raise CsrRefused("san", f"the CSR asks for non-IP names {[str(n.value) for n in others][:4]}: edge certificates carry IPs only")
    proven = set(cert_ips(current))
    extra = sorted({str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} - proven)
    if extra:
        raise CsrRefused(
            "ip", f"the CSR asks for IP {', '.join(extra[:4])}, which the current certificate does not carry "
            f"({', '.join(sorted(proven)) or 'no IPs'}): a renewal never adds an address; issue a certificate "
            f"with the new IP by hand (streamcerts client --cn NODE --ip IP)",
        )


def sign_csr(
    ca_cert: x509.Certificate, ca_key: PrivateKey, csr: x509.CertificateSigningRequest, current: x509.Certificate,
    max_validity: dt.timedelta, now: dt.datetime | None = None,
) -> x509.Certificate:
    """The renewed certificate for a vetted ``csr``: the current subject and usages, the CSR's
    key and IPs, the current lifetime capped at ``max_validity``."""
    now = now or dt.datetime.now(dt.UTC)
    lifetime = min(current.not_valid_after_utc - current.not_valid_before_utc, max_validity)
    if lifetime <= dt.timedelta(0):
        raise CertificateError("the current certificate has no lifetime to renew")
    start = now - min(_MAX_SKEW, lifetime / 100)
    try:
        usages = current.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    public = csr.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(current.subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_USAGE, critical=True)
        .add_extension(usages, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    try:
        ips = [str(ip) for ip in csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        ips = []
    if ips:
        builder = builder.add_extension(ip_sans(ips), critical=False)
    return builder.sign(ca_key, SIGN_HASH)
