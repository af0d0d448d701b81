"""Hot reload of certificates (issue 19) in real processes, while a ``logs -f`` runs.

The bystander's ``logs -f`` (the fleet fixture) runs through 10003 -> tunnel -> edge the whole
time and must keep flowing. Rotated under it: cloudstream's 10004 server certificate and its
tunnel CA (a new CA, and only it), its 10003 stream certificate and the stream CA bundle, and
the victim edge's certificate and pinned CA. New connections prove each by the serial of the
certificate they are shown; the victim, cut off by a link reset, redials and is accepted only
if both sides took the new files (the cloud now trusts only the new tunnel CA, and the cloud's
new certificate verifies only against the edge's new CA file). A broken file keeps the old
context and is warned about once, naming the file. The fixture ends with the leak check."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from streamcerts import Layout, create_ca, init_lab, issue_client_cert, issue_server_cert, load_cert, load_key
from streamcerts.lab import DEFAULT_SANS
from tests.conftest import MS
from tests.integration.framework import Process, apiserver_tls, kubelet_request
from testkit.link import LinkProxy

from .conftest import NODE_IPS, NODES, Fleet

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

WATCH = ("--cert-watch-interval", "0.3")


@pytest.fixture
def hostile_pki(tmp_path: Path) -> Layout:
    """A lab of the test's own: the test rewrites its files."""
    return init_lab(tmp_path / "pki", NODES)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def serial_10003(fleet: Fleet) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", fleet.stream_port, ssl=apiserver_tls(fleet.layout))
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def serial_10004(fleet: Fleet, cert: Path, key: Path, ca: Path) -> int:
    """A TLS handshake as an edge would dial (client certificate, the cloud verified against ``ca``)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    reader, writer = await asyncio.open_connection("127.0.0.1", fleet.tunnel_port, ssl=ctx, server_hostname="localhost")
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass
    return x509.load_der_x509_certificate(der).serial_number


async def refused_10004(fleet: Fleet, cert: Path, key: Path, ca: Path) -> bool:
    """The cloud refuses this client certificate (TLS 1.3: the alert comes after the client's handshake)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", fleet.tunnel_port, ssl=ctx,
                                                       server_hostname="localhost")
    except (ssl.SSLError, ConnectionError):
        return True
    try:
        async with asyncio.timeout(2 * MS):
            return await reader.read(1) == b""
    except (ssl.SSLError, ConnectionError):
        return True
    except TimeoutError:
        return False  # accepted: the server waits for the upgrade request
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def loaded(process: Process, name: str, files: list[Path], since: int) -> None:
    """Wait until ``process`` logged loading every one of ``files`` for context ``name`` (a
    rotation written file by file may be taken in more than one poll)."""
    pattern = re.compile(re.escape(name) + r": loaded new TLS files \(changed: ([^)]*)\)")
    deadline = asyncio.get_running_loop().time() + 10 * MS
    while True:
        changed = {f for line in process.lines[since:] if (m := pattern.search(line)) for f in m.group(1).split(", ")}
        if {str(f) for f in files} <= changed:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{name} did not load {files}:\n{process.output}"
        await asyncio.sleep(0.1)


async def eventually(check, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout * MS
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


@pytest.mark.cloud_args(*WATCH)
async def test_rotate_everything_while_logs_follow(fleet: Fleet, tmp_path: Path) -> None:
    lab = fleet.layout
    async with LinkProxy(upstream=("127.0.0.1", fleet.tunnel_port)) as link:
        victim = await fleet.edge("victim", "--server", f"localhost:{link.port}", *WATCH)
        old_10003 = await serial_10003(fleet)
        assert old_10003 == load_cert(lab.stream_cert).serial_number
        old_10004 = await serial_10004(fleet, lab.edge_cert("victim"), lab.edge_key("victim"), lab.ca_cert)
        assert old_10004 == load_cert(lab.server_cert).serial_number
        assert not await refused_10004(fleet, lab.edge_cert("attacker"), lab.edge_key("attacker"), lab.ca_cert)
        received = fleet.healthy.received

        # --- rotate: a new tunnel CA (the only one trusted from now on), new leaves, a stream CA bundle
        tunnel_ca = create_ca("KubeEdge-2")
        stream_ca = (load_cert(lab.stream_ca), load_key(lab.stream_ca_key))
        server_cert, server_key = issue_server_cert(*tunnel_ca, "cloudstream", DEFAULT_SANS)
        stream_cert, stream_key = issue_server_cert(*stream_ca, "cloudstream-stream", DEFAULT_SANS)
        edge_cert, edge_key = issue_client_cert(*tunnel_ca, "victim", ips=[NODE_IPS["victim"]])
        since = len(fleet.cloud.lines)
        edge_since = len(victim.lines)
        replace(lab.server_key, _key_pem(server_key))  # key first: the settle rule hides the brief mismatch
        replace(lab.server_cert, _pem(server_cert))
        replace(lab.ca_cert, _pem(tunnel_ca[0]))
        replace(lab.stream_key, _key_pem(stream_key))
        replace(lab.stream_cert, _pem(stream_cert))
        replace(lab.stream_ca, _pem(stream_ca[0]) + _pem(create_ca("kubernetes-next")[0]))
        replace(lab.edge_key("victim"), _key_pem(edge_key))
        replace(lab.edge_cert("victim"), _pem(edge_cert))
        await loaded(fleet.cloud, "tunnel TLS (10004)", [lab.server_cert, lab.server_key, lab.ca_cert], since)
        await loaded(fleet.cloud, "kubelet API TLS (10003)", [lab.stream_cert, lab.stream_key, lab.stream_ca], since)
        await loaded(victim, "edge victim TLS", [lab.edge_cert("victim"), lab.edge_key("victim"), lab.ca_cert], edge_since)

        # --- new connections see the new files; the running logs -f never stopped
        await eventually(lambda: _is(serial_10003(fleet), stream_cert.serial_number), "10003 still shows the old certificate")
        (tmp_path / "edge.crt").write_bytes(_pem(edge_cert))
        (tmp_path / "edge.key").write_bytes(_key_pem(edge_key))
        assert await serial_10004(fleet, tmp_path / "edge.crt", tmp_path / "edge.key", lab.ca_cert) == server_cert.serial_number
        # the old tunnel CA is no longer trusted
        assert await refused_10004(fleet, lab.edge_cert("attacker"), lab.edge_key("attacker"), lab.ca_cert)
        await fleet.healthy.assert_flowing()
        assert fleet.healthy.received > received

        # --- the victim's tunnel is cut: its redial works only with the new files on both sides
        since = len(fleet.cloud.lines)
        assert link.reset_all() >= 1
        await fleet.cloud.wait_for_line(r"tunnel up: node victim ", since=since, timeout=20)
        async with kubelet_request(fleet.stream_port, "/containerLogs/default/demo/app?tailLines=2",
                                   host=NODE_IPS["victim"], tls=apiserver_tls(fleet.layout)) as response:
            assert response.status == 200
        assert not fleet.log_lines(r"refused a tunnel dial from .*", since=since), "the redial was refused"
        assert not fleet.log_lines(r"kept the previous TLS certificate"), "a warning for a rotation done right"

        # --- a broken file keeps the context in use and is warned about once, naming it
        since = len(fleet.cloud.lines)
        lab.stream_cert.write_bytes(_pem(stream_cert)[:200])
        await fleet.cloud.wait_for_line(r"kept the previous TLS certificate.*stream\.crt.*Fix:", since=since)
        fleet.cloud.proc.send_signal(signal.SIGHUP)  # asking again does not repeat the warning
        await asyncio.sleep(1.0)
        assert await serial_10003(fleet) == stream_cert.serial_number
        assert len(fleet.log_lines(r"kept the previous TLS certificate", since=since)) == 1
        replace(lab.stream_cert, _pem(stream_cert))  # valid again (same pair): loads without a word of warning
        await fleet.cloud.wait_for_line(r"kubelet API TLS \(10003\): loaded new TLS files", since=since)
        await fleet.healthy.assert_flowing()
        await victim.stop()


async def _is(coro, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return await coro == expected


@pytest.mark.cloud_args("--cert-watch-interval", "3600")
async def test_sighup_reloads_at_once(fleet: Fleet) -> None:
    lab = fleet.layout
    stream_ca = (load_cert(lab.stream_ca), load_key(lab.stream_ca_key))
    cert, key = issue_server_cert(*stream_ca, "cloudstream-stream", DEFAULT_SANS)
    replace(lab.stream_key, _key_pem(key))
    replace(lab.stream_cert, _pem(cert))
    await asyncio.sleep(0.5)
    assert await serial_10003(fleet) != cert.serial_number  # no poll for an hour: still the old one
    since = len(fleet.cloud.lines)
    fleet.cloud.proc.send_signal(signal.SIGHUP)
    await fleet.cloud.wait_for_line(r"kubelet API TLS \(10003\): loaded new TLS files", since=since)
    assert await serial_10003(fleet) == cert.serial_number
