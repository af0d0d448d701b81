"""Issue 16: node figures for metrics-server, /healthz and the edge's own /metrics, through
cloudstream as the API server's node proxy and metrics-server reach them.

Checked against what the kernel says, read here independently of edgestream: the root
cgroup's counters (v1 ``cpuacct.usage``/``memory.usage_in_bytes``, v2 ``cpu.stat``/
``memory.stat``) and, for containerd pods, each container's own cgroup. The Prometheus text
is parsed with ``prometheus_client``'s parser and then held to metrics-server's decoder rules
(``pkg/scraper/client/resource/decode.go``: these names, labels container/namespace/pod,
millisecond timestamps, no zero cpu or memory)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
import pytest_asyncio

from .framework import apiserver_tls, kubelet_request, start_cloud, start_edge
from .test_logs_chain import wait_node_ready

parser = pytest.importorskip("prometheus_client.parser")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

NODE = "edge-1"
PODS = ["default/demo/app", "default/demo/sidecar", "kube-system/dns/coredns"]
CG = Path("/sys/fs/cgroup")


# ----------------------------------------------------------------------------- the kernel's own figures


def _kv(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        out[key] = int(value)
    return out


def root_cpu_ns() -> int:
    if (CG / "cgroup.controllers").exists():
        return _kv(CG / "cpu.stat")["usage_usec"] * 1000
    return int((CG / "cpuacct/cpuacct.usage").read_text())


def root_working_set() -> int:
    if (CG / "cgroup.controllers").exists():
        stat = _kv(CG / "memory.stat")
        current = CG / "memory.current"
        usage = int(current.read_text()) if current.exists() else stat["anon"] + stat["file"]
        return max(0, usage - stat["inactive_file"])
    usage = int((CG / "memory/memory.usage_in_bytes").read_text())
    return max(0, usage - _kv(CG / "memory/memory.stat")["total_inactive_file"])


def within(value: float, low: float, high: float, slack: float) -> bool:
    return low - slack <= value <= high + slack


# ----------------------------------------------------------------------------- scraping as they do


def proxy_headers(path: str, node: str = NODE) -> dict[str, str]:
    """What the API server's node proxy adds (spec: apiserver-observed.md)."""
    return {"X-Forwarded-Uri": f"/api/v1/nodes/{node}/proxy{path}", "Accept": "application/json, */*"}


async def get(port: int, path: str, tls, node: str = NODE, host: str = "apiserver.example:6443") -> tuple[int, bytes]:
    """GET as the API server's node proxy sends it."""
    async with kubelet_request(port, path, host=host, tls=tls, headers=proxy_headers(path, node)) as resp:
        return resp.status, await resp.body()


async def scrape(port: int, tls) -> tuple[int, bytes]:
    """GET as metrics-server sends it: straight to https://<nodeIP>:<port>/metrics/resource, its
    bearer token (cloudstream never forwards it), no proxy headers."""
    headers = {"Authorization": "Bearer metrics-server-token", "User-Agent": "metrics-server/v0.7.2 (linux/amd64)"}
    async with kubelet_request(port, "/metrics/resource", host=f"127.0.0.1:{port}", tls=tls, headers=headers) as resp:
        return resp.status, await resp.body()


def families(text: bytes) -> dict[str, list]:
    return {f.name: f.samples for f in parser.text_string_to_metric_families(text.decode())}


def samples_by_name(text: bytes) -> dict[str, list]:
    out: dict[str, list] = {}
    for samples in families(text).values():
        for s in samples:
            out.setdefault(s.name, []).append(s)
    return out


def metrics_server_decode(text: bytes) -> tuple[dict, dict]:
    """metrics-server's rules: the node needs cpu, memory and a timestamp, none zero; a pod is
    kept only when every container has nonzero cpu and memory."""
    by = samples_by_name(text)
    node = {s.name: s for s in by.get("node_cpu_usage_seconds_total", []) + by.get("node_memory_working_set_bytes", [])}
    pods: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for name, key in (("container_cpu_usage_seconds_total", "cpu"), ("container_memory_working_set_bytes", "mem")):
        for s in by.get(name, []):
            assert set(s.labels) == {"container", "namespace", "pod"}, s
            pods.setdefault((s.labels["namespace"], s.labels["pod"]), {}).setdefault(s.labels["container"], {})[key] = s.value
    kept = {ref: cs for ref, cs in pods.items() if all(c.get("cpu") and c.get("mem") for c in cs.values())}
    return node, kept


def assert_millisecond_timestamps(text: bytes) -> None:
    now = time.time()
    for name, samples in samples_by_name(text).items():
        for s in samples:
            if name in ("container_start_time_seconds", "scrape_error", "resource_scrape_error"):
                assert s.timestamp is None, s  # kubelet sends these without one
            else:
                assert s.timestamp is not None and abs(float(s.timestamp) - now) < 60, s


# ----------------------------------------------------------------------------- the emulator chain


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(lab_pki):
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    args = [a for pod in PODS for a in ("--emulate", pod)] + ["--emulate-log-rate", "20"]
    edge = await start_edge(lab_pki, NODE, tunnel_port, *args)
    try:
        await wait_node_ready(stream_port, apiserver_tls(lab_pki), NODE)
        yield cloud, edge, stream_port, tunnel_port
    finally:
        await edge.stop()
        await cloud.stop()


async def test_resource_metrics_as_metrics_server_scrapes_them(chain, lab_pki) -> None:
    _, _, port, _ = chain
    tls = apiserver_tls(lab_pki)
    cpu_before, ws_before = root_cpu_ns(), root_working_set()
    status, text = await scrape(port, tls)
    cpu_after, ws_after = root_cpu_ns(), root_working_set()
    assert status == 200, text
    assert_millisecond_timestamps(text)
    node, pods = metrics_server_decode(text)
    cpu_ns = node["node_cpu_usage_seconds_total"].value * 1e9
    assert within(cpu_ns, cpu_before, cpu_after, 1000), (cpu_before, cpu_ns, cpu_after)
    ws = node["node_memory_working_set_bytes"].value
    assert within(ws, min(ws_before, ws_after), max(ws_before, ws_after), max(64 << 20, ws * 0.05)), (ws_before, ws, ws_after)
    # every emulated container survives metrics-server's filter; pods are the sums of their containers
    assert pods.keys() == {("default", "demo"), ("kube-system", "dns")}
    assert set(pods["default", "demo"]) == {"app", "sidecar"}
    by = samples_by_name(text)
    pod_cpu = {(s.labels["namespace"], s.labels["pod"]): s.value for s in by["pod_cpu_usage_seconds_total"]}
    pod_mem = {(s.labels["namespace"], s.labels["pod"]): s.value for s in by["pod_memory_working_set_bytes"]}
    for ref, containers in pods.items():
        assert pod_cpu[ref] == pytest.approx(sum(c["cpu"] for c in containers.values()))
        assert pod_mem[ref] == sum(c["mem"] for c in containers.values())
    assert [s.value for s in by["resource_scrape_error"]] == [0]
    # cumulative cpu grows between two scrapes, at a plausible rate (a few millicores)
    await asyncio.sleep(1.0)
    _, later = await scrape(port, tls)
    _, pods_later = metrics_server_decode(later)
    grew = pods_later["default", "demo"]["app"]["cpu"] - pods["default", "demo"]["app"]["cpu"]
    assert 0.0005 < grew < 0.1, grew


async def test_stats_summary_as_metrics_server_reads_it(chain, lab_pki) -> None:
    _, _, port, _ = chain
    tls = apiserver_tls(lab_pki)
    cpu_before, ws_before = root_cpu_ns(), root_working_set()
    status, body = await get(port, "/stats/summary?only_cpu_and_memory=true", tls)
    cpu_after, ws_after = root_cpu_ns(), root_working_set()
    assert status == 200, body
    doc = json.loads(body)
    node = doc["node"]
    assert node["nodeName"] == NODE
    assert within(node["cpu"]["usageCoreNanoSeconds"], cpu_before, cpu_after, 0)
    ws = node["memory"]["workingSetBytes"]
    assert within(ws, min(ws_before, ws_after), max(ws_before, ws_after), max(64 << 20, ws * 0.05))
    assert node["memory"]["usageBytes"] >= ws
    assert "fs" not in node  # only_cpu_and_memory
    for pod in doc["pods"]:
        for c in pod["containers"]:  # metrics-server's summary decoder needs all of these, nonzero
            assert c["startTime"] and c["cpu"]["time"] and c["cpu"]["usageCoreNanoSeconds"] > 0
            assert c["memory"]["workingSetBytes"] > 0
        assert pod["cpu"]["usageCoreNanoSeconds"] == sum(c["cpu"]["usageCoreNanoSeconds"] for c in pod["containers"])
    # the full document: the filesystem is the one statvfs reports, the rate appears from the 2nd sample
    await asyncio.sleep(1.1)
    _, body = await get(port, "/stats/summary", tls)
    node = json.loads(body)["node"]
    st = os.statvfs(next(p for p in ("/var/lib/kubelet", "/var/lib/edged", "/") if os.path.isdir(p)))
    assert node["fs"]["capacityBytes"] == st.f_blocks * st.f_frsize and node["fs"]["inodes"] == st.f_files
    assert 0 < node["cpu"]["usageNanoCores"] <= os.cpu_count() * 1_000_000_000 * 1.05


async def test_healthz_through_the_node_proxy(chain, lab_pki) -> None:
    _, _, port, _ = chain
    tls = apiserver_tls(lab_pki)
    assert await get(port, "/healthz", tls) == (200, b"ok")
    status, body = await get(port, "/healthz?verbose=1", tls)
    assert status == 200
    assert body.decode().splitlines() == ["[+]ping ok", "[+]log ok", "[+]syncloop ok", "[+]runtime ok", "healthz check passed"]
    status, body = await get(port, "/healthz?verbose&exclude=log&exclude=nosuch", tls)
    assert "[+]log excluded: ok" in body.decode() and 'no matches for "nosuch"' in body.decode()
    for check in ("ping", "log", "syncloop", "runtime"):
        assert await get(port, f"/healthz/{check}", tls) == (200, b"ok")
    status, body = await get(port, "/healthz/nosuch", tls)
    assert status == 404


async def test_edge_agent_metrics(chain, lab_pki) -> None:
    _, edge, port, _ = chain
    tls = apiserver_tls(lab_pki)
    async with kubelet_request(port, "/containerLogs/default/demo/app?follow=true", host=NODE, tls=tls) as follow:
        assert follow.status == 200
        async for _ in follow.chunks():
            break
        status, text = await get(port, "/metrics", tls)
    assert status == 200
    by = samples_by_name(text)
    value = {name: samples[0].value for name, samples in by.items() if len(samples) == 1}
    pid = edge.proc.pid
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    assert abs(value["process_open_fds"] - fds) <= 3, (value["process_open_fds"], fds)
    rss_kib = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS:"))
    assert abs(value["process_resident_memory_bytes"] - rss_kib * 1024) < max(8 << 20, rss_kib * 1024 * 0.2)
    assert abs(value["process_start_time_seconds"] - time.time()) < 600
    assert value["edgestream_tunnel_up"] == 1 and value["edgestream_tunnel_connects_total"] == 1
    assert value["edgestream_tunnel_reconnects_total"] == 0
    opened = {s.labels["kind"]: s.value for s in by["edgestream_streams_open"]}
    assert opened["logs"] == 1 and opened["metrics"] == 1  # the logs -f, and this very scrape
    total = {s.labels["kind"]: s.value for s in by["edgestream_streams_total"]}
    assert total["metrics"] >= 1 and total["logs"] >= 1
    sent = {s.labels["kind"]: s.value for s in by["edgestream_stream_bytes_sent_total"]}
    assert sent["logs"] > 0
    assert value["edgestream_tunnel_messages_received_total"] > 0 and value["edgestream_tunnel_messages_sent_total"] > 0


# ----------------------------------------------------------------------------- failures that say why


async def test_healthz_says_why_the_runtime_is_not_healthy(lab_pki, tmp_path) -> None:
    cloud, port, tunnel_port = await start_cloud(lab_pki)
    dead = f"unix://{tmp_path}/containerd.sock"
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    kubelet = f"127.0.0.1:{silent.sockets[0].getsockname()[1]}"

    async def healthy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        ok = head.startswith(b"GET /healthz ")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" if ok else b"HTTP/1.1 404 Not Found\r\n\r\n")
        await writer.drain()
        writer.close()

    edged = await asyncio.start_server(healthy, "127.0.0.1", 0)
    edges = [
        await start_edge(lab_pki, "edge-1", tunnel_port, "--backend", "kubelet", "--kubelet-address",
                         f"127.0.0.1:{edged.sockets[0].getsockname()[1]}", "--node-ip", "127.0.2.1"),
        await start_edge(lab_pki, "edge-2", tunnel_port, "--backend", "cri", "--cri-endpoint", dead, "--cri-timeout", "2",
                         "--node-ip", "127.0.2.2"),
        await start_edge(lab_pki, "edge-3", tunnel_port, "--backend", "kubelet", "--kubelet-address", kubelet,
                         "--cri-timeout", "1", "--node-ip", "127.0.2.3"),  # an IP is one node's
    ]
    tls = apiserver_tls(lab_pki)
    try:
        for node in ("edge-1", "edge-2", "edge-3"):
            await wait_node_ready(port, tls, node, "/healthz/ping")
        assert await get(port, "/healthz/runtime", tls, node="edge-1") == (200, b"ok")
        status, body = await get(port, "/healthz", tls, node="edge-2")
        assert status == 500 and "[+]ping ok" in body.decode() and "healthz check failed" in body.decode()
        assert f"[-]runtime failed: containerd is not reachable at {tmp_path}/containerd.sock" in body.decode()
        status, body = await get(port, "/healthz/runtime", tls, node="edge-2")
        assert status == 500 and "containerd is not reachable" in body.decode()
        status, body = await get(port, "/healthz", tls, node="edge-3")
        assert status == 500 and f"the kubelet at {kubelet} did not answer within 1 s" in body.decode(), body
        silent.close()
        await silent.wait_closed()
        status, body = await get(port, "/healthz/runtime", tls, node="edge-3")
        assert status == 500 and f"the kubelet at {kubelet} is unreachable" in body.decode(), body
    finally:
        for edge in edges:
            await edge.stop()
        await cloud.stop()
        silent.close()
        edged.close()
