"""Whole-chain benchmark: one `logs -f` through 10003 -> tunnel -> edge (emulator), and the
memory an idle API-server TLS connection costs cloudstream, on asyncio and on uvloop.

    python -m bench.chain [--seconds 5] [--connections 200]

Real processes, real TLS, loopback only. The emulator writes 1 KiB lines as fast as the
tunnel takes them; ``bench.reader`` reads them in its own process (as ``python -m bench logs``).
Reported with the loop, Python version and TLS on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import ssl
import sys
import tempfile
from pathlib import Path

from streamcerts import client_context, init_lab

from . import stacks
from .measure import throughput


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


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
    async with stacks.ours(layout, cloud_args=("--loop", loop), edge_args=("--loop", loop)) as stack:
        mbps = (await throughput(stack, layout, seconds=seconds)).MBps
        tls = client_context(layout.stream_ca, layout.apiserver_client_cert, layout.apiserver_client_key)
        tls.check_hostname = False
        per_conn = await idle_connection_cost(stack.processes[0].proc.pid, stack.port, tls, connections)
    return {"loop": loop, "logs_follow_MBps": round(mbps, 1), "idle_tls_conn_KiB": round(per_conn, 1)}


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_lab(Path(tmp) / "pki", [stacks.NODE])
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
