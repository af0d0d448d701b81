"""Result files and the Markdown tables: ``bench/results/latest.json`` (and a timestamped copy),
one table per scenario (median and min-max of the rounds), the "Done when" checks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

UNITS = {"MBps": "MB/s", "jain": "", "_ms": "ms"}
NAMES = {
    "MBps": "MB/s", "idle_p50_ms": "idle p50", "idle_p99_ms": "idle p99", "bulk_p50_ms": "beside bulk p50",
    "bulk_p99_ms": "beside bulk p99", "bulk_MBps": "bulk MB/s", "jain": "Jain index",
    "min_stream_MBps": "slowest stream MB/s", "max_stream_MBps": "fastest stream MB/s",
    "others_MBps": "2 readers MB/s", "others_stalled_MBps": "2 readers + 1 stalled MB/s",
}


def write(result: dict[str, Any], name: str = "latest") -> Path:
    """Write ``<name>.json`` and ``history/<name>-<UTC time>.json``; return the first."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "history").mkdir(exist_ok=True)
    text = json.dumps(result, indent=1, sort_keys=False)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS / "history" / f"{name}-{stamp}.json").write_text(text)
    path = RESULTS / f"{name}.json"
    path.write_text(text)
    return path


def load(path: Path | None = None) -> dict[str, Any]:
    return json.loads((path or RESULTS / "latest.json").read_text())


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def cell(summary: dict[str, float] | None) -> str:
    if not summary:
        return "-"
    if summary["n"] > 1:
        return f"{fmt(summary['median'])} ({fmt(summary['min'])}–{fmt(summary['max'])})"
    return fmt(summary["median"])


def scenario_table(scenario: dict[str, Any]) -> str:
    columns = scenario["columns"]
    head = "| | " + " | ".join(NAMES.get(c, c) + (" (ms)" if c.endswith("_ms") else "") for c in columns) + " |"
    rows = [head, "|---|" + "---:|" * len(columns)]
    for name, v in scenario["variants"].items():
        rows.append(f"| {name} | " + " | ".join(cell(v["summary"].get(c)) for c in columns) + " |")
    for name, error in scenario.get("errors", {}).items():
        rows.append(f"| {name} | failed: {error[:120]} |" + " |" * (len(columns) - 1))
    return "\n".join(rows)


def checks_table(result: dict[str, Any]) -> str:
    rows = ["| scenario | figure | measured | target | |", "|---|---|---:|---:|---|"]
    for name, scenario in result["scenarios"].items():
        for c in scenario.get("checks", []):
            unit = c["unit"]
            mark = {True: "met", False: "**not met**", None: "no data"}[c["ok"]]
            rows.append(f"| {name} | {c['label']} | {fmt(c['value'])}{unit} | {c['op']} {fmt(c['target'])}{unit} "
                        f"| {mark} |")
    return "\n".join(rows)


def machine_line(m: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.2f}" for x in m["load_average"])
    return (f"{m['cpu']}, {m['cores']} cores, load average {load} (at start), Python {m['python']}, "
            f"{m['loop']}, {m['openssl']}, kernel {m['kernel']}, commit {m['commit']}{' (dirty)' if m['dirty'] else ''}")


def markdown(result: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    plots = plots or {}
    parts = [f"Machine: {machine_line(result['machine'])}; end load average "
             f"{', '.join(f'{x:.2f}' for x in result.get('end_load_average', []))}. "
             f"{result['rounds']} interleaved rounds per comparison, median (min–max).", ""]
    if any(s.get("checks") for s in result["scenarios"].values()):
        parts += [checks_table(result), ""]
    for name, scenario in result["scenarios"].items():
        parts += [f"**{name}**: {scenario['title']}", "", scenario_table(scenario), ""]
        if name in plots:
            parts += [f"![{name}]({plots[name]})", ""]
    if "compare" in result:
        parts += [compare_table(result), ""]
    return "\n".join(parts).rstrip() + "\n"


def compare_table(result: dict[str, Any]) -> str:
    c = result["compare"]
    rows = [f"| scenario | metric | {c['base_label']} | {c['work_label']} | ratio |", "|---|---|---:|---:|---:|"]
    for scenario, metrics in c["ratios"].items():
        for key, r in metrics.items():
            rows.append(f"| {scenario} | {NAMES.get(key, key)} | {fmt(r['base'])} | {fmt(r['work'])} | "
                        f"{r['ratio']:.2f}× |")
    return "\n".join(rows)
