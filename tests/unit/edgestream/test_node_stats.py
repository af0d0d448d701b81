"""The host's figures from each cgroup layout. This machine has one layout (checked against
the real files in tests/integration/test_node_metrics.py); the others are laid out here in the
kernel's own file formats (Documentation/admin-guide/cgroup-v2.rst, cgroup-v1/memory.rst)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgestream.node_stats import HostStats, render_resource_metrics, sample_line

MEMINFO = "MemTotal:        8000000 kB\nMemFree:         2000000 kB\nInactive(file):   500000 kB\nAnonPages:        1000000 kB\n"
PROC_STAT = "cpu  100 20 30 4000 50 6 7 8 0 0\ncpu0 100 20 30 4000 50 6 7 8 0 0\nbtime 1700000000\n"


def _proc(tmp_path: Path) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(MEMINFO)
    (proc / "stat").write_text(PROC_STAT)
    (proc / "vmstat").write_text("pgfault 77\npgmajfault 3\n")
    return proc


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_cgroup2_root_has_no_memory_current(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    _write(cg, {
        "cgroup.controllers": "cpuset cpu io memory pids\n",
        "cpu.stat": "usage_usec 123456789\nuser_usec 100000000\nsystem_usec 23456789\n",
        "memory.stat": "anon 1000000\nfile 3000000\nkernel 5000\ninactive_file 2500000\npgfault 900\npgmajfault 9\n",
    })
    s = HostStats(str(cg), str(_proc(tmp_path)), str(tmp_path)).sample()
    assert s.cpu_usage_ns == 123_456_789_000
    assert s.memory_usage == 4_000_000 and s.memory_working_set == 1_500_000  # runc: anon + file, minus inactive
    assert (s.memory_rss, s.page_faults, s.major_page_faults) == (1_000_000, 900, 9)
    assert s.source.startswith("cgroup2")


def test_cgroup2_namespaced_uses_memory_current(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    _write(cg, {
        "cgroup.controllers": "cpu memory\n",
        "cpu.stat": "usage_usec 10\n",
        "memory.current": "5000000\n",
        "memory.stat": "anon 1\nfile 2\ninactive_file 6000000\n",
    })
    s = HostStats(str(cg), str(_proc(tmp_path)), str(tmp_path)).sample()
    assert s.memory_usage == 5_000_000 and s.memory_working_set == 0  # cAdvisor: never negative


def test_cgroup1_uses_hierarchical_totals(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    _write(cg, {
        "cpuacct/cpuacct.usage": "987654321\n",
        "memory/memory.usage_in_bytes": "8000000\n",
        "memory/memory.stat": "cache 1\nrss 2\ninactive_file 3\ntotal_rss 4000\ntotal_inactive_file 3000000\n"
                              "total_pgfault 11\ntotal_pgmajfault 1\n",
    })
    s = HostStats(str(cg), str(_proc(tmp_path)), str(tmp_path)).sample()
    assert s.cpu_usage_ns == 987_654_321 and s.memory_working_set == 5_000_000 and s.memory_rss == 4000


def test_proc_fallback_without_cgroups(tmp_path: Path) -> None:
    s = HostStats(str(tmp_path / "none"), str(_proc(tmp_path)), str(tmp_path)).sample()
    busy_jiffies = 100 + 20 + 30 + 6 + 7 + 8  # user nice system irq softirq steal
    assert s.cpu_usage_ns == busy_jiffies * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert s.memory_usage == 6_000_000 * 1024 and s.memory_working_set == 5_500_000 * 1024
    assert (s.page_faults, s.major_page_faults) == (77, 3) and s.source == "proc"


def test_summary_node_rate_needs_two_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cg = tmp_path / "cg"
    _write(cg, {"cgroup.controllers": "cpu\n", "cpu.stat": "usage_usec 1000000\n", "memory.current": "100\n",
                "memory.stat": "inactive_file 0\n"})
    host = HostStats(str(cg), str(_proc(tmp_path)), str(tmp_path))
    clock = iter([10_000_000_000, 12_000_000_000, 12_500_000_000])
    monkeypatch.setattr("edgestream.node_stats.time.time_ns", lambda: next(clock, 13_000_000_000))
    node, _ = host.summary_node("n", only_cpu_and_memory=True)
    assert "usageNanoCores" not in node["cpu"] and node["cpu"]["usageCoreNanoSeconds"] == 1_000_000_000
    assert node["memory"]["availableBytes"] == 8_000_000 * 1024 - 100 and "fs" not in node
    assert node["startTime"] == "2023-11-14T22:13:20Z"
    (cg / "cpu.stat").write_text("usage_usec 2000000\n")  # 1 s of cpu in 2 s: half a core
    node, _ = host.summary_node("n")
    assert node["cpu"]["usageNanoCores"] == 500_000_000 and node["fs"]["capacityBytes"] > 0


def test_resource_text_is_kubelets() -> None:
    text = render_resource_metrics({
        "node_cpu_usage_seconds_total": [sample_line("node_cpu_usage_seconds_total", {}, 12.5, 1700000000123)],
        "container_cpu_usage_seconds_total": [
            sample_line("container_cpu_usage_seconds_total", {"container": 'a"b', "namespace": "n", "pod": "p"}, 1.0, 1)
        ],
    }, 1).decode()
    assert text.index("container_cpu") < text.index("node_cpu") < text.index("resource_scrape_error")
    assert "node_cpu_usage_seconds_total 12.5 1700000000123\n" in text
    assert 'container_cpu_usage_seconds_total{container="a\\"b",namespace="n",pod="p"} 1.0 1\n' in text
    assert "# TYPE node_cpu_usage_seconds_total counter\n" in text and text.endswith("scrape_error 1\n")
