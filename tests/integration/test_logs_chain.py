"""Issue 2's chain with real processes: HTTPS client -> cloudstream:10003 -> tunnel -> edgestream
(emulator) and back, with generated certificates."""

from __future__ import annotations

import asyncio
import re
import signal
import ssl
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamcerts import client_context
from tests.conftest import MS

from .framework import Process, apiserver_tls, kubelet_request, start_cloud, start_edge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LINE = re.compile(rb"^default/demo/app line (\d+)$")


async def wait_node_ready(port: int, tls: ssl.SSLContext, node: str, path: str = "/containerLogs/default/demo/app") -> None:
    deadline = time.monotonic() + 20 * MS
    while True:
        async with kubelet_request(port, path, host=node, tls=tls) as resp:
            await resp.body()
            if resp.status == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"node {node} never became reachable (last status {resp.status})")
        await asyncio.sleep(0.1)


@pytest.fixture
async def chain(lab_pki):
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    edge = await start_edge(lab_pki, "edge-1", tunnel_port, "--emulate", "default/demo/app", "--emulate-log-rate", "20")
    try:
        await wait_node_ready(stream_port, apiserver_tls(lab_pki), "edge-1")
        yield cloud, edge, stream_port, tunnel_port
    finally:
        await edge.stop()
        await cloud.stop()


async def test_logs_tail_non_follow(chain, lab_pki) -> None:
    _, _, port, _ = chain
    async with kubelet_request(port, "/containerLogs/default/demo/app?tailLines=7", host="edge-1", tls=apiserver_tls(lab_pki)) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain")
        body = await resp.body()
    lines = body.splitlines()
    assert len(lines) == 7
    numbers = [int(LINE.match(line).group(1)) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + 7))  # consecutive, the newest ones
    assert numbers[0] >= 93  # 100 lines of history at start


async def test_logs_follow_streams_new_lines(chain, lab_pki) -> None:
    _, _, port, _ = chain
    got: list[int] = []
    async with kubelet_request(
        port, "/containerLogs/default/demo/app?follow=true&tailLines=1", host="edge-1", tls=apiserver_tls(lab_pki)
    ) as resp:
        assert resp.status == 200 and resp.headers["transfer-encoding"] == "chunked"
        began = time.monotonic()
        pending = b""
        async for chunk in resp.chunks():
            pending += chunk
            *complete, pending = pending.split(b"\n")
            got += [int(LINE.match(line).group(1)) for line in complete]
            if len(got) >= 15:
                break
        elapsed = time.monotonic() - began
    assert got == list(range(got[0], got[0] + len(got)))  # no gap, no duplicate
    assert elapsed > 0.4  # new lines arrived over time at 20/s, not all at once


async def test_logs_timestamps_and_limit_bytes(chain, lab_pki) -> None:
    _, _, port, _ = chain
    tls = apiserver_tls(lab_pki)
    async with kubelet_request(port, "/containerLogs/default/demo/app?tailLines=2&timestamps=true", host="edge-1", tls=tls) as resp:
        body = await resp.body()
    for line in body.splitlines():
        assert re.match(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z default/demo/app line \d+$", line), line
    async with kubelet_request(port, "/containerLogs/default/demo/app?limitBytes=10", host="edge-1", tls=tls) as resp:
        assert await resp.body() == b"default/de"


async def test_errors_name_node_cause_and_fix(chain, lab_pki) -> None:
    _, _, port, _ = chain
    tls = apiserver_tls(lab_pki)
    async with kubelet_request(port, "/containerLogs/default/nosuch/app", host="edge-1", tls=tls) as resp:
        assert resp.status == 404
        text = (await resp.body()).decode()
        assert "edge-1" in text and "nosuch" in text
    async with kubelet_request(port, "/containerLogs/default/demo/app?tailLines=x", host="edge-1", tls=tls) as resp:
        assert resp.status == 400 and "tailLines" in (await resp.body()).decode()
    async with kubelet_request(port, "/containerLogs/default/demo/app", host="edge-9", tls=tls) as resp:
        assert resp.status == 503
        text = (await resp.body()).decode()
        assert "node edge-9" in text and "edgestream" in text and "edge-1" in text  # names the connected ones
    async with kubelet_request(port, "/nosuchroute", host="edge-1", tls=tls) as resp:
        assert resp.status == 404
        await resp.body()
    async with kubelet_request(port, "/containerLogs/a/b/c", host="edge-1", tls=tls, method="DELETE") as resp:
        assert resp.status == 405 and resp.headers["allow"] == "GET"
        await resp.body()


async def test_keep_alive_serves_several_requests_on_one_connection(chain, lab_pki) -> None:
    _, _, port, _ = chain
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=apiserver_tls(lab_pki), server_hostname="localhost")
    try:
        for _ in range(3):
            writer.write(b"GET /containerLogs/default/demo/app?tailLines=1 HTTP/1.1\r\nHost: edge-1\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            while await reader.readline() != b"\r\n":
                pass
            size = int((await reader.readline()).strip(), 16)
            data = await reader.readexactly(size + 2)
            assert LINE.match(data[:-3])
            assert await reader.readline() == b"0\r\n" and await reader.readline() == b"\r\n"
    finally:
        writer.close()


async def test_killing_the_edge_ends_follow_with_an_error_then_node_not_connected(chain, lab_pki) -> None:
    cloud, edge, port, _ = chain
    tls = apiserver_tls(lab_pki)
    async with kubelet_request(port, "/containerLogs/default/demo/app?follow=true", host="edge-1", tls=tls) as resp:
        assert resp.status == 200
        chunks = resp.chunks()
        await chunks.__anext__()
        edge.proc.send_signal(signal.SIGKILL)
        began = time.monotonic()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, ssl.SSLError)):
            async with asyncio.timeout(60 * MS):
                async for _ in chunks:
                    pass
        ended_after = time.monotonic() - began
    # A killed process's socket is closed by the kernel: the tunnel drops at once.
    assert ended_after < 5 * MS, ended_after
    async with kubelet_request(port, "/containerLogs/default/demo/app", host="edge-1", tls=tls) as resp:
        assert resp.status == 503
        assert "edge-1" in (await resp.body()).decode()
    await cloud.wait_for_line("tunnel down: node edge-1")


async def test_client_without_certificate_is_refused_on_10003(chain, lab_pki) -> None:
    _, _, port, _ = chain
    tls = client_context(lab_pki.stream_ca)
    tls.check_hostname = False
    async with kubelet_request(port, "/containerLogs/default/demo/app", host="edge-1", tls=tls) as resp:
        assert resp.status == 401
        assert "client certificate" in (await resp.body()).decode()


async def test_untrusted_or_unauthorized_client_certificates_are_refused(chain, lab_pki) -> None:
    _, _, port, _ = chain
    root = lab_pki.root
    stranger = apiserver_tls(lab_pki, root / "stranger/client.crt", root / "stranger/client.key")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        async with kubelet_request(port, "/containerLogs/default/demo/app", host="edge-1", tls=stranger) as resp:
            await resp.body()  # TLS 1.3 reports the refused certificate on the first read
    nobody = apiserver_tls(lab_pki, root / "nobody/client.crt", root / "nobody/client.key")
    async with kubelet_request(port, "/containerLogs/default/demo/app", host="edge-1", tls=nobody) as resp:
        assert resp.status == 403
        assert "system:anonymous-user" in (await resp.body()).decode()


async def test_dial_with_certificate_of_another_node_is_refused(chain, lab_pki) -> None:
    cloud, _, _, tunnel_port = chain
    tls = client_context(lab_pki.ca_cert, lab_pki.edge_cert("edge-1"), lab_pki.edge_key("edge-1"))
    with pytest.raises(InvalidStatus) as info:
        await connect(
            f"wss://localhost:{tunnel_port}/v1/kubeedge/connect",
            ssl=tls,
            additional_headers={"SessionHostNameOverride": "edge-2", "SessionInternalIP": "10.0.0.2"},
        )
    assert info.value.response.status_code == 403
    assert b"edge-2" in info.value.response.body and b"edge-1" in info.value.response.body
    await cloud.wait_for_line("refused a tunnel dial")


async def test_edge_with_wrong_certificate_logs_why_it_cannot_connect(chain, lab_pki) -> None:
    _, _, _, tunnel_port = chain
    impostor = await Process.start(
        "impostor",
        ["edgestream", "--node-name", "edge-2", "--server", f"localhost:{tunnel_port}",
         "--tls-tunnel-ca-file", str(lab_pki.ca_cert), "--tls-tunnel-cert-file", str(lab_pki.edge_cert("edge-3")),
         "--tls-tunnel-private-key-file", str(lab_pki.edge_key("edge-3")), "--backend", "emulator"],
    )
    try:
        m = await impostor.wait_for_line(r"refused the tunnel with HTTP 403: (.*)")
        assert "edge-3" in m.group(1) and "edge-2" in m.group(1)
    finally:
        await impostor.stop()


async def test_a_new_dial_replaces_the_old_session(chain, lab_pki) -> None:
    cloud, _, port, tunnel_port = chain
    tls = apiserver_tls(lab_pki)
    async with kubelet_request(port, "/containerLogs/default/demo/app?follow=true", host="edge-1", tls=tls) as resp:
        chunks = resp.chunks()
        await chunks.__anext__()
        second = await start_edge(lab_pki, "edge-1", tunnel_port, "--emulate", "default/demo/app")
        try:
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError, ssl.SSLError)):
                async with asyncio.timeout(20 * MS):
                    async for _ in chunks:
                        pass
            await cloud.wait_for_line("previous tunnel is replaced")
        finally:
            await second.stop()
