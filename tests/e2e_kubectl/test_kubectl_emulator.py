"""Every kubectl from 1.27 to 1.33 against the emulator backend, through ``ApiServerFront``.

kubectl <= 1.29 speaks SPDY/3.1 itself, and the front passes it through unchanged, so the
emulator's SPDY server (``spdy_exec`` / ``spdy_portforward``, as a kubelet) answers real
client-go: exec, exec -i to EOF, exit codes, tty, attach, attach -i/-it, port-forward with
several connections in one session. kubectl >= 1.30 sends WebSocket v5 for exec/attach, which
the front translates into a new SPDY connection to the kubelet as a real API server does
(``front_translator``), and >= 1.31 tunnels SPDY inside WebSocket for port-forward
(``SPDY/3.1+portforward.k8s.io``), which the front unwraps: the emulator sees SPDY either way,
as a kubelet behind a real API server does (``apiserver-observed.md``).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil

import pytest
import pytest_asyncio

from tests.conftest import MS
from tests.integration.framework import apiserver_tls, start_cloud, start_edge

from .apiserver_front import ApiServerFront, FrontPod
from .conftest import VERSIONS, make_kubectl

pytestmark = [pytest.mark.kubectl, pytest.mark.integration, pytest.mark.timeout(300),
              pytest.mark.asyncio(loop_scope="module")]

needs_script = pytest.mark.skipif(shutil.which("script") is None, reason="`script` (util-linux) gives kubectl a terminal")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def front(lab_pki, tmp_path_factory):
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    edge = await start_edge(lab_pki, "edge-1", tunnel_port, "--emulate", "default/demo/app",
                            "--emulate", "default/crash/app", "--emulate-log-rate", "20")
    front = ApiServerFront(stream_port, apiserver_tls(lab_pki), [FrontPod("default", "demo", "edge-1", ("app",)),
                                                                FrontPod("default", "crash", "edge-1", ("app",))])
    port = await front.start()
    try:
        await cloud.wait_for_line("tunnel up: node edge-1")
        yield port, tmp_path_factory.mktemp("kubectl"), front
    finally:
        await front.close()
        await edge.stop()
        await cloud.stop()


@pytest.mark.parametrize("version", VERSIONS)
async def test_logs(front, version: str) -> None:
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    rc, out, err = await kubectl.run("logs", "demo", "--tail=3")
    assert rc == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 3 and all(re.fullmatch(r"default/demo/app line \d+", line) for line in lines)
    rc, out, err = await kubectl.run("logs", "demo", "--limit-bytes=10")
    assert rc == 0 and out == b"default/de", err.decode()
    rc, out, err = await kubectl.run("logs", "nosuch")
    assert rc != 0 and b"not found" in err


@pytest.mark.parametrize("version", VERSIONS)
async def test_logs_follow(front, version: str) -> None:
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    proc = await kubectl.start("logs", "-f", "demo", "--tail=1")
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20 * MS):
            while len(lines) < 6:
                lines.append((await proc.stdout.readline()).decode().strip())
    finally:
        proc.kill()
        await proc.wait()
    numbers = [int(line.rsplit(" ", 1)[1]) for line in lines]
    assert numbers == list(range(numbers[0], numbers[0] + 6))


@pytest.mark.parametrize("version", VERSIONS)
async def test_exec(front, version: str) -> None:
    port, tmp, front_server = front
    kubectl = make_kubectl(version, tmp, port)
    since = len(front_server.requests)
    rc, out, err = await kubectl.run("exec", "demo", "--", "echo", "hi")
    assert (rc, out) == (0, b"hi\n"), err.decode()
    if kubectl.version < (1, 30):  # SPDY end to end: kubectl itself against the emulator's SPDY server
        exec_requests = [r for r in front_server.requests[since:] if "/exec" in r]
        assert ["upgrade=SPDY/3.1" in r for r in exec_requests] == [True], exec_requests
    rc, out, err = await kubectl.run("exec", "-i", "demo", "--", "cat", input=b"line one\nline two\n")
    assert (rc, out) == (0, b"line one\nline two\n"), err.decode()
    rc, out, err = await kubectl.run("exec", "demo", "--", "sh", "-c", "echo to-stderr >&2; exit 3")
    assert rc == 3 and b"to-stderr" in err, err.decode()
    rc, out, err = await kubectl.run("exec", "demo", "-c", "nosuch", "--", "true")
    assert rc != 0


@needs_script
@pytest.mark.parametrize("version", VERSIONS)
async def test_exec_tty_with_an_exit_code(front, version: str) -> None:
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    command = f"{kubectl.binary} --kubeconfig {kubectl.kubeconfig} exec -it demo -- sh -c 'stty size; exit 4'"
    proc = await asyncio.create_subprocess_exec(
        "script", "-qec", command, "/dev/null", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=kubectl.env())
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 4, (out, err)
    assert re.search(rb"\d+ \d+", out), out  # the terminal size came through the resize stream


async def _attached_lines(proc: asyncio.subprocess.Process, count: int) -> list[bytes]:
    assert proc.stdout is not None
    seen: list[bytes] = []
    async with asyncio.timeout(30 * MS):
        while len(seen) < count:
            line = await proc.stdout.readline()
            assert line, "attach ended early"
            if re.search(rb"default/demo/app line \d+", line):
                seen.append(line)
    return seen


@pytest.mark.parametrize("version", VERSIONS)
async def test_attach_streams_until_the_client_leaves(front, version: str) -> None:
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    proc = await kubectl.start("attach", "demo")
    try:
        lines = await _attached_lines(proc, 4)
        numbers = [int(line.split()[-1]) for line in lines]
        assert numbers == list(range(numbers[0], numbers[0] + 4))
        assert proc.returncode is None
    finally:
        proc.kill()
        await proc.wait()


@pytest.mark.parametrize("version", VERSIONS)
async def test_attach_with_stdin(front, version: str) -> None:
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    rc, out, err = await kubectl.run("attach", "-i", "demo", input=b"typed-into-attach\n", timeout=60)
    assert b"typed-into-attach" in out, (rc, out, err)


@needs_script
@pytest.mark.parametrize("version", VERSIONS)
async def test_attach_tty(front, version: str) -> None:
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    command = f"{kubectl.binary} --kubeconfig {kubectl.kubeconfig} attach -it demo"
    proc = await asyncio.create_subprocess_exec(
        "script", "-qfc", command, "/dev/null", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=kubectl.env())
    assert proc.stdin is not None and proc.stdout is not None
    try:
        await _attached_lines(proc, 2)
        proc.stdin.write(b"typed-on-a-tty\r")
        await proc.stdin.drain()
        buffer = b""
        async with asyncio.timeout(30 * MS):
            while b"typed-on-a-tty" not in buffer:
                chunk = await proc.stdout.read(4096)
                assert chunk, buffer[-500:]
                buffer += chunk
    finally:
        proc.kill()
        await proc.wait()


async def _echo_through(local: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", local)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()  # kubectl half-closes the data stream; the echo ends and FINs back
    data = await reader.read()
    writer.close()
    return data


@pytest.mark.parametrize("version", VERSIONS)
async def test_port_forward_two_connections(front, version: str) -> None:
    port, tmp, front_server = front
    kubectl = make_kubectl(version, tmp, port)
    since = len(front_server.requests)
    proc = await kubectl.start("port-forward", "pod/demo", ":8080")
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30 * MS):
            line = (await proc.stdout.readline()).decode()
            local = int(re.search(r"127\.0\.0\.1:(\d+) -> 8080", line).group(1))  # type: ignore[union-attr]
            one, two = await asyncio.gather(_echo_through(local, b"first connection\n"),
                                            _echo_through(local, b"second " * 20000))
            assert one == b"first connection\n" and two == b"second " * 20000
            assert await _echo_through(local, b"third, after the others") == b"third, after the others"
    finally:
        proc.kill()
        await proc.wait()
    asked = front_server.requests[since:]
    assert len([r for r in asked if "/portforward" in r]) == 1, asked  # one session carried every connection


@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_restart_and_previous_logs(front, version: str) -> None:
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    rc, out, err = await kubectl.run("logs", "crash", "--previous")
    if b"not found" not in err:  # the other version's run restarted it already
        assert rc == 0
    rc, _, err = await kubectl.run("exec", "crash", "--", "kill", "1")
    assert rc == 0, err.decode()
    rc, out, err = await kubectl.run("logs", "crash", "--previous")
    assert rc == 0 and re.fullmatch(rb"(default/crash/app line \d+\n)+", out), (out, err)


@pytest.mark.parametrize("version", VERSIONS)
async def test_node_proxy(front, version: str) -> None:
    """`kubectl get --raw /api/v1/nodes/edge-1/proxy/...`: healthz, stats/summary (node figures from
    the host, emulated pods) and metrics/resource, the node found from X-Forwarded-Uri."""
    port, tmp, _ = front
    kubectl = make_kubectl(version, tmp, port)
    rc, out, err = await kubectl.run("get", "--raw", "/api/v1/nodes/edge-1/proxy/healthz")
    assert (rc, out) == (0, b"ok"), (out, err.decode())
    rc, out, err = await kubectl.run("get", "--raw", "/api/v1/nodes/edge-1/proxy/stats/summary")
    assert rc == 0, err.decode()
    summary = json.loads(out)
    assert summary["node"]["nodeName"] == "edge-1" and summary["node"]["memory"]["workingSetBytes"] > 0
    assert {p["podRef"]["name"] for p in summary["pods"]} == {"demo", "crash"}
    rc, out, err = await kubectl.run("get", "--raw", "/api/v1/nodes/edge-1/proxy/metrics/resource")
    assert rc == 0, err.decode()
    text = out.decode()
    assert re.search(r"^node_cpu_usage_seconds_total \S+ \d+$", text, re.M), text[:500]
    assert re.search(r'^container_memory_working_set_bytes\{container="app",namespace="default",pod="demo"\} ', text, re.M)
