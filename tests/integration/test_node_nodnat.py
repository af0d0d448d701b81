"""No-DNAT wiring (issue 16): the node's kubeletEndpoint.Port points straight at cloudstream, or
the node IP is routed to the cloud host, so the API server's connection arrives on the node's
own IP and that local address (getsockname) picks the node. No iptables rule anywhere.

The edge announces --node-ip 127.0.0.5; cloudstream listens on 0.0.0.0; the client dials
127.0.0.5 with a Host naming the API server — 127.0.0.1:6443, which is also the IP a decoy
node announces, so Host-based resolution would pick the wrong node. Every operation must
reach edge-1: logs, exec, attach, port-forward (WebSocket, and the SPDY POST every kubectl
sends for port-forward), stats, resource metrics, healthz."""

from __future__ import annotations

import asyncio
import json
import ssl
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from tests.conftest import MS

from .framework import apiserver_tls, start_cloud, start_edge
from .k8s_ws import run_exec
from .test_logs_chain import wait_node_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

NODE_IP = "127.0.0.5"
APISERVER = "127.0.0.1:6443"
"""The Host the API server puts on exec/attach passthrough and port-forward: its own address."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def wiring(lab_pki):
    cloud, port, tunnel_port = await start_cloud(lab_pki, "--stream-address", "0.0.0.0")
    target = await start_edge(lab_pki, "edge-1", tunnel_port, "--node-ip", NODE_IP,
                              "--emulate", "default/demo/app", "--emulate", "default/web/nginx", "--emulate-log-rate", "20")
    decoy = await start_edge(lab_pki, "edge-2", tunnel_port, "--node-ip", "127.0.0.1", "--emulate", "default/other/app")
    tls = apiserver_tls(lab_pki)
    try:
        await wait_node_ready(port, tls, "edge-1")
        await wait_node_ready(port, tls, "edge-2", "/containerLogs/default/other/app")
        yield port, tls
    finally:
        await target.stop()
        await decoy.stop()
        await cloud.stop()


async def request(port: int, path: str, tls: ssl.SSLContext, *, dial: str = NODE_IP, host: str = APISERVER,
                  method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection to ``dial``:port (what the API server does without DNAT)."""
    reader, writer = await asyncio.open_connection(dial, port, ssl=tls, server_hostname="localhost")
    try:
        fields = {"Connection": "close", **(headers or {})}
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in fields.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(10 * MS):
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            fields = {}
            for line in head.decode().split("\r\n")[1:]:
                if line:
                    name, _, value = line.partition(":")
                    fields[name.strip().lower()] = value.strip()
            if status == 101:
                return status, fields, b""
            body = await reader.read()
        if fields.get("transfer-encoding") == "chunked":
            out, rest = b"", body
            while rest:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    break
                out, rest = out + rest[:size], rest[size + 2 :]
            body = out
        return status, fields, body
    finally:
        writer.close()


async def open_ws(port: int, path: str, tls: ssl.SSLContext, protocols: list[str]):
    return await connect(
        f"wss://{APISERVER}{path}", host=NODE_IP, port=port, ssl=tls, server_hostname="localhost",
        subprotocols=protocols, open_timeout=10, max_size=None, compression=None,  # type: ignore[arg-type]
    )


async def test_logs(wiring) -> None:
    port, tls = wiring
    status, _, body = await request(port, "/containerLogs/default/demo/app?tailLines=2", tls)
    assert status == 200 and body.count(b"default/demo/app line") == 2, body


async def test_exec(wiring) -> None:
    port, tls = wiring
    query = urlencode([("command", "echo"), ("command", "via-local-address"), ("output", "1"), ("error", "1")])
    ws = await open_ws(port, f"/exec/default/demo/app?{query}", tls, ["v5.channel.k8s.io", "v4.channel.k8s.io"])
    result = await run_exec(ws)
    assert result.stdout == b"via-local-address\n" and result.exit_code == 0


async def test_attach(wiring) -> None:
    port, tls = wiring
    ws = await open_ws(port, "/attach/default/demo/app?input=1&output=1&error=1", tls, ["v4.channel.k8s.io"])
    await ws.send(b"\x00typed-in\n")
    seen = b""
    async with asyncio.timeout(10 * MS):
        while b"default/demo/app line" not in seen or b"typed-in" not in seen:
            message = await ws.recv()
            if message[:1] == b"\x01":
                seen += message[1:]
    await ws.close()


async def test_port_forward(wiring) -> None:
    port, tls = wiring
    ws = await open_ws(port, "/portForward/default/web?port=8080", tls, ["v4.channel.k8s.io"])
    firsts = {}
    async with asyncio.timeout(10 * MS):
        while len(firsts) < 2:
            message = await ws.recv()
            firsts[message[0]] = message[1:]
        await ws.send(b"\x00ping")
        assert await ws.recv() == b"\x00ping"
    await ws.close()
    # kubectl's own form (every version, spec §2): a SPDY POST without a query, Host = API server.
    # Whatever the emulator answers (101 once it speaks SPDY), it is edge-1's answer: the decoy
    # has no pod web (it would say 404) and cloudstream finding no node says 503.
    status, fields, body = await request(
        port, "/portForward/default/web", tls, method="POST",
        headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "portforward.k8s.io",
                 "Content-Length": "0"},
    )
    assert status == 101 or 400 <= status < 404, (status, body)
    assert b"not on this node" not in body and b"no edge node" not in body


async def test_stats_metrics_and_healthz(wiring) -> None:
    port, tls = wiring
    status, fields, body = await request(port, "/stats/summary", tls)
    assert status == 200 and fields["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["node"]["nodeName"] == "edge-1" and {p["podRef"]["name"] for p in doc["pods"]} == {"demo", "web"}
    status, _, body = await request(port, "/metrics/resource", tls)
    assert status == 200 and b'pod="web"' in body and b'pod="other"' not in body
    assert await request(port, "/healthz/ping", tls) == (200, {"content-type": "text/plain; charset=utf-8",
                                                               "transfer-encoding": "chunked"}, b"ok")
    status, _, body = await request(port, "/metrics", tls)
    assert status == 200 and b'edgestream_info{node="edge-1",backend="emulator"} 1' in body


async def test_a_shared_address_never_outvotes_an_explicit_node(wiring) -> None:
    """127.0.0.1 is cloudstream's own address (bound to 0.0.0.0) *and* the decoy's announced IP."""
    port, tls = wiring
    # named by Host (labs) or by the node proxy's X-Forwarded-Uri: edge-1, whatever the address
    status, _, body = await request(port, "/containerLogs/default/demo/app?tailLines=1", tls, dial="127.0.0.1", host="edge-1")
    assert status == 200 and b"default/demo/app" in body
    status, _, body = await request(port, "/stats/summary", tls, dial="127.0.0.1", host=APISERVER,
                                    headers={"X-Forwarded-Uri": "/api/v1/nodes/edge-1/proxy/stats/summary"})
    assert status == 200 and json.loads(body)["node"]["nodeName"] == "edge-1"
    # nothing names a node: the decoy really is the one node announcing 127.0.0.1
    status, _, body = await request(port, "/containerLogs/default/other/app?tailLines=1", tls, dial="127.0.0.1",
                                    host="apiserver.example:6443")
    assert status == 200 and b"default/other/app" in body
    # a node that is not connected, named on the shared loopback address: 503 naming it
    status, _, body = await request(port, "/stats/summary", tls, dial="127.0.0.1", host="edge-3")
    assert status == 503 and b"edge-3" in body
    # an address no node announces falls back to Host / X-Forwarded-Uri, as before
    status, _, body = await request(port, "/stats/summary", tls, dial="127.0.0.9", host="edge-1")
    assert status == 200 and json.loads(body)["node"]["nodeName"] == "edge-1"
