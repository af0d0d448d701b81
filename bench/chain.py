"""Whole-chain benchmark: one `logs -f` through 10003 -> tunnel -> edge (emulator), and the
memory an idle API-server TLS connection costs cloudstream, on asyncio and on uvloop.

    python -m bench.chain [--seconds 5] [--connections 200]

Real processes, real TLS, loopback only. The emulator writes 1 KiB lines as fast as the
tunnel takes them. Reported with the loop, Python version and TLS on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import ssl
import sys
import tempfile
import time
from pathlib import Path

from certs import client_context, init_lab
from testkit.processes import Process, start_cloud, start_edge


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def follow_throughput(port: int, tls: ssl.SSLContext, seconds: float) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")
    writer.write(b"GET /containerLogs/default/bench/app?follow=true HTTP/1.1\r\nHost: bench-node\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    while await reader.readline() != b"\r\n":
        pass
    moved = 0
    warm_until = time.monotonic() + 1.0
    began = None
    while True:
        size = int((await reader.readline()).strip(), 16)
        await reader.readexactly(size + 2)
        now = time.monotonic()
        if began is None:
            if now >= warm_until:
                began = now
            continue
        moved += size
        if now - began >= seconds:
            break
    writer.transport.abort()
    return moved / (time.monotonic() - began) / 1e6


async def idle_connection_cost(pid: int, port: int, tls: ssl.SSLContext, count: int) -> float:
    before = rss_kib(pid)
    conns = []
    for _ in range(count):
        conns.append(await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost"))
    await asyncio.sleep(1.0)
    after = rss_kib(pid)
    for _, writer in conns:
        writer.transport.abort()
    return (after - before) / count


async def one_run(layout, loop: str, seconds: float, connections: int) -> dict:  # type: ignore[no-untyped-def]
    cloud, stream_port, tunnel_port = await start_cloud(layout, "--loop", loop)
    edge: Process | None = None
    try:
        edge = await start_edge(
            layout, "bench-node", tunnel_port, "--loop", loop, "--emulate", "default/bench/app",
            "--emulate-log-rate", "0", "--emulate-line-size", "1024",
        )
        tls = client_context(layout.stream_ca, layout.apiserver_client_cert, layout.apiserver_client_key)
        tls.check_hostname = False
        for _ in range(100):
            try:
                mbps = await follow_throughput(stream_port, tls, seconds)
                break
            except AssertionError:
                await asyncio.sleep(0.1)
        per_conn = await idle_connection_cost(cloud.proc.pid, stream_port, tls, connections)
        return {"loop": loop, "logs_follow_MBps": round(mbps, 1), "idle_tls_conn_KiB": round(per_conn, 1)}
    finally:
        if edge is not None:
            await edge.stop()
        await cloud.stop()


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_lab(Path(tmp) / "pki", ["bench-node"])
        results = []
        for loop in ("asyncio", "uvloop"):
            results.append(await one_run(layout, loop, args.seconds, args.connections))
    print(f"python {platform.python_version()}, TLS on, loopback, emulator 1 KiB lines at full speed")
    print(f"{'loop':>8} {'logs -f MB/s':>13} {'KiB per idle TLS conn':>22}")
    for r in results:
        print(f"{r['loop']:>8} {r['logs_follow_MBps']:>13} {r['idle_tls_conn_KiB']:>22}")
    a, u = results
    print(f"uvloop/asyncio: throughput {u['logs_follow_MBps'] / a['logs_follow_MBps']:.2f}x, "
          f"memory per connection {u['idle_tls_conn_KiB'] / max(a['idle_tls_conn_KiB'], 0.1):.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--json")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
