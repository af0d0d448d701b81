"""The runner every scenario shares: variants set up once, then measured in interleaved rounds
(the order rotates each round), median and range per metric; a progress bar on stderr; the
machine the numbers came from."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamcerts import Layout

Metrics = dict[str, float]


@dataclass(frozen=True)
class Variant:
    """One system measured by a scenario: ``setup`` starts it (once per scenario), ``measure``
    takes one sample of it (once per round)."""

    name: str
    setup: Callable[[], AbstractAsyncContextManager[Any]]
    measure: Callable[[Any], Awaitable[Metrics]]
    echo: Callable[[Any], Awaitable[Any]] | None = None
    """Opens an interactive session (``ping(byte)``, ``close()``) on what ``setup`` gave: the
    idle round trips of every variant that has one are measured together (``paired_idle``)."""
    echoes: int = 300
    """Idle round trips per variant and round (``echo``)."""


@dataclass(frozen=True)
class Check:
    """A "Done when" figure: ``value(medians)`` compared with ``target`` (``op`` ">=" or "<=")."""

    label: str
    value: Callable[[dict[str, Metrics]], float]
    op: str
    target: float
    unit: str = "x"

    def evaluate(self, medians: dict[str, Metrics]) -> dict[str, Any]:
        try:
            value = self.value(medians)
        except (KeyError, ZeroDivisionError):
            return {"label": self.label, "value": None, "target": self.target, "op": self.op, "unit": self.unit,
                    "ok": None}
        ok = value >= self.target if self.op == ">=" else value <= self.target
        return {"label": self.label, "value": round(value, 3), "target": self.target, "op": self.op,
                "unit": self.unit, "ok": ok}


@dataclass
class Context:
    layout: Layout
    rounds: int = 3
    quick: bool = False
    trees: list[tuple[str, Path]] = field(default_factory=list)
    """(label, checkout) of the code measured: one for ``all``, REV and the working tree for ``compare``."""
    baselines: bool = True
    progress: Progress | None = None


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, one line per step otherwise)."""

    def __init__(self, total: int, stream: Any = sys.stderr) -> None:
        self.total, self.done, self.stream = max(total, 1), 0, stream
        self.began = time.monotonic()
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def grow(self, steps: int) -> None:
        self.total += steps

    def step(self, what: str) -> None:
        self.done += 1
        self.show(what)

    def show(self, what: str) -> None:
        width = 30
        filled = int(width * min(self.done, self.total) / self.total)
        elapsed = time.monotonic() - self.began
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{elapsed:4.0f}s eta {eta:4.0f}s  {what[:60]}")
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def summarize(samples: list[Metrics]) -> dict[str, dict[str, float]]:
    """metric -> median, min, max, n over the rounds."""
    keys = sorted({k for s in samples for k in s})
    out = {}
    for key in keys:
        values = [s[key] for s in samples if key in s]
        out[key] = {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
                    "max": round(max(values), 4), "n": len(values)}
    return out


def percentiles(rtts: list[float]) -> tuple[float, float]:
    """p50 and p99 of round trips."""
    q = statistics.quantiles(rtts, n=100) if len(rtts) > 1 else [rtts[0]] * 99
    return statistics.median(rtts), q[98]


async def paired_idle(sessions: dict[str, Any], count: int) -> dict[str, Metrics]:
    """Idle round trips (``idle_p50_ms``, ``idle_p99_ms``) of every session at once, one ping each
    in turn, the order rotating: these machines change pace for 0.1-1 s at a time (a raw relay's
    idle echo reads 0.11 or 0.17 ms by the round, on any code), and pings taken apart in time
    compare the machine's moments, not the variants (one `bench all` read ours/raw 0.93x, the
    next 1.57x, from the same trees)."""
    names = list(sessions)
    rtts: dict[str, list[float]] = {n: [] for n in names}
    for i in range(max(5, count // 15) + count):  # bounded; the first ones warm up
        for n in names[i % len(names):] + names[:i % len(names)]:
            began = time.perf_counter()
            await sessions[n].ping(bytes([65 + i % 26]))
            if i >= max(5, count // 15):
                rtts[n].append((time.perf_counter() - began) * 1000)
    out = {}
    for n, values in rtts.items():
        p50, p99 = percentiles(values)
        out[n] = {"idle_p50_ms": p50, "idle_p99_ms": p99}
    return out


async def _paired_round(live: list[Variant], handles: dict[str, Any]) -> dict[str, Metrics]:
    paired = [v for v in live if v.echo is not None]
    if not paired:
        return {}
    sessions: dict[str, Any] = {}
    try:
        for v in paired:
            assert v.echo is not None
            sessions[v.name] = await v.echo(handles[v.name])
        return await paired_idle(sessions, max(v.echoes for v in paired))
    finally:
        for session in sessions.values():
            await session.close()


async def run_variants(name: str, variants: list[Variant], ctx: Context) -> dict[str, Any]:
    """Start every variant, then ``ctx.rounds`` rounds; round r measures them in an order rotated
    by r, after the idle round trips of those with an ``echo``, taken together (``paired_idle``)."""
    samples: dict[str, list[Metrics]] = {v.name: [] for v in variants}
    errors: dict[str, str] = {}
    async with AsyncExitStack() as stack:
        handles = {}
        for v in variants:
            try:
                handles[v.name] = await stack.enter_async_context(v.setup())
            except Exception as exc:  # a baseline that cannot start is reported, not fatal
                errors[v.name] = f"setup: {type(exc).__name__}: {exc}"[:500]
                if ctx.progress:
                    ctx.progress.grow(-ctx.rounds)
        live = [v for v in variants if v.name in handles]
        for r in range(ctx.rounds):
            order = live[r % len(live):] + live[:r % len(live)] if live else []
            try:
                idle = await _paired_round(order, handles)
            except Exception as exc:
                idle = {}
                errors.setdefault("idle", f"round {r + 1}: {type(exc).__name__}: {exc}"[:500])
            for v in order:
                if ctx.progress:
                    ctx.progress.show(f"{name}: {v.name} (round {r + 1}/{ctx.rounds})")
                try:
                    samples[v.name].append({**idle.get(v.name, {}), **await v.measure(handles[v.name])})
                except Exception as exc:
                    errors.setdefault(v.name, f"round {r + 1}: {type(exc).__name__}: {exc}"[:500])
                if ctx.progress:
                    ctx.progress.step(f"{name}: {v.name} (round {r + 1}/{ctx.rounds})")
    return {
        "variants": {v.name: {"samples": samples[v.name], "summary": summarize(samples[v.name])} for v in variants},
        "errors": errors,
    }


def medians(result: dict[str, Any]) -> dict[str, Metrics]:
    return {name: {k: s["median"] for k, s in v["summary"].items()} for name, v in result["variants"].items()}


def machine() -> dict[str, Any]:
    """What the numbers ran on: CPU, cores, load, Python, loop, kernel, the commit."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    import ssl

    import websockets

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "loop": loop,
        "openssl": ssl.OPENSSL_VERSION,
        "websockets": websockets.__version__,
        "kernel": platform.release(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def git(*args: str, cwd: Path | None = None) -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd or Path(__file__).resolve().parent.parent,
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
