"""Interactive latency: an exec echo round trip (1 byte typed, 1 byte back) through the whole
chain, idle and beside a bulk `logs -f` on the same node (emulator writing 1 KiB lines as
fast as the tunnel takes them). The bulk reader is a separate process.

    python -m bench.exec_echo [--pings 300]

KubeEdge on these machines: 0.22 ms p50 idle, 200 ms beside a bulk stream.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from certs import init_lab
from testkit.processes import apiserver_tls, start_cloud, start_edge
from testkit.k8s_ws import open_ws

BULK = r"""
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2]); ctx.check_hostname = False
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
s.sendall(b"GET /containerLogs/default/bulk/app?follow=true HTTP/1.1\r\nHost: bench-node\r\n\r\n")
n = 0; t = time.monotonic()
while True:
    d = s.recv(1 << 20)
    if not d: break
    n += len(d)
    if time.monotonic() - t > 1:
        print(f"{n / (time.monotonic() - t) / 1e6:.0f}", flush=True); n = 0; t = time.monotonic()
"""


async def pings(ws, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    rtts = []
    for i in range(count):
        byte = bytes([65 + i % 26])
        began = time.perf_counter()
        await ws.send(b"\x00" + byte)
        while True:
            message = await ws.recv()
            if message[:1] == b"\x01" and message[1:]:
                break
        rtts.append((time.perf_counter() - began) * 1000)
    return rtts


def summary(rtts: list[float]) -> str:
    q = statistics.quantiles(rtts, n=100)
    return f"p50 {statistics.median(rtts):.2f} ms, p99 {q[98]:.2f} ms, max {max(rtts):.2f} ms"


async def main_async(count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_lab(Path(tmp) / "pki", ["bench-node"])
        cloud, stream_port, tunnel_port = await start_cloud(layout)
        edge = await start_edge(layout, "bench-node", tunnel_port, "--emulate", "default/shell/sh", "--emulate",
                                "default/bulk/app", "--emulate-log-rate", "0", "--emulate-line-size", "1024")
        bulk = None
        try:
            await cloud.wait_for_line("tunnel up")
            ws = await open_ws(stream_port, "/exec/default/shell/sh?command=cat&input=1&output=1", node="bench-node",
                               tls=apiserver_tls(layout))
            await pings(ws, 20)  # warm up
            idle = await pings(ws, count)
            bulk = await asyncio.create_subprocess_exec(
                sys.executable, "-c", BULK, str(stream_port), str(layout.stream_ca), str(layout.apiserver_client_cert),
                str(layout.apiserver_client_key), stdout=asyncio.subprocess.PIPE)
            assert bulk.stdout is not None
            rate = float(await asyncio.wait_for(bulk.stdout.readline(), 20))
            loaded = await pings(ws, count)
            rate2 = float(await asyncio.wait_for(bulk.stdout.readline(), 20))
            print(f"exec echo round trip, {count} pings, TLS on both hops, python {sys.version.split()[0]}")
            print(f"  idle:                      {summary(idle)}")
            print(f"  beside a bulk logs -f:     {summary(loaded)}   (bulk stream at {rate:.0f}-{rate2:.0f} MB/s)")
            await ws.close()
        finally:
            if bulk is not None:
                bulk.kill()
                await bulk.wait()
            await edge.stop()
            await cloud.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pings", type=int, default=300)
    return asyncio.run(main_async(parser.parse_args(argv).pings))


if __name__ == "__main__":
    sys.exit(main())
