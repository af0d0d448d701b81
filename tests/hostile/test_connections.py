"""Issue 15, findings 2 and 7: unauthenticated peers cannot lock out the API server or the
edges, and every TLS-level refusal is logged (once, rate-limited) with peer and reason.

The attackers bind other loopback addresses (127.0.0.2, ...) than the API server and the
edges (127.0.0.1), as they would come from elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import resource
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest

from streamcerts import client_context, create_ca, issue_client_cert, server_context, write_pem
from cloudstream.listener import Limits, Listener, Slot
from testkit.slowloris import PARTIAL_HELLO, Trickle
from tests.conftest import MS
from tests.integration.framework import READY, Process, apiserver_tls, kubelet_request

from .conftest import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

REFUSAL = r"(kubelet API|tunnel): (refused|closed)"


@pytest.fixture(scope="module", autouse=True)
def _enough_descriptors() -> None:
    """This process holds the attackers' sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A client certificate with the right names, signed by a CA cloudstream does not trust."""
    ca_cert, ca_key = create_ca("rogue CA")
    cert, key = issue_client_cert(ca_cert, ca_key, "kube-apiserver-kubelet-client", ["system:masters"])
    root = tmp_path_factory.mktemp("rogue")
    write_pem(root / "client.crt", cert, key, root / "client.key")
    return root / "client.crt", root / "client.key"


def _client(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = client_context(ca, cert, key)
    ctx.check_hostname = False
    return ctx


async def _tls_failure(port: int, ctx: ssl.SSLContext, source: str = "127.0.0.1") -> BaseException:
    """Dial with TLS and read: what the client is told when the server refuses it."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost", local_addr=(source, 0)
        )
    except (ssl.SSLError, ConnectionError) as exc:
        return exc
    try:
        data = await asyncio.wait_for(reader.read(1), 5 * MS)
        return AssertionError(f"the server answered {data!r} instead of refusing")
    except (ssl.SSLError, ConnectionError) as exc:
        return exc
    finally:
        writer.transport.abort()


async def _closed_within(port: int, payload: bytes, source: str, limit: float) -> float:
    """Connect from ``source``, send ``payload``, return how long until the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    started = time.monotonic()
    try:
        if payload:
            writer.write(payload)
        try:
            data = await asyncio.wait_for(reader.read(), limit)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"\x16"), "the server answered a partial ClientHello"
        return time.monotonic() - started
    finally:
        writer.close()


@pytest.mark.cloud_args("--tls-handshake-timeout", "1")
async def test_tls_refusals_are_logged_with_peer_and_reason(fleet: Fleet, rogue: tuple[Path, Path]) -> None:
    layout = fleet.layout
    since = len(fleet.cloud.lines)
    ports = {"kubelet API": (fleet.stream_port, layout.stream_ca), "tunnel": (fleet.tunnel_port, layout.ca_cert)}

    for name, (port, ca) in ports.items():
        # Signed by the wrong CA: the caller is told so by a TLS alert (it used to see EOF).
        for _ in range(20):
            exc = await _tls_failure(port, _client(ca, *rogue))
            assert isinstance(exc, ssl.SSLError) and "ALERT" in (exc.reason or ""), f"{name}: {exc!r}"
        assert "UNKNOWN_CA" in (exc.reason or "") or "BAD_CERTIFICATE" in (exc.reason or ""), exc

        # Not TLS: plain HTTP gets Go's one-line answer, then the door closes.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5 * MS)
        writer.close()
        assert answer.startswith(b"HTTP/1.0 400 Bad Request"), answer

        # Silent, and a ClientHello that never finishes: closed at the handshake timeout.
        for source, payload in (("127.0.0.4", b""), ("127.0.0.5", PARTIAL_HELLO)):
            took = await _closed_within(port, payload, source, 10 * MS)
            assert took >= 0.9, f"{name}: closed after {took:.2f} s, before the 1 s handshake timeout"

    # No client certificate on the tunnel port: refused in the handshake, with an alert.
    exc = await _tls_failure(fleet.tunnel_port, _client(layout.ca_cert))
    assert isinstance(exc, ssl.SSLError) and "CERTIFICATE_REQUIRED" in (exc.reason or ""), exc

    expected = {
        "kubelet API: refused 127.0.0.1:\\d+: client certificate rejected",
        "tunnel: refused 127.0.0.1:\\d+: client certificate rejected",
        "kubelet API: refused 127.0.0.1:\\d+: plain HTTP sent to a TLS port",
        "tunnel: refused 127.0.0.1:\\d+: plain HTTP sent to a TLS port",
        "kubelet API: refused 127.0.0.4:\\d+: no TLS ClientHello within 1 s",
        "tunnel: refused 127.0.0.4:\\d+: no TLS ClientHello within 1 s",
        "kubelet API: refused 127.0.0.5:\\d+: TLS handshake not finished within 1 s",
        "tunnel: refused 127.0.0.5:\\d+: TLS handshake not finished within 1 s",
        "tunnel: refused 127.0.0.1:\\d+: no client certificate",
    }
    for pattern in expected:
        await fleet.cloud.wait_for_line(pattern, since=since, timeout=5)
    # 20 rejected certificates per port, one line each (the rest wait for the summary).
    for name in ports:
        lines = fleet.log_lines(f"{name}: refused .*client certificate rejected", since)
        assert len(lines) == 1, lines
    state = await fleet.state()
    assert state["api_pending"] == 0 and state["tunnel_pending"] == 0, state


@pytest.mark.cloud_args("--max-open-files", "1024")
async def test_slowloris_from_elsewhere_locks_out_neither_the_api_server_nor_edges(fleet: Fleet) -> None:
    """With systemd's default 1,024 descriptors, 1,100 trickling connections used to take all of
    them: API-server requests and edge dials failed, and nothing was logged."""
    since = len(fleet.cloud.lines)
    attack = Trickle([fleet.stream_port, fleet.tunnel_port], ["127.0.0.2", "127.0.0.3"], 1100)
    attack.start()
    try:
        await asyncio.sleep(3)  # every attacking connection has dialled and is trickling
        peak_fds = fleet.fds()
        tls = apiserver_tls(fleet.layout)
        for _ in range(20):
            async with asyncio.timeout(10 * MS), kubelet_request(
                fleet.stream_port, "/containerLogs/default/demo/app?tailLines=2", host="bystander", tls=tls
            ) as response:
                assert response.status == 200, response.status
                assert (await response.body()).count(b"\n") == 2
            async with asyncio.timeout(10 * MS), kubelet_request(
                fleet.stream_port, "/containerLogs/default/demo/app", host="absent", tls=tls
            ) as response:
                assert response.status == 503
                await response.body()
        async with asyncio.timeout(20 * MS):
            await fleet.edge("victim")  # a new edge dial gets through (the fixture stops it)
        state = await fleet.state()
        peak_fds = max(peak_fds, fleet.fds())
    finally:
        await attack.stop()
    assert attack.reconnects > 0, "the attack never got refused: it did not test the caps"
    assert state["tunnels"] == 2, state
    assert peak_fds < 1024 - 64, f"cloudstream used {peak_fds} of its 1,024 descriptors"
    # Nothing from the API server's or the edges' address was refused or evicted.
    assert not fleet.log_lines(r"(refused|closed) (a connection from )?127\.0\.0\.1:", since)
    refusals = fleet.log_lines(REFUSAL, since)
    assert refusals, "the refusals were not logged"
    assert len(refusals) <= 40, f"{len(refusals)} refusal lines for one attack:\n" + "\n".join(refusals[:50])
    assert all(re.search(r"127\.0\.0\.[23]:", line) for line in refusals), refusals


@pytest.mark.cloud_args("--max-pending-handshakes", "200", "--tls-handshake-timeout", "2")
async def test_flood_without_client_hello_is_shed(fleet: Fleet) -> None:
    """3,000 connections from 30 addresses that never say anything: cloudstream holds at most
    the pending cap of them (the oldest make room), serves the API server meanwhile, and
    closes the rest at the handshake timeout."""
    baseline = fleet.fds()
    since = len(fleet.cloud.lines)
    socks: list[socket.socket] = []
    try:
        for n in range(3000):
            sock = socket.socket()
            sock.setblocking(False)
            sock.bind((f"127.0.1.{1 + n % 30}", 0))
            sock.connect_ex(("127.0.0.1", fleet.stream_port))
            socks.append(sock)
            if n % 500 == 499:
                await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        held = fleet.fds() - baseline
        assert held <= 200 + 16, f"cloudstream holds {held} descriptors for a flood capped at 200 pending"
        async with kubelet_request(
            fleet.stream_port, "/containerLogs/default/demo/app?tailLines=1", host="bystander",
            tls=apiserver_tls(fleet.layout),
        ) as response:
            assert response.status == 200
            await response.body()
        await asyncio.sleep(2.5 * MS)  # the handshake timeout closes what is left
        state = await fleet.state()
        assert state["api_pending"] == 0, state
    finally:
        for sock in socks:
            sock.close()
    evictions = fleet.log_lines(r"kubelet API: closed 127\.0\.1\.\d+:\d+ \(waiting for the ClientHello\) to make room", since)
    assert evictions, "the evictions were not logged"
    assert len(fleet.log_lines(REFUSAL, since)) <= 2 * 30 + 5  # per kind and address at most, in 10 s


class _Released(asyncio.Protocol):
    """The port protocol of the in-process test: gives its slot back when the connection ends."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot

    def connection_lost(self, exc: Exception | None) -> None:
        self.slot.release()


def _lowest_free_fd() -> int:
    fd = os.dup(0)
    os.close(fd)
    return fd


async def test_out_of_descriptors_sheds_the_oldest_pending_or_pauses(no_leaks: None, lab_pki, caplog) -> None:  # type: ignore[no-untyped-def]
    """EMFILE on accept: with unauthenticated connections around, the oldest makes room; with
    none, accepting pauses (the listening socket stays readable: retrying at once would spin).
    Either way one log line, then counted."""
    caplog.set_level(logging.WARNING, logger="cloudstream.listener")
    ctx = server_context(lab_pki.stream_cert, lab_pki.stream_key, lab_pki.stream_ca, require_client_cert=False)
    listener = Listener(
        name="test port", host="127.0.0.1", port=0, ssl_context=ctx, protocol_factory=_Released,
        limits=Limits(handshake_timeout=30, max_connections=1000, max_pending=500, max_pending_per_ip=500),
    )
    await listener.start()
    port = listener.sockets[0].getsockname()[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    tls = apiserver_tls(lab_pki)
    authenticated = [await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")
                     for _ in range(3)]
    silent: list[socket.socket] = []
    queued: list[socket.socket] = []
    try:
        for _ in range(20):  # unauthenticated: they never say anything
            silent.append(socket.create_connection(("127.0.0.1", port)))
        await asyncio.sleep(0.3)
        assert listener.pending == 20, listener.pending

        # 1. Ten more queue up while no descriptor is left: each accept sheds the oldest silent one.
        queued = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
        resource.setrlimit(resource.RLIMIT_NOFILE, (_lowest_free_fd(), hard))
        await asyncio.sleep(0.5)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert listener.counts["emfile"] >= 10 and listener.counts["evicted"] >= 10, listener.counts
        assert listener.pending == 20 and listener.open_connections == 23, (listener.pending, listener.open_connections)
        for sock in silent + queued:
            sock.close()
        silent = []
        await asyncio.sleep(0.3)
        assert listener.pending == 0

        # 2. Nothing to shed (every connection is authenticated): accepting pauses, no spinning.
        emfile_before, accepted_before = listener.counts["emfile"], listener.counts["accepted"]
        queued = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        resource.setrlimit(resource.RLIMIT_NOFILE, (_lowest_free_fd(), hard))
        await asyncio.sleep(1.0)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        retries = listener.counts["emfile"] - emfile_before
        assert 1 <= retries <= 20, f"{retries} accept attempts in 1 s while out of descriptors"
        await asyncio.sleep(0.5)  # the pause ends: the queued connections get in
        assert listener.counts["accepted"] - accepted_before == 5, listener.counts
    finally:
        for sock in queued:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for sock in silent:
            sock.close()
        for _, writer in authenticated:
            writer.close()
        listener.close()
        await listener.wait_closed()
        await asyncio.sleep(0.2)
    lines = [r.getMessage() for r in caplog.records if "cannot accept" in r.getMessage()]
    assert "Too many open files" in lines[0], lines
    assert len(lines) == 2 and re.search(r"and \d+ more like this", lines[1]), lines  # one, then the count


def _nofile(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


async def test_open_file_limit_is_raised_to_the_hard_limit(hostile_pki) -> None:  # type: ignore[no-untyped-def]
    """Started with systemd's default soft limit (here 256 of 4,096), both daemons raise it."""
    prlimit = ["prlimit", "--nofile=256:4096", sys.executable, "-m"]
    cloud = await Process.start("cloudstream", prlimit + [
        "cloudstream", "--pki-dir", str(hostile_pki.root), "--stream-address", "127.0.0.1", "--stream-port", "0",
        "--tunnel-address", "127.0.0.1", "--tunnel-port", "0"], raw=True)
    edge: Process | None = None
    try:
        m = await cloud.wait_for_line(READY)
        assert _nofile(cloud.proc.pid) == (4096, 4096)
        await cloud.wait_for_line(r"open-file limit 4096 \(hard 4096\)")
        edge = await Process.start("edgestream", prlimit + [
            "edgestream", "--pki-dir", str(hostile_pki.root), "--node-name", "victim", "--server",
            f"localhost:{m.group(2)}", "--node-ip", "127.0.0.1", "--backend", "emulator"], raw=True)
        await cloud.wait_for_line(r"tunnel up: node victim ")
        assert _nofile(edge.proc.pid) == (4096, 4096)
    finally:
        if edge is not None:
            await edge.stop()
        await cloud.stop()
