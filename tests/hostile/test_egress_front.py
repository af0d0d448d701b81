"""Issue 20: the egress-selector front, driven as kube-apiserver's egress dialler drives it.

The client (``testkit.egress``) does what ``tunnelHTTPConnect`` in k8s.io/apiserver does: mutual
TLS to the front with the API server's *proxy* client certificate (or the unix socket), the
exact CONNECT bytes, h11 reads the answer (200 and not one byte more), then TLS inside with the
*kubelet-client* certificate, as to a kubelet (``apiserver-observed.md``); logs as a plain GET,
exec and port-forward over SPDY/3.1 (what the API server speaks to a kubelet). Two emulated
nodes are reached by IP; refusals carry their reason; slow and garbage CONNECT peers do not
hurt anyone else. The ``fleet`` fixture ends every test with the bystander still flowing and
cloudstream's streams, connections, tasks and descriptors back where they were.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import stat
import tempfile
from pathlib import Path

import h11
import pytest

from streamcerts import client_context, issue_client_cert, load_cert, load_key, write_pem
from streamproto.aio.spdy import upgrade
from tests.conftest import MS
from tests.integration.framework import apiserver_tls
from testkit.egress import EgressRefused, connect_request, egress_dial

from .conftest import NODE_IPS, Fleet

UDS = Path(tempfile.mkdtemp(prefix="kes-egress-")) / "egress.sock"
PROXY_CN = "kube-apiserver-proxy-client"
"""The API server's client certificate toward the front (``tlsConfig.clientCert``), distinct from
its kubelet-client certificate used inside."""
NODE_A, NODE_B = "victim", "attacker"
"""Two emulated nodes (the hostile lab has certificates for these names), each with its own pod."""
POD_A, POD_B = "default/a/app", "default/b/app"

pytestmark = [
    pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120),
    pytest.mark.cloud_args(
        "--egress-port", "0", "--egress-uds", str(UDS), "--egress-direct", "127.0.0.1/32",
        "--egress-allow", f"cn:{PROXY_CN}", "--egress-head-timeout", "2",
    ),
]


class Front:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        layout = fleet.layout
        cert, key = issue_client_cert(load_cert(layout.stream_ca), load_key(layout.stream_ca_key), PROXY_CN)
        where = Path(tempfile.mkdtemp(prefix="kes-proxy-client-"))
        write_pem(where / "proxy.crt", cert, key, where / "proxy.key")
        # Go's tls.Dialer: the CA bundle, the client certificate, ServerName from the URL's host.
        self.outer = client_context(layout.stream_ca, where / "proxy.crt", where / "proxy.key")
        self.inner = apiserver_tls(layout)  # the kubelet-client certificate, no hostname (an IP, no SNI)
        self.port = 0

    async def start(self) -> Front:
        m = await self.fleet.cloud.wait_for_line(r"egress front on 127\.0\.0\.1:(\d+)")
        self.port = int(m.group(1))
        await self.fleet.edge(NODE_A, "--emulate", POD_A, "--emulate-log-rate", "20")
        await self.fleet.edge(NODE_B, "--emulate", POD_B, "--emulate-log-rate", "20")
        return self

    async def dial(self, addr: str, *, uds: bool = False, outer: ssl.SSLContext | None = None):
        if uds:
            return await egress_dial(addr, inner_tls=self.inner, uds=UDS, timeout=10 * MS)
        return await egress_dial(addr, inner_tls=self.inner, tcp=("127.0.0.1", self.port), outer_tls=outer or self.outer,
                                 server_hostname="127.0.0.1", timeout=10 * MS)


@pytest.fixture
async def front(fleet: Fleet) -> Front:
    return await Front(fleet).start()


async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, host: str) -> tuple[int, bytes]:
    """One kubelet request as the API server writes it (apiserver-observed.md), answer read by h11."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\n"
                 "Accept-Encoding: gzip\r\n\r\n".encode())
    await writer.drain()
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target=path, headers=[("Host", host)]))
    client.send(h11.EndOfMessage())
    status, body = 0, b""
    async with asyncio.timeout(10 * MS):
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, body
            else:
                raise AssertionError(f"unexpected {event!r}")


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(5):
            await writer.wait_closed()
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass


async def read_all(stream) -> bytes:
    out = []
    while (chunk := await stream.read()) is not None:
        out.append(chunk)
    return b"".join(out)


async def exec_cat(front: Front, ip: str, pod: str, payload: bytes, uds: bool = False) -> bytes:
    reader, writer = await front.dial(f"{ip}:10250", uds=uds)
    try:
        answer = await upgrade(reader, writer, f"/exec/{pod}?command=cat&error=1&input=1&output=1", host=f"{ip}:10250",
                               protocols=["v5.channel.k8s.io", "v4.channel.k8s.io"])
        assert answer.status == 101, (answer.status, answer.body)
        conn = answer.conn
        assert conn is not None
        runner = asyncio.create_task(conn.run())
        try:
            async with asyncio.timeout(20 * MS):
                streams = {t: await conn.open_stream([("streamtype", t)]) for t in ("error", "stdin", "stdout", "stderr")}
                for s in streams.values():
                    await s.wait_reply()
                await streams["stdin"].write(payload)
                await streams["stdin"].close()
                out, status = await asyncio.gather(read_all(streams["stdout"]), read_all(streams["error"]))
            assert b"Success" in status, status
            await conn.goaway()
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        return out
    finally:
        await close(writer)


async def port_forward(front: Front, ip: str, pod: str) -> bytes:
    reader, writer = await front.dial(f"{ip}:10250")
    try:
        answer = await upgrade(reader, writer, f"/portForward/{pod.rsplit('/', 1)[0]}", host=f"{ip}:10250",
                               protocols=["portforward.k8s.io"])
        assert answer.status == 101, (answer.status, answer.body)
        conn = answer.conn
        assert conn is not None
        runner = asyncio.create_task(conn.run())
        try:
            async with asyncio.timeout(20 * MS):
                error = await conn.open_stream([("streamtype", "error"), ("port", "80"), ("requestid", "0")], fin=True)
                data = await conn.open_stream([("streamtype", "data"), ("port", "80"), ("requestid", "0")])
                await data.write(b"ping " + ip.encode())
                await data.close()
                echoed = await read_all(data)
                assert await read_all(error) == b""
            await conn.goaway()
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        return echoed
    finally:
        await close(writer)


async def test_logs_exec_and_port_forward_from_two_nodes_by_ip(front: Front) -> None:
    ip_a, ip_b = NODE_IPS[NODE_A], NODE_IPS[NODE_B]
    reader, writer = await front.dial(f"{ip_a}:10250")
    try:
        status, body = await get(reader, writer, f"/containerLogs/{POD_A}?tailLines=3", f"{ip_a}:10250")
        assert status == 200 and body.count(b"\n") == 3 and POD_A.encode() in body, body
        # Keep-alive, as the API server pools connections; the CONNECT target alone picks the
        # node: a Host naming the other node changes nothing, and B's pod is not on A.
        status, body = await get(reader, writer, f"/containerLogs/{POD_B}", f"{ip_b}:10250")
        assert status == 404 and NODE_A.encode() in body, body
    finally:
        await close(writer)
    reader, writer = await front.dial(f"{ip_b}:10250")
    try:
        status, body = await get(reader, writer, f"/containerLogs/{POD_B}?tailLines=2", f"{ip_b}:10250")
        assert status == 200 and POD_B.encode() in body, body
    finally:
        await close(writer)
    payload = os.urandom(100_000)
    assert await exec_cat(front, ip_a, POD_A, payload) == payload
    assert await exec_cat(front, ip_b, POD_B, payload[:5000]) == payload[:5000]
    assert await port_forward(front, ip_a, POD_A) == b"ping " + ip_a.encode()
    assert await port_forward(front, ip_b, POD_B) == b"ping " + ip_b.encode()


async def test_unix_socket_transport(front: Front) -> None:
    mode = os.stat(UDS).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, oct(mode)
    ip = NODE_IPS[NODE_B]
    reader, writer = await front.dial(f"{ip}:10250", uds=True)
    try:
        status, body = await get(reader, writer, f"/containerLogs/{POD_B}?tailLines=1", f"{ip}:10250")
        assert status == 200 and POD_B.encode() in body
    finally:
        await close(writer)
    assert await exec_cat(front, ip, POD_B, b"over the unix socket", uds=True) == b"over the unix socket"
    with pytest.raises(EgressRefused) as info:
        await front.dial("127.0.9.9:10250", uds=True)
    assert info.value.status == 503


async def test_refusals_say_target_reason_and_fix(front: Front) -> None:
    since = len(front.fleet.cloud.lines)
    with pytest.raises(EgressRefused) as info:
        await front.dial("127.0.9.9:10250")
    refused = info.value
    assert refused.status == 503 and refused.status_text == "503 no edge node 127.0.9.9 connected"
    body = refused.body.decode()
    assert "CONNECT 127.0.9.9:10250" in body and "--egress-direct" in body and f"{NODE_A} ({NODE_IPS[NODE_A]})" in body
    with pytest.raises(EgressRefused) as info:
        await front.dial(f"{NODE_IPS[NODE_A]}:9100")
    assert info.value.status == 403 and "--egress-kubelet-port 9100" in info.value.body.decode()
    # The kubelet-client certificate is not the proxy identity --egress-allow names.
    with pytest.raises(EgressRefused) as info:
        await front.dial(f"{NODE_IPS[NODE_A]}:10250", outer=client_context(
            front.fleet.layout.stream_ca, front.fleet.layout.apiserver_client_cert, front.fleet.layout.apiserver_client_key))
    assert info.value.status == 403 and PROXY_CN in info.value.body.decode()
    for pattern in (r"egress front .* refused 503: CONNECT 127\.0\.9\.9:10250", r"refused 403: CONNECT \S+:9100",
                    r"refused 403: .*kube-apiserver-kubelet-client"):
        await front.fleet.cloud.wait_for_line(pattern, since=since)


async def test_direct_targets_are_spliced(front: Front) -> None:
    """--egress-direct 127.0.0.1/32: a target that is no edge node (here cloudstream's own
    10003, a real kubelet-API server) is dialled and spliced; TLS inside reaches it."""
    reader, writer = await front.dial(f"127.0.0.1:{front.fleet.stream_port}")
    try:
        status, body = await get(reader, writer, "/containerLogs/default/demo/app?tailLines=2", "bystander")
        assert status == 200 and body.count(b"\n") == 2
    finally:
        await close(writer)
    with pytest.raises(EgressRefused) as info:  # closed port inside the allowed network
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        await front.dial(f"127.0.0.1:{free}")
    assert info.value.status == 502 and f"127.0.0.1:{free}" in info.value.body.decode()


async def test_slow_and_garbage_connect_peers_hurt_nobody(front: Front) -> None:
    fleet = front.fleet
    since = len(fleet.cloud.lines)
    port = front.port
    holders: list[asyncio.StreamWriter] = []

    async def tls_peer(first: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=front.outer, server_hostname="127.0.0.1")
        writer.write(first)
        holders.append(writer)
        return reader, writer

    slow = [await tls_peer(b"CONNECT 127.0.1.1:10250 HTTP/1.1\r\nHo") for _ in range(30)]
    # (random bytes without a line end are a slow peer, not garbage: h11 waits for the line)
    garbage = [await tls_peer(g) for g in [os.urandom(300) + b"\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"CONNECT x\r\n\r\n"] * 5]
    oversized = [await tls_peer(connect_request("127.0.1.1:10250")[:-2] + b"X-Pad: " + b"a" * 20_000 + b"\r\n\r\n")
                 for _ in range(3)]
    unix_slow = []
    for _ in range(10):
        r, w = await asyncio.open_unix_connection(str(UDS))
        w.write(b"CONNECT ")
        holders.append(w)
        unix_slow.append((r, w))
    raw = []
    for _ in range(10):  # TCP, never a ClientHello: the accept layer's handshake timeout ends them
        r, w = await asyncio.open_connection("127.0.0.1", port)
        holders.append(w)
        raw.append((r, w))
    try:
        # Meanwhile the API server's real traffic goes through, on both transports.
        ip = NODE_IPS[NODE_A]
        assert await exec_cat(front, ip, POD_A, b"still here") == b"still here"
        reader, writer = await front.dial(f"{ip}:10250", uds=True)
        try:
            assert (await get(reader, writer, f"/containerLogs/{POD_A}?tailLines=1", f"{ip}:10250"))[0] == 200
        finally:
            await close(writer)
        # Garbage and oversized heads get an answer and a close; slow ones are closed at the head timeout.
        for reader, _ in garbage + oversized:
            async with asyncio.timeout(10 * MS):
                answer = await reader.read(65536)
                assert re.match(rb"HTTP/1\.1 (400|405|431) ", answer), answer[:80]
                while await reader.read(65536):
                    pass
        for reader, _ in slow + unix_slow + raw:
            async with asyncio.timeout(15 * MS):
                while await reader.read(65536):
                    pass
    finally:
        for writer in holders:
            writer.close()
    # One line per kind and address, then counted summaries: never a line per peer.
    timeouts = fleet.log_lines(r"no complete CONNECT head", since)
    assert 1 <= len(timeouts) <= 4, timeouts
    refusals = fleet.log_lines(r"egress front .* refused 4\d\d", since)
    assert 1 <= len(refusals) <= 6, refusals


async def test_bad_tls_inside_the_tunnel(front: Front) -> None:
    """After the 200: garbage instead of a ClientHello is dropped (logged once), a TLS client
    without a certificate gets 10003's own 401, stalled ones the handshake timeout."""
    fleet = front.fleet
    since = len(fleet.cloud.lines)
    addr = f"{NODE_IPS[NODE_A]}:10250"

    async def tunnel() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", front.port, ssl=front.outer, server_hostname="127.0.0.1")
        writer.write(connect_request(addr))
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
        return reader, writer

    reader, writer = await tunnel()
    writer.write(b"\x16\x03\x01\x00\x10" + os.urandom(64))  # a TLS record header, then noise
    async with asyncio.timeout(10 * MS):
        while await reader.read(65536):
            pass
    writer.close()
    stalled = [await tunnel() for _ in range(5)]
    anonymous = client_context(fleet.layout.stream_ca)
    anonymous.check_hostname = False
    reader, writer = await egress_dial(addr, inner_tls=anonymous, tcp=("127.0.0.1", front.port), outer_tls=front.outer,
                                       server_hostname="127.0.0.1")
    try:
        status, body = await get(reader, writer, f"/containerLogs/{POD_A}", addr)
        assert status == 401 and b"client certificate" in body, body
    finally:
        await close(writer)
    for reader, writer in stalled:
        async with asyncio.timeout(15 * MS):
            while await reader.read(65536):
                pass
        writer.close()
    lines = fleet.log_lines(r"TLS handshake inside the tunnel failed", since)
    assert 1 <= len(lines) <= 3, lines
