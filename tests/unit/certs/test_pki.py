from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from streamcerts import (
    CertificateError,
    Layout,
    client_context,
    create_ca,
    init_lab,
    issue_client_cert,
    issue_server_cert,
    load_cert,
    load_key,
    peer_identity,
    server_context,
    write_pem,
)
from streamcerts.__main__ import main


def test_lab_layout_is_kubeedges_and_keys_are_private(tmp_path: Path) -> None:
    layout = init_lab(tmp_path, ["edge-1", "edge-2"])
    for path in (layout.ca_cert, layout.server_cert, layout.stream_ca, layout.stream_cert, layout.apiserver_client_cert,
                 layout.edge_cert("edge-1"), layout.edge_cert("edge-2")):
        assert path.exists()
    assert layout.ca_cert == tmp_path / "ca/rootCA.crt" and layout.server_key == tmp_path / "certs/server.key"
    for key in (layout.ca_key, layout.server_key, layout.stream_key, layout.edge_key("edge-1"), layout.apiserver_client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # idempotent: a second run keeps what exists
    before = layout.ca_cert.read_bytes()
    init_lab(tmp_path, ["edge-1", "edge-3"])
    assert layout.ca_cert.read_bytes() == before and layout.edge_cert("edge-3").exists()


def test_chains_names_and_usages(tmp_path: Path) -> None:
    layout = init_lab(tmp_path, ["edge-1"], ["cloud.example", "192.0.2.10"])
    ca, stream_ca = load_cert(layout.ca_cert), load_cert(layout.stream_ca)
    server, edge = load_cert(layout.server_cert), load_cert(layout.edge_cert("edge-1"))
    apiserver, stream = load_cert(layout.apiserver_client_cert), load_cert(layout.stream_cert)
    server.verify_directly_issued_by(ca)
    edge.verify_directly_issued_by(ca)
    apiserver.verify_directly_issued_by(stream_ca)
    stream.verify_directly_issued_by(stream_ca)
    with pytest.raises((ValueError, TypeError, InvalidSignature)):
        apiserver.verify_directly_issued_by(ca)  # two separate trust domains
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["cloud.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.10")]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = edge.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku and ExtendedKeyUsageOID.SERVER_AUTH not in eku
    identity = peer_identity(apiserver.public_bytes(serialization.Encoding.DER))
    assert identity.common_name == "kube-apiserver-kubelet-client" and identity.organizations == ("system:masters",)


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> str | None:
    """A real TLS handshake over a socket pair; returns the server-side peer CN or raises."""
    a, b = socket.socketpair()
    result: dict[str, object] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as tls:
                # the SSL socket itself, as the servers hand over their ssl_object
                result["cn"] = peer_identity(tls).common_name if tls.getpeercert(binary_form=True) else None
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            result["error"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname="localhost") as tls:
            tls.recv(2)
    finally:
        thread.join(5)
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result.get("cn")  # type: ignore[return-value]


def test_mutual_tls_accepts_the_right_identity_and_refuses_others(tmp_path: Path) -> None:
    layout = init_lab(tmp_path, ["edge-1"])
    server = server_context(layout.server_cert, layout.server_key, layout.ca_cert, require_client_cert=True)
    good = client_context(layout.ca_cert, layout.edge_cert("edge-1"), layout.edge_key("edge-1"))
    assert _handshake(server, good) == "edge-1"
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(server, client_context(layout.ca_cert))  # no client certificate
    other = init_lab(tmp_path / "other", ["edge-1"])
    stranger = client_context(layout.ca_cert, other.edge_cert("edge-1"), other.edge_key("edge-1"))
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(server, stranger)  # signed by a CA the server does not trust
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_context(other.server_cert, other.server_key, None), good)  # the edge checks the cloud too


def test_errors_name_the_file_never_the_key(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="missing.crt"):
        load_cert(tmp_path / "missing.crt")
    bad = tmp_path / "bad.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(CertificateError) as info:
        load_key(bad)
    assert "not a key" not in str(info.value)
    with pytest.raises(CertificateError, match="nope.crt"):
        server_context(tmp_path / "nope.crt", tmp_path / "nope.key", None)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "--dir", str(tmp_path / "lab"), "--node", "edge-9"]) == 0
    assert "edge-9" in capsys.readouterr().out
    layout = Layout(tmp_path / "lab")
    out = tmp_path / "extra"
    assert main(["client", "--ca-cert", str(layout.ca_cert), "--ca-key", str(layout.ca_key), "--cn", "edge-10",
                 "--out-cert", str(out / "c.crt"), "--out-key", str(out / "c.key")]) == 0
    assert main(["show", str(out / "c.crt")]) == 0
    assert "CN=edge-10" in capsys.readouterr().out
    assert main(["show", str(tmp_path / "absent.crt")]) == 2
    assert "absent.crt" in capsys.readouterr().err


def test_write_pem_and_reload(tmp_path: Path) -> None:
    ca_cert, ca_key = create_ca("test-ca")
    cert, key = issue_server_cert(ca_cert, ca_key, "srv", ["localhost"])
    write_pem(tmp_path / "srv.crt", cert, key)
    assert load_cert(tmp_path / "srv.crt") == cert
    assert load_key(tmp_path / "srv.key").public_key().public_numbers() == key.public_key().public_numbers()
    client, _ = issue_client_cert(ca_cert, ca_key, "node-a", ["group-x"])
    assert client.subject.rfc4514_string() == "CN=node-a,O=group-x"
