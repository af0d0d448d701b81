"""cloudstream's renewal signer: off without a CA key, the key must match the tunnel CA,
requests limited per node, every refusal logged once per (node, reason) with its reason."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from streamcerts import create_ca, init_lab, load_cert, load_key, write_pem
from streamcerts._x509 import name, new_key
from streamcerts.renewal import make_csr
from cloudstream.cert_signer import CertSigner, describe_certificate
from cloudstream.config import CloudConfig, add_arguments
from streamproto.tunnel import ConfigError, RenewalStatus
from testkit.short_certs import issue_edge_cert

NODE = "edge-9"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return init_lab(tmp_path_factory.mktemp("signer"), [])


def _config(lab, *flags: str) -> CloudConfig:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return CloudConfig.from_args(parser.parse_args(["--pki-dir", str(lab.root), *flags]))


def test_off_by_default(lab) -> None:  # type: ignore[no-untyped-def]
    assert _config(lab).tunnel_ca_key_file is None
    assert CertSigner.from_config(_config(lab)) is None


def test_the_key_must_belong_to_the_tunnel_ca(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, stranger_key = create_ca("KubeEdge")
    write_pem(tmp_path / "other.crt", create_ca("x")[0], stranger_key, tmp_path / "other.key")
    with pytest.raises(ConfigError, match="belongs to no CA in"):
        CertSigner.from_config(_config(lab, "--tunnel-ca-key-file", str(tmp_path / "other.key")))
    with pytest.raises(ConfigError, match="cannot load private key"):
        CertSigner.from_config(_config(lab, "--tunnel-ca-key-file", str(tmp_path / "absent.key")))
    with pytest.raises(ConfigError):
        _config(lab, "--renew-max-per-hour", "0")


def _signer(lab, *flags: str) -> CertSigner:  # type: ignore[no-untyped-def]
    signer = CertSigner.from_config(_config(lab, "--tunnel-ca-key-file", str(lab.ca_key), *flags))
    assert signer is not None
    return signer


def _current(lab, ips=("10.0.0.9",), lifetime: float = 120):  # type: ignore[no-untyped-def]
    cert, _ = issue_edge_cert(load_cert(lab.ca_cert), load_key(lab.ca_key), NODE, ips, lifetime=lifetime)
    return cert, cert.public_bytes(serialization.Encoding.DER)


def test_signs_a_good_request(lab) -> None:  # type: ignore[no-untyped-def]
    signer = _signer(lab)
    cert, der = _current(lab)
    key = new_key()
    answer = signer.answer(NODE, der, make_csr(key, cert.subject, ["10.0.0.9"]))
    assert answer.status is RenewalStatus.OK, answer.reason
    leaf, ca = x509.load_pem_x509_certificates(answer.chain_pem)
    assert leaf.subject == cert.subject and ca == load_cert(lab.ca_cert)
    leaf.verify_directly_issued_by(ca)
    assert "certificate serial" in describe_certificate(leaf.public_bytes(serialization.Encoding.DER))
    assert describe_certificate(None) == "" and describe_certificate(b"junk") == ""


def test_validity_cap_from_the_flag(lab) -> None:  # type: ignore[no-untyped-def]
    signer = _signer(lab, "--renew-max-days", "2")
    cert, der = _current(lab, lifetime=400 * 86400)
    answer = signer.answer(NODE, der, make_csr(new_key(), cert.subject, ["10.0.0.9"]))
    leaf = x509.load_pem_x509_certificates(answer.chain_pem)[0]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(days=2)


def test_refusals_are_answered_and_logged_once(lab, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    signer = _signer(lab, "--renew-max-per-hour", "100")
    cert, der = _current(lab)
    caplog.set_level(logging.WARNING, "cloudstream.cert_signer")
    for _ in range(5):
        wrong_cn = signer.answer(NODE, der, make_csr(new_key(), name("victim"), []))
        extra_ip = signer.answer(NODE, der, make_csr(new_key(), cert.subject, ["10.0.0.9", "10.6.6.6"]))
        garbage = signer.answer(NODE, der, b"\x30\x00")
    assert wrong_cn.status is RenewalStatus.REFUSED and "CN='victim'" in wrong_cn.reason
    assert extra_ip.status is RenewalStatus.REFUSED and "10.6.6.6" in extra_ip.reason
    assert garbage.status is RenewalStatus.BAD_REQUEST
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # one per (node, reason), the repeats only counted
    assert all(line.startswith(f"! refused to renew a certificate: node {NODE}:") for line in lines)
    assert signer.refused == 15 and signer.signed == 0
    assert signer.answer(NODE, None, b"x").status is RenewalStatus.UNAVAILABLE


def test_requests_are_limited_per_node(lab) -> None:  # type: ignore[no-untyped-def]
    signer = _signer(lab, "--renew-max-per-hour", "2")
    cert, der = _current(lab)
    csr = make_csr(new_key(), cert.subject, ["10.0.0.9"])
    assert [signer.answer(NODE, der, csr, now=t).status for t in (0, 1)] == [RenewalStatus.OK] * 2
    limited = signer.answer(NODE, der, csr, now=2)
    assert limited.status is RenewalStatus.RATE_LIMITED and limited.retry_after == 3599
    assert "ask again in 3599 s" in limited.reason
    other, _ = issue_edge_cert(load_cert(lab.ca_cert), load_key(lab.ca_key), "edge-10", ())
    other_der = other.public_bytes(serialization.Encoding.DER)
    assert signer.answer("edge-10", other_der, make_csr(new_key(), other.subject, []), now=2).status is RenewalStatus.OK
    assert signer.answer(NODE, der, csr, now=3600.5).status is RenewalStatus.OK  # the first one left the window
