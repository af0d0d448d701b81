"""A fleet on one machine: one cloudstream, one ``edgestream emulate`` process, N nodes.

    python -m bench.fleet idle --nodes 1000 [--nodes 10000] [--base /tmp/base-main] [--rounds 2]
    python -m bench.fleet streams --nodes 1000 --per-node 10 [--duration 20]

``idle``: cloudstream's RSS per idle tunnel (RSS with N tunnels minus RSS after one warm-up
request, over N), its tasks per tunnel (SIGUSR1 ``state`` line) and the CPU it spends on N idle
tunnels (keepalives) over 20 s. With ``--base`` (a worktree of another commit) each round runs
that commit's cloudstream and then this one's, interleaved; the fleet is always this tree's.

``streams``: N nodes, ``per-node`` concurrent streams each, half ``logs -f`` (HTTP/1.1 chunked,
emulator writing ``--log-rate`` lines a second, 0: as fast as read) and half exec (WebSocket
v5.channel.k8s.io): by default an interactive ``cat`` session that stays open and types a line
every ``--echo-every`` seconds (its echo round trip is measured), or with ``--exec CMD`` that
command run again as soon as it ends (a bulk churn: then the streams are not all open at once).
All through 10003 from this process. Reports the most streams open at once, aggregate throughput
over the window (bytes read off the client sockets), p50/p99 time to first byte (request sent ->
first body/stdout byte), p50/p99 echo round trip in the window, the RSS of cloudstream, the fleet
and this client.

cloudstream runs with ``--max-connections``/``--max-open-files`` raised for N tunnels and
``--max-pending-per-ip 1000``: every edge dials from 127.0.0.1, and the per-address pending cap
(100) would otherwise refuse part of a 10,000-node ramp (the edges would retry and get in).
Imports only the product (never tests/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shlex
import signal
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from streamcerts import Layout, client_context

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"kubelet API on \S+:(\d+), tunnel on \S+:(\d+)")
STATE = re.compile(r"state (.*)$")


@dataclass
class Proc:
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, argv: list[str], root: Path) -> Proc:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(root))
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", *argv, cwd=root, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self = cls(proc)
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())
            if len(self.lines) > 20000:
                del self.lines[:10000]

    async def wait_for(self, pattern: str | re.Pattern[str], timeout: float, since: int = 0) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = since
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if m := regex.search(line):
                    return m
            seen = len(self.lines)
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        raise RuntimeError(f"never logged {regex.pattern!r}:\n" + "\n".join(self.lines[-30:]))

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return -1.0

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def state(self) -> dict[str, int]:
        since = len(self.lines)
        self.proc.send_signal(signal.SIGUSR1)
        m = await self.wait_for(STATE, 10, since)
        return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            await asyncio.wait([self.reader], timeout=5)


def lab(nodes: int, pki: Path) -> Layout:
    from edgestream.fleet import node_configs
    from edgestream.fleet_profile import FleetProfile

    t = time.monotonic()
    node_configs(FleetProfile(nodes=nodes, pki_dir=pki, cidr="10.128.0.0/16"))
    print(f"# lab: {nodes} node certificates in {time.monotonic() - t:.1f} s", flush=True)
    return Layout(pki)


def api_tls(layout: Layout) -> ssl.SSLContext:
    ctx = client_context(layout.stream_ca, layout.apiserver_client_cert, layout.apiserver_client_key)
    ctx.check_hostname = False
    return ctx


async def start_cloud(layout: Layout, root: Path, nodes: int, extra_api: int = 0,
                      trace: str | None = None) -> tuple[Proc, int, int]:
    """``trace``: run it under ``testkit.memtrace`` writing to that file (SIGUSR2: a snapshot diff)."""
    wrap = ["testkit.memtrace", trace, "--frames", os.environ.get("MEMTRACE_FRAMES", "1"), "--"] if trace else []
    cloud = await Proc.start([
        *wrap, "cloudstream", "--pki-dir", str(layout.root), "--stream-address", "127.0.0.1", "--stream-port", "0",
        "--tunnel-address", "127.0.0.1", "--tunnel-port", "0",
        "--max-open-files", str(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
        "--max-connections", str(max(10_000, nodes + extra_api + 1000)),
        "--max-pending-handshakes", "1000", "--max-pending-per-ip", "1000",
    ], root)
    m = await cloud.wait_for(READY, 30)
    return cloud, int(m.group(1)), int(m.group(2))


async def raw_get(port: int, tls: ssl.SSLContext, host: str, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head


async def warm_up(port: int, tls: ssl.SSLContext) -> None:
    """One refused request: the loop's lazy one-time allocations happen before the baseline."""
    reader, writer, _ = await raw_get(port, tls, "no-such-node", "/containerLogs/a/b/c")
    writer.close()


async def start_fleet(layout: Layout, tunnel_port: int, nodes: int, *extra: str) -> Proc:
    fleet = await Proc.start([
        "edgestream", "emulate", "--nodes", str(nodes), "--pki-dir", str(layout.root), "--cidr", "10.128.0.0/16",
        "--server", f"localhost:{tunnel_port}", "--ramp", os.environ.get("FLEET_RAMP", "500"), "--report-every", "5",
        *extra,
    ], ROOT)
    try:
        await fleet.wait_for(rf"all {nodes} nodes up", timeout=120 + nodes / 50)
    except BaseException:
        await fleet.stop()  # else an orphaned emulator keeps its N tunnels (and a core) after we exit
        raise
    return fleet


# ---------------------------------------------------------------------------------------------- idle


async def idle_once(layout: Layout, root: Path, nodes: int, label: str,
                    trace: str | None = None) -> dict[str, float | None]:
    cloud, port, tunnel_port = await start_cloud(layout, root, nodes, trace=trace)
    fleet = None
    try:
        await warm_up(port, api_tls(layout))
        await asyncio.sleep(1)
        base_rss, base = cloud.rss_mb(), await cloud.state()
        if trace:
            cloud.proc.send_signal(signal.SIGUSR2)
        t = time.monotonic()
        fleet = await start_fleet(layout, tunnel_port, nodes)
        up_after = time.monotonic() - t
        await asyncio.sleep(5)
        cpu0, t0 = cloud.cpu_seconds(), time.monotonic()
        await asyncio.sleep(20)  # two keepalive rounds at the default 10 s interval
        cpu = (cloud.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        rss, state = cloud.rss_mb(), await cloud.state()
        if trace:
            cloud.proc.send_signal(signal.SIGUSR2)
            for _ in range(120):  # the snapshot of 10,000 tunnels takes a while
                await asyncio.sleep(1)
                if Path(trace).exists() and Path(trace).read_text().count("=== ") >= 2:
                    break
            if os.environ.get("MEMTRACE_FRAMES") == "0":
                print(f"# after gc + malloc_trim: {(cloud.rss_mb() - base_rss) * 1024 / max(1, state['tunnels']):.1f} "
                      "kB per tunnel", flush=True)
        result = {
            "nodes": nodes, "tunnels": state["tunnels"], "up_s": round(up_after, 1),
            "kb_per_tunnel": round((rss - base_rss) * 1024 / max(1, state["tunnels"]), 1),
            "tasks_per_tunnel": round((state["tasks"] - base["tasks"]) / max(1, state["tunnels"]), 2),
            "idle_cpu_pct": round(cpu * 100, 1), "cloud_rss_mb": round(rss, 1), "fleet_rss_mb": round(fleet.rss_mb(), 1),
            "fleet_kb_per_node": round(fleet.rss_mb() * 1024 / nodes, 1), "fleet_tasks_per_node": _fleet_tasks(fleet, nodes),
        }
        print(f"{label:8s} " + json.dumps(result), flush=True)
        return result
    finally:
        if fleet is not None:
            await fleet.stop()
        await cloud.stop()


def _fleet_tasks(fleet: Proc, nodes: int) -> float | None:
    """Tasks per node from the emulator's last ``fleet:`` report line (None: an older emulator)."""
    for line in reversed(fleet.lines):
        if m := re.search(r"fleet: .* (\d+) tasks$", line):
            return round(int(m.group(1)) / nodes, 2)
    return None


def _capacity() -> int:
    """Tunnels cloudstream can hold here: it gives each of its two ports half of the open-file
    limit after a reserve of 128 (``Limits.fitted``), and only the hard limit can be had."""
    return (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 128) // 2 - 20


async def idle(args: argparse.Namespace) -> None:
    capacity = _capacity()
    if max(args.nodes) > capacity:
        print(f"# the hard open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[1]} lets cloudstream hold "
              f"{capacity} tunnels: {max(args.nodes)} nodes become {capacity}", flush=True)
        args.nodes = [min(n, capacity) for n in args.nodes]
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        layout = lab(max(args.nodes), Path(tmp) / "pki")
        trees = [("base", Path(args.base))] if args.base else []
        trees.append(("branch", ROOT))
        for nodes in args.nodes:
            for r in range(args.rounds):
                for label, root in trees:
                    await idle_once(layout, root, nodes, f"{label}#{r}",
                                    trace=f"{args.trace}.{label}.{nodes}" if args.trace else None)


# ---------------------------------------------------------------------------------------------- streams


@dataclass
class Totals:
    bytes: int = 0
    ttfb: list[float] = field(default_factory=list)
    echo: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    open_now: int = 0
    open_max: int = 0

    def opened(self) -> None:
        self.open_now += 1
        self.open_max = max(self.open_max, self.open_now)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def follow_logs(port: int, tls: ssl.SSLContext, node: str, totals: Totals, stop: asyncio.Event,
                      gate: asyncio.Semaphore) -> None:
    async with gate:
        t = time.monotonic()
        reader, writer, head = await raw_get(port, tls, node, "/containerLogs/default/demo/app?follow=true&tailLines=0")
    try:
        if not head.startswith(b"HTTP/1.1 200"):
            totals.error(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            return
        first = True
        while not stop.is_set():
            data = await reader.read(1 << 16)
            if not data:
                totals.error("logs: EOF")
                return
            if first:
                totals.ttfb.append(time.monotonic() - t)
                totals.opened()
                first = False
            totals.bytes += len(data)
        if not first:
            totals.open_now -= 1
    finally:
        writer.transport.abort()


def _exec_url(node: str, port: int, command: str, stdin: bool) -> str:
    query = [("command", arg) for arg in shlex.split(command)] + [("output", "1"), ("error", "1")]
    return f"wss://{node}:{port}/exec/default/demo/app?{urlencode(query + ([('input', '1')] if stdin else []))}"


async def _ws_connect(url: str, port: int, tls: ssl.SSLContext) -> Any:
    from websockets.asyncio.client import connect

    return await connect(url, host="127.0.0.1", port=port, ssl=tls, server_hostname="localhost",
                         subprotocols=["v5.channel.k8s.io"], open_timeout=120, max_size=None,  # type: ignore[list-item]
                         compression=None, ping_interval=None)


async def exec_echo(port: int, tls: ssl.SSLContext, node: str, totals: Totals, stop: asyncio.Event,
                    gate: asyncio.Semaphore, every: float, measuring: asyncio.Event) -> None:
    """One interactive ``cat`` kept open: a line typed every ``every`` s, its echo timed."""
    async with gate:
        t = time.monotonic()
        ws = await _ws_connect(_exec_url(node, port, "cat", stdin=True), port, tls)
    async with ws:
        seq, got = 0, b""
        while not stop.is_set():
            seq += 1
            line = f"{node} {seq}\n".encode()
            sent = time.monotonic()
            await ws.send(b"\x00" + line)
            while not got.endswith(line):
                message = await ws.recv()
                assert isinstance(message, bytes)
                if message[:1] == b"\x03":
                    totals.error("exec: ended: " + message[1:200].decode(errors="replace"))
                    return
                if message[:1] == b"\x01":
                    got = (got + message[1:])[-len(line):]
                    totals.bytes += len(message) - 1
            now = time.monotonic()
            if seq == 1:
                totals.ttfb.append(now - t)
                totals.opened()
            elif measuring.is_set():
                totals.echo.append(now - sent)
            # a jittered pause, so 5,000 sessions do not type in step
            await asyncio.sleep(every * random.uniform(0.5, 1.5))


async def exec_loop(port: int, tls: ssl.SSLContext, node: str, totals: Totals, stop: asyncio.Event,
                    gate: asyncio.Semaphore, command: str) -> None:
    while not stop.is_set():
        async with gate:
            t = time.monotonic()
            ws = await _ws_connect(_exec_url(node, port, command, stdin=False), port, tls)
        async with ws:
            first = True
            async for message in ws:
                if stop.is_set():
                    return
                assert isinstance(message, bytes)
                if message[:1] == b"\x01" and len(message) > 1:
                    if first:
                        totals.ttfb.append(time.monotonic() - t)
                        first = False
                    totals.bytes += len(message) - 1
                elif message[:1] == b"\x03" and b"Success" not in message:
                    totals.error("exec: " + message[1:200].decode(errors="replace"))


async def streams(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    total = args.nodes * args.per_node
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        layout = lab(args.nodes, Path(tmp) / "pki")
        cloud, port, tunnel_port = await start_cloud(layout, ROOT, args.nodes, extra_api=total)
        fleet = None
        try:
            await warm_up(port, api_tls(layout))
            fleet = await start_fleet(layout, tunnel_port, args.nodes, "--log-rate", str(args.log_rate),
                                      "--line-size", str(args.line_size))
            tls = api_tls(layout)
            totals, stop, measuring = Totals(), asyncio.Event(), asyncio.Event()
            gate = asyncio.Semaphore(64)  # handshakes in flight (cloudstream's per-address cap is 1000 here)
            names = [f"edge-{i:05d}" for i in range(args.nodes)]

            async def one(node: str, kind: str) -> None:
                try:
                    if kind == "logs":
                        await follow_logs(port, tls, node, totals, stop, gate)
                    elif args.exec:
                        await exec_loop(port, tls, node, totals, stop, gate, args.exec)
                    else:
                        await exec_echo(port, tls, node, totals, stop, gate, args.echo_every, measuring)
                except Exception as exc:  # counted, not raised: one failed stream is a number
                    if not stop.is_set():
                        totals.error(f"{kind}: {type(exc).__name__}: {str(exc)[:80]}")

            t_open = time.monotonic()
            tasks = []
            for j in range(args.per_node):
                for node in names:
                    tasks.append(asyncio.create_task(one(node, "logs" if j % 2 == 0 else "exec")))
                    if len(tasks) % 64 == 0:
                        await asyncio.sleep(0.02)
            while len(totals.ttfb) < total * 0.99 and time.monotonic() - t_open < 300:
                await asyncio.sleep(0.5)
            opened = time.monotonic() - t_open
            b0, t0 = totals.bytes, time.monotonic()
            cpu0 = (cloud.cpu_seconds(), fleet.cpu_seconds(), time.process_time())
            measuring.set()
            await asyncio.sleep(args.duration)
            elapsed = time.monotonic() - t0
            open_in_window = totals.open_now
            cpu = [round((b - a) / elapsed, 2) for a, b in
                   zip(cpu0, (cloud.cpu_seconds(), fleet.cpu_seconds(), time.process_time()), strict=True)]
            rate = (totals.bytes - b0) / elapsed
            state = await cloud.state()
            ttfb, echo = sorted(totals.ttfb), sorted(totals.echo)
            report = {
                "nodes": args.nodes, "streams": total, "first_bytes": len(ttfb), "open_s": round(opened, 1),
                "open_at_once_max": totals.open_max, "open_at_end": open_in_window,
                "throughput_MBps": round(rate / 1e6, 1),
                "ttfb_p50_ms": round(statistics.median(ttfb) * 1e3, 1) if ttfb else None,
                "ttfb_p99_ms": round(ttfb[int(len(ttfb) * 0.99) - 1] * 1e3, 1) if ttfb else None,
                "echoes": len(echo),
                "echo_p50_ms": round(statistics.median(echo) * 1e3, 1) if echo else None,
                "echo_p99_ms": round(echo[max(0, int(len(echo) * 0.99) - 1)] * 1e3, 1) if echo else None,
                "cloud_rss_mb": round(cloud.rss_mb(), 1), "fleet_rss_mb": round(fleet.rss_mb(), 1),
                "client_rss_mb": round(_self_rss_mb(), 1),
                "cpu_cores_cloud_fleet_client": cpu, "load_avg_1m": os.getloadavg()[0], "cloud_state": state, "errors": totals.errors,
            }
            print(json.dumps(report, indent=1), flush=True)
            for proc, name in ((cloud, "cloudstream"), (fleet, "emulator")):
                noted = [line for line in proc.lines if " WARNING " in line or " ERROR " in line or "!" in line[:40]]
                for line in noted[:20]:
                    print(f"# {name}: {line}", flush=True)
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=30)
        finally:
            if fleet is not None:
                await fleet.stop()
            await cloud.stop()


def _self_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return -1.0


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.fleet")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("idle")
    p.add_argument("--nodes", type=int, action="append", help="repeat: 1000 and 10000")
    p.add_argument("--base", help="a worktree of the commit to compare (its cloudstream)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--trace", metavar="PREFIX",
                   help="run cloudstream under tracemalloc (testkit.memtrace); the Python allocation sites grown "
                        "by the tunnels go to PREFIX.LABEL.NODES (tracing slows it: RSS figures then include it)")
    p = sub.add_parser("streams")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--per-node", type=int, default=10)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--log-rate", type=float, default=0, help="emulator lines per second (0: as fast as read)")
    p.add_argument("--line-size", type=int, default=200)
    p.add_argument("--exec", default="", help="instead of interactive cat sessions: this command, run again as "
                                                 "soon as it ends (e.g. 'seq 20000')")
    p.add_argument("--echo-every", type=float, default=2.0,
                   help="seconds between lines typed into each exec session (jittered 0.5-1.5x)")
    args = parser.parse_args()
    if args.what == "idle":
        args.nodes = args.nodes or [1000]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        asyncio.run(idle(args))
    else:
        # the product's loop (uvloop when installed): asyncio's own TLS zero-fills 256 KiB per
        # connection, 3.4 GB and a share of the two cores for 10,000 client streams
        from streamops.runner import run

        run(streams(args))


if __name__ == "__main__":
    main()
