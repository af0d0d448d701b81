"""The PKI's edges: context modes, ALPN, idempotence after a CA is lost, CLI errors, key modes."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from streamcerts import (
    CertificateError,
    Layout,
    client_context,
    create_ca,
    init_lab,
    issue_server_cert,
    load_cert,
    peer_identity,
    server_context,
    write_pem,
)
from streamcerts.__main__ import main


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return init_lab(tmp_path_factory.mktemp("lab"), ["edge-1"])


def test_context_modes(lab: Layout) -> None:
    required = server_context(lab.server_cert, lab.server_key, lab.ca_cert)
    assert required.verify_mode == ssl.CERT_REQUIRED and required.minimum_version == ssl.TLSVersion.TLSv1_2
    optional = server_context(lab.stream_cert, lab.stream_key, lab.stream_ca, require_client_cert=False)
    assert optional.verify_mode == ssl.CERT_OPTIONAL
    assert server_context(lab.server_cert, lab.server_key, None).verify_mode == ssl.CERT_NONE
    strict = client_context(lab.ca_cert)
    assert strict.check_hostname and strict.verify_mode == ssl.CERT_REQUIRED
    loose = client_context(None, verify=False)
    assert not loose.check_hostname and loose.verify_mode == ssl.CERT_NONE


def test_half_a_client_pair_is_an_error(lab: Layout) -> None:
    with pytest.raises(CertificateError, match="both"):
        client_context(lab.ca_cert, lab.edge_cert("edge-1"), None)


def test_alpn_default_and_identity_with_groups(lab: Layout) -> None:
    server = server_context(lab.stream_cert, lab.stream_key, lab.stream_ca, require_client_cert=False)
    client = client_context(lab.stream_ca, lab.apiserver_client_cert, lab.apiserver_client_key)
    client.set_alpn_protocols(["h2", "http/1.1"])
    a, b = socket.socketpair()
    seen: dict[str, object] = {}

    def serve() -> None:
        with server.wrap_socket(a, server_side=True) as tls:
            seen["identity"] = peer_identity(tls)
            tls.sendall(b"x")

    thread = threading.Thread(target=serve)
    thread.start()
    with client.wrap_socket(b, server_hostname="127.0.0.1") as tls:  # an IP SAN, checked as one
        tls.recv(1)
        assert tls.selected_alpn_protocol() == "http/1.1"
    thread.join(5)
    identity = seen["identity"]
    assert identity.common_name == "kube-apiserver-kubelet-client"  # type: ignore[attr-defined]
    assert identity.organizations == ("system:masters",)  # type: ignore[attr-defined]


def test_peer_without_certificate_is_an_error() -> None:
    class NoCert:
        def getpeercert(self, binary_form: bool = False) -> None:
            return None

    with pytest.raises(CertificateError, match="no certificate"):
        peer_identity(NoCert())
    with pytest.raises(CertificateError, match="unparsable"):
        peer_identity(b"\x30\x03junk")


def test_lab_reissues_leaves_orphaned_by_a_new_ca(tmp_path: Path) -> None:
    layout = init_lab(tmp_path, ["edge-1"])
    kept = layout.stream_cert.read_bytes()
    layout.ca_cert.unlink()
    init_lab(tmp_path, ["edge-1"])
    ca = load_cert(layout.ca_cert)
    load_cert(layout.server_cert).verify_directly_issued_by(ca)
    load_cert(layout.edge_cert("edge-1")).verify_directly_issued_by(ca)
    assert layout.stream_cert.read_bytes() == kept  # the other trust domain is untouched


def test_rewritten_key_is_narrowed_to_0600(tmp_path: Path) -> None:
    ca_cert, ca_key = create_ca("t")
    key_path = tmp_path / "k.key"
    key_path.write_text("old")
    key_path.chmod(0o644)
    write_pem(tmp_path / "k.crt", *issue_server_cert(ca_cert, ca_key, "s", ["::1"]), key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k.crt").stat().st_mode) == 0o644


def test_cli_ca_server_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca, ca_key = tmp_path / "ca.crt", tmp_path / "ca.key"
    assert main(["ca", "--cn", "Test CA", "--out-cert", str(ca), "--out-key", str(ca_key)]) == 0
    srv = tmp_path / "out/srv.crt"
    assert main(["server", "--ca-cert", str(ca), "--ca-key", str(ca_key), "--cn", "srv", "--san", "cloud.test",
                 "--san", "10.0.0.1", "--out-cert", str(srv), "--out-key", str(tmp_path / "out/srv.key")]) == 0
    assert stat.S_IMODE((tmp_path / "out/srv.key").stat().st_mode) == 0o600
    load_cert(srv).verify_directly_issued_by(load_cert(ca))
    assert main(["show", str(srv)]) == 0
    out = capsys.readouterr().out
    assert "CN=srv" in out and "CN=Test CA" in out and "cloud.test, 10.0.0.1" in out


def test_cli_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["server", "--cn", "x"]) == 2  # missing required options: a usage error, not SystemExit
    capsys.readouterr()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["ca", "--out-cert", str(blocker / "ca.crt"), "--out-key", str(blocker / "ca.key")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ca.crt" in err
    junk = tmp_path / "junk.crt"
    junk.write_text("not pem")
    assert main(["show", str(junk)]) == 2
    assert "junk.crt" in capsys.readouterr().err


def test_server_cert_for_ipv6_sans_only() -> None:
    ca_cert, ca_key = create_ca()
    cert, _ = issue_server_cert(ca_cert, ca_key, "s", ["::1", "fe80::1"])
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["::1", "fe80::1"]
    assert sans.get_values_for_type(x509.DNSName) == []
