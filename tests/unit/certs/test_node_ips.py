"""Edge certificates carrying the node's internal IPs (IP SANs): issued, read back, kept or reissued."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from streamcerts import CertificateError, create_ca, init_lab, issue_client_cert, load_cert, peer_identity
from streamcerts.__main__ import main
from streamcerts.lab import parse_node


def _ips(path: Path) -> list[str]:
    cert = load_cert(path)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]


def test_client_cert_with_ips_is_read_back_by_peer_identity() -> None:
    ca, key = create_ca("KubeEdge")
    cert, _ = issue_client_cert(ca, key, "edge-1", ips=["10.0.0.7", "fd00::7"])
    identity = peer_identity(cert.public_bytes(Encoding.DER))
    assert identity.common_name == "edge-1" and identity.ips == ("10.0.0.7", "fd00::7")
    plain, _ = issue_client_cert(ca, key, "edge-2")
    assert peer_identity(plain.public_bytes(Encoding.DER)).ips == ()


def test_a_name_is_not_an_ip_san() -> None:
    ca, key = create_ca("KubeEdge")
    with pytest.raises(CertificateError, match="'edge.example' is not an IP address"):
        issue_client_cert(ca, key, "edge-1", ips=["edge.example"])


def test_cli_client_ip_and_lab_node_ips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca", "--out-cert", str(tmp_path / "ca.crt"), "--out-key", str(tmp_path / "ca.key")]) == 0
    assert main(["client", "--ca-cert", str(tmp_path / "ca.crt"), "--ca-key", str(tmp_path / "ca.key"), "--cn", "e1",
                 "--ip", "192.0.2.5", "--ip", "192.0.2.6", "--out-cert", str(tmp_path / "e1.crt"),
                 "--out-key", str(tmp_path / "e1.key")]) == 0
    assert _ips(tmp_path / "e1.crt") == ["192.0.2.5", "192.0.2.6"]
    assert main(["client", "--ca-cert", str(tmp_path / "ca.crt"), "--ca-key", str(tmp_path / "ca.key"), "--cn", "e1",
                 "--ip", "nope", "--out-cert", str(tmp_path / "x.crt"), "--out-key", str(tmp_path / "x.key")]) == 2
    assert "'nope' is not an IP address" in capsys.readouterr().err

    lab = tmp_path / "lab"
    assert main(["lab", "--dir", str(lab), "--node", "a=192.0.2.1,192.0.2.2", "--node", "b"]) == 0
    layout = init_lab(lab, [])
    assert _ips(layout.edge_cert("a")) == ["192.0.2.1", "192.0.2.2"]
    with pytest.raises(x509.ExtensionNotFound):
        load_cert(layout.edge_cert("b")).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert main(["lab", "--dir", str(lab), "--node", "a=1.2.3.x"]) == 2


def test_lab_keeps_a_matching_cert_and_reissues_one_without_the_ips(tmp_path: Path) -> None:
    layout = init_lab(tmp_path, ["a"])
    first = layout.edge_cert("a").read_bytes()
    init_lab(tmp_path, ["a"])  # nothing asked about IPs: kept
    assert layout.edge_cert("a").read_bytes() == first
    init_lab(tmp_path, ["a"], node_ips={"a": ["192.0.2.9"]})  # the old one lacks the IP: reissued
    second = layout.edge_cert("a").read_bytes()
    assert second != first and _ips(layout.edge_cert("a")) == ["192.0.2.9"]
    init_lab(tmp_path, ["a"], node_ips={"a": ["192.0.2.9"]})
    assert layout.edge_cert("a").read_bytes() == second


@pytest.mark.parametrize(
    ("text", "expected"),
    [("n", ("n", ())), ("n=10.0.0.1", ("n", ("10.0.0.1",))), ("n=10.0.0.1, FD00::1", ("n", ("10.0.0.1", "fd00::1")))],
)
def test_parse_node(text: str, expected: tuple[str, tuple[str, ...]]) -> None:
    assert parse_node(text) == expected


@pytest.mark.parametrize("text", ["=10.0.0.1", "n=", "n=host"])
def test_parse_node_refuses(text: str) -> None:
    with pytest.raises(CertificateError):
        parse_node(text)
