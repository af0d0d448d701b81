"""Issue 3: exec, attach, port-forward and metrics through 10003 -> tunnel -> edge (emulator),
over a real WebSocket v4/v5 client, with authorization and isolation between streams."""

from __future__ import annotations

import asyncio
import json
import os
import random

import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamcerts import client_context
from tests.conftest import MS

from .framework import apiserver_tls, kubelet_request, start_cloud, start_edge
from .k8s_ws import open_ws, run_exec
from .test_logs_chain import wait_node_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180), pytest.mark.asyncio(loop_scope="module")]

PODS = ["default/demo/app", "default/web/nginx", "kube-system/dns/coredns"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(lab_pki):
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    args = [a for pod in PODS for a in ("--emulate", pod)] + ["--emulate-log-rate", "20"]
    edge = await start_edge(lab_pki, "edge-1", tunnel_port, *args)
    try:
        await wait_node_ready(stream_port, apiserver_tls(lab_pki), "edge-1")
        yield cloud, edge, stream_port, tunnel_port
    finally:
        await edge.stop()
        await cloud.stop()


def q(*command: str, **flags: str) -> str:
    from urllib.parse import urlencode

    return urlencode([("command", c) for c in command] + sorted(flags.items()))


async def test_exec_stdout_stderr_exit_code(chain, lab_pki) -> None:
    _, _, port, _ = chain
    path = "/exec/default/demo/app?" + q("sh", "-c", "echo out; echo err >&2; exit 3", output="1", error="1")
    ws = await open_ws(port, path, node="edge-1", tls=apiserver_tls(lab_pki))
    assert ws.subprotocol == "v5.channel.k8s.io"
    result = await run_exec(ws)
    assert result.stdout == b"out\n" and result.stderr == b"err\n"
    assert result.exit_code == 3 and result.status["reason"] == "NonZeroExitCode"


async def test_exec_stdin_half_close_and_bulk_bytes(chain, lab_pki) -> None:
    _, _, port, _ = chain
    payload = os.urandom(300_000)
    chunks = [payload[i : i + 7000] for i in range(0, len(payload), 7000)]
    ws = await open_ws(port, "/exec/default/demo/app?" + q("cat", input="1", output="1", error="1"), node="edge-1", tls=apiserver_tls(lab_pki))
    result = await run_exec(ws, stdin=chunks)
    assert result.stdout == payload  # every byte, in order, through both relays
    assert result.exit_code == 0


async def test_exec_uid_path_and_v4(chain, lab_pki) -> None:
    _, _, port, _ = chain
    ws = await open_ws(
        port, "/exec/default/web/uid-1234/nginx?" + q("hostname", output="1"), node="edge-1", tls=apiserver_tls(lab_pki),
        protocols=["v4.channel.k8s.io"],
    )
    assert ws.subprotocol == "v4.channel.k8s.io"
    result = await run_exec(ws)
    assert result.stdout == b"web\n" and result.exit_code == 0


async def test_exec_tty_resize_and_exit(chain, lab_pki) -> None:
    _, _, port, _ = chain
    ws = await open_ws(port, "/exec/default/demo/app?" + q("sh", input="1", output="1", tty="1"), node="edge-1", tls=apiserver_tls(lab_pki))
    result = await run_exec(ws, stdin=[b"stty size\r", b"echo rt-42\r", b"exit 7\r"], resize=(30, 100), close_stdin=False, until=b"")
    assert b"30 100" in result.stdout and b"rt-42" in result.stdout
    assert b"\r\n" in result.stdout  # a terminal's line endings
    assert result.stderr == b""  # tty: one stream
    assert result.exit_code == 7


async def test_attach_streams_live_output_and_echoes_input(chain, lab_pki) -> None:
    _, _, port, _ = chain
    ws = await open_ws(port, "/attach/default/demo/app?input=1&output=1&error=1", node="edge-1", tls=apiserver_tls(lab_pki))
    await ws.send(b"\x00typed-in\n")
    seen = b""
    async with asyncio.timeout(10 * MS):
        while b"typed-in" not in seen or seen.count(b"line") < 3:
            message = await ws.recv()
            if message[:1] == b"\x01":
                seen += message[1:]
    await ws.close()
    assert b"default/demo/app line" in seen


async def test_port_forward_over_websocket(chain, lab_pki) -> None:
    _, _, port, _ = chain
    ws = await open_ws(port, "/portForward/default/web?port=8080&port=9090", node="edge-1", tls=apiserver_tls(lab_pki),
                       protocols=["v4.channel.k8s.io"])
    firsts = {}
    while len(firsts) < 4:
        message = await ws.recv()
        firsts[message[0]] = message[1:]
    assert firsts[0] == (8080).to_bytes(2, "little") and firsts[2] == (9090).to_bytes(2, "little")
    await ws.send(b"\x00ping-8080")
    await ws.send(b"\x02ping-9090")
    got = {}
    while len(got) < 2:
        message = await ws.recv()
        got[message[0]] = message[1:]
    assert got == {0: b"ping-8080", 2: b"ping-9090"}
    await ws.close()


async def test_spdy_refusal_is_relayed_unchanged(chain, lab_pki) -> None:
    """The edge's own answer to an upgrade (here the kubelet's 403 for no common protocol, a
    metav1.Status) reaches the client as is."""
    _, _, port, _ = chain
    tls = apiserver_tls(lab_pki)
    async with kubelet_request(
        port, "/exec/default/demo/app?command=ls&output=1", host="edge-1", tls=tls, method="POST",
        headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "v9.channel.k8s.io", "Content-Length": "0"},
    ) as resp:
        assert resp.status == 403
        status = json.loads(await resp.body())
        assert status["kind"] == "Status" and "unable to negotiate protocol" in status["message"]
        assert resp.headers["x-accepted-stream-protocol-versions"] == "channel.k8s.io"  # the last of five lines


async def test_spdy_exec_and_port_forward_through_the_chain(chain, lab_pki) -> None:
    """SPDY/3.1, what a kube-apiserver sends, through 10003 -> tunnel -> emulator: 101, then
    our SPDY client (proven against containerd) runs exec with stdin and a port-forward pair."""
    from streamproto.aio.spdy import SpdyConnection
    from streamproto.spdy import Role

    _, _, port, _ = chain
    tls = apiserver_tls(lab_pki)
    spdy = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "Content-Length": "0"}

    async def session(resp):
        async def read():
            return await resp.reader.read(65536) or None

        async def write(data):
            resp.writer.write(data)
            await resp.writer.drain()

        conn = SpdyConnection(Role.CLIENT, read, write)
        return conn, asyncio.create_task(conn.run())

    async def read_all(stream):
        out = []
        while (chunk := await stream.read()) is not None:
            out.append(chunk)
        return b"".join(out)

    path = "/exec/default/demo/app?" + q("cat", input="1", output="1", error="1")
    async with kubelet_request(port, path, host="edge-1", tls=tls, method="POST",
                               headers=spdy | {"X-Stream-Protocol-Version": "v5.channel.k8s.io"}) as resp:
        assert resp.status == 101 and resp.headers["x-stream-protocol-version"] == "v5.channel.k8s.io"
        conn, task = await session(resp)
        streams = {t: await conn.open_stream([("streamtype", t)]) for t in ("error", "stdin", "stdout", "stderr")}
        async with asyncio.timeout(20 * MS):
            for s in streams.values():
                await s.wait_reply()
            payload = os.urandom(200_000)
            await streams["stdin"].write(payload)
            await streams["stdin"].close()
            out, status = await asyncio.gather(read_all(streams["stdout"]), read_all(streams["error"]))
        assert (len(out), status) == (len(payload), b'{"metadata": {}, "status": "Success"}'), chain[1].output[-3000:]
        assert out == payload
        await conn.goaway()
        task.cancel()

    async with kubelet_request(port, "/portForward/default/web", host="edge-1", tls=tls, method="POST",
                               headers=spdy | {"X-Stream-Protocol-Version": "portforward.k8s.io"}) as resp:
        assert resp.status == 101
        conn, task = await session(resp)
        async with asyncio.timeout(20 * MS):
            for request in ("0", "1"):
                error = await conn.open_stream([("streamtype", "error"), ("port", "80"), ("requestid", request)], fin=True)
                data = await conn.open_stream([("streamtype", "data"), ("port", "80"), ("requestid", request)])
                await data.write(f"ping {request}".encode())
                await data.close()
                assert await read_all(data) == f"ping {request}".encode()
                assert await read_all(error) == b""
        await conn.goaway()
        task.cancel()


async def test_exec_errors_and_authorization(chain, lab_pki) -> None:
    _, _, port, _ = chain
    with pytest.raises(InvalidStatus) as info:
        await open_ws(port, "/exec/default/nosuch/app?command=ls&output=1", node="edge-1", tls=apiserver_tls(lab_pki))
    assert info.value.response.status_code == 404 and b"nosuch" in info.value.response.body
    root = lab_pki.root
    nobody = apiserver_tls(lab_pki, root / "nobody/client.crt", root / "nobody/client.key")
    with pytest.raises(InvalidStatus) as info:
        await open_ws(port, "/exec/default/demo/app?command=ls&output=1", node="edge-1", tls=nobody)
    assert info.value.response.status_code == 403
    async with kubelet_request(port, "/exec/default/demo/app?command=ls", host="edge-1", tls=apiserver_tls(lab_pki), method="POST") as resp:
        assert resp.status == 400 and b"upgrade" in await resp.body()
    async with kubelet_request(port, "/run/default/demo/app", host="edge-1", tls=apiserver_tls(lab_pki), method="POST") as resp:
        assert resp.status == 404
        await resp.body()


async def test_stats_summary_and_metrics(chain, lab_pki) -> None:
    _, _, port, _ = chain
    tls = apiserver_tls(lab_pki)
    async with kubelet_request(port, "/stats/summary", host="127.0.0.1:10250", tls=tls) as resp:
        assert resp.status == 200 and resp.headers["content-type"] == "application/json"
        summary = json.loads(await resp.body())
    assert {p["podRef"]["name"] for p in summary["pods"]} == {"demo", "web", "dns"}
    async with kubelet_request(
        port, "/metrics/resource", host="apiserver.example:443", tls=tls,
        headers={"X-Forwarded-Uri": "/api/v1/nodes/edge-1/proxy/metrics/resource", "Authorization": "Bearer secret-token"},
    ) as resp:
        assert resp.status == 200
        assert b"container_cpu_usage_seconds_total" in await resp.body()


async def test_hundred_concurrent_mixed_streams_are_isolated(chain, lab_pki) -> None:
    """100 streams on one node: logs -f, exec cat, port-forward. Every one gets its own bytes;
    closing some early affects none of the others."""
    _, _, port, _ = chain
    tls = apiserver_tls(lab_pki)
    rng = random.Random(7)

    async def exec_cat(i: int) -> str:
        data = rng.randbytes(20_000 + i)
        ws = await open_ws(port, "/exec/default/demo/app?" + q("cat", input="1", output="1"), node="edge-1", tls=tls)
        result = await run_exec(ws, stdin=[data[j : j + 4096] for j in range(0, len(data), 4096)], timeout=60 * MS)
        assert result.stdout == data and result.exit_code == 0, i
        return "exec"

    async def port_forward(i: int) -> str:
        ws = await open_ws(port, "/portForward/default/web?port=80", node="edge-1", tls=tls, protocols=["v4.channel.k8s.io"])
        for _ in range(2):
            await ws.recv()
        for k in range(5):
            msg = f"pf-{i}-{k}".encode()
            await ws.send(b"\x00" + msg)
            assert await ws.recv() == b"\x00" + msg
        await ws.close()
        return "pf"

    async def logs_follow(i: int, lines: int) -> str:
        async with kubelet_request(port, "/containerLogs/kube-system/dns/coredns?follow=true&tailLines=0", host="edge-1", tls=tls) as resp:
            assert resp.status == 200
            buf = b""
            async for chunk in resp.chunks():
                buf += chunk
                if buf.count(b"\n") >= lines:
                    break
            numbers = [int(line.rsplit(b" ", 1)[1]) for line in buf.split(b"\n")[:lines]]
            assert numbers == list(range(numbers[0], numbers[0] + lines)), i
        return "logs"

    jobs = []
    for i in range(100):
        kind = i % 3
        if kind == 0:
            jobs.append(exec_cat(i))
        elif kind == 1:
            jobs.append(port_forward(i))
        else:
            # Some followers leave after 2 lines, the others stay for 20: the early
            # closers must not disturb anyone.
            jobs.append(logs_follow(i, 2 if i % 2 else 20))
    async with asyncio.timeout(120 * MS):
        results = await asyncio.gather(*jobs)
    assert results.count("exec") == 34 and results.count("pf") == 33 and results.count("logs") == 33


async def test_port_forward_to_a_go_edge_says_why_not(lab_pki) -> None:
    """A Go edgecore announces no features: port-forward gets a 501 that says what to do."""
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    try:
        tls = client_context(lab_pki.ca_cert, lab_pki.edge_cert("edge-2"), lab_pki.edge_key("edge-2"))
        async with connect(
            f"wss://localhost:{tunnel_port}/v1/kubeedge/connect", ssl=tls,
            additional_headers={"SessionHostNameOverride": "edge-2", "SessionInternalIP": "10.9.9.9"},
            user_agent_header="Go-http-client/1.1",
        ) as go_edge:
            await cloud.wait_for_line("tunnel up: node edge-2")
            async with kubelet_request(
                stream_port, "/portForward/default/web", host="10.9.9.9:10250", tls=apiserver_tls(lab_pki), method="POST",
                headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "portforward.k8s.io"},
            ) as resp:
                assert resp.status == 501
                assert b"edge-2" in await resp.body()
            # logs to a Go edge: 200 at once, body relayed; a Go edge answers the LOGS_CONNECT
            async with kubelet_request(stream_port, "/containerLogs/a/b/c", host="edge-2", tls=apiserver_tls(lab_pki)) as resp:
                assert resp.status == 200
                message = await go_edge.recv(decode=False)
                assert message[1] == 0 and b'"MessID":' in message  # LOGS_CONNECT with Go's JSON
                cid = message[0]
                await go_edge.send(bytes([cid, 3]) + b"hello from go\n", text=True)
                await go_edge.send(bytes([cid, 4]), text=True)
                assert await resp.body() == b"hello from go\n"
            remove = await go_edge.recv(decode=False)
            assert remove == bytes([cid, 4])  # our REMOVE, exactly once
            # metrics-server's bearer token stops at the cloud: it never crosses the tunnel
            async with kubelet_request(
                stream_port, "/metrics/resource", host="edge-2", tls=apiserver_tls(lab_pki),
                headers={"Authorization": "Bearer secret-token", "Accept": "text/plain"},
            ) as resp:
                message = await go_edge.recv(decode=False)
                assert message[1] == 2 and b"/metrics/resource" in message  # METRIC_CONNECT
                assert b"secret-token" not in message and b"Authorization" not in message and b"text/plain" in message
                await go_edge.send(bytes([message[0], 4]), text=True)
                assert resp.status == 200 and await resp.body() == b""
            await go_edge.recv(decode=False)  # our REMOVE for it
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await go_edge.recv()
    finally:
        await cloud.stop()


async def test_exec_sessions_are_audited(chain, lab_pki) -> None:
    cloud, _, port, _ = chain
    since = len(cloud.lines)
    ws = await open_ws(port, "/exec/default/demo/app?" + q("echo", "audited", output="1"), node="edge-1", tls=apiserver_tls(lab_pki))
    assert (await run_exec(ws)).stdout == b"audited\n"
    opened = await cloud.wait_for_line(r"cloudstream\.audit open exec node=edge-1 ns=default pod=demo container=app (\S+)", since=since)
    assert "command=echo" in opened.group(1)
    closed = await cloud.wait_for_line(r"cloudstream\.audit close exec node=edge-1 pod=default/demo .*bytes_out=(\d+)", since=since)
    assert int(closed.group(1)) > 0
    assert not any("secret-token" in line for line in cloud.lines)  # a forwarded bearer token is never logged


async def test_access_rules_are_per_route(lab_pki) -> None:
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki, "--allow", "cn:system:anonymous-user=metrics")
    edge = await start_edge(lab_pki, "edge-3", tunnel_port)
    try:
        await wait_node_ready(stream_port, apiserver_tls(lab_pki), "edge-3")
        root = lab_pki.root
        nobody = apiserver_tls(lab_pki, root / "nobody/client.crt", root / "nobody/client.key")
        async with kubelet_request(stream_port, "/stats/summary", host="edge-3", tls=nobody) as resp:
            assert resp.status == 200
            await resp.body()
        async with kubelet_request(stream_port, "/containerLogs/default/demo/app", host="edge-3", tls=nobody) as resp:
            assert resp.status == 403
            text = (await resp.body()).decode()
            assert "may not use logs" in text and "cn:system:anonymous-user=metrics" in text
    finally:
        await edge.stop()
        await cloud.stop()
