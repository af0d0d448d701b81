"""CriBackend against a real containerd 1.6 (tests/realstack/setup.sh), driven directly.

The backend gets a ``FakeStream`` that collects what it sends, so these tests check the edge's
half on its own: real pods, real CRI log files, real single-use streaming URLs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from edgestream.backends.cri import CriBackend
from edgestream.config import EdgeConfig
from streamproto.cri.v1 import api_pb2
from streamproto.tunnel import MessageType
from tests.realstack.cri import LABEL_CONTAINER_NAME, RealStack
from tests.unit.edgestream.fakes import FakeStream

pytestmark = pytest.mark.containerd

NS = "kes-cri"


@pytest.fixture
async def backend(realstack: RealStack) -> AsyncIterator[CriBackend]:
    b = CriBackend(EdgeConfig(backend="cri", node_name="edge-real", cri_endpoint=realstack.endpoint, cri_timeout=10))
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
def pod(realstack: RealStack) -> Iterator[tuple[str, str]]:
    """A fresh host-network pod: (pod name, sandbox id); removed afterwards."""
    name = "p-" + uuid.uuid4().hex[:8]
    pod_id = realstack.run_pod(name, namespace=NS, uid="uid-" + name)
    try:
        yield name, pod_id
    finally:
        realstack.remove_pod(pod_id)


def wait_log(realstack: RealStack, cid: str, needle: bytes, timeout: float = 10.0) -> None:
    path = realstack.container_status(cid).log_path
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, "rb") as f:
                if needle in f.read():
                    return
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in {path}")


async def logs(backend: CriBackend, pod: str, container: str, query: str = "", timeout: float = 15) -> FakeStream:
    stream = FakeStream(f"/containerLogs/{NS}/{pod}/{container}", query)
    await asyncio.wait_for(backend.serve(stream), timeout)  # type: ignore[arg-type]
    assert stream.status == (200, "")
    return stream


# ------------------------------------------------------------------------- logs


async def test_logs_tail_streams_and_timestamps(
    realstack: RealStack, backend: CriBackend, pod: tuple[str, str]
) -> None:
    name, pod_id = pod
    cid = realstack.run_container(
        pod_id, "app", ["sh", "-c", "for i in $(seq 1 20); do echo line $i; done; echo oops >&2; sleep 3600"]
    )
    wait_log(realstack, cid, b"oops")
    wait_log(realstack, cid, b"line 20")
    assert (await logs(backend, name, "app", "tailLines=3&stream=Stdout")).body == b"line 18\nline 19\nline 20\n"
    assert (await logs(backend, name, "app", "stream=Stderr")).body == b"oops\n"
    everything = (await logs(backend, name, "app")).body
    assert sorted(everything.splitlines()) == sorted([f"line {i}".encode() for i in range(1, 21)] + [b"oops"])
    assert (await logs(backend, name, "app", "limitBytes=12&stream=Stdout")).body == b"line 1\nline "
    stamped = (await logs(backend, name, "app", "tailLines=1&stream=Stdout&timestamps=true")).body
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) line 20\n", stamped), stamped
    assert (await logs(backend, name, "app", "sinceSeconds=3600&tailLines=1&stream=Stdout")).body == b"line 20\n"
    assert (await logs(backend, name, "app", "sinceTime=2099-01-01T00:00:00Z")).body == b""


async def test_follow_picks_up_new_lines_and_ends_when_the_container_exits(
    realstack: RealStack, backend: CriBackend, pod: tuple[str, str]
) -> None:
    name, pod_id = pod
    script = "echo start; i=0; while [ $i -lt 12 ]; do sleep 0.25; echo tick $i; i=$((i+1)); done; echo bye >&2"
    cid = realstack.run_container(pod_id, "ticker", ["sh", "-c", script])
    wait_log(realstack, cid, b"start")
    stream = FakeStream(f"/containerLogs/{NS}/{name}/ticker", "follow=true")
    task = asyncio.create_task(backend.serve(stream))  # type: ignore[arg-type]
    await stream.wait_for(b"start\n", 10)
    await stream.wait_for(b"tick 2\n", 10)
    assert not task.done()
    await stream.wait_for(b"tick 11\n", 15)
    await asyncio.wait_for(task, 10)  # the container exited: the follow ends by itself
    # stdout and stderr are copied to the file by two goroutines: only each one's order is kept
    lines = stream.body.splitlines(keepends=True)
    assert [x for x in lines if x != b"bye\n"] == [b"start\n"] + [b"tick %d\n" % i for i in range(12)]
    assert lines.count(b"bye\n") == 1
    state = (await asyncio.to_thread(realstack.container_status, cid)).state
    assert state == api_pb2.CONTAINER_EXITED


async def test_follow_is_cancelled_by_the_cloud(
    realstack: RealStack, backend: CriBackend, pod: tuple[str, str]
) -> None:
    name, pod_id = pod
    cid = realstack.run_container(pod_id, "quiet", ["sh", "-c", "echo once; sleep 3600"])
    wait_log(realstack, cid, b"once")
    stream = FakeStream(f"/containerLogs/{NS}/{name}/quiet", "follow=true")
    task = asyncio.create_task(backend.serve(stream))  # type: ignore[arg-type]
    await stream.wait_for(b"once\n")
    await asyncio.sleep(1.5)  # idle, with a status check or two
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_previous_after_a_restart(realstack: RealStack, backend: CriBackend, pod: tuple[str, str]) -> None:
    name, pod_id = pod
    first = realstack.run_container(pod_id, "app", ["sh", "-c", "echo first-run; sleep 3600"], attempt=0)
    wait_log(realstack, first, b"first-run")
    realstack.stop_container(first)
    second = realstack.run_container(pod_id, "app", ["sh", "-c", "echo second-run; sleep 3600"], attempt=1)
    wait_log(realstack, second, b"second-run")
    assert (await logs(backend, name, "app")).body == b"second-run\n"
    assert (await logs(backend, name, "app", "previous=true")).body == b"first-run\n"
    # the previous instance has exited: following it ends at once
    assert (await logs(backend, name, "app", "previous=true&follow=true", timeout=5)).body == b"first-run\n"


async def test_logs_errors(realstack: RealStack, backend: CriBackend, pod: tuple[str, str]) -> None:
    name, pod_id = pod
    realstack.run_container(pod_id, "app", ["sh", "-c", "sleep 3600"])
    from streamproto.tunnel import BackendError, NotFound

    with pytest.raises(NotFound, match=r'container "nope" is not in pod "kes-cri/.*" \(its containers: app\)'):
        await backend.serve(FakeStream(f"/containerLogs/{NS}/{name}/nope"))  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="is not on this node"):
        await backend.serve(FakeStream(f"/containerLogs/{NS}/no-such-pod/app"))  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="previous terminated container"):
        await backend.serve(FakeStream(f"/containerLogs/{NS}/{name}/app", "previous=true"))  # type: ignore[arg-type]


# ------------------------------------------------------------------------- exec / attach / port-forward

SPDY_HEADERS = (
    ("Host", "10.0.0.5:10250"),
    ("Authorization", "Bearer not-for-containerd"),
    ("Connection", "Upgrade"),
    ("Upgrade", "SPDY/3.1"),
    ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
    ("X-Stream-Protocol-Version", "v2.channel.k8s.io"),
    ("X-Stream-Protocol-Version", "channel.k8s.io"),
    ("Content-Length", "0"),
)


def ws_headers(protocol: str) -> tuple[tuple[str, str], ...]:
    return (
        ("Host", "10.0.0.5:10250"),
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-Websocket-Key", base64.b64encode(os.urandom(16)).decode()),
        ("Sec-Websocket-Version", "13"),
        ("Sec-Websocket-Protocol", protocol),
    )


def masked(payload: bytes, opcode: int = 2) -> bytes:
    """One client -> server WebSocket frame (clients must mask)."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """Server -> client WebSocket frames (unmasked) in ``data``, after the HTTP head."""
    out = []
    i = data.index(b"\r\n\r\n") + 4
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = struct.unpack("!H", data[i : i + 2])[0], i + 2
        elif n == 127:
            n, i = struct.unpack("!Q", data[i : i + 8])[0], i + 8
        if i + n > len(data):
            break
        out.append((opcode, data[i : i + n]))
        i += n
    return out


def channel(data: bytes, ch: int) -> bytes:
    return b"".join(p[1:] for op, p in frames(data) if op == 2 and p and p[0] == ch)


async def upgrade(
    backend: CriBackend,
    path: str,
    query: str,
    headers: tuple[tuple[str, str], ...],
    kind: MessageType = MessageType.EXEC_CONNECT,
    method: str = "POST",
) -> tuple[FakeStream, asyncio.Task[None]]:
    stream = FakeStream(path, query, kind=kind, method=method, headers=headers)
    task = asyncio.create_task(backend.serve(stream))  # type: ignore[arg-type]
    await stream.wait_for(b"\r\n\r\n", 10)
    return stream, task


async def end(stream: FakeStream, task: asyncio.Task[None]) -> None:
    stream.inbound.feed_eof()  # what the session does when the cloud removes the stream
    await asyncio.wait_for(task, 10)


@pytest.fixture
def sleeper(realstack: RealStack, pod: tuple[str, str]) -> str:
    name, pod_id = pod
    realstack.wait_running(realstack.run_container(pod_id, "box", ["sh", "-c", "echo ready; sleep 3600"]))
    return name


async def test_exec_spdy_upgrade_is_switched(backend: CriBackend, sleeper: str) -> None:
    stream, task = await upgrade(
        backend, f"/exec/{NS}/{sleeper}/box", "command=echo&command=hi&output=1&error=1", SPDY_HEADERS
    )
    assert stream.body.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), stream.body
    assert b"X-Stream-Protocol-Version: v4.channel.k8s.io" in stream.body
    await end(stream, task)
    # every request gets a fresh single-use URL: a second exec works too
    stream, task = await upgrade(backend, f"/exec/{NS}/{sleeper}/box", "command=true&output=1", SPDY_HEADERS)
    assert stream.body.startswith(b"HTTP/1.1 101 ")
    await end(stream, task)


async def test_attach_and_port_forward_spdy_upgrades_are_switched(backend: CriBackend, sleeper: str) -> None:
    stream, task = await upgrade(
        backend, f"/attach/{NS}/{sleeper}/box", "output=1&error=1", SPDY_HEADERS, kind=MessageType.ATTACH_CONNECT
    )
    assert stream.body.startswith(b"HTTP/1.1 101 "), stream.body
    await end(stream, task)
    pf = tuple((k, "portforward.k8s.io" if k == "X-Stream-Protocol-Version" else v) for k, v in SPDY_HEADERS[:5])
    stream, task = await upgrade(backend, f"/portForward/{NS}/{sleeper}", "", pf, kind=MessageType.PORTFORWARD_CONNECT)
    assert stream.body.startswith(b"HTTP/1.1 101 "), stream.body
    await end(stream, task)


async def test_exec_websocket_v5_is_refused_and_v4_works(backend: CriBackend, sleeper: str) -> None:
    path = f"/exec/{NS}/{sleeper}/box"
    stream, task = await upgrade(
        backend, path, "command=echo&command=hi&output=1", ws_headers("v5.channel.k8s.io"), method="GET"
    )
    await asyncio.wait_for(task, 10)  # containerd answers and closes: the relay ends by itself
    assert stream.body.startswith(b"HTTP/1.1 403 "), stream.body  # relayed unchanged: kubectl falls back to SPDY
    # kubectl's fallback is a new request: a fresh URL, and v4 is switched
    stream, task = await upgrade(
        backend, path, "command=echo&command=hi&output=1&error=1", ws_headers("v4.channel.k8s.io"), method="GET"
    )
    assert stream.body.startswith(b"HTTP/1.1 101 "), stream.body
    assert (
        b"Sec-Websocket-Protocol: v4.channel.k8s.io" in stream.body
        or b"Sec-WebSocket-Protocol: v4.channel.k8s.io" in stream.body
    )
    await stream.wait_for(b'{"metadata":{},"status":"Success"}', 10)
    assert channel(stream.body, 1) == b"hi\n"
    await asyncio.wait_for(task, 10)


async def test_exec_websocket_stdin_round_trip(backend: CriBackend, sleeper: str) -> None:
    stream, task = await upgrade(
        backend,
        f"/exec/{NS}/{sleeper}/box",
        "command=sh&command=-c&command=head+-n1%3B+echo+done%3B+exit+7&input=1&output=1&error=1",
        ws_headers("v4.channel.k8s.io"),
        method="GET",
    )
    assert stream.body.startswith(b"HTTP/1.1 101 "), stream.body
    stream.inbound.feed(masked(b"\x00piped-line\n"))
    await stream.wait_for(b"NonZeroExitCode", 10)
    assert channel(stream.body, 1) == b"piped-line\ndone\n"
    status = json.loads(channel(stream.body, 3))
    assert status["details"]["causes"][0] == {"reason": "ExitCode", "message": "7"}
    await asyncio.wait_for(task, 10)


async def test_port_forward_websocket_reaches_the_pod(backend: CriBackend, sleeper: str) -> None:
    # A host-network pod shares the node's network: a listener on 127.0.0.1 is "in the pod".
    async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(100)
        writer.write(b"pong:" + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(pong, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        stream, task = await upgrade(
            backend,
            f"/portForward/{NS}/{sleeper}",
            f"port={port}",
            ws_headers("v4.channel.k8s.io"),
            kind=MessageType.PORTFORWARD_CONNECT,
            method="GET",
        )
        assert stream.body.startswith(b"HTTP/1.1 101 "), stream.body
        stream.inbound.feed(masked(b"\x00ping"))
        await stream.wait_for(b"pong:ping", 10)
        data = channel(stream.body, 0)
        assert data == struct.pack("<H", port) + b"pong:ping"  # first the port, little-endian, then the data
        await end(stream, task)
    finally:
        server.close()
        await server.wait_closed()


async def test_exec_errors_are_http_responses(realstack: RealStack, backend: CriBackend, pod: tuple[str, str]) -> None:
    name, pod_id = pod
    cid = realstack.run_container(pod_id, "short", ["true"])
    for _ in range(100):
        if realstack.container_status(cid).state == api_pb2.CONTAINER_EXITED:
            break
        await asyncio.sleep(0.05)
    cases = [
        (f"/exec/{NS}/{name}/short", 400, b'container "short" in pod "kes-cri/' + name.encode() + b'" is not running'),
        (f"/exec/{NS}/{name}/missing", 404, b"(its containers: short)"),
        (f"/exec/{NS}/nobody/x", 404, b'pod "kes-cri/nobody" is not on this node'),
    ]
    for path, status, text in cases:
        stream = FakeStream(
            path, "command=ls&output=1", kind=MessageType.EXEC_CONNECT, method="POST", headers=SPDY_HEADERS
        )
        await asyncio.wait_for(backend.serve(stream), 10)  # type: ignore[arg-type]
        assert stream.body.startswith(b"HTTP/1.1 %d " % status), stream.body
        status_obj = json.loads(stream.body.partition(b"\r\n\r\n")[2])  # a metav1.Status, as the kubelet refuses
        assert status_obj["kind"] == "Status" and status_obj["code"] == status, status_obj
        assert text.decode() in status_obj["message"], status_obj


# ------------------------------------------------------------------------- stats


async def metrics(backend: CriBackend, path: str) -> bytes:
    stream = FakeStream(path, kind=MessageType.METRIC_CONNECT)
    await asyncio.wait_for(backend.serve(stream), 15)  # type: ignore[arg-type]
    assert stream.status == (200, "")
    return stream.body


async def test_stats_summary_and_resource_metrics(
    realstack: RealStack, backend: CriBackend, pod: tuple[str, str]
) -> None:
    name, pod_id = pod
    cid = realstack.run_container(pod_id, "burn", ["sh", "-c", "while true; do :; done"])
    realstack.wait_running(cid)
    await asyncio.sleep(1.0)
    doc = json.loads(await metrics(backend, "/stats/summary"))
    assert doc["node"]["nodeName"] == "edge-real"
    assert doc["node"]["runtime"]["imageFs"]["usedBytes"] >= 0  # containerd measures it in the background
    [entry] = [p for p in doc["pods"] if p["podRef"]["name"] == name]
    assert entry["podRef"] == {"name": name, "namespace": NS, "uid": "uid-" + name}
    [c] = entry["containers"]
    assert c["name"] == "burn" and c["startTime"]
    assert c["cpu"]["usageCoreNanoSeconds"] > 100_000_000  # it burnt ~1 s of cpu
    assert c["memory"]["workingSetBytes"] > 0
    assert entry["cpu"]["usageCoreNanoSeconds"] >= c["cpu"]["usageCoreNanoSeconds"]
    assert entry["memory"]["workingSetBytes"] > 0
    text = (await metrics(backend, "/metrics/resource")).decode()
    m = re.search(
        rf'^container_cpu_usage_seconds_total{{container="burn",namespace="{NS}",pod="{name}"}} (\S+) (\d+)$',
        text,
        re.MULTILINE,
    )
    assert m and float(m[1]) > 0.1 and abs(int(m[2]) - time.time() * 1000) < 60_000, text
    assert re.search(
        rf'^container_memory_working_set_bytes{{container="burn",namespace="{NS}",pod="{name}"}} [1-9]\d* \d+$',
        text,
        re.MULTILINE,
    )
    assert re.search(rf'^pod_cpu_usage_seconds_total{{namespace="{NS}",pod="{name}"}} \S+ \d+$', text, re.MULTILINE)
    assert re.search(
        rf'^pod_memory_working_set_bytes{{namespace="{NS}",pod="{name}"}} [1-9]\d* \d+$', text, re.MULTILINE
    )


async def test_pod_level_stats_when_the_sandbox_has_a_cgroup(realstack: RealStack, backend: CriBackend) -> None:
    """kubelet gives every sandbox a cgroup parent; then containerd's ListPodSandboxStats works."""
    name = "cg-" + uuid.uuid4().hex[:8]
    config = realstack.pod_config(name, namespace=NS, uid="uid-" + name)
    config.linux.cgroup_parent = f"/{CGROUP_PARENT}/pod{config.metadata.uid}"
    os.makedirs(config.log_directory, exist_ok=True)
    pod_id = realstack.runtime.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
    try:
        labels = dict(config.labels)
        labels[LABEL_CONTAINER_NAME] = "burn"
        cc = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name="burn"),
            image=api_pb2.ImageSpec(image="docker.io/library/busybox:latest"),
            command=["sh", "-c", "while true; do :; done"],
            labels=labels,
            log_path="burn/0.log",
            linux=api_pb2.LinuxContainerConfig(
                security_context=api_pb2.LinuxContainerSecurityContext(
                    namespace_options=config.linux.security_context.namespace_options
                )
            ),
        )
        cid = realstack.runtime.CreateContainer(
            api_pb2.CreateContainerRequest(pod_sandbox_id=pod_id, config=cc, sandbox_config=config), timeout=30
        ).container_id
        realstack.runtime.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=30)
        realstack.wait_running(cid)
        await asyncio.sleep(1.0)
        others = [p for p in realstack.list_pods() if p.id != pod_id]
        doc = json.loads(await metrics(backend, "/stats/summary"))
        [entry] = [p for p in doc["pods"] if p["podRef"]["name"] == name]
        assert entry["cpu"]["usageCoreNanoSeconds"] > 100_000_000
        assert entry["memory"]["workingSetBytes"] > 0
        if not others:  # pod cgroup stats come with the process count
            assert entry["process_stats"]["process_count"] >= 1
        assert entry["containers"][0]["cpu"]["usageCoreNanoSeconds"] > 100_000_000
    finally:
        realstack.remove_pod(pod_id)
        remove_cgroups(f"{CGROUP_PARENT}/pod{config.metadata.uid}")


CGROUP_PARENT = "kes-cri-test"


def remove_cgroups(relative: str) -> None:
    """runc leaves the (empty) parent cgroups it created; kubelet would remove them itself."""
    root = "/sys/fs/cgroup"
    for _ in range(20):
        left = False
        for hierarchy in os.listdir(root):
            for path in (os.path.join(root, hierarchy, relative), os.path.join(root, hierarchy, CGROUP_PARENT)):
                if os.path.isdir(path):
                    try:
                        os.rmdir(path)
                    except OSError:
                        left = True
        if not left:
            return
        time.sleep(0.1)


async def test_other_metrics_paths_are_not_found(backend: CriBackend) -> None:
    from streamproto.tunnel import NotFound

    with pytest.raises(NotFound, match="cadvisor"):
        await backend.serve(FakeStream("/metrics/cadvisor", kind=MessageType.METRIC_CONNECT))  # type: ignore[arg-type]


async def test_unreachable_containerd_is_a_clear_error(tmp_path: os.PathLike[str]) -> None:
    from streamproto.tunnel import BackendError

    sock = os.path.join(str(tmp_path), "none.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(sock)  # a socket file nobody listens on
    s.close()
    b = CriBackend(EdgeConfig(backend="cri", cri_endpoint="unix://" + sock, cri_timeout=3))
    try:
        with pytest.raises(BackendError, match=f"containerd is not reachable at {sock}"):
            await b.serve(FakeStream("/containerLogs/ns/p/c"))  # type: ignore[arg-type]
    finally:
        await b.close()
