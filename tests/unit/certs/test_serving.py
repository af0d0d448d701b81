"""Per-node serving leaves (streamcerts/serving.py): verified as the API server verifies a kubelet
(the serving CA pinned, the dialled IP checked, no SNI), by real OpenSSL handshakes."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from streamcerts import CertificateError, create_ca, init_lab, issue_server_cert, write_pem
from streamcerts.serving import ServingCA, issue_serving_leaf

from .test_watch import handshake


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    layout = init_lab(tmp_path_factory.mktemp("serving"), ["edge-1"])
    return layout


def apiserver_client(lab, ca: Path) -> ssl.SSLContext:
    """What kube-apiserver does with --kubelet-certificate-authority: CA pinned, host = the IP."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(str(lab.apiserver_client_cert), str(lab.apiserver_client_key))
    return ctx


def test_leaf_names_the_node_and_only_its_ip(lab) -> None:
    ca = ServingCA.load(lab.stream_ca, lab.stream_ca_key)
    leaf = issue_serving_leaf(ca, "10.1.2.3", "edge-1", lab.stream_ca)
    client = apiserver_client(lab, lab.stream_ca)
    cert = handshake(leaf.context, client, hostname="10.1.2.3")
    assert cert.serial_number == leaf.serial
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:edge-1"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    assert not sans.get_values_for_type(x509.DNSName)
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        handshake(leaf.context, client, hostname="10.1.2.4")  # another node's IP
    other_ca = create_ca("not-the-serving-ca")
    write_pem(lab.root / "other-ca.crt", other_ca[0])
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(leaf.context, apiserver_client(lab, lab.root / "other-ca.crt"), hostname="10.1.2.3")


def test_leaf_never_outlives_its_ca(lab, tmp_path: Path) -> None:
    cert, key = create_ca("short", days=1)
    write_pem(tmp_path / "ca.crt", cert, key, tmp_path / "ca.key")
    leaf = issue_serving_leaf(ServingCA.load(tmp_path / "ca.crt", tmp_path / "ca.key"), "10.0.0.1", "n", None)
    assert leaf.not_after <= cert.not_valid_after_utc


def test_serving_ca_must_be_a_ca_with_its_key(lab, tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="does not belong"):
        ServingCA.load(lab.stream_ca, lab.ca_key)
    leaf, key = issue_server_cert(*create_ca("x"), "leaf", ["localhost"])
    write_pem(tmp_path / "leaf.crt", leaf, key, tmp_path / "leaf.key")
    with pytest.raises(CertificateError, match="not a CA"):
        ServingCA.load(tmp_path / "leaf.crt", tmp_path / "leaf.key")


def test_an_rsa_cluster_ca_signs_too(lab, tmp_path: Path) -> None:
    """kubeadm's cluster CA is RSA 2048: the leaf stays ECDSA P-256, the signature is the CA's."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_pem(tmp_path / "rsa-ca.crt", cert, key, tmp_path / "rsa-ca.key")  # type: ignore[arg-type]
    leaf = issue_serving_leaf(ServingCA.load(tmp_path / "rsa-ca.crt", tmp_path / "rsa-ca.key"), "10.9.8.7", "n", None)
    served = handshake(leaf.context, apiserver_client(lab, tmp_path / "rsa-ca.crt"), hostname="10.9.8.7")
    assert isinstance(served.public_key(), ec.EllipticCurvePublicKey)


def expired_ca(path: Path) -> None:
    """A CA whose validity ended an hour ago, at ``path``/ca.crt and ca.key."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(now - dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_pem(path / "ca.crt", cert, key, path / "ca.key")


def test_an_expired_serving_ca_signs_nothing(tmp_path: Path) -> None:
    expired_ca(tmp_path)
    with pytest.raises(CertificateError, match="expired"):
        issue_serving_leaf(ServingCA.load(tmp_path / "ca.crt", tmp_path / "ca.key"), "10.0.0.1", "n", None)
