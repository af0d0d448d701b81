"""CriBackend with a fake CRI client: resolution, the upgrade relay, stats (no containerd)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import pytest

from edgestream.backends.cri import CriBackend
from edgestream.stream import http_error_response
from edgestream.backends.cri_client import CriClient
from edgestream.config import EdgeConfig
from edgestream.logs_options import BadLogOptions, LogOptions
from streamproto.cri.v1 import api_pb2
from streamproto.tunnel import Ambiguous, BackendError, MessageType, NotFound, NotRunning
from tests.unit.edgestream.fakes import FakeStream

RUNNING, EXITED = api_pb2.CONTAINER_RUNNING, api_pb2.CONTAINER_EXITED
READY, NOTREADY = api_pb2.SANDBOX_READY, api_pb2.SANDBOX_NOTREADY


def pod_labels(ns: str, name: str, uid: str) -> dict[str, str]:
    return {"io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.name": name, "io.kubernetes.pod.uid": uid}


def sandbox(sid: str, ns: str, name: str, uid: str, state: int = READY, created: int = 1) -> api_pb2.PodSandbox:
    return api_pb2.PodSandbox(
        id=sid,
        state=state,
        created_at=created,
        labels=pod_labels(ns, name, uid),
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace=ns, uid=uid),
    )


def container(
    cid: str, sb: api_pb2.PodSandbox, name: str, attempt: int = 0, state: int = RUNNING, created: int = 1
) -> api_pb2.Container:
    labels = dict(sb.labels)
    labels["io.kubernetes.container.name"] = name
    return api_pb2.Container(
        id=cid,
        pod_sandbox_id=sb.id,
        state=state,
        created_at=created,
        labels=labels,
        metadata=api_pb2.ContainerMetadata(name=name, attempt=attempt),
    )


def matches(labels: Mapping[str, str], selector: Mapping[str, str] | None) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


class FakeCri:
    """The subset of CriClient the backend uses, over in-memory protobufs."""

    def __init__(self) -> None:
        self.sandboxes: list[api_pb2.PodSandbox] = []
        self.containers: list[api_pb2.Container] = []
        self.log_paths: dict[str, str] = {}
        self.url = "http://127.0.0.1:1/exec/TOKEN"
        self.calls: list[tuple[str, Any]] = []
        self.pod_stats: list[api_pb2.PodSandboxStats] | Exception = BackendError("cgroupPath is empty")
        self.container_stats: list[api_pb2.ContainerStats] = []
        self.closed = False

    async def list_pod_sandboxes(self, labels=None, *, state=None, id=""):
        return [s for s in self.sandboxes if matches(s.labels, labels) and (state is None or s.state == state)]

    async def list_containers(self, labels=None, *, pod_sandbox_id="", state=None):
        return [
            c
            for c in self.containers
            if matches(c.labels, labels)
            and (not pod_sandbox_id or c.pod_sandbox_id == pod_sandbox_id)
            and (state is None or c.state == state)
        ]

    async def container_status(self, cid):
        for c in self.containers:
            if c.id == cid:
                return api_pb2.ContainerStatus(id=cid, state=c.state, log_path=self.log_paths.get(cid, ""))
        raise NotFound(f"CRI ContainerStatus: container {cid} not found")

    async def exec(self, cid, cmd, *, tty, stdin, stdout, stderr):
        self.calls.append(("exec", (cid, list(cmd), tty, stdin, stdout, stderr)))
        return self.url

    async def attach(self, cid, *, tty, stdin, stdout, stderr):
        self.calls.append(("attach", (cid, tty, stdin, stdout, stderr)))
        return self.url

    async def port_forward(self, sid, ports=()):
        self.calls.append(("portforward", (sid, list(ports))))
        return self.url.replace("/exec/", "/portforward/")

    async def list_pod_sandbox_stats(self, labels=None, *, id=""):
        if isinstance(self.pod_stats, Exception):
            raise self.pod_stats
        return self.pod_stats

    async def list_container_stats(self, labels=None, *, pod_sandbox_id="", id=""):
        return self.container_stats

    async def image_fs_info(self):
        return [api_pb2.FilesystemUsage(timestamp=5 * 10**18, used_bytes=api_pb2.UInt64Value(value=1234))]

    async def close(self):
        self.closed = True


@pytest.fixture
def cri() -> FakeCri:
    return FakeCri()


@pytest.fixture
def backend(cri: FakeCri) -> CriBackend:
    config = EdgeConfig(backend="cri", node_name="edge-1", cri_timeout=5)
    return CriBackend(config, client=cri)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- resolution


async def test_pod_not_found(backend: CriBackend) -> None:
    with pytest.raises(NotFound, match='pod "ns/web" is not on this node'):
        await backend.resolve("ns", "web", "app")


async def test_container_not_found_lists_the_names(backend: CriBackend, cri: FakeCri) -> None:
    sb = sandbox("s1", "ns", "web", "u1")
    cri.sandboxes = [sb]
    cri.containers = [container("c1", sb, "app"), container("c2", sb, "sidecar")]
    with pytest.raises(NotFound, match=r'container "db" is not in pod "ns/web" \(its containers: app, sidecar\)'):
        await backend.resolve("ns", "web", "db")


async def test_ready_sandbox_and_running_instance_win(backend: CriBackend, cri: FakeCri) -> None:
    old = sandbox("s-old", "ns", "web", "u1", state=NOTREADY, created=1)
    new = sandbox("s-new", "ns", "web", "u1", created=2)
    cri.sandboxes = [old, new]
    cri.containers = [
        container("a0", old, "app", attempt=0, state=EXITED),
        container("a1", new, "app", attempt=1, state=EXITED),
        container("a2", new, "app", attempt=2, state=RUNNING),
    ]
    got = await backend.resolve("ns", "web", "app")
    assert (got.sandbox.id, got.container.id) == ("s-new", "a2")
    assert (await backend.resolve("ns", "web", "app", previous=True)).container.id == "a1"
    cri.containers[2] = container("a2", new, "app", attempt=2, state=EXITED)
    # nothing running: logs still show the newest instance; exec refuses
    assert (await backend.resolve("ns", "web", "app")).container.id == "a2"
    with pytest.raises(NotRunning, match=r'container "app" in pod "ns/web" is not running \(state exited\)'):
        await backend.resolve("ns", "web", "app", require_running=True)


async def test_previous_falls_back_to_the_newest_exited(backend: CriBackend, cri: FakeCri) -> None:
    sb = sandbox("s1", "ns", "web", "u1")
    cri.sandboxes = [sb]
    cri.containers = [
        container("x0", sb, "app", 0, EXITED),
        container("x3", sb, "app", 3, EXITED, created=3),
        container("x5", sb, "app", 5, RUNNING, created=5),
    ]
    assert (await backend.resolve("ns", "web", "app", previous=True)).container.id == "x3"
    cri.containers = [container("x5", sb, "app", 5, RUNNING)]
    with pytest.raises(BadLogOptions, match='previous terminated container "app" in pod "ns/web" not found'):
        await backend.resolve("ns", "web", "app", previous=True)


async def test_two_live_pods_with_one_name_are_ambiguous_unless_the_uid_is_given(
    backend: CriBackend, cri: FakeCri
) -> None:
    a, b = sandbox("sa", "ns", "web", "uid-a", created=1), sandbox("sb", "ns", "web", "uid-b", created=2)
    cri.sandboxes = [a, b]
    cri.containers = [container("ca", a, "app"), container("cb", b, "app")]
    with pytest.raises(Ambiguous, match="uid-a, uid-b"):
        await backend.resolve("ns", "web", "app")
    assert (await backend.resolve("ns", "web", "app", uid="uid-a")).container.id == "ca"
    # the uid form of the path is honoured although parse_pod_path drops the uid
    stream = FakeStream("/exec/ns/web/uid-a/app", "command=true&output=1", kind=MessageType.EXEC_CONNECT, method="POST")
    await backend.serve(stream)  # type: ignore[arg-type]
    assert cri.calls[0] == ("exec", ("ca", ["true"], False, False, True, False))


# ------------------------------------------------------------------------- logs


async def test_logs_reads_the_status_log_path(backend: CriBackend, cri: FakeCri, tmp_path: Path) -> None:
    sb = sandbox("s1", "ns", "web", "u1")
    cri.sandboxes = [sb]
    cri.containers = [container("c0", sb, "app", 0, EXITED), container("c1", sb, "app", 1, EXITED)]
    for i in (0, 1):
        (tmp_path / f"{i}.log").write_bytes(f"2026-11-24T19:19:13Z stdout F attempt {i}\n".encode())
        cri.log_paths[f"c{i}"] = str(tmp_path / f"{i}.log")
    stream = FakeStream("/containerLogs/ns/web/app", "follow=true")
    await asyncio.wait_for(backend.serve(stream), 5)  # type: ignore[arg-type]
    assert (stream.status, stream.body) == ((200, ""), b"attempt 1\n")
    stream = FakeStream("/containerLogs/ns/web/app", "previous=true")
    await backend.serve(stream)  # type: ignore[arg-type]
    assert stream.body == b"attempt 0\n"


# ------------------------------------------------------------------------- exec / attach / port-forward


class FakeStreamingServer:
    """Plays containerd's streaming server: records the request head, answers, echoes."""

    def __init__(self, answer: bytes = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\n") -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        self.received = b""
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(self.answer)
        if not self.answer.startswith(b"HTTP/1.1 101"):
            writer.close()
            return
        while data := await reader.read(65536):
            self.received += data
            if data == b"quit":
                break
            writer.write(b"echo:" + data)
        writer.close()


UPGRADE_HEADERS = (
    ("Host", "apiserver:6443"),
    ("Authorization", "Bearer secret"),
    ("Connection", "Upgrade"),
    ("Upgrade", "SPDY/3.1"),
    ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
    ("Transfer-Encoding", "chunked"),
    ("User-Agent", "kubectl/v1.33"),
    ("X-Smuggled", "a\r\nInjected: 1"),  # never split into two header lines
)


def one_pod(cri: FakeCri) -> None:
    sb = sandbox("s1", "ns", "web", "u1")
    cri.sandboxes = [sb]
    cri.containers = [container("c1", sb, "app")]


async def test_exec_replays_the_upgrade_and_splices_bytes(backend: CriBackend, cri: FakeCri) -> None:
    one_pod(cri)
    async with FakeStreamingServer() as server:
        cri.url = f"http://127.0.0.1:{server.port}/exec/AbCd1234"
        stream = FakeStream(
            "/exec/ns/web/app",
            "command=sh&command=-c&command=echo+hi&input=1&output=1&error=1&tty=1",
            kind=MessageType.EXEC_CONNECT,
            method="POST",
            headers=UPGRADE_HEADERS,
        )
        task = asyncio.create_task(backend.serve(stream))  # type: ignore[arg-type]
        await stream.wait_for(b"HTTP/1.1 101 Switching Protocols\r\n")
        stream.inbound.feed(b"frame-1")
        await stream.wait_for(b"echo:frame-1")
        stream.inbound.feed(b"quit")
        await asyncio.wait_for(task, 5)  # containerd closed: the relay returns
    # tty: stderr is folded into stdout, as kubelet does
    assert cri.calls == [("exec", ("c1", ["sh", "-c", "echo hi"], True, True, True, False))]
    assert server.heads[0] == (
        b"POST /exec/AbCd1234 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\n"
        b"User-Agent: kubectl/v1.33\r\n\r\n" % server.port
    )
    assert stream.body.startswith(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\necho:frame-1")


async def test_a_refusal_is_relayed_unchanged(backend: CriBackend, cri: FakeCri) -> None:
    one_pod(cri)
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nForbidden"
    async with FakeStreamingServer(refusal) as server:
        cri.url = f"http://127.0.0.1:{server.port}/attach/tok"
        stream = FakeStream(
            "/attach/ns/web/app",
            "output=1",
            kind=MessageType.ATTACH_CONNECT,
            method="GET",
            headers=(
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
            ),
        )
        await asyncio.wait_for(backend.serve(stream), 5)  # type: ignore[arg-type]
    assert stream.body == refusal
    assert b"GET /attach/tok HTTP/1.1\r\n" in server.heads[0] and b"Sec-WebSocket-Protocol: v5" in server.heads[0]
    assert cri.calls == [("attach", ("c1", False, False, True, False))]


async def test_the_cloud_ending_the_stream_ends_the_relay(backend: CriBackend, cri: FakeCri) -> None:
    one_pod(cri)
    async with FakeStreamingServer() as server:
        cri.url = f"http://127.0.0.1:{server.port}/exec/tok"
        stream = FakeStream(
            "/exec/ns/web/app",
            "command=cat&input=1",
            kind=MessageType.EXEC_CONNECT,
            method="POST",
            headers=UPGRADE_HEADERS,
        )
        task = asyncio.create_task(backend.serve(stream))  # type: ignore[arg-type]
        await stream.wait_for(b"HTTP/1.1 101")
        stream.inbound.feed_eof()
        await asyncio.wait_for(task, 5)


async def test_port_forward_forwards_the_websocket_port_query(backend: CriBackend, cri: FakeCri) -> None:
    one_pod(cri)
    async with FakeStreamingServer() as server:
        cri.url = f"http://127.0.0.1:{server.port}/exec/tok"
        stream = FakeStream(
            "/portForward/ns/web",
            "port=8080&port=9090",
            kind=MessageType.PORTFORWARD_CONNECT,
            method="GET",
            headers=(("Connection", "Upgrade"), ("Upgrade", "websocket")),
        )
        task = asyncio.create_task(backend.serve(stream))  # type: ignore[arg-type]
        await stream.wait_for(b"HTTP/1.1 101")
        stream.inbound.feed(b"quit")
        await asyncio.wait_for(task, 5)
    assert cri.calls == [("portforward", ("s1", [8080, 9090]))]
    assert server.heads[0].startswith(b"GET /portforward/tok?port=8080&port=9090 HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("path", "query", "kind", "status", "text"),
    [
        (
            "/exec/ns/nope/app",
            "command=ls&output=1",
            MessageType.EXEC_CONNECT,
            404,
            'pod "ns/nope" is not on this node',
        ),
        ("/exec/ns/web/db", "command=ls&output=1", MessageType.EXEC_CONNECT, 404, 'container "db" is not in pod'),
        ("/exec/ns/web/app", "output=1", MessageType.EXEC_CONNECT, 400, "at least one command"),
        ("/exec/ns/web/app", "command=ls", MessageType.EXEC_CONNECT, 400, "at least 1 of stdin, stdout, stderr"),
        ("/attach/ns/web/old", "output=1", MessageType.ATTACH_CONNECT, 400, "is not running (state exited)"),
        ("/portForward/ns/web", "port=http", MessageType.PORTFORWARD_CONNECT, 400, "is not a number"),
    ],
)
async def test_upgrade_errors_are_http_responses(
    backend: CriBackend, cri: FakeCri, path: str, query: str, kind: MessageType, status: int, text: str
) -> None:
    one_pod(cri)
    cri.containers.append(container("o1", cri.sandboxes[0], "old", state=EXITED))
    stream = FakeStream(path, query, kind=kind, method="POST", headers=UPGRADE_HEADERS)
    await backend.serve(stream)  # type: ignore[arg-type]
    head, _, body = stream.body.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), stream.body
    assert b"Content-Length: %d" % len(body) in head and b"Connection: close" in head
    assert b"Content-Type: application/json" in head
    status_body = json.loads(body)  # a metav1.Status, as the kubelet answers
    assert status_body["kind"] == "Status" and status_body["code"] == status and text in status_body["message"]
    assert cri.calls == []


async def test_an_unreachable_streaming_server_is_a_502(backend: CriBackend, cri: FakeCri) -> None:
    one_pod(cri)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    cri.url = f"http://127.0.0.1:{port}/exec/tok"
    stream = FakeStream("/exec/ns/web/app", "command=ls&output=1", kind=MessageType.EXEC_CONNECT, method="POST")
    await backend.serve(stream)  # type: ignore[arg-type]
    assert stream.body.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"cannot reach containerd's streaming server" in stream.body


def test_http_error_response() -> None:
    body = b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"no such pod",' \
        b'"reason":"NotFound","code":404}\n'
    assert http_error_response(404, "no such pod") == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(body) + body
    )
    # h11 (the reference parser) reads it as one complete response
    import h11

    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(http_error_response(502, "the kubelet said: \"no\"\n"))
    response, data, end = client.next_event(), client.next_event(), client.next_event()
    assert response.status_code == 502 and isinstance(end, h11.EndOfMessage)
    assert json.loads(data.data) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                     "message": 'the kubelet said: "no"', "code": 502}


# ------------------------------------------------------------------------- stats


def cstats(cid: str, cpu: int, ws: int, nano_cores: int = 0, t: int = 1_800_000_000 * 10**9) -> api_pb2.ContainerStats:
    return api_pb2.ContainerStats(
        attributes=api_pb2.ContainerAttributes(id=cid),
        cpu=api_pb2.CpuUsage(
            timestamp=t,
            usage_core_nano_seconds=api_pb2.UInt64Value(value=cpu),
            usage_nano_cores=api_pb2.UInt64Value(value=nano_cores),
        ),
        memory=api_pb2.MemoryUsage(
            timestamp=t,
            working_set_bytes=api_pb2.UInt64Value(value=ws),
            usage_bytes=api_pb2.UInt64Value(value=ws + 1),
            available_bytes=api_pb2.UInt64Value(value=0),
        ),
        writable_layer=api_pb2.FilesystemUsage(timestamp=0),  # not measured yet
    )


def stats_pod(cri: FakeCri) -> None:
    sb = sandbox("s1", "ns", "web", "u1", created=1_700_000_000 * 10**9)
    cri.sandboxes = [sb, sandbox("s2", "ns", "gone", "u2", state=NOTREADY)]
    cri.containers = [
        container("c1", sb, "app", created=1_700_000_001 * 10**9),
        container("c2", sb, "side"),
        container("c0", sb, "app", state=EXITED),
    ]
    cri.container_stats = [cstats("c1", 2_500_000_000, 4096, nano_cores=1000), cstats("c2", 500_000_000, 1024)]


async def test_summary_falls_back_to_container_sums(backend: CriBackend, cri: FakeCri) -> None:
    stats_pod(cri)
    stream = FakeStream("/stats/summary", kind=MessageType.METRIC_CONNECT)
    await backend.serve(stream)  # type: ignore[arg-type]
    doc = json.loads(stream.body)
    assert doc["node"]["nodeName"] == "edge-1"
    # the node's figures are the host's own (root cgroup), never a sum of pods
    assert doc["node"]["cpu"]["usageCoreNanoSeconds"] > 0 and doc["node"]["memory"]["workingSetBytes"] > 0
    assert doc["node"]["runtime"]["imageFs"]["usedBytes"] == 1234
    [pod] = doc["pods"]
    assert pod["podRef"] == {"name": "web", "namespace": "ns", "uid": "u1"}
    assert pod["startTime"] == "2023-11-14T22:13:20Z"
    app, side = pod["containers"]
    assert app["name"] == "app" and app["startTime"] == "2023-11-14T22:13:21Z"
    assert app["cpu"] == {"time": "2027-01-15T08:00:00Z", "usageNanoCores": 1000, "usageCoreNanoSeconds": 2_500_000_000}
    assert app["memory"] == {"time": "2027-01-15T08:00:00Z", "usageBytes": 4097, "workingSetBytes": 4096}
    assert "rootfs" not in app and "usageNanoCores" not in side["cpu"]  # 0 from containerd means unknown
    # pod = sum of its containers (kubelet's fallback), only for keys every container has
    assert pod["cpu"] == {"time": "2027-01-15T08:00:00Z", "usageCoreNanoSeconds": 3_000_000_000}
    assert pod["memory"]["workingSetBytes"] == 5120


async def test_summary_uses_pod_sandbox_stats_when_containerd_has_them(backend: CriBackend, cri: FakeCri) -> None:
    stats_pod(cri)
    t = 1_800_000_000 * 10**9
    cri.pod_stats = [
        api_pb2.PodSandboxStats(
            attributes=api_pb2.PodSandboxAttributes(id="s1"),
            linux=api_pb2.LinuxPodSandboxStats(
                cpu=api_pb2.CpuUsage(timestamp=t, usage_core_nano_seconds=api_pb2.UInt64Value(value=9_000_000_000)),
                memory=api_pb2.MemoryUsage(timestamp=t, working_set_bytes=api_pb2.UInt64Value(value=99)),
                process=api_pb2.ProcessUsage(timestamp=t, process_count=api_pb2.UInt64Value(value=3)),
                containers=[cstats("c1", 1, 2), cstats("c2", 3, 4)],
            ),
        )
    ]
    cri.container_stats = []
    stream = FakeStream("/stats/summary", kind=MessageType.METRIC_CONNECT)
    await backend.serve(stream)  # type: ignore[arg-type]
    [pod] = json.loads(stream.body)["pods"]
    assert pod["cpu"]["usageCoreNanoSeconds"] == 9_000_000_000 and pod["memory"]["workingSetBytes"] == 99
    assert pod["process_stats"] == {"process_count": 3}
    assert [c["cpu"]["usageCoreNanoSeconds"] for c in pod["containers"]] == [1, 3]
    stream = FakeStream("/stats/summary", "only_cpu_and_memory=true", kind=MessageType.METRIC_CONNECT)
    await backend.serve(stream)  # type: ignore[arg-type]
    doc = json.loads(stream.body)
    assert "process_stats" not in doc["pods"][0] and "runtime" not in doc["node"]


async def test_resource_metrics(backend: CriBackend, cri: FakeCri) -> None:
    stats_pod(cri)
    stream = FakeStream("/metrics/resource", kind=MessageType.METRIC_CONNECT)
    await backend.serve(stream)  # type: ignore[arg-type]
    text = stream.body.decode()
    ms = 1_800_000_000_000
    assert f'container_cpu_usage_seconds_total{{container="app",namespace="ns",pod="web"}} 2.5 {ms}\n' in text
    assert f'container_memory_working_set_bytes{{container="side",namespace="ns",pod="web"}} 1024 {ms}\n' in text
    assert f'pod_cpu_usage_seconds_total{{namespace="ns",pod="web"}} 3.0 {ms}\n' in text
    assert f'pod_memory_working_set_bytes{{namespace="ns",pod="web"}} 5120 {ms}\n' in text
    assert "# TYPE container_cpu_usage_seconds_total counter\n" in text
    assert "# TYPE pod_memory_working_set_bytes gauge\n" in text
    assert 'container_start_time_seconds{container="app",namespace="ns",pod="web"} 1700000001.0\n' in text
    assert "\nresource_scrape_error 0\n" in text and "\nscrape_error 0\n" in text and "gone" not in text
    assert re.search(r"^node_cpu_usage_seconds_total [0-9.e+]+ \d{13}$", text, re.MULTILINE)
    assert re.search(r"^node_memory_working_set_bytes [1-9]\d* \d{13}$", text, re.MULTILINE)


@pytest.mark.parametrize("path", ["/metrics", "/metrics/cadvisor", "/metrics/probes", "/stats", "/pods"])
async def test_other_metrics_paths_are_not_found(backend: CriBackend, path: str) -> None:
    stream = FakeStream(path, kind=MessageType.METRIC_CONNECT)
    with pytest.raises(NotFound, match="/stats/summary and /metrics/resource only"):
        await backend.serve(stream)  # type: ignore[arg-type]


async def test_close_closes_the_client(backend: CriBackend, cri: FakeCri) -> None:
    await backend.close()
    assert cri.closed


# ------------------------------------------------------------------------- the real client's error mapping


async def test_client_maps_an_absent_socket_to_a_clear_error(tmp_path: Path) -> None:
    client = CriClient(f"unix://{tmp_path}/containerd.sock", timeout=2)
    try:
        with pytest.raises(BackendError) as info:
            await client.version()
        assert info.value.error_status_hint == 503
        assert f"containerd is not reachable at {tmp_path}/containerd.sock" in str(info.value)
    finally:
        await client.close()


def test_client_endpoint_forms() -> None:
    assert CriClient("/run/c.sock").endpoint == "unix:///run/c.sock"
    assert CriClient("unix:/run/c.sock").endpoint == "unix:///run/c.sock"
    assert CriClient("unix:///run/c.sock").socket == "/run/c.sock"


def test_log_options_still_parse() -> None:  # the backend relies on the shared parser's names
    assert LogOptions.from_query("tailLines=3&previous=true").previous
