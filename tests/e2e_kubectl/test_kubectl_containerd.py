"""Every kubectl from 1.27 to 1.33 through the whole real chain: API-server front ->
cloudstream:10003 -> tunnel -> edgestream (CRI backend) -> real containerd.

The front translates as a real API server does (``apiserver_front``): kubectl >= 1.30's
WebSocket v5 exec/attach becomes a new SPDY connection to the kubelet endpoint, kubectl >= 1.31's
port-forward tunnel is unwrapped to plain SPDY, older kubectl's SPDY is passed through. A node
declaring ExtendWebSocketsToKubelet gets the WebSocket itself: containerd 1.6 refuses v5 (403)
and kubectl falls back to SPDY on a new request (a fresh single-use CRI URL).
"""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest
import pytest_asyncio

from tests.conftest import MS, free_port
from tests.integration.framework import apiserver_tls, start_cloud, start_edge

from .apiserver_front import ApiServerFront, FrontNode, FrontPod
from .conftest import VERSIONS, kubelet_client_tls, make_kubectl, run_in_terminal

pytestmark = [pytest.mark.kubectl, pytest.mark.containerd, pytest.mark.integration, pytest.mark.timeout(600),
              pytest.mark.asyncio(loop_scope="module")]

LOOP = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done"
# Host-network pods share the machine's ports: pick a free one, so parallel runs never collide.
POD_PORT = free_port()
SERVER = f"mkdir -p /tmp/www && echo hello-from-pod > /tmp/www/index.html && exec httpd -f -p {POD_PORT} -h /tmp/www"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def front(realstack, lab_pki, tmp_path_factory):
    pod_id = realstack.run_pod("web", namespace="default", uid="uid-kubectl-web")
    realstack.wait_running(realstack.run_container(pod_id, "loop", ["sh", "-c", LOOP]))
    realstack.wait_running(realstack.run_container(pod_id, "server", ["sh", "-c", SERVER]))
    realstack.wait_running(realstack.run_container(pod_id, "shell", ["sh"], tty=True, stdin=True))
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    edge = await start_edge(lab_pki, "edge-2", tunnel_port, "--backend", "cri", "--cri-endpoint", realstack.endpoint)
    pods = [FrontPod("default", "web", "edge-2", ("loop", "server", "shell"), "uid-kubectl-web"),
            FrontPod("default", "ghost", "edge-2", ("app",), "uid-ghost")]  # known to the API, not to containerd
    tls, tls_upgrade = kubelet_client_tls(lambda: apiserver_tls(lab_pki))
    front = ApiServerFront(stream_port, tls, pods, [FrontNode("edge-2", "127.0.0.1", stream_port)], tls_upgrade)
    port = await front.start()
    # the same cluster, but the node declares ExtendWebSocketsToKubelet: WebSocket passthrough
    ws_front = ApiServerFront(stream_port, tls, pods, [FrontNode("edge-2", "127.0.0.1", stream_port, True)],
                              tls_upgrade)
    ws_port = await ws_front.start()
    try:
        await cloud.wait_for_line("tunnel up: node edge-2")
        yield port, tmp_path_factory.mktemp("kubectl-ctd"), front, ws_port, ws_front
        for server in (front, ws_front):  # every kubectl is gone: no session may be left behind
            assert await server.wait_idle(10 * MS) == 0, "the front kept a kubectl connection (leak)"
    finally:
        await ws_front.close()
        await front.close()
        await edge.stop()
        await cloud.stop()
        realstack.remove_pod(pod_id)


@pytest.mark.parametrize("version", VERSIONS)
async def test_logs(front, version: str) -> None:
    port, tmp = front[:2]
    kubectl = make_kubectl(version, tmp, port)
    rc, out, err = await kubectl.run("logs", "web", "-c", "loop", "--tail=2")
    assert rc == 0, err.decode()
    assert [re.fullmatch(r"line \d+", line) is not None for line in out.decode().splitlines()] == [True, True]
    rc, out, err = await kubectl.run("logs", "web", "-c", "loop", "--tail=1", "--timestamps")
    assert rc == 0 and re.fullmatch(rb"\d{4}-\d\d-\d\dT[\d:.]+Z line \d+\n", out), out
    proc = await kubectl.start("logs", "-f", "web", "-c", "loop", "--tail=1")
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20 * MS):
            lines = [(await proc.stdout.readline()).decode().strip() for _ in range(5)]
    finally:
        proc.kill()
        await proc.wait()
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + 5))


@pytest.mark.parametrize("version", VERSIONS)
async def test_exec(front, version: str) -> None:
    port, tmp, front_server = front[:3]
    kubectl = make_kubectl(version, tmp, port)
    since, kubelet_since = len(front_server.requests), len(front_server.kubelet_requests)
    rc, out, err = await kubectl.run("exec", "web", "-c", "loop", "--", "echo", "hi")
    assert (rc, out) == (0, b"hi\n"), err.decode()
    asked = [r for r in front_server.requests[since:] if "/exec" in r]
    sent = front_server.kubelet_requests[kubelet_since:]
    if kubectl.version >= (1, 30):  # WebSocket v5, translated: no fallback, a new SPDY POST to the kubelet
        assert len(asked) == 1 and "upgrade=websocket" in asked[0] and "v5.channel.k8s.io" in asked[0], asked
        assert sent[0] == ("kubelet POST /exec/default/web/loop?command=echo&command=hi&error=1&output=1 "
                           "upgrade=SPDY/3.1 protocols=v5.channel.k8s.io,v4.channel.k8s.io,v3.channel.k8s.io,"
                           "v2.channel.k8s.io,channel.k8s.io"), sent
        assert sent[1] == "kubelet 101 protocol=v4.channel.k8s.io", sent  # containerd 1.6 speaks up to v4
    else:  # SPDY passed through
        assert len(asked) == 1 and "upgrade=SPDY/3.1" in asked[0] and sent == [], (asked, sent)
    # stdin to EOF over SPDY: wc needs the half-close to print anything
    rc, out, err = await kubectl.run("exec", "-i", "web", "-c", "loop", "--", "wc", "-l", input=b"a\nb\nc\n")
    assert rc == 0 and out.strip() == b"3", (out, err.decode())
    rc, out, err = await kubectl.run("exec", "web", "-c", "loop", "--", "sh", "-c", "echo oops >&2; exit 3")
    assert rc == 3 and b"oops" in err, err.decode()


@pytest.mark.skipif(shutil.which("script") is None, reason="`script` (util-linux) is needed to give kubectl a terminal")
@pytest.mark.parametrize("version", VERSIONS)
async def test_exec_tty_with_exit_code(front, version: str) -> None:
    """exec -it: a terminal (tty, no stderr stream, resize), and the exit code comes back.
    (busybox's stty cannot read the window size in a CRI exec here, so the resize is checked
    where the front translates it.)"""
    port, tmp, front_server = front[:3]
    kubectl = make_kubectl(version, tmp, port)
    since = len(front_server.kubelet_requests)
    rc, out = await run_in_terminal(kubectl, "exec", "-it", "web", "-c", "loop", "--", "sh", "-c", "tty; exit 5",
                                    size=(33, 91))
    assert rc == 5 and b"/dev/pts/" in out, out
    if kubectl.version >= (1, 30):
        sent = front_server.kubelet_requests[since:]
        assert "tty=1" in sent[0] and "error=1" not in sent[0] and "kubelet resize 91x33" in sent, sent


@pytest.mark.parametrize("version", VERSIONS)
async def test_attach(front, version: str) -> None:
    port, tmp = front[:2]
    kubectl = make_kubectl(version, tmp, port)
    proc = await kubectl.start("attach", "web", "-c", "loop")
    assert proc.stdout is not None
    seen: list[bytes] = []
    try:
        async with asyncio.timeout(30 * MS):
            while len(seen) < 3:
                line = await proc.stdout.readline()
                if re.fullmatch(rb"line \d+\n", line):
                    seen.append(line)
    finally:
        proc.kill()
        await proc.wait()
    assert len(seen) == 3


@pytest.mark.skipif(shutil.which("script") is None, reason="`script` (util-linux) is needed to give kubectl a terminal")
@pytest.mark.parametrize("version", VERSIONS)
async def test_attach_tty(front, version: str) -> None:
    """attach -it to a shell with a terminal: our keystrokes reach it, its answer comes back."""
    port, tmp = front[:2]
    kubectl = make_kubectl(version, tmp, port)
    marker = f"attached-{version}"
    rc, out = await run_in_terminal(kubectl, "attach", "-it", "web", "-c", "shell",
                                    keys=[b"\n", f"echo {marker}-$((40+2))\n".encode()], until=f"{marker}-42".encode())
    assert f"{marker}-42".encode() in out, out


@pytest.mark.parametrize("version", VERSIONS)
async def test_port_forward(front, version: str) -> None:
    port, tmp, front_server = front[:3]
    kubectl = make_kubectl(version, tmp, port)
    since, kubelet_since = len(front_server.requests), len(front_server.kubelet_requests)
    proc = await kubectl.start("port-forward", "pod/web", f":{POD_PORT}")
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30 * MS):
            line = (await proc.stdout.readline()).decode()
            local = int(re.search(rf"127\.0\.0\.1:(\d+) -> {POD_PORT}", line).group(1))  # type: ignore[union-attr]
            for _ in range(3):  # several connections through one port-forward session
                reader, writer = await asyncio.open_connection("127.0.0.1", local)
                writer.write(b"GET /index.html HTTP/1.0\r\n\r\n")
                data = await reader.read()
                writer.close()
                assert data.startswith(b"HTTP/1.") and b"hello-from-pod" in data, data
    finally:
        proc.kill()
        await proc.wait()
    asked = [r for r in front_server.requests[since:] if "/portforward" in r]
    sent = front_server.kubelet_requests[kubelet_since:]
    if kubectl.version >= (1, 31):  # the WebSocket tunnel, unwrapped to plain SPDY
        assert len(asked) == 1 and "SPDY/3.1+portforward.k8s.io" in asked[0], asked
        assert sent == ["kubelet POST /portForward/default/web upgrade=SPDY/3.1 protocols=portforward.k8s.io "
                        "(tunnel)"], sent
    else:
        assert len(asked) == 1 and "upgrade=SPDY/3.1" in asked[0] and sent == [], (asked, sent)


@pytest.mark.parametrize("version", ["1.30", "1.33"])
async def test_websocket_passthrough_when_the_node_declares_it(front, version: str) -> None:
    """ExtendWebSocketsToKubelet: the WebSocket reaches the kubelet endpoint; containerd 1.6
    refuses v5 with 403, kubectl falls back to SPDY on a new request, the command succeeds."""
    tmp, ws_port, ws_front = front[1], front[3], front[4]
    kubectl = make_kubectl(version, tmp / "ws", ws_port)
    since = len(ws_front.requests)
    rc, out, err = await kubectl.run("exec", "web", "-c", "loop", "--", "echo", "hi")
    assert (rc, out) == (0, b"hi\n"), err.decode()
    asked = [r for r in ws_front.requests[since:] if "/exec" in r]
    assert ["upgrade=websocket" in asked[0], "upgrade=SPDY/3.1" in asked[1], len(asked)] == [True, True, 2], asked
    assert ws_front.kubelet_requests == []


@pytest.mark.parametrize("version", VERSIONS)
async def test_kubelet_refusal_reaches_the_user(front, version: str) -> None:
    """A pod the API knows but the node does not: the kubelet endpoint's 404 Status text is
    what kubectl prints (through the translator's error channel, or the SPDY passthrough)."""
    port, tmp = front[:2]
    kubectl = make_kubectl(version, tmp, port)
    rc, _, err = await kubectl.run("exec", "ghost", "--", "true")
    assert rc != 0 and b"ghost" in err, err.decode()
    rc, _, err = await kubectl.run("logs", "ghost")
    assert rc != 0 and b"pods/log ghost" in err, err.decode()


@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_node_proxy(front, version: str) -> None:
    """`kubectl get --raw /api/v1/nodes/<node>/proxy/...`: stats/summary (CRI stats) and
    metrics/resource; the node is found from X-Forwarded-Uri (Host names the API server)."""
    import json

    port, tmp = front[:2]
    kubectl = make_kubectl(version, tmp, port)
    rc, out, err = await kubectl.run("get", "--raw", "/api/v1/nodes/edge-2/proxy/stats/summary")
    assert rc == 0, err.decode()
    pods = {p["podRef"]["name"]: p for p in json.loads(out)["pods"]}
    assert pods["web"]["podRef"]["uid"] == "uid-kubectl-web"
    rc, out, err = await kubectl.run("get", "--raw", "/api/v1/nodes/edge-2/proxy/metrics/resource")
    assert rc == 0 and b"container_cpu_usage_seconds_total" in out, err.decode()


@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_node_proxy_healthz(front, version: str) -> None:
    """The node proxy's /healthz, answered from the edge's state (issue 16)."""
    port, tmp = front[:2]
    kubectl = make_kubectl(version, tmp, port)
    rc, out, err = await kubectl.run("get", "--raw", "/api/v1/nodes/edge-2/proxy/healthz")
    assert (rc, out) == (0, b"ok"), (out, err.decode())


@pytest.mark.parametrize("version", VERSIONS)
async def test_cp_into_and_out_of_the_pod(front, version: str, tmp_path) -> None:
    """`kubectl cp` is tar over exec stdin/stdout: bulk bytes through SPDY (or the v5 fallback)."""
    import os

    port, tmp = front[:2]
    kubectl = make_kubectl(version, tmp, port)
    payload = os.urandom(300_000)
    local = tmp_path / "blob.bin"
    local.write_bytes(payload)
    rc, _, err = await kubectl.run("cp", "-c", "loop", str(local), f"web:/tmp/blob-{version}.bin")
    assert rc == 0, err.decode()
    rc, out, err = await kubectl.run("exec", "web", "-c", "loop", "--", "md5sum", f"/tmp/blob-{version}.bin")
    import hashlib

    assert rc == 0 and out.split()[0].decode() == hashlib.md5(payload).hexdigest(), (out, err)
    back = tmp_path / "back.bin"
    rc, _, err = await kubectl.run("cp", "-c", "loop", f"web:/tmp/blob-{version}.bin", str(back))
    translated = [(t.target, t.relayed, t.status) for t in front[2].translators[-1:]]
    assert rc == 0 and back.read_bytes() == payload, (err.decode(), translated)
