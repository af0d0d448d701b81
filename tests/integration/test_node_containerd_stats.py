"""Issue 16 against a real containerd: ``/metrics/resource`` and ``/stats/summary`` scraped as
metrics-server does (through cloudstream's 10003, node-proxy headers), each container's
figures checked against its own cgroup and the node's against the root cgroup."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import pytest_asyncio

from streamproto.cri.v1 import api_pb2

from .framework import apiserver_tls, start_cloud, start_edge
from .test_logs_chain import wait_node_ready
from .test_node_metrics import (
    CG,
    _kv,
    assert_millisecond_timestamps,
    get,
    metrics_server_decode,
    root_cpu_ns,
    root_working_set,
    within,
)

pytestmark = [
    pytest.mark.containerd,
    pytest.mark.integration,
    pytest.mark.timeout(240),
    pytest.mark.asyncio(loop_scope="module"),
]

NODE = "edge-1"
NS = "kes-node-stats"
# Burn a little cpu, then idle: the figures then stay put while we compare them.
BURST = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 3600"


def cgroup_dirs(realstack, cid: str) -> tuple[Path, Path]:
    """(cpu dir, memory dir) of a container, from the runtime spec containerd reports."""
    info = realstack.runtime.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid, verbose=True), timeout=10).info
    path = json.loads(info["info"])["runtimeSpec"]["linux"]["cgroupsPath"].lstrip("/")
    if (CG / "cgroup.controllers").exists():
        return CG / path, CG / path
    cpu = next(p for p in (CG / "cpuacct" / path, CG / "cpu,cpuacct" / path) if p.is_dir())
    return cpu, CG / "memory" / path


def container_cpu_ns(cpu_dir: Path) -> int:
    if (cpu_dir / "cpu.stat").exists() and not (cpu_dir / "cpuacct.usage").exists():
        return _kv(cpu_dir / "cpu.stat")["usage_usec"] * 1000
    return int((cpu_dir / "cpuacct.usage").read_text())


def container_working_set(mem_dir: Path) -> int:
    """containerd's rule (as cAdvisor's): usage minus inactive file pages."""
    if (mem_dir / "memory.current").exists():
        return max(0, int((mem_dir / "memory.current").read_text()) - _kv(mem_dir / "memory.stat")["inactive_file"])
    usage = int((mem_dir / "memory.usage_in_bytes").read_text())
    return max(0, usage - _kv(mem_dir / "memory.stat")["total_inactive_file"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(realstack, lab_pki):
    pod = realstack.run_pod("stats", namespace=NS, uid="uid-stats-1")
    cids = {name: realstack.run_container(pod, name, ["sh", "-c", BURST]) for name in ("burst", "other")}
    for cid in cids.values():
        realstack.wait_running(cid)
    cloud, stream_port, tunnel_port = await start_cloud(lab_pki)
    edge = await start_edge(lab_pki, NODE, tunnel_port, "--backend", "cri", "--cri-endpoint", realstack.endpoint)
    try:
        await wait_node_ready(stream_port, apiserver_tls(lab_pki), NODE, "/healthz")
        await asyncio.sleep(1.0)  # the burst is over; the containers idle
        yield realstack, cids, stream_port
    finally:
        await edge.stop()
        await cloud.stop()
        realstack.remove_pod(pod)


async def test_resource_metrics_match_the_cgroups(chain, lab_pki) -> None:
    realstack, cids, port = chain
    dirs = {name: cgroup_dirs(realstack, cid) for name, cid in cids.items()}
    before = {name: (container_cpu_ns(c), container_working_set(m)) for name, (c, m) in dirs.items()}
    node_before = root_cpu_ns(), root_working_set()
    status, text = await get(port, "/metrics/resource", apiserver_tls(lab_pki))
    node_after = root_cpu_ns(), root_working_set()
    after = {name: (container_cpu_ns(c), container_working_set(m)) for name, (c, m) in dirs.items()}
    assert status == 200, text
    assert_millisecond_timestamps(text)
    node, pods = metrics_server_decode(text)
    assert within(node["node_cpu_usage_seconds_total"].value * 1e9, node_before[0], node_after[0], 1000)
    ws = node["node_memory_working_set_bytes"].value
    assert within(ws, min(node_before[1], node_after[1]), max(node_before[1], node_after[1]), max(64 << 20, ws * 0.05))
    containers = pods[NS, "stats"]  # kept by metrics-server's filter: nonzero cpu and memory
    assert set(containers) == {"burst", "other"}
    for name, figures in containers.items():
        cpu_ns = figures["cpu"] * 1e9
        assert within(cpu_ns, before[name][0], after[name][0], 1000), (name, before[name][0], cpu_ns, after[name][0])
        low, high = sorted((before[name][1], after[name][1]))
        assert within(figures["mem"], low, high, max(256 << 10, high * 0.05)), (name, before[name][1], figures["mem"])


async def test_summary_matches_the_cgroups(chain, lab_pki) -> None:
    realstack, cids, port = chain
    dirs = {name: cgroup_dirs(realstack, cid) for name, cid in cids.items()}
    before = {name: container_cpu_ns(c) for name, (c, _) in dirs.items()}
    node_before = root_cpu_ns()
    status, body = await get(port, "/stats/summary", apiserver_tls(lab_pki))
    node_after = root_cpu_ns()
    after = {name: container_cpu_ns(c) for name, (c, _) in dirs.items()}
    assert status == 200
    doc = json.loads(body)
    assert doc["node"]["nodeName"] == NODE
    assert within(doc["node"]["cpu"]["usageCoreNanoSeconds"], node_before, node_after, 0)
    assert doc["node"]["memory"]["workingSetBytes"] > 0 and doc["node"]["fs"]["capacityBytes"] > 0
    assert "imageFs" in doc["node"]["runtime"]
    [pod] = [p for p in doc["pods"] if p["podRef"] == {"name": "stats", "namespace": NS, "uid": "uid-stats-1"}]
    by_name = {c["name"]: c for c in pod["containers"]}
    for name in ("burst", "other"):
        c = by_name[name]
        assert c["startTime"] and c["cpu"]["time"]
        assert within(c["cpu"]["usageCoreNanoSeconds"], before[name], after[name], 0)
        assert c["memory"]["workingSetBytes"] > 0
    assert pod["cpu"]["usageCoreNanoSeconds"] >= sum(by_name[n]["cpu"]["usageCoreNanoSeconds"] for n in ("burst", "other"))
    status, body = await get(port, "/healthz?verbose", apiserver_tls(lab_pki))
    assert status == 200 and "[+]runtime ok" in body.decode()
