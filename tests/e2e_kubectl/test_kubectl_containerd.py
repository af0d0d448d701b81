"""Every kubectl from 1.27 to 1.33 through the whole real chain: API-server front ->
cloudstream:10003 -> tunnel -> edgestream (CRI backend) -> real containerd.

containerd 1.6 speaks SPDY and WebSocket v4 but refuses v5 (403): kubectl >= 1.30 tries
WebSocket v5 first and falls back to SPDY on a new request, which needs a fresh single-use CRI
URL; that fallback happens here for real, for exec, attach and port-forward.
"""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest
import pytest_asyncio

from tests.conftest import MS, free_port
from tests.integration.framework import apiserver_tls, start_cloud, start_edge

from .apiserver_front import ApiServerFront, FrontPod
from .conftest import VERSIONS, make_kubectl

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
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    edge = await start_edge(lab_pki, "edge-2", tunnel_port, "--backend", "cri", "--cri-endpoint", realstack.endpoint)
    front = ApiServerFront(stream_port, apiserver_tls(lab_pki),
                           [FrontPod("default", "web", "edge-2", ("loop", "server"), "uid-kubectl-web")])
    port = await front.start()
    try:
        await cloud.wait_for_line("tunnel up: node edge-2")
        yield port, tmp_path_factory.mktemp("kubectl-ctd"), front
    finally:
        await front.close()
        await edge.stop()
        await cloud.stop()
        realstack.remove_pod(pod_id)


@pytest.mark.parametrize("version", VERSIONS)
async def test_logs(front, version: str) -> None:
    port, tmp, _ = front
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
    port, tmp, front_server = front
    kubectl = make_kubectl(version, tmp, port)
    since = len(front_server.requests)
    rc, out, err = await kubectl.run("exec", "web", "-c", "loop", "--", "echo", "hi")
    assert (rc, out) == (0, b"hi\n"), err.decode()
    asked = front_server.requests[since:]
    if kubectl.version >= (1, 30):  # WebSocket v5 first, refused by containerd, then SPDY
        assert any("upgrade=websocket" in r and "/exec" in r for r in asked), asked
    assert any("upgrade=SPDY/3.1" in r and "/exec" in r for r in asked), asked
    # stdin to EOF over SPDY: wc needs the half-close to print anything
    rc, out, err = await kubectl.run("exec", "-i", "web", "-c", "loop", "--", "wc", "-l", input=b"a\nb\nc\n")
    assert rc == 0 and out.strip() == b"3", (out, err.decode())
    rc, out, err = await kubectl.run("exec", "web", "-c", "loop", "--", "sh", "-c", "echo oops >&2; exit 3")
    assert rc == 3 and b"oops" in err, err.decode()


@pytest.mark.skipif(shutil.which("script") is None, reason="`script` (util-linux) is needed to give kubectl a terminal")
@pytest.mark.parametrize("version", VERSIONS)
async def test_exec_tty(front, version: str) -> None:
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    command = f"{kubectl.binary} --kubeconfig {kubectl.kubeconfig} exec -it web -c loop -- tty"
    proc = await asyncio.create_subprocess_exec(
        "script", "-qec", command, "/dev/null", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=kubectl.env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"/dev/pts/" in out, (out, err)


@pytest.mark.parametrize("version", VERSIONS)
async def test_attach(front, version: str) -> None:
    port, tmp, _ = front
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


@pytest.mark.parametrize("version", VERSIONS)
async def test_port_forward(front, version: str) -> None:
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
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



@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_node_stats_through_the_node_proxy(front, version: str) -> None:
    """`kubectl get --raw /api/v1/nodes/<node>/proxy/stats/summary`: the node is found from
    X-Forwarded-Uri (Host names the API server), the summary comes from CRI stats."""
    import json

    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    rc, out, err = await kubectl.run("get", "--raw", "/api/v1/nodes/edge-2/proxy/stats/summary")
    assert rc == 0, err.decode()
    pods = {p["podRef"]["name"]: p for p in json.loads(out)["pods"]}
    assert pods["web"]["podRef"]["uid"] == "uid-kubectl-web"
    rc, out, err = await kubectl.run("get", "--raw", "/api/v1/nodes/edge-2/proxy/metrics/resource")
    assert rc == 0 and b"container_cpu_usage_seconds_total" in out, err.decode()


@pytest.mark.parametrize("version", VERSIONS)
async def test_cp_into_and_out_of_the_pod(front, version: str, tmp_path) -> None:
    """`kubectl cp` is tar over exec stdin/stdout: bulk bytes through SPDY (or the v5 fallback)."""
    import os

    port, tmp, _ = front
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
    assert rc == 0 and back.read_bytes() == payload, err.decode()
