"""The kubelet backend: edgestream forwarding to a local kubelet-like server (edged's read-only
port in KubeEdge), here a small fake edged on loopback that records what it receives."""

from __future__ import annotations

import asyncio

import pytest

from .framework import apiserver_tls, kubelet_request, start_cloud, start_edge
from .test_logs_chain import wait_node_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class FakeEdged:
    def __init__(self) -> None:
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            line = head.split(b"\r\n", 1)[0]
            method, target, _ = line.split(b" ")
            if target.startswith(b"/containerLogs/default/web/app"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"6\r\nline a\r\n7\r\n\nline b\r\n1\r\n\n\r\n0\r\n\r\n")
            elif target.startswith(b"/containerLogs/"):
                body = b'pods "nosuch" not found'
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif target == b"/stats/summary":
                body = b'{"node": {"nodeName": "edged"}, "pods": []}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif target.startswith(b"/exec/"):
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                             b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
                while data := await reader.read(65536):
                    writer.write(data.upper())
                    await writer.drain()
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()


async def test_kubelet_backend_forwards_like_kubeedge_edgestream(lab_pki) -> None:
    edged = FakeEdged()
    server = await asyncio.start_server(edged.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    edge = await start_edge(lab_pki, "edge-2", tunnel_port, "--backend", "kubelet", "--kubelet-address", f"127.0.0.1:{port}")
    tls = apiserver_tls(lab_pki)
    try:
        await wait_node_ready(stream_port, tls, "edge-2", "/containerLogs/default/web/app?tailLines=2")
        async with kubelet_request(stream_port, "/containerLogs/default/web/app?tailLines=2", host="edge-2", tls=tls,
                                   headers={"Authorization": "Bearer secret"}) as resp:
            assert resp.status == 200 and await resp.body() == b"line a\nline b\n"
        head = edged.heads[-1].decode()
        assert head.startswith("GET /containerLogs/default/web/app?tailLines=2 HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{port}" in head and "Authorization" not in head and "secret" not in head
        async with kubelet_request(stream_port, "/containerLogs/default/nosuch/app", host="edge-2", tls=tls) as resp:
            assert resp.status == 404  # edged's status, not an error text inside a 200
            # edged's words in plain text, as a kubelet answers a logs error (the API server quotes it)
            assert resp.headers["content-type"].startswith("text/plain")
            assert 'pods "nosuch" not found' in (await resp.body()).decode()
        async with kubelet_request(stream_port, "/stats/summary", host="edge-2", tls=tls) as resp:
            assert resp.status == 200 and b'"nodeName": "edged"' in await resp.body()
        async with kubelet_request(
            stream_port, "/exec/default/web/app?command=sh&input=1&output=1", host="edge-2", tls=tls, method="POST",
            headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "v4.channel.k8s.io",
                     "Content-Length": "0"},
        ) as resp:
            assert resp.status == 101 and resp.headers["x-stream-protocol-version"] == "v4.channel.k8s.io"
            resp.writer.write(b"spdy frames, in truth")
            assert await resp.reader.readexactly(21) == b"SPDY FRAMES, IN TRUTH"
        head = edged.heads[-1].decode()
        assert head.startswith("POST /exec/default/web/app?command=sh&input=1&output=1 HTTP/1.1\r\n")
        assert "Upgrade: SPDY/3.1" in head and "X-Stream-Protocol-Version: v4.channel.k8s.io" in head
    finally:
        await edge.stop()
        await cloud.stop()
        server.close()
        await server.wait_closed()
    # edged down: a clear 502 naming it, not a hang
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    edge = await start_edge(lab_pki, "edge-2", tunnel_port, "--backend", "kubelet", "--kubelet-address", f"127.0.0.1:{port}")
    try:
        await cloud.wait_for_line("tunnel up: node edge-2")
        async with kubelet_request(stream_port, "/containerLogs/default/web/app", host="edge-2", tls=tls) as resp:
            assert resp.status == 502
            assert b"kubelet (edged)" in await resp.body()
    finally:
        await edge.stop()
        await cloud.stop()
