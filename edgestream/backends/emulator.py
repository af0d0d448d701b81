"""The built-in emulator: fake pods whose containers write deterministic log lines.

Runs the whole chain with no containerd, for labs and benchmarks. Container ``c`` of pod
``p`` in namespace ``ns`` writes line ``i`` at ``t0 + i / rate``::

    <ns>/<pod>/<c> line <i>\n

(padded to ``line_size`` bytes when set), ``history`` lines exist when the edge starts, and
every kubelet log option is honoured on that timeline. With ``rate = 0`` a follow writes as
fast as the tunnel takes it (benchmarks). Given a ``phase_seed`` (the node's name), each
container's ``t0`` is shifted by a stable fraction of one line period, as real containers are
out of step: a fleet of 1,000 nodes built in the same millisecond would otherwise write all its
lines in the same instant, a burst every period no real site sees.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import zlib
from collections.abc import Coroutine
from typing import Any
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from streamproto.tunnel import NotFound

from ..config import EmulatorConfig
from ..logs_options import BadLogOptions, LogOptions
from ..stream import EdgeStream
from ..node_stats import HostStats
from . import emulator_stats
from .base import BaseBackend
from .emulator_shell import ProcessIO, run_command
from .kube_http import refuse
from .spdy_exec import ExecOptions, serve_spdy_remotecommand
from .spdy_portforward import TUNNEL_PROTOCOL, serve_spdy_port_forward, serve_tunnelled_port_forward
from .ws_channels import serve_port_forward, serve_remotecommand

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
    restarts: int = 0
    previous: tuple[float, int] | None = None
    """(t0, lines written) of the instance before the last restart: ``--previous`` logs."""
    cap: int | None = None
    """Lines this timeline ends at (a previous instance's)."""

    def restart(self, now: float, history: int) -> None:
        """The main process died: the kubelet starts a new instance, numbering lines anew
        (at rate 0 the old instance leaves ``history`` lines)."""
        self.previous = (self.t0, self.written(now) if self.rate > 0 else history)
        self.t0 = now
        self.restarts += 1

    def previous_timeline(self) -> EmulatedContainer | None:
        if self.previous is None:
            return None
        t0, end = self.previous
        return replace(self, t0=t0, cap=end, previous=None)

    def line(self, i: int) -> bytes:
        text = f"{self.namespace}/{self.pod}/{self.name} line {i}"
        if self.line_size > len(text) + 1:
            text = text + " " + "x" * (self.line_size - len(text) - 2)
        return (text + "\n").encode()

    def lines(self, i: int, end: int, max_bytes: int) -> tuple[bytes, int]:
        """Lines ``i`` … up to ``end`` (exclusive) as ``line`` writes them, about ``max_bytes``
        (at least one line), and the next line's number. Lines of one digit count differ only in
        their number, so a run of them is one C-level join: a full-speed ``logs -f`` spends its
        edge's CPU on the tunnel, not on formatting (a quarter of a core at 600 MB/s, line by line)."""
        head = f"{self.namespace}/{self.pod}/{self.name} line "
        digits = len(str(i))
        width = len(head) + digits
        tail = " " + "x" * (self.line_size - width - 2) + "\n" if self.line_size > width + 1 else "\n"
        count = min(end - i, 10**digits - i, max(1, max_bytes // (width + len(tail))))
        text = head + (tail + head).join(map(str, range(i, i + count))) + tail
        return text.encode(), i + count

    def written(self, now: float) -> int:
        """How many lines exist at wall-clock ``now``."""
        if self.rate <= 0:
            return 1 << 62 if self.cap is None else self.cap
        count = max(0, math.floor((now - self.t0) * self.rate) + 1)
        return count if self.cap is None else min(count, self.cap)

    def time_of(self, i: int) -> float:
        return self.t0 + (i / self.rate if self.rate > 0 else 0.0)


def _phase(seed: str, ns: str, pod: str, c: str, rate: float) -> float:
    """A stable offset in [0, one period): still exactly ``history`` lines at start."""
    if not seed or rate <= 0:
        return 0.0
    return zlib.crc32(f"{seed}/{ns}/{pod}/{c}".encode()) / 2**32 / rate


def _rfc3339nano(ts: float) -> bytes:
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    nanos = int(round((ts - math.floor(ts)) * 1e9)) % 1_000_000_000
    return (dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z ").encode()


class EmulatorBackend(BaseBackend):
    def __init__(self, config: EmulatorConfig, clock: object = time.time, *, phase_seed: str = "") -> None:
        self.config = config
        self.clock = clock
        now = time.time()
        self.started = now
        self.started_ns = int(now * 1e9)
        self.host = HostStats()
        rate = config.log_rate
        t0 = now - (config.history - 1) / rate if rate > 0 else now
        self.containers = {
            (ns, pod, c): EmulatedContainer(ns, pod, c, rate, t0 - _phase(phase_seed, ns, pod, c, rate), config.line_size)
            for ns, pod, c in config.pods
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
            previous = ctr.previous_timeline()
            if previous is None:
                raise BadLogOptions(f'previous terminated container "{container}" in pod "{ns}/{pod}" not found')
            ctr, options = previous, replace(options, follow=False)  # a dead instance writes no more
        await stream.answer(200)
        if options.stream == "Stderr":
            return  # emulated containers write to stdout only
        now = time.time()
        # What exists now; a follow keeps extending it (unbounded at rate 0).
        if ctr.rate > 0:
            end = ctr.written(now)
        else:
            end = 1 << 62 if options.follow else (ctr.cap if ctr.cap is not None else self.config.history)
        first = 0
        if options.since_seconds is not None or options.since_time is not None:
            since = options.since_time.timestamp() if options.since_time else now - (options.since_seconds or 0)
            first = max(0, math.ceil((since - ctr.t0) * ctr.rate)) if ctr.rate > 0 else 0
        if options.tail_lines is not None:
            existing = end if ctr.rate > 0 or ctr.cap is not None else self.config.history
            first = max(first, existing - options.tail_lines)
        budget = options.limit_bytes if options.limit_bytes is not None else -1
        i = first
        parts: list[bytes] = []
        size = 0
        while True:
            if options.follow and ctr.rate > 0:
                end = ctr.written(time.time())
            while i < end and size < _CHUNK:
                if options.timestamps:
                    line = _rfc3339nano(ctr.time_of(i)) + ctr.line(i)
                    i += 1
                else:
                    line, i = ctr.lines(i, end, _CHUNK - size)
                parts.append(line)
                size += len(line)
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
        if clean == "/pods":
            body = json.dumps(self._pods(), indent=2).encode()
        elif clean in ("/stats/summary", "/stats"):
            only = stream.query().get("only_cpu_and_memory", [""])[-1].lower() in ("1", "true")
            node = stream.session.config.node_name
            body = emulator_stats.summary(self.containers.values(), node, self.started_ns, self.host, only_cpu_and_memory=only)
        elif clean == "/metrics/resource":
            body = emulator_stats.resource_metrics(self.containers.values(), self.started_ns, self.host)
        else:
            raise emulator_stats.not_found(path)
        await stream.send(body)

    def _pods(self) -> dict[str, object]:
        """The kubelet's ``/pods``: a PodList whose container statuses carry the restart counts."""
        pods: dict[tuple[str, str], list[EmulatedContainer]] = {}
        for c in self.containers.values():
            pods.setdefault((c.namespace, c.pod), []).append(c)

        def started(c: EmulatedContainer) -> str:
            return datetime.fromtimestamp(max(c.t0, self.started), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

        return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
            {"metadata": {"name": pod, "namespace": ns, "uid": f"emulated-{ns}-{pod}"},
             "spec": {"containers": [{"name": c.name, "image": "emulated"} for c in ctrs]},
             "status": {"phase": "Running", "containerStatuses": [
                 {"name": c.name, "ready": True, "restartCount": c.restarts, "image": "emulated", "imageID": "",
                  "state": {"running": {"startedAt": started(c)}}} for c in ctrs]}}
            for (ns, pod), ctrs in pods.items()]}

    # ------------------------------------------------------------------ exec / attach / port-forward

    async def exec(self, stream: EdgeStream, ns: str, pod: str, container: str, *, attach: bool) -> None:
        """SPDY/3.1 (what a kube-apiserver sends) or WebSocket v5/v4 (passed through), as the kubelet."""
        try:
            ctr = self.find(ns, pod, container)
        except NotFound as exc:
            await refuse(stream, 404, str(exc))
            return
        spdy = (stream.request.header("Upgrade") or "").lower() != "websocket"
        query = stream.query()
        argv = query.get("command", [])
        if not attach and not argv:
            await refuse(stream, 400, "exec needs at least one command= parameter")
            return
        opts = ExecOptions.from_query(query)
        if opts is None:
            await refuse(stream, 400, "you must specify at least 1 of stdin, stdout, stderr")
            return

        def run(io: ProcessIO) -> Coroutine[Any, Any, int]:
            io.restart = lambda: ctr.restart(time.time(), self.config.history)
            return self._attached(ctr, io) if attach else run_command(argv, io)

        if spdy:
            await serve_spdy_remotecommand(stream, run, pod, opts)
        else:
            await serve_remotecommand(stream, run, pod)

    async def _attached(self, ctr: EmulatedContainer, io: ProcessIO) -> int:
        """Attach: the container's live output until the client leaves; typed input is echoed
        back (a `cat` main process), and its end (stdin EOF) ends the attach."""

        async def echo_stdin() -> None:
            while (data := await io.read_stdin()) is not None:
                await io.write_stdout(data)

        echo = asyncio.create_task(echo_stdin()) if io.stdin else None
        try:
            i = ctr.written(time.time()) if ctr.rate > 0 else 0
            while True:
                await asyncio.sleep(max(0.0, ctr.time_of(i) - time.time()) if ctr.rate > 0 else 0.1)
                end = ctr.written(time.time()) if ctr.rate > 0 else i + 1
                if end < i:  # restarted meanwhile: the new instance's lines
                    i = 0
                if end > i:
                    await io.write_stdout(b"".join(ctr.line(n) for n in range(i, end)))
                    i = end
                if echo is not None and echo.done():
                    return 0
        finally:
            if echo is not None:
                echo.cancel()

    async def port_forward(self, stream: EdgeStream, ns: str, pod: str) -> None:
        if not any(k[0] == ns and k[1] == pod for k in self.containers):
            await refuse(stream, 404, f'pod "{ns}/{pod}" is not on this node (emulator)')
            return
        if (stream.request.header("Upgrade") or "").lower() != "websocket":
            await serve_spdy_port_forward(stream)
        elif any(TUNNEL_PROTOCOL == p.strip() for line in stream.request.header_values("Sec-WebSocket-Protocol")
                 for p in line.split(",")):
            await serve_tunnelled_port_forward(stream)
        else:
            await serve_port_forward(stream)
