"""Edge certificate renewal, the certificate side: the CSR, the cloud's policy (what it
refuses and why), the certificate it signs, the edge's checks of the answer, the due time,
and the atomic replacement of the pair on disk."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from streamcerts import CertificateError, create_ca, load_cert, load_key
from streamcerts._x509 import cert_ips, name, new_key
from streamcerts.pair_files import finish_interrupted, staging_path, write_pair
from streamcerts.renewal import CsrRefused, check_issued, make_csr, renewal_due, sign_csr, vet_csr
from testkit.short_certs import issue_edge_cert

NODE = "edge-7"
IPS = ("10.0.0.7", "fd00::7")
YEAR = dt.timedelta(days=365)


@pytest.fixture(scope="module")
def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    return create_ca("KubeEdge")


@pytest.fixture
def current(ca):  # type: ignore[no-untyped-def]
    return issue_edge_cert(*ca, NODE, IPS, lifetime=120)


def _csr(subject: x509.Name, ips: tuple[str, ...] = IPS, key=None) -> bytes:  # type: ignore[no-untyped-def]
    return make_csr(key or new_key(), subject, ips)


def test_a_renewal_keeps_identity_and_lifetime(ca, current) -> None:  # type: ignore[no-untyped-def]
    cert, _ = current
    key = new_key()
    csr = vet_csr(make_csr(key, cert.subject, IPS), NODE, cert)
    now = dt.datetime.now(dt.UTC)
    new = sign_csr(*ca, csr, cert, YEAR, now=now)
    assert new.subject == cert.subject and sorted(cert_ips(new)) == sorted(IPS)
    assert new.public_key().public_numbers() == key.public_key().public_numbers()
    assert new.not_valid_after_utc - new.not_valid_before_utc == dt.timedelta(seconds=120)
    # 1 % of the lifetime in the past (certificate times have whole seconds)
    assert abs((now - new.not_valid_before_utc).total_seconds() - 1.2) < 1.0
    assert new.serial_number != cert.serial_number
    new.verify_directly_issued_by(ca[0])
    assert check_issued(new.public_bytes(serialization.Encoding.PEM), key, cert, IPS, [ca[0]])[0] == new


def test_validity_is_capped(ca) -> None:  # type: ignore[no-untyped-def]
    cert, _ = issue_edge_cert(*ca, NODE, (), lifetime=10 * 365 * 86400)
    csr = vet_csr(_csr(cert.subject, ()), NODE, cert)
    new = sign_csr(*ca, csr, cert, dt.timedelta(days=30))
    assert new.not_valid_after_utc - new.not_valid_before_utc == dt.timedelta(days=30)
    assert dt.datetime.now(dt.UTC) - new.not_valid_before_utc <= dt.timedelta(minutes=5, seconds=5)


def test_fewer_ips_are_fine(ca, current) -> None:  # type: ignore[no-untyped-def]
    cert, _ = current
    csr = vet_csr(_csr(cert.subject, IPS[:1]), NODE, cert)
    assert cert_ips(sign_csr(*ca, csr, cert, YEAR)) == IPS[:1]


@pytest.mark.parametrize(
    "build, kind, message",
    [
        (lambda c: _csr(name("victim")), "cn", "CN='victim' but this tunnel is node 'edge-7'"),
        (lambda c: _csr(c.subject, IPS + ("10.9.9.9",)), "ip", "asks for IP 10.9.9.9, which the current certificate"),
        (lambda c: _csr(name(NODE, ["system:masters"])), "subject", "a renewal keeps the subject"),
        (lambda c: b"\x30\x03garbage", "unparsable", "not a DER PKCS#10 CSR"),
    ],
    ids=["wrong-cn", "extra-ip", "extra-org", "garbage"],
)
def test_refusals(current, build, kind: str, message: str) -> None:  # type: ignore[no-untyped-def]
    cert, _ = current
    with pytest.raises(CsrRefused, match=message) as info:
        vet_csr(build(cert), NODE, cert)
    assert info.value.kind == kind


def test_dns_names_are_refused(current) -> None:  # type: ignore[no-untyped-def]
    cert, _ = current
    csr = (
        x509.CertificateSigningRequestBuilder().subject_name(cert.subject)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("cloud.example")]), critical=False)
        .sign(new_key(), hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(CsrRefused, match="non-IP names") as info:
        vet_csr(csr, NODE, cert)
    assert info.value.kind == "san"


def test_the_current_key_is_refused(current) -> None:  # type: ignore[no-untyped-def]
    cert, key = current
    with pytest.raises(CsrRefused, match="reuses the current key"):
        vet_csr(make_csr(key, cert.subject, IPS), NODE, cert)


def test_a_forged_signature_is_refused(current) -> None:  # type: ignore[no-untyped-def]
    """Proof of possession: the CSR must be signed by the key it names."""
    cert, _ = current
    der = bytearray(_csr(cert.subject))
    der[-3] ^= 0x01  # inside the signature
    with pytest.raises(CsrRefused) as info:
        vet_csr(bytes(der), NODE, cert)
    assert info.value.bad_request and info.value.kind in ("signature", "unparsable")


@pytest.mark.parametrize("key", [rsa.generate_private_key(65537, 1024), ed25519.Ed25519PrivateKey.generate(),
                                 ec.generate_private_key(ec.SECP521R1())], ids=["rsa1024", "ed25519", "p521"])
def test_weak_or_odd_keys_are_refused(current, key) -> None:  # type: ignore[no-untyped-def]
    cert, _ = current
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    der = x509.CertificateSigningRequestBuilder().subject_name(cert.subject).sign(key, algorithm).public_bytes(
        serialization.Encoding.DER)
    with pytest.raises(CsrRefused, match="not accepted") as info:
        vet_csr(der, NODE, cert)
    assert info.value.kind == "key type"


def test_a_tunnel_cert_that_does_not_name_the_node(ca) -> None:  # type: ignore[no-untyped-def]
    """Accepted at dial with --no-verify-node-identity: never a reason to mint a node cert."""
    cert, _ = issue_edge_cert(*ca, "old-keadm-name", ())
    with pytest.raises(CsrRefused, match="does not name node") as info:
        vet_csr(_csr(name(NODE), ()), NODE, cert)
    assert info.value.kind == "cn"
    system, _ = issue_edge_cert(*ca, f"system:node:{NODE}", ())
    vet_csr(_csr(system.subject, ()), NODE, system)


def test_the_edge_checks_the_answer(ca, current) -> None:  # type: ignore[no-untyped-def]
    cert, _ = current
    key = new_key()
    good = sign_csr(*ca, vet_csr(make_csr(key, cert.subject, IPS), NODE, cert), cert, YEAR)
    pem = good.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertificateError, match="not for the key"):
        check_issued(pem, new_key(), cert, IPS, [ca[0]])
    with pytest.raises(CertificateError, match="carries IPs"):
        check_issued(pem, key, cert, IPS[:1], [ca[0]])
    other = issue_edge_cert(*ca, "someone-else", IPS)[0]
    with pytest.raises(CertificateError, match="names"):
        check_issued(pem, key, other, IPS, [ca[0]])
    impostor = create_ca("KubeEdge")  # the same name, another key
    forged = sign_csr(*impostor, vet_csr(make_csr(key, cert.subject, IPS), NODE, cert), cert, YEAR)
    with pytest.raises(CertificateError, match="does not verify"):
        check_issued(forged.public_bytes(serialization.Encoding.PEM), key, cert, IPS, [ca[0]])
    # With the CA in the chain rather than in the edge's bundle:
    assert check_issued(pem + ca[0].public_bytes(serialization.Encoding.PEM), key, cert, IPS, [])[0] == good
    with pytest.raises(CertificateError, match="not now"):
        check_issued(pem, key, cert, IPS, [ca[0]], now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    with pytest.raises(CertificateError, match="not a PEM"):
        check_issued(b"junk", key, cert, IPS, [ca[0]])


def test_when_renewal_is_due() -> None:
    day = 86400.0
    assert renewal_due(0, 300 * day, 2 / 3, day) == 200 * day  # the fraction comes first
    assert renewal_due(0, 30 * day, 0.9, 7 * day) == 23 * day  # a week left comes first
    assert renewal_due(0, 120, 2 / 3, day) == 60  # shorter than the margin: at half its life
    assert renewal_due(0, 120, 0.25, day) == 30
    assert renewal_due(0, 120, 0.25, 0) == 30


# --------------------------------------------------------------------------- the files


@pytest.fixture
def pair(tmp_path: Path, ca, current):  # type: ignore[no-untyped-def]
    cert, key = current
    write_pair(tmp_path / "server.crt", tmp_path / "server.key", [cert], key)
    return tmp_path / "server.crt", tmp_path / "server.key", cert, key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_pair_replaces_both(pair, ca) -> None:  # type: ignore[no-untyped-def]
    cert_path, key_path, old, _ = pair
    new, key = issue_edge_cert(*ca, NODE, IPS)
    write_pair(cert_path, key_path, [new], key)
    assert load_cert(cert_path) == new
    assert load_key(key_path).private_numbers() == key.private_numbers()
    assert _mode(key_path) == 0o600 and _mode(cert_path) == 0o644
    assert sorted(p.name for p in cert_path.parent.iterdir()) == ["server.crt", "server.key"]


def test_a_failed_write_keeps_the_old_pair(pair, ca, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cert_path, key_path, old, old_key = pair
    new, key = issue_edge_cert(*ca, NODE, IPS)
    with pytest.raises(CertificateError, match="the old pair is kept"):
        write_pair(tmp_path / "missing-dir/server.crt", key_path, [new], key)  # the cert cannot even be staged
    assert load_key(key_path).private_numbers() == old_key.private_numbers()
    # The last step fails (the certificate's path is a directory): the key put back.
    blocker = tmp_path / "blocked.crt"
    blocker.mkdir()
    (blocker / "x").write_text("keeps the directory non-empty")
    with pytest.raises(CertificateError, match="the old pair is kept"):
        write_pair(blocker, key_path, [new], key)
    assert load_key(key_path).private_numbers() == old_key.private_numbers()
    assert _mode(key_path) == 0o600
    assert load_cert(cert_path) == old
    assert not staging_path(key_path).exists() and not staging_path(blocker).exists()


def test_a_crash_between_the_renames_is_finished_at_the_next_start(pair, ca) -> None:  # type: ignore[no-untyped-def]
    cert_path, key_path, old, _ = pair
    new, key = issue_edge_cert(*ca, NODE, IPS)
    # What write_pair leaves when the process dies after the key's rename:
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    staging_path(cert_path).write_bytes(new.public_bytes(serialization.Encoding.PEM))
    assert "finished an interrupted certificate renewal" in (finish_interrupted(cert_path, key_path) or "")
    assert load_cert(cert_path) == new and not staging_path(cert_path).exists()
    assert finish_interrupted(cert_path, key_path) is None


def test_a_stale_staging_file_is_left_alone(pair, ca) -> None:  # type: ignore[no-untyped-def]
    cert_path, key_path, old, _ = pair
    other, _ = issue_edge_cert(*ca, NODE, IPS)
    staging_path(cert_path).write_bytes(other.public_bytes(serialization.Encoding.PEM))
    assert finish_interrupted(cert_path, key_path) is None
    assert load_cert(cert_path) == old


def test_csr_subject_is_the_current_one(current) -> None:  # type: ignore[no-untyped-def]
    cert, _ = current
    csr = x509.load_der_x509_csr(_csr(cert.subject))
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NODE
    assert csr.is_signature_valid


def test_an_rsa_ca_signs_too() -> None:
    """keadm-era CAs may be RSA: the signer signs with whatever key the CA has."""
    key = rsa.generate_private_key(65537, 2048)
    subject = name("KubeEdge")
    now = dt.datetime.now(dt.UTC)
    ca_cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + YEAR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256())
    )
    current, _ = issue_edge_cert(ca_cert, key, NODE, IPS)  # type: ignore[arg-type]
    edge_key = new_key()
    new = sign_csr(ca_cert, key, vet_csr(make_csr(edge_key, current.subject, IPS), NODE, current), current, YEAR)  # type: ignore[arg-type]
    assert check_issued(new.public_bytes(serialization.Encoding.PEM), edge_key, current, IPS, [ca_cert])[0] == new
