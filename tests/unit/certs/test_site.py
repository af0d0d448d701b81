"""``streamcerts init|issue|inspect``: KubeEdge's names, atomic 0600 keys, no silent overwrite, key
types; openssl reads back what we wrote."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from streamcerts import CertificateError, Layout, load_cert
from streamcerts.__main__ import main
from streamcerts.files import write_atomic
from streamcerts.site import init_cas, issue

from .craft import openssl


@pytest.fixture
def site(tmp_path: Path) -> Layout:
    assert main(["init", "--dir", str(tmp_path)]) == 0
    return Layout(tmp_path)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_kubeedges_names_and_refuses_to_overwrite(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    assert sorted(p.name for p in (site.root / "ca").iterdir()) == ["rootCA.crt", "rootCA.key", "streamCA.crt", "streamCA.key"]
    for key in (site.ca_key, site.stream_ca_key):
        assert _mode(key) == 0o600
    for cert in (site.ca_cert, site.stream_ca):
        assert _mode(cert) == 0o644
        text = openssl("x509", "-in", cert, "-noout", "-text").stdout
        assert "CA:TRUE" in text and "Certificate Sign" in text and "prime256v1" in text
    before = site.ca_cert.read_bytes()
    capsys.readouterr()
    assert main(["init", "--dir", str(site.root)]) == 2
    assert "exists; --force replaces it" in capsys.readouterr().err
    assert site.ca_cert.read_bytes() == before
    assert main(["init", "--dir", str(site.root), "--only", "stream", "--force"]) == 0
    assert site.ca_cert.read_bytes() == before  # --only stream left the tunnel CA alone


def test_issue_every_kind_chains_with_openssl(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(site.root)
    assert main(["issue", "server", "--dir", d, "--san", "cloud.example", "--san", "192.0.2.10"]) == 0
    assert main(["issue", "stream", "--dir", d, "--san", "192.0.2.10"]) == 0
    assert main(["issue", "edge", "edge-7", "--dir", d, "--ip", "10.0.0.7", "--ip", "fd00::7"]) == 0
    assert main(["issue", "apiserver-client", "--dir", d]) == 0
    for ca, cert in ((site.ca_cert, site.server_cert), (site.ca_cert, site.edge_cert("edge-7")),
                     (site.stream_ca, site.stream_cert), (site.stream_ca, site.apiserver_client_cert)):
        judged = openssl("verify", "-CAfile", ca, cert)
        assert judged.returncode == 0 and judged.stdout.strip().endswith("OK"), judged
        assert _mode(cert) == 0o644 and _mode(cert.with_suffix(".key")) == 0o600
    server = openssl("x509", "-in", site.server_cert, "-noout", "-text").stdout
    assert "DNS:localhost, IP Address:127.0.0.1, DNS:cloud.example, IP Address:192.0.2.10" in server
    assert "TLS Web Server Authentication" in server
    edge = openssl("x509", "-in", site.edge_cert("edge-7"), "-noout", "-text").stdout
    assert "Subject: CN = edge-7" in edge and "IP Address:10.0.0.7, IP Address:FD00:0:0:0:0:0:0:7" in edge
    assert "TLS Web Client Authentication" in edge and "TLS Web Server Authentication" not in edge
    api = openssl("x509", "-in", site.apiserver_client_cert, "-noout", "-subject").stdout
    assert "O = system:masters, CN = kube-apiserver-kubelet-client" in api
    # wrong CA for the kind: the stream CA never signs an edge
    judged = openssl("verify", "-CAfile", site.stream_ca, site.edge_cert("edge-7"))
    assert judged.returncode != 0


def test_issue_refuses_to_overwrite_without_force(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(site.root)
    assert main(["issue", "edge", "n1", "--dir", d]) == 0
    before = site.edge_cert("n1").read_bytes(), site.edge_key("n1").read_bytes()
    capsys.readouterr()
    assert main(["issue", "edge", "n1", "--dir", d, "--ip", "10.0.0.1"]) == 2
    assert "exists; --force replaces it" in capsys.readouterr().err
    assert (site.edge_cert("n1").read_bytes(), site.edge_key("n1").read_bytes()) == before
    assert main(["issue", "edge", "n1", "--dir", d, "--ip", "10.0.0.1", "--force"]) == 0
    assert site.edge_cert("n1").read_bytes() != before[0]
    assert main(["issue", "edge", "--dir", d]) == 2  # no node name
    assert main(["issue", "server", "n1", "--dir", d]) == 2  # a node name where none belongs


def test_key_types_and_validity(site: Layout) -> None:
    for key_type, expect in (("rsa", "2048 bit"), ("rsa:3072", "3072 bit"), ("rsa:4096", "4096 bit")):
        out = site.root / f"x-{key_type.replace(':', '-')}.crt"
        issue("apiserver-client", site.root, key_type=key_type, days=2, out_cert=out)
        text = openssl("x509", "-in", out, "-noout", "-text").stdout
        assert "rsaEncryption" in text and f"Public-Key: ({expect})" in text
        assert "Key Encipherment" in text  # TLS 1.2 RSA key exchange allowed for RSA keys
        cert = load_cert(out)
        assert 1.9 < (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400 < 2.1
        key_text = openssl("pkey", "-in", out.with_suffix(".key"), "-noout", "-text").stdout
        assert key_text.startswith(f"Private-Key: ({expect}") and "publicExponent: 65537" in key_text
    for bad in ("rsa:1024", "dsa", "ecdsa:p384"):
        with pytest.raises(CertificateError, match="key type"):
            issue("apiserver-client", site.root, key_type=bad, out_cert=site.root / "bad.crt")
    with pytest.raises(CertificateError, match="must be positive"):
        issue("apiserver-client", site.root, days=0, out_cert=site.root / "bad.crt")
    assert not (site.root / "bad.crt").exists()


def test_issue_with_a_ca_that_is_not_one_or_a_wrong_key(site: Layout, tmp_path: Path) -> None:
    issue("edge", site.root, node="n2")
    with pytest.raises(CertificateError, match="is not a CA"):
        issue("edge", site.root, node="n3", ca_cert=site.edge_cert("n2"), ca_key=site.edge_key("n2"))
    with pytest.raises(CertificateError, match="does not belong to the CA"):
        issue("edge", site.root, node="n3", ca_key=site.stream_ca_key)
    assert not site.edge_cert("n3").exists()


def test_keys_are_written_atomically_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.umask(0)  # a careless umask must not widen a key
    try:
        init_cas(tmp_path)
    finally:
        os.umask(old)
    assert _mode(Layout(tmp_path).ca_key) == 0o600
    # A wider existing file is replaced by a new inode, created 0600 (no window with the old mode).
    target = tmp_path / "k.key"
    target.write_bytes(b"old")
    target.chmod(0o644)
    inode = target.stat().st_ino
    write_atomic(target, b"new secret", 0o600)
    assert target.read_bytes() == b"new secret" and _mode(target) == 0o600 and target.stat().st_ino != inode
    # A failure before the rename leaves the old file whole and no temp file behind.
    def boom(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_atomic(target, b"half", 0o600)
    assert target.read_bytes() == b"new secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca", "k.key"]


def test_inspect_text_and_json(site: Layout, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(site.root)
    assert main(["issue", "edge", "e1", "--dir", d, "--ip", "10.0.0.1", "--days", "10"]) == 0
    capsys.readouterr()
    assert main(["inspect", "--dir", d, "--json", str(site.edge_cert("e1")), str(site.edge_key("e1")),
                 str(site.ca_cert)]) == 0
    edge, key, ca = json.loads(capsys.readouterr().out)
    assert edge["subject"] == "CN=e1" and edge["issuer"] == "CN=KubeEdge" and edge["sans"] == ["IP:10.0.0.1"]
    assert edge["key"] == "ECDSA P-256" and not edge["is_ca"] and 9 < edge["days_left"] <= 10
    assert edge["chains_to"] == [str(site.ca_cert)]
    assert key == {"file": str(site.edge_key("e1")), "private_key": "ECDSA P-256"}
    assert ca["is_ca"] and ca["self_signed"] and ca["chains_to"] == [str(site.ca_cert)]
    # serial and fingerprint as openssl reports them
    serial = openssl("x509", "-in", site.edge_cert("e1"), "-noout", "-serial").stdout.strip().split("=")[1]
    assert int(serial, 16) == int(edge["serial"], 16)
    fp = openssl("x509", "-in", site.edge_cert("e1"), "-noout", "-fingerprint", "-sha256").stdout.strip().split("=")[1]
    assert fp == edge["sha256"]
    assert main(["inspect", "--dir", d, str(site.edge_cert("e1"))]) == 0
    text = capsys.readouterr().out
    assert "chains to: " + str(site.ca_cert) in text and "days left" in text
    junk = site.root / "junk.pem"
    junk.write_text("nothing")
    assert main(["inspect", str(junk)]) == 2


def test_a_leaf_never_outlives_its_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--dir", str(tmp_path), "--days", "30"]) == 0
    capsys.readouterr()
    assert main(["issue", "edge", "n1", "--dir", str(tmp_path)]) == 0  # 365 days asked
    assert "validity cut to 30.0 days: the CA expires then" in capsys.readouterr().out
    lay = Layout(tmp_path)
    assert load_cert(lay.edge_cert("n1")).not_valid_after_utc <= load_cert(lay.ca_cert).not_valid_after_utc
    assert openssl("verify", "-CAfile", lay.ca_cert, lay.edge_cert("n1")).returncode == 0
