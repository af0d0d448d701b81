"""Hostile-peer benchmark (issue 15, finding 2): what unauthenticated peers cost the API server.

    python -m bench.hostile [--part latency|memory|all] [--tree DIR] [--hello none|partial] [--nofile N]

latency: a legitimate API-server request (fresh TLS connection with the kubelet-client
    certificate, ``logs ?tailLines=1`` of an emulated node) timed sequentially, first quiet,
    then while 1,000 slowloris connections from 127.0.0.2/127.0.0.3 trickle: half send a
    ClientHello a byte at a time (both ports), half finish TLS without a client certificate
    and trickle a request head (10003). Reports p50/p95/max and how many of the API server's
    own connections failed or were refused/evicted in cloudstream's log.
memory: cloudstream's RSS at start and after each of three rounds of 10,000 TCP connections to
    10003 that never send a ClientHello (``--hello partial``: that send the first bytes of one
    and stop), from 100 source addresses, held 3 s then closed.

``--tree DIR`` runs cloudstream from another checkout (``git worktree add /tmp/base main`` for
the before numbers). Real processes on loopback, uvloop (cloudstream's default loop).

Results (2026-11-29, Python 3.11.7, uvloop 0.23, 2 shared cores, 100 sequential requests):

=====================================  ===========================  ==========================
                                       before (main 73b8ca2)        after (accept layer)
=====================================  ===========================  ==========================
1,000 slowloris, nofile 1,024          p50 7.3 ms, 0 failed         p50 7.0 / p95 24 / max 30 ms
1,100 slowloris, nofile 1,024          98 of 100 requests failed    p50 9.2 / p95 34 / max 81 ms
1,000 slowloris, nofile = hard limit   --                           p50 6.6-10.7, p95 17-59 ms
RSS, 3 x 10,000 silent connections     39 -> 246, 484, 738 MB       40 -> 40.7, 40.8, 40.8 MB
RSS, 3 x 10,000 partial ClientHellos   --                           40 -> 46.6, 46.7, 46.9 MB
same, caps raised (~5,000 handshakes)  --                           +25.6 MB; without malloc_trim +546 MB
=====================================  ===========================  ==========================

No refusal of the API server's own connections in any run; about 11 refusal lines per attack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import resource
import signal
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

from streamcerts import Layout, client_context, init_lab
from testkit.processes import READY, Process, start_edge
from testkit.slowloris import PARTIAL_HELLO, Trickle

OURS = re.compile(r"(refused|closed) (a connection from )?127\.0\.0\.1:")


def hard_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


NOFILE: int | None = None
"""``--nofile``: run cloudstream under ``prlimit --nofile=N:N`` (systemd's default soft limit is 1,024)."""


async def start_cloud(layout: Layout, tree: Path | None, *extra: str) -> tuple[Process, int, int]:
    argv = [sys.executable, "-m", "cloudstream", "--pki-dir", str(layout.root), "--stream-address", "127.0.0.1",
            "--stream-port", "0", "--tunnel-address", "127.0.0.1", "--tunnel-port", "0", *extra]
    if tree is not None:  # another checkout: run from it (cwd comes first on sys.path with -m)
        argv = ["sh", "-c", f'cd "{tree}" && PYTHONPATH="{tree}" exec "$0" "$@"', *argv]
    if NOFILE is not None:
        argv = ["prlimit", f"--nofile={NOFILE}:{NOFILE}", *argv]
    cloud = await Process.start("cloudstream", argv, raw=True)
    m = await cloud.wait_for_line(READY)
    return cloud, int(m.group(1)), int(m.group(2))


async def cloud_state(cloud: Process) -> dict[str, int]:
    since = len(cloud.lines)
    cloud.proc.send_signal(signal.SIGUSR1)
    m = await cloud.wait_for_line(r"state (.*)$", since=since, timeout=10)
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


# ---------------------------------------------------------------------- attackers


async def tls_trickler(port: int, source: str, ctx: ssl.SSLContext, counter: list[int]) -> None:
    """TLS without a client certificate, then a request head one byte a second; again when closed."""
    head = b"GET /containerLogs/default/demo/app HTTP/1.1\r\nHost: bystander\r\n\r\n"
    while True:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="localhost", local_addr=(source, 0)
            )
        except (OSError, ssl.SSLError):
            counter[0] += 1
            await asyncio.sleep(0.5)
            continue
        try:
            for byte in head:
                writer.write(bytes([byte]))
                await asyncio.sleep(1.0)
                if reader.at_eof() or writer.transport.is_closing():
                    break
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()
        counter[0] += 1


# ---------------------------------------------------------------------- the parts


async def timed_requests(port: int, tls: ssl.SSLContext, count: int) -> tuple[list[float], int]:
    times: list[float] = []
    failures = 0
    for _ in range(count):
        started = time.perf_counter()
        try:
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=tls, server_hostname="localhost"
                )
                writer.write(b"GET /containerLogs/default/demo/app?tailLines=1 HTTP/1.1\r\nHost: bystander\r\n"
                             b"Connection: close\r\n\r\n")
                data = await reader.read()
                writer.close()
            if not data.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(data[:40])
            times.append((time.perf_counter() - started) * 1000)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            failures += 1
        await asyncio.sleep(0.05)
    return times, failures


def summary(times: list[float]) -> dict[str, float]:
    if not times:
        return {}
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "max_ms": round(ordered[-1], 1),
    }


async def latency(layout: Layout, tree: Path | None, slowloris: int, samples: int) -> dict[str, object]:
    cloud, stream_port, tunnel_port = await start_cloud(layout, tree)
    edge = await start_edge(layout, "bystander", tunnel_port, "--emulate-log-rate", "200")
    attacker: Process | None = None
    try:
        await cloud.wait_for_line(r"tunnel up: node bystander")
        tls = client_context(layout.stream_ca, layout.apiserver_client_cert, layout.apiserver_client_key)
        tls.check_hostname = False
        quiet, quiet_failed = await timed_requests(stream_port, tls, samples)
        since = len(cloud.lines)
        # The attacker runs in its own process: its work must not delay the timed client.
        attacker = await Process.start("attacker", [
            "bench.hostile", "--attack", f"{stream_port},{tunnel_port}", "--slowloris", str(slowloris),
            "--attack-ca", str(layout.stream_ca),
        ])
        await attacker.wait_for_line("attacking")
        await asyncio.sleep(5)
        attacked, attacked_failed = await timed_requests(stream_port, tls, samples)
        state = await cloud_state(cloud)
        await attacker.stop(signal.SIGINT)
        reconnects = int((await attacker.wait_for_line(r"reconnects (\d+)")).group(1))
        ours = [line for line in cloud.lines[since:] if OURS.search(line)]
        refusal_lines = [line for line in cloud.lines[since:] if re.search(r": (refused|closed) ", line)]
        return {
            "slowloris_connections": slowloris,
            "quiet": summary(quiet) | {"failed": quiet_failed},
            "under_attack": summary(attacked) | {"failed": attacked_failed},
            "api_server_refusals_in_log": len(ours),
            "refusal_log_lines": len(refusal_lines),
            "attacker_reconnects": reconnects,
            "cloud_fds": state.get("fds"),
        }
    finally:
        if attacker is not None:
            await attacker.stop()
        await edge.stop()
        await cloud.stop()


async def memory(
    layout: Layout, tree: Path | None, connections: int, rounds: int, hello: str, cloud_args: list[str]
) -> dict[str, object]:
    cloud, stream_port, _ = await start_cloud(layout, tree, *cloud_args)
    pid = cloud.proc.pid
    try:
        await asyncio.sleep(1)
        start = rss_mb(pid)
        after: list[float] = []
        peaks: list[float] = []
        payload = PARTIAL_HELLO if hello == "partial" else b""
        for _ in range(rounds):
            socks = []
            for n in range(connections):
                sock = socket.socket()
                sock.setblocking(False)
                sock.bind((f"127.0.2.{1 + n % 100}", 0))
                sock.connect_ex(("127.0.0.1", stream_port))
                socks.append(sock)
                if n % 1000 == 999:
                    await asyncio.sleep(0.05)
            if payload:
                await asyncio.sleep(0.5)
                for sock in socks:
                    try:
                        sock.send(payload)
                    except OSError:
                        pass
            await asyncio.sleep(3)
            peaks.append(rss_mb(pid))
            for sock in socks:
                sock.close()
            await asyncio.sleep(3)  # closes processed; a trim (if any) runs 1 s after the burst
            after.append(rss_mb(pid))
        return {
            "connections_per_round": connections,
            "hello": hello,
            "rss_start_mb": round(start, 1),
            "rss_peak_mb": [round(x, 1) for x in peaks],
            "rss_after_round_mb": [round(x, 1) for x in after],
            "growth_mb": round(after[-1] - start, 1),
        }
    finally:
        await cloud.stop()


async def attack(ports: tuple[int, int], slowloris: int, ca: Path) -> None:
    """The attacker process: half raw ClientHello tricklers on both ports, half TLS-without-
    certificate head tricklers on 10003, all from 127.0.0.2/127.0.0.3, until interrupted."""
    stream_port, tunnel_port = ports
    sources = ["127.0.0.2", "127.0.0.3"]
    raw = Trickle(list(ports), sources, slowloris // 2)
    anonymous = client_context(ca)
    anonymous.check_hostname = False
    tls_reconnects = [0]
    tasks = [
        asyncio.create_task(tls_trickler(stream_port, sources[i % 2], anonymous, tls_reconnects))
        for i in range(slowloris - slowloris // 2)
    ]
    print("attacking", flush=True)
    try:
        while True:
            raw.tick()
            await asyncio.sleep(0.5)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raw.close()
        print(f"reconnects {raw.reconnects + tls_reconnects[0]}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["latency", "memory", "all"], default="all")
    parser.add_argument("--tree", type=Path, help="run cloudstream from this checkout")
    parser.add_argument("--slowloris", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hello", choices=["none", "partial"], default="none")
    parser.add_argument("--nofile", type=int, help="cloudstream's open-file limit (prlimit), e.g. 1024")
    parser.add_argument("--cloud-arg", action="append", default=[], help="an extra cloudstream flag (repeat)")
    parser.add_argument("--attack", help=argparse.SUPPRESS)  # STREAM,TUNNEL: run as the attacker process
    parser.add_argument("--attack-ca", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global NOFILE
    NOFILE = args.nofile
    if args.attack:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard_limit(), hard_limit()))
        ports = tuple(int(p) for p in args.attack.split(","))
        try:
            await attack((ports[0], ports[1]), args.slowloris, args.attack_ca)
        except asyncio.CancelledError:
            pass
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds the attackers' sockets
    layout = init_lab(Path(tempfile.mkdtemp(prefix="bench-hostile-")), ["bystander"])
    result: dict[str, object] = {
        "python": platform.python_version(), "loop": "uvloop (cloudstream default)", "tls": True,
        "tree": str(args.tree or "."), "cloud_nofile": args.nofile or resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }
    if args.part in ("latency", "all"):
        result["latency"] = await latency(layout, args.tree, args.slowloris, args.samples)
    if args.part in ("memory", "all"):
        result["memory"] = await memory(layout, args.tree, args.connections, args.rounds, args.hello, args.cloud_arg)
        result["memory"]["cloud_args"] = args.cloud_arg  # type: ignore[index]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # the attacker process is stopped with SIGINT
        pass
