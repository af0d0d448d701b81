"""The built-in emulator: fake pods whose containers write deterministic log lines.

Runs the whole chain with no containerd, for labs and benchmarks. Container ``c`` of pod
``p`` in namespace ``ns`` writes line ``i`` at ``t0 + i / rate``::

    <ns>/<pod>/<c> line <i>\n

(padded to ``line_size`` bytes when set), ``history`` lines exist when the edge starts, and
every kubelet log option is honoured on that timeline. With ``rate = 0`` a follow writes as
fast as the tunnel takes it (benchmarks).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from proto.tunnel import NotFound

from ..config import EmulatorConfig
from ..logs_options import BadLogOptions, LogOptions
from ..stream import EdgeStream
from ..node_stats import HostStats
from . import emulator_stats
from .base import BaseBackend
from .emulator_shell import ProcessIO, run_command
from .ws_channels import refuse, serve_port_forward, serve_remotecommand

__all__ = ["EmulatorBackend", "EmulatedContainer"]

_CHUNK = 60 * 1024


@dataclass(slots=True)
class EmulatedContainer:
    namespace: str
    pod: str
    name: str
    rate: float
    t0: float
    """Wall-clock time of line 0."""
    line_size: int = 0

    def line(self, i: int) -> bytes:
        text = f"{self.namespace}/{self.pod}/{self.name} line {i}"
        if self.line_size > len(text) + 1:
            text = text + " " + "x" * (self.line_size - len(text) - 2)
        return (text + "\n").encode()

    def written(self, now: float) -> int:
        """How many lines exist at wall-clock ``now``."""
        if self.rate <= 0:
            return 1 << 62
        return max(0, math.floor((now - self.t0) * self.rate) + 1)

    def time_of(self, i: int) -> float:
        return self.t0 + (i / self.rate if self.rate > 0 else 0.0)


def _rfc3339nano(ts: float) -> bytes:
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    nanos = int(round((ts - math.floor(ts)) * 1e9)) % 1_000_000_000
    return (dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z ").encode()


class EmulatorBackend(BaseBackend):
    def __init__(self, config: EmulatorConfig, clock: object = time.time) -> None:
        self.config = config
        self.clock = clock  # type: ignore[assignment]
        now = time.time()
        self.started = now
        self.started_ns = int(now * 1e9)
        self.host = HostStats()
        rate = config.log_rate
        t0 = now - (config.history - 1) / rate if rate > 0 else now
        self.containers = {
            (ns, pod, c): EmulatedContainer(ns, pod, c, rate, t0, config.line_size) for ns, pod, c in config.pods
        }

    def find(self, ns: str, pod: str, container: str) -> EmulatedContainer:
        found = self.containers.get((ns, pod, container))
        if found is not None:
            return found
        if not any(k[0] == ns and k[1] == pod for k in self.containers):
            raise NotFound(f'pod "{ns}/{pod}" is not on this node (emulator)')
        raise NotFound(f'container "{container}" is not in pod "{ns}/{pod}" (emulator)')

    # ------------------------------------------------------------------ logs

    async def logs(self, stream: EdgeStream, ns: str, pod: str, container: str, options: LogOptions) -> None:
        ctr = self.find(ns, pod, container)
        if options.previous:
            raise BadLogOptions(f'previous terminated container "{container}" in pod "{ns}/{pod}" not found')
        await stream.answer(200)
        if options.stream == "Stderr":
            return  # emulated containers write to stdout only
        now = time.time()
        # What exists now; a follow keeps extending it (unbounded at rate 0).
        if ctr.rate > 0:
            end = ctr.written(now)
        else:
            end = 1 << 62 if options.follow else self.config.history
        first = 0
        if options.since_seconds is not None or options.since_time is not None:
            since = options.since_time.timestamp() if options.since_time else now - (options.since_seconds or 0)
            first = max(0, math.ceil((since - ctr.t0) * ctr.rate)) if ctr.rate > 0 else 0
        if options.tail_lines is not None:
            existing = end if ctr.rate > 0 else self.config.history
            first = max(first, existing - options.tail_lines)
        budget = options.limit_bytes if options.limit_bytes is not None else -1
        i = first
        parts: list[bytes] = []
        size = 0
        while True:
            if options.follow and ctr.rate > 0:
                end = ctr.written(time.time())
            while i < end and size < _CHUNK:
                line = ctr.line(i)
                if options.timestamps:
                    line = _rfc3339nano(ctr.time_of(i)) + line
                parts.append(line)
                size += len(line)
                i += 1
            if parts:
                data = b"".join(parts)
                parts.clear()
                size = 0
                if budget >= 0:
                    data = data[:budget]
                    budget -= len(data)
                await stream.send(data)
                if budget == 0:
                    return
                continue
            if not options.follow:
                return
            await asyncio.sleep(max(0.0, ctr.time_of(i) - time.time()))

    # ------------------------------------------------------------------ metrics

    async def metrics(self, stream: EdgeStream, path: str) -> None:
        clean = path.rstrip("/")
        if clean in ("/stats/summary", "/stats"):
            only = stream.query().get("only_cpu_and_memory", [""])[-1].lower() in ("1", "true")
            node = stream.session.config.node_name
            body = emulator_stats.summary(self.containers.values(), node, self.started_ns, self.host, only_cpu_and_memory=only)
        elif clean == "/metrics/resource":
            body = emulator_stats.resource_metrics(self.containers.values(), self.started_ns, self.host)
        else:
            raise emulator_stats.not_found(path)
        await stream.send(body)

    # ------------------------------------------------------------------ exec / attach / port-forward

    async def exec(self, stream: EdgeStream, ns: str, pod: str, container: str, *, attach: bool) -> None:
        try:
            ctr = self.find(ns, pod, container)
        except NotFound as exc:
            await refuse(stream, 404, str(exc))
            return
        if attach:
            await serve_remotecommand(stream, lambda io: self._attached(ctr, io), pod)
            return
        argv = stream.query().get("command", [])
        if not argv:
            await refuse(stream, 400, "exec needs at least one command= parameter")
            return
        await serve_remotecommand(stream, lambda io: run_command(argv, io), pod)

    async def _attached(self, ctr: EmulatedContainer, io: ProcessIO) -> int:
        """Attach: the container's live output; typed input is echoed back (a `cat` main process)."""

        async def echo_stdin() -> None:
            while (data := await io.read_stdin()) is not None:
                await io.write_stdout(data)

        echo = asyncio.create_task(echo_stdin())
        try:
            i = ctr.written(time.time()) if ctr.rate > 0 else 0
            while True:
                await asyncio.sleep(max(0.0, ctr.time_of(i) - time.time()) if ctr.rate > 0 else 0.1)
                end = ctr.written(time.time()) if ctr.rate > 0 else i + 1
                if end > i:
                    await io.write_stdout(b"".join(ctr.line(n) for n in range(i, end)))
                    i = end
                if echo.done():
                    return 0
        finally:
            echo.cancel()

    async def port_forward(self, stream: EdgeStream, ns: str, pod: str) -> None:
        if not any(k[0] == ns and k[1] == pod for k in self.containers):
            await refuse(stream, 404, f'pod "{ns}/{pod}" is not on this node (emulator)')
            return
        await serve_port_forward(stream)
