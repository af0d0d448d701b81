"""``/stats/summary`` and ``/metrics/resource`` for the emulator: the node's figures are the
real host's (``node_stats``), the emulated containers' are plausible and consistent.

Each emulated container burns a steady few millicores (2-9 m, fixed per container name) since
the backend started and holds a steady working set (6-21 MiB, fixed per name), so cumulative
cpu grows at exactly the advertised ``usageNanoCores`` and a pod is the sum of its containers,
as a kubelet's pod cgroup would be. Nothing is zero: metrics-server drops a pod whose
container reports zero cpu or memory.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterable
from typing import Any, Protocol

from streamproto.tunnel import NotFound

from ..node_stats import HostStats, render_resource_metrics, rfc3339, sample_line

__all__ = ["EmulatedFigures", "resource_metrics", "summary"]

_BASE_CPU_NS = 10_000_000
"""What a container used to start (10 ms), so the first scrape is never zero."""


class _Container(Protocol):
    namespace: str
    pod: str
    name: str


class EmulatedFigures:
    """One container's cpu and memory at a given time."""

    def __init__(self, c: _Container, started_ns: int) -> None:
        seed = zlib.crc32(f"{c.namespace}/{c.pod}/{c.name}".encode())
        self.nano_cores = (2 + seed % 8) * 1_000_000
        self.working_set = (6 + (seed >> 3) % 16) << 20
        self.started_ns = started_ns

    def cpu_ns(self, now_ns: int) -> int:
        return _BASE_CPU_NS + self.nano_cores * max(0, now_ns - self.started_ns) // 1_000_000_000


def _pods(containers: Iterable[_Container]) -> dict[tuple[str, str], list[_Container]]:
    pods: dict[tuple[str, str], list[_Container]] = {}
    for c in containers:
        pods.setdefault((c.namespace, c.pod), []).append(c)
    return pods


def summary(
    containers: Iterable[_Container], node_name: str, started_ns: int, host: HostStats, *, only_cpu_and_memory: bool = False
) -> bytes:
    node, sample = host.summary_node(node_name, only_cpu_and_memory=only_cpu_and_memory)
    now = sample.timestamp_ns
    when, start = rfc3339(now), rfc3339(started_ns)
    out_pods: list[dict[str, Any]] = []
    for (ns, pod), members in sorted(_pods(containers).items()):
        entries = []
        cpu_total = ws_total = rate_total = 0
        for c in members:
            f = EmulatedFigures(c, started_ns)
            cpu, rate = f.cpu_ns(now), f.nano_cores
            cpu_total, ws_total, rate_total = cpu_total + cpu, ws_total + f.working_set, rate_total + rate
            entries.append({
                "name": c.name,
                "startTime": start,
                "cpu": {"time": when, "usageNanoCores": rate, "usageCoreNanoSeconds": cpu},
                "memory": {"time": when, "usageBytes": f.working_set, "workingSetBytes": f.working_set},
            })
        out_pods.append({
            "podRef": {"name": pod, "namespace": ns, "uid": f"emulated-{ns}-{pod}"},
            "startTime": start,
            "containers": entries,
            "cpu": {"time": when, "usageNanoCores": rate_total, "usageCoreNanoSeconds": cpu_total},
            "memory": {"time": when, "usageBytes": ws_total, "workingSetBytes": ws_total},
        })
    return json.dumps({"node": node, "pods": out_pods}, indent=2).encode()


def resource_metrics(containers: Iterable[_Container], started_ns: int, host: HostStats) -> bytes:
    samples = host.resource_samples()
    now = time.time_ns()
    ms = now // 1_000_000
    for name in ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
                 "container_start_time_seconds", "pod_cpu_usage_seconds_total", "pod_memory_working_set_bytes"):
        samples[name] = []
    for (ns, pod), members in sorted(_pods(containers).items()):
        cpu_total = ws_total = 0
        for c in members:
            f = EmulatedFigures(c, started_ns)
            labels = {"container": c.name, "namespace": ns, "pod": pod}
            cpu = f.cpu_ns(now)
            cpu_total, ws_total = cpu_total + cpu, ws_total + f.working_set
            samples["container_start_time_seconds"].append(
                sample_line("container_start_time_seconds", labels, started_ns / 1e9)
            )
            samples["container_cpu_usage_seconds_total"].append(
                sample_line("container_cpu_usage_seconds_total", labels, cpu / 1e9, ms)
            )
            samples["container_memory_working_set_bytes"].append(
                sample_line("container_memory_working_set_bytes", labels, f.working_set, ms)
            )
        plabels = {"namespace": ns, "pod": pod}
        samples["pod_cpu_usage_seconds_total"].append(sample_line("pod_cpu_usage_seconds_total", plabels, cpu_total / 1e9, ms))
        samples["pod_memory_working_set_bytes"].append(sample_line("pod_memory_working_set_bytes", plabels, ws_total, ms))
    return render_resource_metrics(samples, 0)


def not_found(path: str) -> NotFound:
    return NotFound(
        f"the emulator serves /stats/summary and /metrics/resource (and edgestream's own /metrics, /healthz); "
        f"not {path}"
    )
