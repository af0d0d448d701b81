"""kubelet's ``/stats/summary`` and ``/metrics/resource`` built from containerd's CRI stats.

What containerd gives and where it goes:

* ``ListPodSandboxStats`` (pod cgroup cpu/memory/processes/network + its containers) when it
  works. containerd 1.6 fails the whole call when any sandbox has no cgroup parent
  ("cgroupPath is empty": pods not made by kubelet); then ``ListContainerStats`` is used and a
  pod's cpu/memory are the sums over its containers, which is what kubelet itself does when it
  has no pod cgroup stats (``criStatsProvider.addPodCPUMemoryStats``).
* ``ListPodSandbox``/``ListContainers`` give names, uids and start times (``created_at``, as
  kubelet's CRI stats provider uses). Only READY sandboxes and RUNNING containers are listed.
* ``ImageFsInfo`` gives ``node.runtime.imageFs``.

Node figures are the host's own (``edgestream.node_stats``: the root cgroup, as cAdvisor
reads it for the kubelet), not a sum of pods, which would hide every non-pod process.
Values containerd leaves unknown are omitted: ``usageNanoCores`` before containerd has two
samples (it reports 0), a writable layer that was not measured yet (timestamp 0),
``availableBytes`` with no limit (0).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from streamproto.cri.v1 import api_pb2
from streamproto.tunnel import BackendError, NotFound

from ..node_stats import HostStats, render_resource_metrics, sample_line
from .cri_client import CriClient, CriUnavailable

__all__ = ["RESOURCE_METRICS_PATHS", "SUMMARY_PATHS", "resource_metrics", "summary", "summary_json"]

logger = logging.getLogger(__name__)

SUMMARY_PATHS = ("/stats/summary",)
RESOURCE_METRICS_PATHS = ("/metrics/resource", "/metrics/resource/v1alpha1")

LABEL_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_NAME = "io.kubernetes.pod.name"
LABEL_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER = "io.kubernetes.container.name"

_HOST = HostStats()
"""One per process: it keeps the previous cpu sample behind the node's usageNanoCores."""


def _time(ns: int) -> str:
    """Nanoseconds since the epoch -> RFC 3339 UTC (metav1.Time: seconds precision)."""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _u64(msg: Any, field: str, *, zero_is_unknown: bool = False) -> int | None:
    if not msg.HasField(field):
        return None
    value = int(getattr(msg, field).value)
    if zero_is_unknown and value == 0:
        return None
    return value


def _cpu(cpu: api_pb2.CpuUsage) -> dict[str, Any] | None:
    out: dict[str, Any] = {"time": _time(cpu.timestamp)} if cpu.timestamp else {}
    nano_cores = _u64(cpu, "usage_nano_cores", zero_is_unknown=True)
    if nano_cores is not None:
        out["usageNanoCores"] = nano_cores
    total = _u64(cpu, "usage_core_nano_seconds")
    if total is not None:
        out["usageCoreNanoSeconds"] = total
    return out if len(out) > 1 else None


_MEMORY_FIELDS = (
    ("available_bytes", "availableBytes", True),
    ("usage_bytes", "usageBytes", False),
    ("working_set_bytes", "workingSetBytes", False),
    ("rss_bytes", "rssBytes", False),
    ("page_faults", "pageFaults", False),
    ("major_page_faults", "majorPageFaults", False),
)


def _memory(memory: api_pb2.MemoryUsage) -> dict[str, Any] | None:
    out: dict[str, Any] = {"time": _time(memory.timestamp)} if memory.timestamp else {}
    for field, key, zero_unknown in _MEMORY_FIELDS:
        value = _u64(memory, field, zero_is_unknown=zero_unknown)
        if value is not None:
            out[key] = value
    return out if len(out) > 1 else None


def _fs(fs: api_pb2.FilesystemUsage) -> dict[str, Any] | None:
    if not fs.timestamp:
        return None  # not measured yet
    out: dict[str, Any] = {"time": _time(fs.timestamp)}
    used = _u64(fs, "used_bytes")
    if used is not None:
        out["usedBytes"] = used
    inodes = _u64(fs, "inodes_used")
    if inodes is not None:
        out["inodesUsed"] = inodes
    return out if len(out) > 1 else None


def _interface(iface: api_pb2.NetworkInterfaceUsage) -> dict[str, Any]:
    out: dict[str, Any] = {"name": iface.name}
    for field, key in (
        ("rx_bytes", "rxBytes"),
        ("rx_errors", "rxErrors"),
        ("tx_bytes", "txBytes"),
        ("tx_errors", "txErrors"),
    ):
        value = _u64(iface, field)
        if value is not None:
            out[key] = value
    return out


def _network(net: api_pb2.NetworkUsage) -> dict[str, Any] | None:
    if not net.timestamp or not (net.HasField("default_interface") or net.interfaces):
        return None
    out: dict[str, Any] = {"time": _time(net.timestamp)}
    if net.HasField("default_interface"):
        out.update(_interface(net.default_interface))
    if net.interfaces:
        out["interfaces"] = [_interface(i) for i in net.interfaces]
    return out


def _sum(parts: Iterable[dict[str, Any] | None], keys: tuple[str, ...]) -> dict[str, Any] | None:
    """Pod cpu/memory as the sum of its containers' (kubelet's fallback); only keys all of them have."""
    items = list(parts)
    if not items or any(p is None for p in items):
        return None
    out: dict[str, Any] = {"time": max(p["time"] for p in items if p)}
    for key in keys:
        if all(key in p for p in items if p):
            out[key] = sum(p[key] for p in items if p)
    return out if len(out) > 1 else None


class _Pod:
    __slots__ = ("containers", "cpu", "cpu_ts", "memory", "memory_ts", "network", "process", "sandbox")

    def __init__(self, sandbox: api_pb2.PodSandbox) -> None:
        self.sandbox = sandbox
        self.containers: dict[str, tuple[api_pb2.Container, api_pb2.ContainerStats | None]] = {}
        self.cpu: dict[str, Any] | None = None
        self.cpu_ts = 0  # the CRI sample time (ns) behind self.cpu
        self.memory: dict[str, Any] | None = None
        self.memory_ts = 0
        self.network: dict[str, Any] | None = None
        self.process: dict[str, Any] | None = None

    def ref(self) -> dict[str, str]:
        md = self.sandbox.metadata
        labels = self.sandbox.labels
        return {
            "name": md.name or labels.get(LABEL_NAME, ""),
            "namespace": md.namespace or labels.get(LABEL_NAMESPACE, ""),
            "uid": md.uid or labels.get(LABEL_UID, ""),
        }


def _container_name(c: api_pb2.Container) -> str:
    return c.labels.get(LABEL_CONTAINER) or c.metadata.name


async def _collect(client: CriClient) -> list[_Pod]:
    sandboxes = await client.list_pod_sandboxes(state=api_pb2.SANDBOX_READY)
    pods = {s.id: _Pod(s) for s in sandboxes}
    containers = await client.list_containers(state=api_pb2.CONTAINER_RUNNING)
    for c in containers:
        pod = pods.get(c.pod_sandbox_id)
        if pod is not None:
            pod.containers[c.id] = (c, None)

    stats_by_container: dict[str, api_pb2.ContainerStats] = {}
    pod_level = False
    try:
        for ps in await client.list_pod_sandbox_stats():
            pod = pods.get(ps.attributes.id)
            if pod is None:
                continue
            pod_level = True
            linux = ps.linux
            if linux.HasField("cpu"):
                pod.cpu, pod.cpu_ts = _cpu(linux.cpu), linux.cpu.timestamp
            if linux.HasField("memory"):
                pod.memory, pod.memory_ts = _memory(linux.memory), linux.memory.timestamp
            if linux.HasField("network"):
                pod.network = _network(linux.network)
            if linux.HasField("process") and linux.process.HasField("process_count"):
                pod.process = {
                    "time": _time(linux.process.timestamp),
                    "processCount": linux.process.process_count.value,
                }
            for cs in linux.containers:
                stats_by_container[cs.attributes.id] = cs
    except CriUnavailable:
        raise
    except BackendError as exc:
        logger.debug("ListPodSandboxStats failed (%s); using ListContainerStats", exc)
        pod_level = False
    if not pod_level or any(cid not in stats_by_container for p in pods.values() for cid in p.containers):
        for cs in await client.list_container_stats():
            stats_by_container.setdefault(cs.attributes.id, cs)
    for pod in pods.values():
        for cid, (c, _) in list(pod.containers.items()):
            pod.containers[cid] = (c, stats_by_container.get(cid))
    return sorted(pods.values(), key=lambda p: (p.ref()["namespace"], p.ref()["name"]))


def _container_entry(c: api_pb2.Container, cs: api_pb2.ContainerStats | None, only_cpu_memory: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": _container_name(c)}
    if c.created_at:
        entry["startTime"] = _time(c.created_at)
    if cs is not None:
        if cs.HasField("cpu") and (cpu := _cpu(cs.cpu)) is not None:
            entry["cpu"] = cpu
        if cs.HasField("memory") and (memory := _memory(cs.memory)) is not None:
            entry["memory"] = memory
        if not only_cpu_memory and cs.HasField("writable_layer") and (rootfs := _fs(cs.writable_layer)) is not None:
            entry["rootfs"] = rootfs
    return entry


async def summary(
    client: CriClient, node_name: str, *, only_cpu_and_memory: bool = False, host: HostStats | None = None
) -> dict[str, Any]:
    """The kubelet Summary API (``/stats/summary``) document."""
    pods = await _collect(client)
    node, _ = (host or _HOST).summary_node(node_name, only_cpu_and_memory=only_cpu_and_memory)
    if not only_cpu_and_memory:
        try:
            filesystems = await client.image_fs_info()
        except CriUnavailable:
            raise
        except BackendError:
            filesystems = []
        image_fs = next((fs for fs in (_fs(f) for f in filesystems) if fs is not None), None)
        if image_fs is not None:
            node["runtime"] = {"imageFs": image_fs}
    out_pods = []
    for pod in pods:
        containers = [_container_entry(c, cs, only_cpu_and_memory) for c, cs in pod.containers.values()]
        entry: dict[str, Any] = {"podRef": pod.ref()}
        if pod.sandbox.created_at:
            entry["startTime"] = _time(pod.sandbox.created_at)
        entry["containers"] = containers
        cpu = pod.cpu or _sum((c.get("cpu") for c in containers), ("usageNanoCores", "usageCoreNanoSeconds"))
        memory = pod.memory or _sum(
            (c.get("memory") for c in containers),
            ("usageBytes", "workingSetBytes", "rssBytes", "pageFaults", "majorPageFaults"),
        )
        if cpu is not None:
            entry["cpu"] = cpu
        if memory is not None:
            entry["memory"] = memory
        if not only_cpu_and_memory:
            if pod.network is not None:
                entry["network"] = pod.network
            if pod.process is not None:
                entry["process_stats"] = {"process_count": pod.process["processCount"]}
        out_pods.append(entry)
    return {"node": node, "pods": out_pods}


def summary_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2).encode()


# --------------------------------------------------------------------------- /metrics/resource


def _ms(ns: int) -> int:
    return ns // 1_000_000


async def resource_metrics(client: CriClient, host: HostStats | None = None) -> bytes:
    """kubelet's ``/metrics/resource`` in the Prometheus text format (timestamps in ms)."""
    samples: dict[str, list[str]] = (host or _HOST).resource_samples()
    for name in ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
                 "container_start_time_seconds", "pod_cpu_usage_seconds_total", "pod_memory_working_set_bytes"):
        samples[name] = []
    error = 0
    try:
        pods = await _collect(client)
    except CriUnavailable:
        raise
    except BackendError as exc:
        logger.warning("! /metrics/resource: %s", exc)
        pods, error = [], 1
    for pod in pods:
        ref = pod.ref()
        cpu_ns: list[tuple[int, int]] = []  # (value, timestamp) per container, for the pod fallback
        mem: list[tuple[int, int]] = []
        for c, cs in pod.containers.values():
            labels = {"container": _container_name(c), "namespace": ref["namespace"], "pod": ref["name"]}
            if c.created_at:  # kubelet gives this one no timestamp
                samples["container_start_time_seconds"].append(
                    sample_line("container_start_time_seconds", labels, c.created_at / 1e9)
                )
            if cs is None:
                continue
            total = _u64(cs.cpu, "usage_core_nano_seconds") if cs.HasField("cpu") else None
            if total is not None:
                samples["container_cpu_usage_seconds_total"].append(
                    sample_line("container_cpu_usage_seconds_total", labels, total / 1e9, _ms(cs.cpu.timestamp))
                )
                cpu_ns.append((total, cs.cpu.timestamp))
            ws = _u64(cs.memory, "working_set_bytes") if cs.HasField("memory") else None
            if ws is not None:
                samples["container_memory_working_set_bytes"].append(
                    sample_line("container_memory_working_set_bytes", labels, ws, _ms(cs.memory.timestamp))
                )
                mem.append((ws, cs.memory.timestamp))
        plabels = {"namespace": ref["namespace"], "pod": ref["name"]}
        n = len(pod.containers)
        if pod.cpu is not None and "usageCoreNanoSeconds" in pod.cpu:
            samples["pod_cpu_usage_seconds_total"].append(
                sample_line("pod_cpu_usage_seconds_total", plabels, pod.cpu["usageCoreNanoSeconds"] / 1e9, _ms(pod.cpu_ts))
            )
        elif n and len(cpu_ns) == n:  # kubelet's fallback: the sum of the containers
            samples["pod_cpu_usage_seconds_total"].append(sample_line(
                "pod_cpu_usage_seconds_total", plabels, sum(v for v, _ in cpu_ns) / 1e9, _ms(max(t for _, t in cpu_ns))
            ))
        if pod.memory is not None and "workingSetBytes" in pod.memory:
            samples["pod_memory_working_set_bytes"].append(
                sample_line("pod_memory_working_set_bytes", plabels, pod.memory["workingSetBytes"], _ms(pod.memory_ts))
            )
        elif n and len(mem) == n:
            samples["pod_memory_working_set_bytes"].append(sample_line(
                "pod_memory_working_set_bytes", plabels, sum(v for v, _ in mem), _ms(max(t for _, t in mem))
            ))
    return render_resource_metrics(samples, error)


def metrics_not_found(path: str) -> NotFound:
    return NotFound(
        f"edgestream's CRI backend serves {SUMMARY_PATHS[0]} and {RESOURCE_METRICS_PATHS[0]} only; "
        f"{path} needs the kubelet (cadvisor and probe metrics are not available from containerd)"
    )
