"""The edge host's own cpu, memory and filesystem figures, as the kubelet reports its node.

The kubelet takes the node's figures from cAdvisor's root container ("/"), i.e. the root
cgroup; we read the same files:

* cgroup v2 (``cgroup.controllers`` at the root): cpu = ``cpu.stat`` ``usage_usec``; memory
  usage = ``memory.current``, or at the real root, which has none, ``anon + file`` of
  ``memory.stat`` (runc's ``rootStatsFromMeminfo``); working set = usage - ``inactive_file``.
* cgroup v1: cpu = ``cpuacct/cpuacct.usage``; memory usage = ``memory/memory.usage_in_bytes``;
  working set = usage - ``total_inactive_file`` (cAdvisor's hierarchical key).
* no cgroup file readable: ``/proc/stat`` cpu jiffies and ``/proc/meminfo``
  (MemTotal - MemFree, minus ``Inactive(file)``).

``availableBytes`` = MemTotal - working set, as the kubelet computes the node's. The
filesystem is ``statvfs`` of the kubelet's root directory (``/var/lib/kubelet``, else ``/``).
``usageNanoCores`` needs two samples: it is left out until a previous one exists.

Also here: the Prometheus text of kubelet's ``/metrics/resource`` (names, HELP lines,
millisecond timestamps) that every backend's stats share.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["HostSample", "HostStats", "render_resource_metrics", "rfc3339", "sample_line"]

_FS_CANDIDATES = ("/var/lib/kubelet", "/var/lib/edged", "/")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_MIN_RATE_INTERVAL_NS = 1_000_000_000
"""Samples closer than this reuse the last usageNanoCores (a rate over 1 ms is noise)."""


@dataclass(frozen=True, slots=True)
class HostSample:
    timestamp_ns: int
    """Wall clock (ns since the epoch) when the sample was read."""
    cpu_usage_ns: int | None
    memory_usage: int | None
    memory_working_set: int | None
    memory_rss: int | None
    page_faults: int | None
    major_page_faults: int | None
    memory_total: int | None
    source: str
    """Where the figures came from (``cgroup2 /sys/fs/cgroup``, ``cgroup1 …``, ``proc``)."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _kv(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _meminfo(proc: Path) -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out: dict[str, int] = {}
    for line in (_read(proc / "meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def _proc_cpu_ns(proc: Path) -> int | None:
    """All cpus' busy time from /proc/stat (user nice system irq softirq steal), in ns."""
    for line in (_read(proc / "stat") or "").splitlines():
        if line.startswith("cpu "):
            f = [int(x) for x in line.split()[1:9]]
            busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
            return busy * 1_000_000_000 // _CLK_TCK
    return None


class HostStats:
    """Samples the host; keeps the previous cpu sample for ``usageNanoCores``."""

    def __init__(self, cgroup_root: str = "/sys/fs/cgroup", proc: str = "/proc", fs_path: str | None = None) -> None:
        self.cgroup_root = Path(cgroup_root)
        self.proc = Path(proc)
        self.fs_path = fs_path or next(p for p in _FS_CANDIDATES if os.path.isdir(p))
        self._previous: tuple[int, int] | None = None  # (timestamp_ns, cpu_ns)
        self._rate: int | None = None

    # ------------------------------------------------------------------ sampling

    def sample(self) -> HostSample:
        root = self.cgroup_root
        meminfo = _meminfo(self.proc)
        total = meminfo.get("MemTotal")
        now = time.time_ns()
        if (root / "cgroup.controllers").exists():
            stat = _kv(_read(root / "cpu.stat"))
            cpu = stat["usage_usec"] * 1000 if "usage_usec" in stat else _proc_cpu_ns(self.proc)
            mem = _kv(_read(root / "memory.stat"))
            current = _read(root / "memory.current")
            if current is not None and current.strip().isdigit():
                usage: int | None = int(current)
            elif "anon" in mem and "file" in mem:
                usage = mem["anon"] + mem["file"]
            else:
                usage = None
            return self._finish(now, cpu, usage, mem.get("inactive_file"), mem.get("anon"), mem.get("pgfault"),
                                mem.get("pgmajfault"), total, f"cgroup2 {root}")
        acct = _read(root / "cpuacct" / "cpuacct.usage") or _read(root / "cpu,cpuacct" / "cpuacct.usage")
        v1_usage = _read(root / "memory" / "memory.usage_in_bytes")
        if acct is not None and v1_usage is not None:
            mem = _kv(_read(root / "memory" / "memory.stat"))
            return self._finish(
                now, int(acct), int(v1_usage), mem.get("total_inactive_file"), mem.get("total_rss"),
                mem.get("total_pgfault"), mem.get("total_pgmajfault"), total, f"cgroup1 {root}",
            )
        usage = total - meminfo["MemFree"] if total is not None and "MemFree" in meminfo else None
        vm = _kv(_read(self.proc / "vmstat"))
        return self._finish(now, _proc_cpu_ns(self.proc), usage, meminfo.get("Inactive(file)"),
                            meminfo.get("AnonPages"), vm.get("pgfault"), vm.get("pgmajfault"), total, "proc")

    @staticmethod
    def _finish(
        now: int, cpu: int | None, usage: int | None, inactive_file: int | None, rss: int | None,
        faults: int | None, major: int | None, total: int | None, source: str,
    ) -> HostSample:
        working_set = None
        if usage is not None:
            working_set = max(0, usage - (inactive_file or 0))  # cAdvisor: 0 when inactive > usage
        return HostSample(now, cpu, usage, working_set, rss, faults, major, total, source)

    def usage_nano_cores(self, sample: HostSample) -> int | None:
        """The cpu rate since the previous sample (None on the first one)."""
        if sample.cpu_usage_ns is None:
            return None
        previous, self._previous = self._previous, (sample.timestamp_ns, sample.cpu_usage_ns)
        if previous is None:
            return None
        elapsed = sample.timestamp_ns - previous[0]
        if elapsed < _MIN_RATE_INTERVAL_NS:
            self._previous = previous  # keep the older base: the next rate spans a useful interval
            return self._rate
        self._rate = max(0, (sample.cpu_usage_ns - previous[1]) * 1_000_000_000 // elapsed)
        return self._rate

    def filesystem(self) -> dict[str, Any] | None:
        try:
            st = os.statvfs(self.fs_path)
        except OSError:
            return None
        return {
            "time": rfc3339(time.time_ns()),
            "availableBytes": st.f_bavail * st.f_frsize,
            "capacityBytes": st.f_blocks * st.f_frsize,
            "usedBytes": (st.f_blocks - st.f_bfree) * st.f_frsize,
            "inodesFree": st.f_ffree,
            "inodes": st.f_files,
            "inodesUsed": st.f_files - st.f_ffree,
        }

    # ------------------------------------------------------------------ kubelet's shapes

    def summary_node(self, node_name: str, *, only_cpu_and_memory: bool = False) -> tuple[dict[str, Any], HostSample]:
        """The Summary API's ``node`` entry (without ``runtime``), and the sample behind it."""
        s = self.sample()
        node: dict[str, Any] = {"nodeName": node_name}
        boot = _boot_time(self.proc)
        if boot is not None:
            node["startTime"] = rfc3339(boot * 1_000_000_000)
        when = rfc3339(s.timestamp_ns)
        if s.cpu_usage_ns is not None:
            cpu: dict[str, Any] = {"time": when}
            rate = self.usage_nano_cores(s)
            if rate is not None:
                cpu["usageNanoCores"] = rate
            cpu["usageCoreNanoSeconds"] = s.cpu_usage_ns
            node["cpu"] = cpu
        if s.memory_working_set is not None:
            memory: dict[str, Any] = {"time": when}
            if s.memory_total is not None:
                memory["availableBytes"] = max(0, s.memory_total - s.memory_working_set)
            memory["usageBytes"] = s.memory_usage
            memory["workingSetBytes"] = s.memory_working_set
            for key, value in (("rssBytes", s.memory_rss), ("pageFaults", s.page_faults),
                               ("majorPageFaults", s.major_page_faults)):
                if value is not None:
                    memory[key] = value
            node["memory"] = memory
        if not only_cpu_and_memory:
            fs = self.filesystem()
            if fs is not None:
                node["fs"] = fs
        return node, s

    def resource_samples(self) -> dict[str, list[str]]:
        """kubelet's node series for ``/metrics/resource``."""
        s = self.sample()
        out: dict[str, list[str]] = {}
        ms = s.timestamp_ns // 1_000_000
        if s.cpu_usage_ns is not None:
            out["node_cpu_usage_seconds_total"] = [sample_line("node_cpu_usage_seconds_total", {}, s.cpu_usage_ns / 1e9, ms)]
        if s.memory_working_set is not None:
            out["node_memory_working_set_bytes"] = [
                sample_line("node_memory_working_set_bytes", {}, s.memory_working_set, ms)
            ]
        return out


def _boot_time(proc: Path) -> int | None:
    for line in (_read(proc / "stat") or "").splitlines():
        if line.startswith("btime "):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch -> RFC 3339 UTC, seconds precision (metav1.Time's JSON)."""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- /metrics/resource

RESOURCE_FAMILIES: dict[str, tuple[str, str]] = {
    # name: (type, HELP) as kubelet 1.29 prints them; the Go client sorts families by name.
    "container_cpu_usage_seconds_total": ("counter", "[STABLE] Cumulative cpu time consumed by the container in core-seconds"),
    "container_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the container in bytes"),
    "container_start_time_seconds": ("gauge", "[STABLE] Start time of the container since unix epoch in seconds"),
    "node_cpu_usage_seconds_total": ("counter", "[STABLE] Cumulative cpu time consumed by the node in core-seconds"),
    "node_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the node in bytes"),
    "pod_cpu_usage_seconds_total": ("counter", "[STABLE] Cumulative cpu time consumed by the pod in core-seconds"),
    "pod_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the pod in bytes"),
    "resource_scrape_error": ("gauge", "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise"),
    "scrape_error": (
        "gauge", "[ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise",
    ),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))  # shortest round-trip form


def sample_line(name: str, labels: dict[str, str], value: float, timestamp_ms: int | None = None) -> str:
    """One sample in the text format; labels in kubelet's order (container, namespace, pod)."""
    text = name
    if labels:
        text += "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"
    text += " " + _num(value)
    if timestamp_ms is not None:
        text += f" {timestamp_ms}"
    return text


def render_resource_metrics(samples: dict[str, list[str]], scrape_error: int) -> bytes:
    """The whole ``/metrics/resource`` body: every family with samples, in name order."""
    samples = dict(samples)
    samples["resource_scrape_error"] = [f"resource_scrape_error {scrape_error}"]
    samples["scrape_error"] = [f"scrape_error {scrape_error}"]
    lines: list[str] = []
    for name, (kind, text) in RESOURCE_FAMILIES.items():
        if not samples.get(name):
            continue
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples[name])
    return ("\n".join(lines) + "\n").encode()
