"""The edge's renewal against a cloud peer that answers through a real ``Mux``: a good answer
replaces the pair and asks for a redial; a bad answer, a refusal or silence keeps the old
pair on disk and schedules the next attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from streamcerts import create_ca, write_pem
from streamcerts._x509 import new_key
from streamcerts.renewal import sign_csr, vet_csr
from edgestream import cert_renewal
from edgestream.cert_renewal import CertRenewal
from edgestream.config import EdgeConfig
from streamproto.tunnel import Feature, MessageType, Mux, RenewalAnswer, RenewalStatus, Role, decode
from streamproto.tunnel.renewal import decode_request
from testkit.short_certs import issue_edge_cert

RENEW = frozenset({Feature.RENEW})
YEAR = dt.timedelta(days=365)


class Cloud:
    """The far end of the tunnel: decodes the edge's RENEW_REQUEST and answers it (or not)."""

    def __init__(self, answer: Callable[[bytes], RenewalAnswer | None]) -> None:
        self.answer = answer
        self.features = RENEW
        self.mux = Mux(Role.EDGE, features=RENEW)
        self.on_renewal_answer: Callable[[int, RenewalAnswer], None] | None = None
        self.idle = asyncio.Event()
        self.idle.set()
        self.streams: dict[int, object] = {}
        self.requests = 0

    async def send(self, message: bytes) -> None:
        decoded = decode(message)
        assert decoded.kind == MessageType.RENEW_REQUEST
        self.requests += 1
        answer = self.answer(decode_request(decoded.data))
        if answer is not None and self.on_renewal_answer is not None:
            asyncio.get_running_loop().call_soon(self.on_renewal_answer, decoded.connect_id, answer)


@pytest.fixture
def edge(tmp_path: Path):  # type: ignore[no-untyped-def]
    ca = create_ca("KubeEdge")
    write_pem(tmp_path / "ca.crt", ca[0])
    cert, key = issue_edge_cert(*ca, "edge-1", ("10.0.0.1",), lifetime=120)
    write_pem(tmp_path / "server.crt", cert, key, tmp_path / "server.key")
    config = EdgeConfig(node_name="edge-1", tls_tunnel_ca_file=tmp_path / "ca.crt",
                        tls_tunnel_cert_file=tmp_path / "server.crt", tls_tunnel_private_key_file=tmp_path / "server.key",
                        renew_fraction=0.01, renew_min_left=0)
    return config, ca, cert


def _files(config: EdgeConfig) -> tuple[bytes, bytes]:
    return config.tls_tunnel_cert_file.read_bytes(), config.tls_tunnel_private_key_file.read_bytes()


def _signed(ca, current, key_override=None) -> Callable[[bytes], RenewalAnswer]:  # type: ignore[no-untyped-def]
    def answer(csr_der: bytes) -> RenewalAnswer:
        csr = vet_csr(csr_der, "edge-1", current)
        if key_override is not None:  # a chain for somebody else's key
            csr = x509.CertificateSigningRequestBuilder().subject_name(current.subject).sign(key_override, hashes.SHA256())
        cert = sign_csr(*ca, csr, current, YEAR)
        return RenewalAnswer(RenewalStatus.OK, chain_pem=cert.public_bytes(serialization.Encoding.PEM))
    return answer


async def test_a_good_answer_replaces_the_pair_and_asks_for_a_redial(edge) -> None:  # type: ignore[no-untyped-def]
    config, ca, current = edge
    before = _files(config)
    cloud = Cloud(_signed(ca, current))
    renewal = CertRenewal(config)
    assert await asyncio.wait_for(renewal.watch(cloud), 10) is True  # type: ignore[arg-type]
    assert _files(config) != before and renewal.renewed == 1 and cloud.requests == 1
    new = x509.load_pem_x509_certificate(config.tls_tunnel_cert_file.read_bytes())
    assert new.subject == current.subject and new.serial_number != current.serial_number
    assert cloud.on_renewal_answer is None  # the hook is not left behind


async def test_the_timer_watch_renews_and_holds_no_task_while_it_waits(edge, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config, ca, current = edge
    cloud = Cloud(_signed(ca, current))
    renewed = asyncio.Event()
    watch = CertRenewal(config).start(cloud, renewed.set)  # type: ignore[arg-type]
    await asyncio.wait_for(renewed.wait(), 10)
    assert watch.cancel() is None and cloud.requests == 1
    # not due for a long while: one look, then only a timer (no task) until it is
    fresh = dataclasses.replace(config, renew_fraction=0.99)
    before = set(asyncio.all_tasks())
    watch = CertRenewal(fresh).start(cloud, renewed.clear)  # type: ignore[arg-type]
    for _ in range(50):
        await asyncio.sleep(0.02)
        if watch._timer is not None:
            break
    assert watch._timer is not None and set(asyncio.all_tasks()) == before
    assert watch.cancel() is None and renewed.is_set() and cloud.requests == 1


@pytest.mark.parametrize("case", ["foreign key", "refused", "garbage chain"])
async def test_a_bad_answer_keeps_the_old_pair(edge, case: str, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, "edgestream.cert_renewal")
    config, ca, current = edge
    before = _files(config)
    answer = {
        "foreign key": _signed(ca, current, key_override=new_key()),
        "refused": lambda _csr: RenewalAnswer(RenewalStatus.RATE_LIMITED, reason="node edge-1: later", retry_after=77),
        "garbage chain": lambda _csr: RenewalAnswer(RenewalStatus.OK, chain_pem=b"-----BEGIN CERTIFICATE-----\nxx"),
    }[case]
    renewal = CertRenewal(config)
    retry = await asyncio.wait_for(renewal._renew(Cloud(answer), current), 10)  # type: ignore[arg-type]
    assert _files(config) == before and renewal.renewed == 0
    # the cloud's retry-after, else a tenth of what is left (2 minutes: about 12 s)
    assert retry == (77 if case == "refused" else pytest.approx(12, abs=1))
    [line] = [r.getMessage() for r in caplog.records]
    assert "the current" in line and ("later" in line if case == "refused" else "not installed" in line)


async def test_silence_keeps_the_old_pair(edge, monkeypatch: pytest.MonkeyPatch, caplog) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(cert_renewal, "_ANSWER_TIMEOUT", 0.2)
    config, ca, current = edge
    before = _files(config)
    cloud = Cloud(lambda _csr: None)
    assert await CertRenewal(config)._renew(cloud, current) == pytest.approx(12, abs=1)  # type: ignore[arg-type]
    assert _files(config) == before and cloud.on_renewal_answer is None
    assert any("no answer within" in r.getMessage() for r in caplog.records)


async def test_a_late_answer_to_an_older_request_is_ignored(edge) -> None:  # type: ignore[no-untyped-def]
    config, ca, current = edge
    good = _signed(ca, current)
    cloud = Cloud(good)
    original = cloud.send

    async def send_and_confuse(message: bytes) -> None:
        assert cloud.on_renewal_answer is not None
        cloud.on_renewal_answer(decode(message).connect_id + 1000, RenewalAnswer(RenewalStatus.REFUSED, reason="stale"))
        await original(message)

    cloud.send = send_and_confuse  # type: ignore[method-assign]
    assert await CertRenewal(config)._renew(cloud, current) is None  # type: ignore[arg-type]
