"""Edge certificate renewal over the tunnel, against real processes: an edge with a 2-minute
certificate renews itself and redials with the new one while a ``logs -f`` keeps flowing;
CSRs that would grow an edge's identity are refused with their reason; a cloud without the
CA key is never asked. Each test ends with the fleet's bystander still flowing and nothing
leaked in cloudstream (``fleet`` fixture)."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import ClientConnection, connect

from streamcerts import client_context, load_cert, load_key, write_pem
from streamcerts._x509 import name, new_key
from streamcerts.renewal import make_csr, serial_hex
from streamproto.tunnel import FEATURES_HEADER, MessageType, RenewalAnswer, RenewalStatus, decode, encode, parse_features
from streamproto.tunnel.features import Feature
from streamproto.tunnel.renewal import decode_answer, encode_request
from testkit.short_certs import issue_edge_cert
from tests.conftest import MS
from tests.integration.framework import apiserver_tls, kubelet_request

from .conftest import Fleet

pytestmark = [pytest.mark.hostile, pytest.mark.timeout(150)]

WITH_CA_KEY = pytest.mark.cloud_args("--tunnel-ca-key-file", "{pki}/ca/rootCA.key")
FOLLOW = "/containerLogs/default/demo/app?follow=true"


def _short_cert(fleet: Fleet, node: str, ip: str, lifetime: float = 120.0) -> tuple[Path, Path, str]:
    """Give ``node`` a certificate of ``lifetime`` seconds from now, from the lab's tunnel CA."""
    layout = fleet.layout
    cert, key = issue_edge_cert(load_cert(layout.ca_cert), load_key(layout.ca_key), node, (ip,), lifetime=lifetime)
    write_pem(layout.edge_cert(node), cert, key, layout.edge_key(node))
    return layout.edge_cert(node), layout.edge_key(node), serial_hex(cert)


class Follower:
    """A ``logs -f`` of one node through 10003, counting bytes."""

    def __init__(self, fleet: Fleet, node: str) -> None:
        self.fleet, self.node = fleet, node
        self.received = 0
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            tls = apiserver_tls(self.fleet.layout)
            async with kubelet_request(self.fleet.stream_port, FOLLOW, host=self.node, tls=tls) as response:
                assert response.status == 200, response.status
                async for chunk in response.chunks():
                    self.received += len(chunk)
            self.error = AssertionError("the logs -f ended")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported by assert_flowing
            self.error = exc

    async def assert_flowing(self, within: float = 3.0) -> None:
        before = self.received
        deadline = time.monotonic() + within * MS
        while self.received == before and self.error is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert self.error is None, f"the logs -f of {self.node} failed: {self.error!r}"
        assert self.received > before, f"the logs -f of {self.node} stopped flowing"

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@WITH_CA_KEY
async def test_an_edge_renews_itself_and_redials_with_the_new_certificate(fleet: Fleet) -> None:
    node, ip = "rotor", "127.0.1.9"
    cert_path, key_path, old_serial = _short_cert(fleet, node, ip)
    since = len(fleet.cloud.lines)
    # Renew after a quarter of the 2 minutes (30 s), not at 2/3: the test stays well under 90 s.
    edge = await fleet.edge(node, "--node-ip", ip, "--renew-at", "0.25", "--renew-min-left", "0")
    up = await fleet.cloud.wait_for_line(rf"tunnel up: node {node} .*features \[([^\]]*)\].*serial ([0-9a-f]+)", since=since)
    assert "renew" in up.group(1) and up.group(2) == old_serial
    follower = Follower(fleet, node)
    try:
        await follower.assert_flowing(5)
        signed = await fleet.cloud.wait_for_line(
            rf"signed a renewed certificate for node {node}: serial ([0-9a-f]+), .*replaces serial {old_serial}",
            since=since, timeout=60,
        )
        new_serial = signed.group(1)
        await edge.wait_for_line(rf"renewed the tunnel certificate: serial {old_serial} -> {new_serial}")
        await edge.wait_for_line(r"redialling with the renewed certificate once the 1 running streams end")
        # On disk: the new pair, the key 0600 and matching, no staging file left behind.
        cert, key = load_cert(cert_path), load_key(key_path)
        assert serial_hex(cert) == new_serial and cert.subject == name(node)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        assert sorted(p.name for p in cert_path.parent.iterdir()) == ["server.crt", "server.key"]
        # The running logs -f is not cut for the renewal: same tunnel, still flowing.
        await follower.assert_flowing()
        assert len(fleet.log_lines(rf"tunnel up: node {node} ", since)) == 1
        assert follower.error is None
    finally:
        await follower.stop()
    # Its stream ended: the edge redials at once, with the new certificate.
    await fleet.cloud.wait_for_line(rf"tunnel up: node {node} .*serial {new_serial} ", since=since, timeout=15)
    await edge.wait_for_line(r"tunnel to .* ended: closed with code 1000: edge certificate renewed")
    tls = apiserver_tls(fleet.layout)
    async with kubelet_request(fleet.stream_port, "/containerLogs/default/demo/app?tailLines=2", host=node, tls=tls) as r:
        assert r.status == 200 and await r.body()
    assert not edge.proc.returncode


# --------------------------------------------------------------------------- a raw tunnel client


@asynccontextmanager
async def tunnel_as(fleet: Fleet, node: str, ip: str) -> AsyncIterator[ClientConnection]:
    """A tunnel dialled with ``node``'s lab certificate that offers ``renew`` and then speaks
    only what the test sends (an edge that tries its luck)."""
    layout = fleet.layout
    tls = client_context(layout.ca_cert, layout.edge_cert(node), layout.edge_key(node))
    headers = {"SessionHostNameOverride": node, "SessionInternalIP": ip, FEATURES_HEADER: "renew, flow"}
    async with connect(f"wss://localhost:{fleet.tunnel_port}/v1/kubeedge/connect", ssl=tls, additional_headers=headers,
                       compression=None, ping_interval=None, close_timeout=2) as ws:
        yield ws


async def ask(ws: ClientConnection, rid: int, payload: bytes, timeout: float = 5.0) -> RenewalAnswer | None:
    """Send a RENEW_REQUEST with ``payload`` (version byte included); the answer, or None."""
    await ws.send(encode(rid, MessageType.RENEW_REQUEST, payload), text=True)
    try:
        async with asyncio.timeout(timeout * MS):
            while True:
                message = decode(await ws.recv(decode=False))
                if message.kind == MessageType.RENEW_ANSWER and message.connect_id == rid:
                    return decode_answer(message.data)
    except TimeoutError:
        return None


@WITH_CA_KEY
async def test_csrs_that_grow_an_identity_are_refused_with_their_reason(fleet: Fleet) -> None:
    since = len(fleet.cloud.lines)
    node, ip = "attacker", "127.0.1.2"
    before = fleet.layout.edge_cert(node).read_bytes()
    async with tunnel_as(fleet, node, ip) as ws:
        assert ws.response is not None
        assert Feature.RENEW in parse_features(ws.response.headers.get(FEATURES_HEADER))
        subject = load_cert(fleet.layout.edge_cert(node)).subject
        wrong_cn = await ask(ws, 1, encode_request(make_csr(new_key(), name("victim"), [])))
        extra_ip = await ask(ws, 2, encode_request(make_csr(new_key(), subject, ["10.9.9.9"])))
        garbage = await ask(ws, 3, encode_request(b"\x30\x03not a csr"))
        assert wrong_cn is not None and wrong_cn.status is RenewalStatus.REFUSED
        assert "CN='victim' but this tunnel is node 'attacker'" in wrong_cn.reason
        assert extra_ip is not None and extra_ip.status is RenewalStatus.REFUSED
        assert "10.9.9.9" in extra_ip.reason and "never adds an address" in extra_ip.reason
        assert garbage is not None and garbage.status is RenewalStatus.BAD_REQUEST
        # A flood: answered (small, in order) until the node's hourly allowance (6) is spent, then limited.
        answers = [await ask(ws, 10 + i, encode_request(make_csr(new_key(), name("victim"), []))) for i in range(30)]
        assert all(a is not None for a in answers)
        statuses = [a.status for a in answers if a is not None]
        assert statuses[:3] == [RenewalStatus.REFUSED] * 3
        assert set(statuses[3:]) == {RenewalStatus.RATE_LIMITED}
        assert 0 < answers[-1].retry_after <= 3600  # type: ignore[union-attr]
        # A malformed renewal message is a dropped malformed message, nothing more.
        assert await ask(ws, 99, b"\x07junk", timeout=1.0) is None
    refusals = fleet.log_lines(r"refused to renew a certificate: node attacker", since)
    assert len(refusals) == 4, refusals  # cn, ip, unparsable, rate: once each, the repeats counted
    assert any("CN='victim'" in line for line in refusals) and any("10.9.9.9" in line for line in refusals)
    assert not fleet.log_lines(r"signed a renewed certificate", since)
    assert fleet.layout.edge_cert(node).read_bytes() == before


async def test_a_cloud_without_the_ca_key_is_never_asked(fleet: Fleet) -> None:
    """Renewal is not negotiated: the edge keeps its certificate and says once what to do; a
    renewal message sent anyway is ignored like any unknown type."""
    node, ip = "rotor-nokey", "127.0.1.10"
    cert_path, key_path, serial = _short_cert(fleet, node, ip)
    before = cert_path.read_bytes(), key_path.read_bytes()
    since = len(fleet.cloud.lines)
    edge = await fleet.edge(node, "--node-ip", ip, "--renew-at", "0.05", "--renew-min-left", "0")
    up = await fleet.cloud.wait_for_line(rf"tunnel up: node {node} .*features \[([^\]]*)\]", since=since)
    assert "renew" not in up.group(1)
    await edge.wait_for_line(r"does not sign renewals: start it with --tunnel-ca-key-file", timeout=30)
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before
    assert not fleet.log_lines(r"renew", since)  # the cloud saw no request at all
    async with tunnel_as(fleet, "attacker", "127.0.1.2") as ws:
        assert ws.response is not None
        assert Feature.RENEW not in parse_features(ws.response.headers.get(FEATURES_HEADER))
        assert await ask(ws, 1, encode_request(make_csr(new_key(), name("attacker"), [])), timeout=1.0) is None
    notices = [line for line in edge.lines if "does not sign renewals" in line]
    assert len(notices) == 1 and f"{cert_path}" in notices[0], notices  # once, naming the file
    assert not any("renewed the tunnel certificate" in line for line in edge.lines)
    assert load_cert(cert_path).serial_number == int(serial, 16)


@pytest.mark.cloud_args("--tunnel-ca-key-file", "{pki}/ca/rootCA.key", "--no-verify-node-identity")
async def test_an_edge_whose_renewal_is_refused_keeps_its_certificate(fleet: Fleet) -> None:
    """An old keadm-style certificate whose CN is not the node name (let in by
    --no-verify-node-identity) is never renewed into a node certificate: the cloud refuses
    with the reason and the fix, the edge logs it and keeps its pair."""
    node, ip = "legacy", "127.0.1.11"
    layout = fleet.layout
    cert, key = issue_edge_cert(load_cert(layout.ca_cert), load_key(layout.ca_key), "kubeedge-edge", (ip,), lifetime=120)
    write_pem(layout.edge_cert(node), cert, key, layout.edge_key(node))
    before = layout.edge_cert(node).read_bytes(), layout.edge_key(node).read_bytes()
    since = len(fleet.cloud.lines)
    edge = await fleet.edge(node, "--node-ip", ip, "--renew-at", "0.05", "--renew-min-left", "0")
    refused = await edge.wait_for_line(r"the cloud refused to renew the tunnel certificate \(refused\): (.*)", timeout=30)
    assert "CN='kubeedge-edge' does not name node 'legacy'" in refused.group(1)
    assert "streamcerts client --cn legacy" in refused.group(1) and "the current certificate is kept" in refused.group(1)
    assert fleet.log_lines(r"refused to renew a certificate: node legacy: the tunnel's certificate CN='kubeedge-edge'", since)
    assert (layout.edge_cert(node).read_bytes(), layout.edge_key(node).read_bytes()) == before
    assert not fleet.log_lines(r"signed a renewed certificate", since)
    tls = apiserver_tls(layout)  # the node still serves, on its old certificate
    async with kubelet_request(fleet.stream_port, "/containerLogs/default/demo/app?tailLines=1", host=node, tls=tls) as r:
        assert r.status == 200 and await r.body()
