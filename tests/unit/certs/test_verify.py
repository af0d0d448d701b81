"""``streamcerts verify``: every failure detected with its message and its fix, on real bad files;
openssl's own verdict on the same files where it has one."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from streamcerts import Layout, load_cert, load_key
from streamcerts.__main__ import main
from streamcerts.verify import Target, cloud_expectations, edge_expectations

from .craft import NOW, craft, openssl, save

ADVERTISED = "192.0.2.10"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    d = str(root)
    assert main(["init", "--dir", d]) == 0
    assert main(["issue", "server", "--dir", d, "--san", ADVERTISED, "--san", "cloud.example"]) == 0
    assert main(["issue", "stream", "--dir", d]) == 0
    assert main(["issue", "edge", "edge-1", "--dir", d, "--ip", "10.1.0.5"]) == 0
    assert main(["issue", "apiserver-client", "--dir", d]) == 0
    return root


@pytest.fixture
def site(good: Path, tmp_path: Path) -> Layout:
    shutil.copytree(good, tmp_path / "site")
    return Layout(tmp_path / "site")


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    code = main(["verify", "--json", *args])
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] == (code == 0)
    return code, doc["findings"]


def problems(findings: list[dict[str, Any]], level: str = "error") -> list[dict[str, Any]]:
    return [f for f in findings if f["level"] == level]


def test_a_good_site_passes(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    code, found = verify(capsys, "--dir", str(site.root), "--advertise", ADVERTISED, "--node", "edge-1",
                         "--node-ip", "10.1.0.5")
    assert code == 0, found
    assert {f["role"] for f in found} >= {"tunnel CA", "tunnel server (10004)", "stream CA", "stream server (10003)",
                                          "API-server client", "edge edge-1"}
    assert all(f["level"] == "ok" for f in found)
    # The text form: one line per finding.
    assert main(["verify", "--dir", str(site.root)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == len(found)


def test_missing_files(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    site.server_key.unlink()
    site.stream_cert.unlink()
    code, found = verify(capsys, "--dir", str(site.root), "--side", "cloud")
    assert code == 1
    by_file = {f["file"]: f for f in problems(found)}
    assert by_file[str(site.server_key)]["message"] == "private key missing"
    assert "streamcerts issue server" in by_file[str(site.server_key)]["fix"]
    assert by_file[str(site.stream_cert)]["message"] == "missing"
    assert by_file[str(site.stream_cert)]["fix"].startswith("streamcerts issue stream --dir")


def test_unreadable_certificate(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    site.server_cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    code, found = verify(capsys, "--dir", str(site.root), "--side", "cloud")
    assert code == 1
    [f] = problems(found)
    assert f["file"] == str(site.server_cert) and f["message"].startswith("unreadable")


def test_expired(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    ca = load_cert(site.ca_cert), load_key(site.ca_key)
    save(site.server_cert, craft("cloudstream", ca, start=NOW - dt.timedelta(days=400), end=NOW - dt.timedelta(days=3),
                                 ips=("127.0.0.1",)), site.server_key)
    code, found = verify(capsys, "--dir", str(site.root), "--side", "cloud")
    assert code == 1
    [f] = problems(found)
    assert f["role"] == "tunnel server (10004)" and "expired on" in f["message"] and "3 days ago" in f["message"]
    assert "streamcerts issue server" in f["fix"] and "--force" in f["fix"]
    judged = openssl("verify", "-CAfile", site.ca_cert, site.server_cert)
    assert judged.returncode != 0 and "expired" in judged.stdout + judged.stderr


def test_not_yet_valid(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    ca = load_cert(site.ca_cert), load_key(site.ca_key)
    save(site.edge_cert("edge-1"), craft("edge-1", ca, start=NOW + dt.timedelta(days=2), ips=("10.1.0.5",)))
    code, found = verify(capsys, "--dir", str(site.root))
    assert code == 1
    [f] = problems(found)
    assert f["role"] == "edge edge-1" and f["message"].startswith("not yet valid") and "clock" in f["message"]
    judged = openssl("verify", "-CAfile", site.ca_cert, site.edge_cert("edge-1"))
    assert judged.returncode != 0 and "not yet valid" in judged.stdout + judged.stderr


def test_expiring_soon_is_a_warning(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    ca = load_cert(site.ca_cert), load_key(site.ca_key)
    save(site.server_cert, craft("cloudstream", ca, end=NOW + dt.timedelta(days=12), ips=("127.0.0.1",)), site.server_key)
    code, found = verify(capsys, "--dir", str(site.root), "--side", "cloud")
    assert code == 0
    [w] = problems(found, "warning")
    assert "expires on" in w["message"] and "12 days" in w["message"] and w["fix"]


def test_wrong_ca(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    stranger = craft("KubeEdge", ca=True)  # same name as the real CA, another key
    save(site.edge_cert("edge-1"), craft("edge-1", stranger, ips=("10.1.0.5",)))
    code, found = verify(capsys, "--dir", str(site.root))
    assert code == 1
    [f] = problems(found)
    assert "not signed by the CA in" in f["message"] and str(site.ca_cert) in f["message"]
    assert f["fix"].startswith("streamcerts issue edge edge-1")
    judged = openssl("verify", "-CAfile", site.ca_cert, site.edge_cert("edge-1"))
    assert judged.returncode != 0


def test_key_does_not_match(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(site.stream_key, site.server_key)  # a mix-up an operator makes
    code, found = verify(capsys, "--dir", str(site.root), "--side", "cloud")
    assert code == 1
    [f] = problems(found)
    assert f["file"] == str(site.server_key) and "does not match the certificate" in f["message"]
    # openssl agrees: the two public keys differ.
    cert_pub = openssl("x509", "-in", site.server_cert, "-noout", "-pubkey").stdout
    key_pub = openssl("pkey", "-in", site.server_key, "-pubout").stdout
    assert cert_pub and key_pub and cert_pub != key_pub


def test_edge_san_not_matching_its_node_ip(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    code, found = verify(capsys, "--dir", str(site.root), "--side", "edge", "--node", "edge-1", "--node-ip", "10.1.0.9")
    assert code == 1
    [f] = problems(found)
    assert "announces 10.1.0.9, which is not among its IP SANs ['10.1.0.5']" in f["message"]
    assert "--ip 10.1.0.9" in f["fix"]


def test_edge_without_ip_sans_is_a_warning(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["issue", "edge", "edge-2", "--dir", str(site.root)]) == 0
    capsys.readouterr()
    code, found = verify(capsys, "--dir", str(site.root), "--side", "edge", "--node", "edge-2", "--node-ip", "10.1.0.7")
    assert code == 0
    [w] = problems(found, "warning")
    assert "no IP SAN" in w["message"] and "--ip 10.1.0.7" in w["fix"]


def test_edge_cn_not_the_node_name(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    ca = load_cert(site.ca_cert), load_key(site.ca_key)
    save(site.edge_cert("edge-1"), craft("kubeedge.io", ca))  # certgen.sh's subject
    code, found = verify(capsys, "--dir", str(site.root))
    assert code == 1
    [f] = problems(found)
    assert "CN is 'kubeedge.io', not the node name 'edge-1'" in f["message"]
    assert "--no-verify-node-identity" in f["message"]


def test_server_san_not_matching_the_advertised_address(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    code, found = verify(capsys, "--dir", str(site.root), "--side", "cloud", "--advertise", "198.51.100.7",
                         "--advertise", "cloud.example")
    assert code == 1
    [f] = problems(found)
    assert f["role"] == "tunnel server (10004)" and "do not cover '198.51.100.7'" in f["message"]
    assert "--san 198.51.100.7 --san cloud.example" in f["fix"]
    # openssl's own host check gives the same verdict.
    assert "does NOT match" in openssl("x509", "-in", site.server_cert, "-noout", "-checkip", "198.51.100.7").stdout
    assert "does match" in openssl("x509", "-in", site.server_cert, "-noout", "-checkip", ADVERTISED).stdout


def test_ca_that_is_not_a_ca(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    save(site.stream_ca, craft("kubernetes", ca=False), site.stream_ca_key)
    code, found = verify(capsys, "--dir", str(site.root), "--side", "cloud")
    assert code == 1
    roles = {f["role"]: f for f in problems(found)}
    assert "is not a CA" in roles["stream CA"]["message"]
    assert "not signed by the CA" in roles["stream server (10003)"]["message"]


def test_api_client_identity_the_default_rules_refuse(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    stream_ca = load_cert(site.stream_ca), load_key(site.stream_ca_key)
    save(site.apiserver_client_cert, craft("metrics-server", stream_ca, orgs=("system:monitoring",)))
    code, found = verify(capsys, "--dir", str(site.root))
    assert code == 0
    [w] = problems(found, "warning")
    assert "--allow cn:NAME" in w["message"]


def test_reads_cloudcore_yaml(site: Layout, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = site.root
    config = tmp_path / "cloudcore.yaml"
    config.write_text(f"""
modules:
  cloudHub:
    advertiseAddress: [{ADVERTISED}, 203.0.113.4]
  cloudStream:
    enable: true
    tlsTunnelCAFile: {r}/ca/rootCA.crt
    tlsTunnelCertFile: {r}/certs/server.crt
    tlsTunnelPrivateKeyFile: {r}/certs/server.key
    tlsStreamCAFile: {r}/ca/streamCA.crt
    tlsStreamCertFile: {r}/certs/stream.crt
    tlsStreamPrivateKeyFile: {r}/certs/stream.key
""")
    code, found = verify(capsys, "--config", str(config))
    assert code == 1  # 203.0.113.4 is advertised but not in the certificate
    [f] = problems(found)
    assert "'203.0.113.4'" in f["message"] and f["file"] == str(r / "certs/server.crt")


def test_reads_edgecore_yaml(site: Layout, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = site.root
    config = tmp_path / "edgecore.yaml"
    config.write_text(f"""
modules:
  edged:
    hostnameOverride: edge-1
    nodeIP: 10.1.0.6
  edgeStream:
    enable: true
    server: {ADVERTISED}:10004
    tlsTunnelCAFile: {r}/ca/rootCA.crt
    tlsTunnelCertFile: {r}/edge/edge-1/server.crt
    tlsTunnelPrivateKeyFile: {r}/edge/edge-1/server.key
""")
    code, found = verify(capsys, "--config", str(config))
    assert code == 1
    [f] = problems(found)
    assert "announces 10.1.0.6" in f["message"]
    code, found = verify(capsys, "--config", str(config), "--node-ip", "10.1.0.5")
    assert code == 0, found


def test_defaults_are_the_processes_defaults() -> None:
    """certs cannot import cloudstream/edgestream: pin verify's default paths to theirs."""
    from cloudstream.config import CloudConfig
    from edgestream.config import EdgeConfig

    cloud = {e.role: e for e in cloud_expectations(Target("cloud", Path("/etc/kubeedge")))}
    c = CloudConfig()
    assert cloud["tunnel CA"].cert == c.tls_tunnel_ca_file
    assert (cloud["tunnel server (10004)"].cert, cloud["tunnel server (10004)"].key) == (
        c.tls_tunnel_cert_file, c.tls_tunnel_private_key_file)
    assert cloud["stream CA"].cert == c.tls_stream_ca_file
    assert (cloud["stream server (10003)"].cert, cloud["stream server (10003)"].key) == (
        c.tls_stream_cert_file, c.tls_stream_private_key_file)
    e = EdgeConfig(node_name="n1")
    ca, edge = edge_expectations(Target("edge", Path("/etc/kubeedge"), node="n1"))[:2]
    assert (ca.cert, edge.cert, edge.key) == (e.tls_tunnel_ca_file, e.tls_tunnel_cert_file, e.tls_tunnel_private_key_file)


def test_import_reports_a_ca_key_that_is_not_the_cas(site: Layout, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(site.stream_ca_key, site.ca_key)
    assert main(["import", "--from", str(site.root), "--kube-pki", str(tmp_path / "none"), "--json"]) == 1
    found = json.loads(capsys.readouterr().out)["findings"]
    [f] = problems(found)
    assert f["role"] == "tunnel CA key" and "does not match the certificate" in f["message"]


def test_missing_ca(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    site.ca_cert.unlink()
    code, found = verify(capsys, "--dir", str(site.root), "--side", "cloud")
    assert code == 1
    [f] = problems(found)  # reported once, on the CA itself, not again on every leaf it should sign
    assert f["role"] == "tunnel CA" and f["message"] == "missing" and "--only tunnel" in f["fix"]
