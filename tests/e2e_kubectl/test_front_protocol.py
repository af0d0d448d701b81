"""The API-server front's translator on the wire, with a WebSocket client of our own making
the requests kubectl >= 1.30 makes, against the emulator (a kubelet serving SPDY): what
kubectl sees byte for byte (the open message, channels, the error channel's Status, the close
frame) and what the kubelet endpoint is sent; refusals and an unreachable node; WebSocket
passthrough for a node declaring ExtendWebSocketsToKubelet (with real kubectl). Each test ends
with the front holding no connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.conftest import MS, free_port
from tests.integration.framework import apiserver_tls, start_cloud, start_edge

from .apiserver_front import ApiServerFront, FrontNode, FrontPod
from .conftest import kubelet_client_tls, make_kubectl

pytestmark = [pytest.mark.kubectl, pytest.mark.integration, pytest.mark.timeout(120),
              pytest.mark.asyncio(loop_scope="module")]

V5 = Subprotocol("v5.channel.k8s.io")
PODS = [FrontPod("default", "demo", "edge-1", ("app",)), FrontPod("default", "ghost", "edge-1", ("app",)),
        FrontPod("default", "far", "edge-far", ("app",))]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(lab_pki, tmp_path_factory):
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    edge = await start_edge(lab_pki, "edge-1", tunnel_port, "--emulate", "default/demo/app")
    tls, tls_upgrade = kubelet_client_tls(lambda: apiserver_tls(lab_pki))
    closed_port = free_port()  # a node address nobody listens on
    nodes = [FrontNode("edge-1", "127.0.0.1", stream_port), FrontNode("edge-far", "127.0.0.1", closed_port)]
    front = ApiServerFront(stream_port, tls, PODS, nodes, tls_upgrade)
    ws_front = ApiServerFront(stream_port, tls, PODS, [FrontNode("edge-1", "127.0.0.1", stream_port, True)],
                              tls_upgrade)
    try:
        ports = await front.start(), await ws_front.start()
        await cloud.wait_for_line("tunnel up: node edge-1")
        yield front, ports[0], ws_front, ports[1], tmp_path_factory.mktemp("front")
    finally:
        await ws_front.close()
        await front.close()
        await edge.stop()
        await cloud.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def front(chain):
    yield chain
    for server in (chain[0], chain[2]):
        assert await server.wait_idle(10 * MS) == 0, "the front kept a kubectl connection (leak)"


async def session(port: int, pod: str, query: str, send: list[bytes] = ()) -> tuple[list[bytes], int | None]:
    """Open the v5 WebSocket as kubectl does, send ``send``, read until the server closes."""
    url = f"ws://127.0.0.1:{port}/api/v1/namespaces/default/pods/{pod}/exec?{query}"
    got: list[bytes] = []
    async with connect(url, subprotocols=[V5], additional_headers={"Authorization": "Bearer x"}) as ws:
        assert ws.subprotocol == V5
        for message in send:
            await ws.send(message)
        try:
            async with asyncio.timeout(20 * MS):
                while True:
                    got.append(await ws.recv(decode=False))
        except ConnectionClosed:
            pass
        code = ws.close_code
    return got, code


async def test_translated_exec_on_the_wire(front) -> None:
    server, port = front[:2]
    since = len(server.kubelet_requests)
    got, code = await session(port, "demo", "command=echo&command=hi&stdout=true&stderr=true")
    assert got[0] == b"\x01"  # the empty message on the lowest writable channel: "session open"
    assert b"".join(m[1:] for m in got if m[:1] == b"\x01") == b"hi\n"
    assert got[-1] == b'\x03{"metadata":{},"status":"Success"}' and code == 1000, got
    sent = server.kubelet_requests[since:]
    assert sent[0] == ("kubelet POST /exec/default/demo/app?command=echo&command=hi&error=1&output=1 "
                       "upgrade=SPDY/3.1 protocols=v5.channel.k8s.io,v4.channel.k8s.io,v3.channel.k8s.io,"
                       "v2.channel.k8s.io,channel.k8s.io"), sent
    assert sent[1].startswith("kubelet 101 protocol=v"), sent


async def test_exit_code_becomes_the_translators_status(front) -> None:
    got, _ = await session(front[1], "demo", "command=sh&command=-c&command=exit+3&stdout=true&stderr=true")
    status = json.loads(got[-1][1:])
    assert (status["status"], status["reason"], status["details"]) == (
        "Failure", "NonZeroExitCode", {"causes": [{"reason": "ExitCode", "message": "3"}]}), status
    # client-go's CodeExitError re-wrapped by the translator: the prefix appears twice
    assert status["message"].startswith("command terminated with non-zero exit code: command terminated with "
                                        "non-zero exit code: "), status


async def test_stdin_close_is_a_spdy_fin(front) -> None:
    """v5's close of channel 0 ends the process's stdin: cat returns and the session succeeds."""
    got, code = await session(front[1], "demo", "command=cat&stdin=true&stdout=true&stderr=true",
                              send=[b"\x00hello ", b"\x00world\n", b"\xff\x00"])
    assert b"".join(m[1:] for m in got if m[:1] == b"\x01") == b"hello world\n"
    assert got[-1] == b'\x03{"metadata":{},"status":"Success"}' and code == 1000, got


async def test_kubelet_refusal_status_reaches_the_error_channel(front) -> None:
    """A pod the API knows and the node does not: the kubelet endpoint's 404 Status is passed on."""
    got, code = await session(front[1], "ghost", "command=true&stdout=true")
    status = json.loads(got[-1][1:])
    assert got[-1][:1] == b"\x03" and status["status"] == "Failure" and "ghost" in status["message"], status
    assert code == 1000


async def test_unreachable_node(front) -> None:
    got, code = await session(front[1], "far", "command=true&stdout=true")
    status = json.loads(got[-1][1:])
    assert status["code"] == 500 and status["reason"] == "InternalError", status
    assert re.match(r'Internal error occurred: error sending request: Post "https://127\.0\.0\.1:\d+/exec/default/'
                    r'far/app\?command=true&output=1": dial tcp 127\.0\.0\.1:\d+: connect: connection refused$',
                    status["message"]), status


async def test_websocket_passthrough_for_a_node_that_declares_it(front) -> None:
    """ExtendWebSocketsToKubelet: kubectl 1.33's WebSocket exec and port-forward tunnel reach the
    emulator as WebSocket; the front translates nothing."""
    ws_front, ws_port, tmp = front[2], front[3], front[4]
    kubectl = make_kubectl("1.33", tmp, ws_port)
    rc, out, err = await kubectl.run("exec", "demo", "--", "echo", "through")
    assert (rc, out) == (0, b"through\n"), err.decode()
    proc = await kubectl.start("port-forward", "pod/demo", ":8080")
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30 * MS):
            line = (await proc.stdout.readline()).decode()
            local = int(re.search(r"127\.0\.0\.1:(\d+) -> 8080", line).group(1))  # type: ignore[union-attr]
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"ping through the tunnel\n")
            assert await reader.readexactly(24) == b"ping through the tunnel\n"
            writer.close()
    finally:
        proc.kill()
        await proc.wait()
    assert ws_front.kubelet_requests == []
    upgrades = [r for r in ws_front.requests if "upgrade=" in r and "upgrade= " not in r]
    assert all("upgrade=websocket" in r for r in upgrades), upgrades


@pytest.mark.parametrize("version", ["1.27", "1.31", "1.33"])
async def test_port_forward_refused_by_the_kubelet(front, version: str) -> None:
    """The kubelet endpoint refuses (no such pod on the node): kubectl >= 1.31 tries the tunnel,
    gets the refusal as an HTTP answer, falls back to SPDY, and shows the kubelet's Status message."""
    server, port, tmp = front[0], front[1], front[4]
    kubectl = make_kubectl(version, tmp, port)
    since = len(server.requests)
    proc = await kubectl.start("port-forward", "pod/ghost", ":8080")
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30 * MS)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode != 0 and b"error upgrading connection" in err and b"ghost" in err, err.decode()
    asked = [r for r in server.requests[since:] if "/portforward" in r]
    expected = ["SPDY/3.1+portforward.k8s.io", "upgrade=SPDY/3.1"] if kubectl.version >= (1, 31) else \
        ["upgrade=SPDY/3.1"]
    assert len(asked) == len(expected) and all(e in r for e, r in zip(expected, asked, strict=True)), asked


SPEC_HEADS = {  # header names in wire order, apiserver-observed.md section 2
    "exec passthrough": ["Host", "User-Agent", "Content-Length", "Connection", "Kubectl-Command", "Kubectl-Session",
                         "Upgrade", "X-Forwarded-For"] + ["X-Stream-Protocol-Version"] * 4,
    "exec translated": ["Host", "User-Agent", "Content-Length", "Connection", "Upgrade"]
    + ["X-Stream-Protocol-Version"] * 5,
    "portForward": ["Host", "User-Agent", "Content-Length", "Connection", "Kubectl-Command", "Kubectl-Session",
                    "Upgrade", "X-Forwarded-For", "X-Stream-Protocol-Version"],
    "containerLogs": ["Host", "User-Agent", "Accept-Encoding"],
}


@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_kubelet_endpoint_sees_the_spec_heads(front, version: str) -> None:
    server, port, tmp = front[0], front[1], front[4]
    kubectl = make_kubectl(version, tmp, port)
    since = len(server.dial.heads)
    rc, _, err = await kubectl.run("exec", "demo", "--", "echo", "hi")
    assert rc == 0, err.decode()
    rc, _, err = await kubectl.run("logs", "demo", "--tail=1")
    assert rc == 0, err.decode()
    proc = await kubectl.start("port-forward", "pod/demo", ":8080")
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30 * MS):
            line = (await proc.stdout.readline()).decode()
            local = int(re.search(r"127\.0\.0\.1:(\d+) -> 8080", line).group(1))  # type: ignore[union-attr]
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"x\n")
            assert await reader.readexactly(2) == b"x\n"
            writer.close()
    finally:
        proc.kill()
        await proc.wait()
    heads = {target.split("/")[1]: (method, target, headers) for method, target, headers in server.dial.heads[since:]}
    method, target, headers = heads["exec"]
    names = [k for k, _ in headers]
    values = dict(headers)
    assert (method, target) == ("POST", "/exec/default/demo/app?command=echo&command=hi&error=1&output=1")
    if kubectl.version >= (1, 30):
        assert names == SPEC_HEADS["exec translated"] and values["Host"] == f"127.0.0.1:{front[0].stream_port}"
        assert values["User-Agent"] == "Go-http-client/1.1"
    else:
        assert names == SPEC_HEADS["exec passthrough"] and values["Host"] == f"127.0.0.1:{port}"  # the API server
        assert values["User-Agent"].startswith(f"kubectl.{version}/") and values["Kubectl-Command"] == "kubectl exec"
    method, target, headers = heads["portForward"]
    assert (method, target, [k for k, _ in headers]) == ("POST", "/portForward/default/demo", SPEC_HEADS["portForward"])
    assert dict(headers)["X-Stream-Protocol-Version"] == "portforward.k8s.io"
    assert dict(headers)["Kubectl-Command"] == "kubectl port-forward"
    method, target, headers = heads["containerLogs"]
    assert (method, target, [k for k, _ in headers]) == ("GET", "/containerLogs/default/demo/app?tailLines=1",
                                                         SPEC_HEADS["containerLogs"])


async def test_long_attach_is_pinged_and_ends_when_the_client_leaves(front) -> None:
    """The translator PINGs its SPDY connection every 5 s (the kubelet answers); kubectl
    leaving mid-session tears the SPDY side down (the fixture checks no connection is left)."""
    server, port = front[:2]
    before = len(server.translators)
    url = f"ws://127.0.0.1:{port}/api/v1/namespaces/default/pods/demo/attach?container=app&stdout=true"
    async with connect(url, subprotocols=[V5]) as ws:
        first = await ws.recv(decode=False)
        assert first == b"\x01"
        translator = server.translators[before]
        async with asyncio.timeout(20 * MS):
            while translator.pings == 0:  # bounded by the timeout: a PING is due after 5 s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws.recv(decode=False), 1)
    assert translator.pings >= 1 and translator.status is None  # no status: the client left first


@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_unreachable_node_as_kubectl_shows_it(front, version: str) -> None:
    """Connection refused, worded as the spec's table shows for logs and port-forward."""
    port, tmp = front[1], front[4]
    kubectl = make_kubectl(version, tmp, port)
    rc, _, err = await kubectl.run("logs", "far")
    assert rc != 0 and re.match(rb'Error from server: Get "https://127\.0\.0\.1:\d+/containerLogs/default/far/app": '
                                rb"dial tcp 127\.0\.0\.1:\d+: connect: connection refused", err), err
    rc, _, err = await kubectl.run("port-forward", "pod/far", ":8080", timeout=30 * MS)
    assert rc != 0 and re.search(rb"error upgrading connection: error dialing backend: dial tcp 127\.0\.0\.1:\d+: "
                                 rb"connect: connection refused", err), err
