"""The flow helper's scenarios (issue 17), real processes and TLS, one result line each.

    python bench/flow.py link --profile wan-50ms-100mbit [--seconds 8] [--pings 100]
        one `logs -f` through a testkit.link process between edge and cloud (its CPU apart),
        and exec echo round trips beside it
    python bench/flow.py goedge [--seconds 5]
        a Go-style edge (256-byte DATA messages, one WebSocket frame and one TLS record each,
        written by a plain ssl socket in its own process) feeding one `logs -f` into 10003:
        MB/s at the API-server client and cloudstream's CPU per message

Run as a file so that ``PYTHONPATH=/tmp/base:/this/tree`` measures the base tree's cloudstream
and edgestream with this script (A/B, interleaved by the caller).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from streamcerts import init_lab
from testkit.processes import ROOT, apiserver_tls, start_cloud, start_edge
from testkit.k8s_ws import open_ws

HERE = Path(__file__).resolve().parent.parent

READER = r"""
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2]); ctx.check_hostname = False
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
s.sendall(b"GET /containerLogs/default/bulk/app?follow=true HTTP/1.1\r\nHost: " + sys.argv[5].encode() + b"\r\n\r\n")
n = 0; t = time.monotonic()
while True:
    d = s.recv(1 << 20)
    if not d: break
    n += len(d)
    if time.monotonic() - t > 1:
        print(f"{n / (time.monotonic() - t) / 1e6:.2f}", flush=True); n = 0; t = time.monotonic()
"""

GO_EDGE = r"""
import base64, os, socket, ssl, struct, sys, time
port, ca, cert, key, node = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca); ctx.check_hostname = False
ctx.load_cert_chain(cert, key)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port))), server_hostname="localhost")
k = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /v1/kubeedge/connect HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Go-http-client/1.1\r\n"
           f"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {k}\r\n"
           f"SessionHostNameOverride: {node}\r\nSessionInternalIP: 10.77.0.1\r\n\r\n").encode())
buf = b""
while b"\r\n\r\n" not in buf:
    buf += s.recv(4096)
assert buf.startswith(b"HTTP/1.1 101"), buf[:200]
buf = buf.split(b"\r\n\r\n", 1)[1]
print("up", flush=True)
def frame():
    global buf
    while True:
        if len(buf) >= 2:
            n = buf[1] & 0x7F; h = 2
            if n == 126: n = struct.unpack("!H", buf[2:4])[0]; h = 4
            elif n == 127: n = struct.unpack("!Q", buf[2:10])[0]; h = 10
            if len(buf) >= h + n:
                p = buf[h:h + n]; buf = buf[h + n:]; return p
        buf += s.recv(65536)
while True:  # the LOGS_CONNECT (skip pings etc.: text frames only carry tunnel messages)
    p = frame()
    if len(p) > 2 and p[1] == 0:
        cid = p[0]; break
line = (b"x" * 255 + b"\n")
msg = bytes([cid, 3]) + line
wsframe = bytes([0x81, 0xFE]) + struct.pack("!H", len(msg)) + b"\0\0\0\0" + msg  # masked with a zero key
end = time.monotonic() + float(sys.argv[6]); sent = 0
while time.monotonic() < end:
    for _ in range(1000):
        s.sendall(wsframe)  # one message, one TLS record: a Go edge flushes each
    sent += 1000
print("sent", sent, flush=True)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        await asyncio.sleep(0.01)
    return rtts


async def reader(stream_port: int, layout, node: str):  # type: ignore[no-untyped-def]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", READER, str(stream_port), str(layout.stream_ca), str(layout.apiserver_client_cert),
        str(layout.apiserver_client_key), node, stdout=asyncio.subprocess.PIPE)


async def rates(proc, seconds: float) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(float(await asyncio.wait_for(proc.stdout.readline(), 30)))
    return out


async def link(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_lab(Path(tmp) / "pki", ["bench-node"])
        cloud, stream_port, tunnel_port = await start_cloud(layout)
        proxy = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "testkit.link", "--upstream", f"127.0.0.1:{tunnel_port}", "--profile", args.profile,
            stdout=asyncio.subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(HERE)), cwd=HERE)
        assert proxy.stdout is not None
        line = (await asyncio.wait_for(proxy.stdout.readline(), 20)).decode()
        link_port = int(line.rsplit(":", 1)[1])
        edge = await start_edge(layout, "bench-node", link_port, "--emulate", "default/shell/sh", "--emulate",
                                "default/bulk/app", "--emulate-log-rate", "0", "--emulate-line-size", "1024")
        bulk = None
        try:
            await cloud.wait_for_line("tunnel up", timeout=60)
            ws = await open_ws(stream_port, "/exec/default/shell/sh?command=cat&input=1&output=1", node="bench-node",
                               tls=apiserver_tls(layout))
            await pings(ws, 5)
            idle = await pings(ws, args.pings // 2)
            bulk = await reader(stream_port, layout, "bench-node")
            warm = await rates(bulk, args.warmup)
            loaded_task = asyncio.create_task(pings(ws, args.pings))
            got = await rates(bulk, args.seconds)
            loaded = await loaded_task
            print(f"{args.profile}: logs -f {statistics.median(got):.2f} MB/s (range {min(got):.2f}-{max(got):.2f}, "
                  f"warm-up {' '.join(f'{r:.1f}' for r in warm)}); exec echo idle p50 {statistics.median(idle):.1f} ms, "
                  f"beside bulk p50 {statistics.median(loaded):.1f} ms p90 {statistics.quantiles(loaded, n=10)[8]:.1f} ms "
                  f"max {max(loaded):.1f} ms; tree {ROOT}", flush=True)
        finally:
            if bulk is not None:
                bulk.kill()
                await bulk.wait()
            await edge.stop()
            await cloud.stop()
            proxy.terminate()
            await proxy.wait()


async def goedge(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_lab(Path(tmp) / "pki", ["go-node"])
        cloud, stream_port, tunnel_port = await start_cloud(layout)
        edge = await asyncio.create_subprocess_exec(
            sys.executable, "-c", GO_EDGE, str(tunnel_port), str(layout.ca_cert), str(layout.edge_cert("go-node")),
            str(layout.edge_key("go-node")), "go-node", str(args.seconds + 3), stdout=asyncio.subprocess.PIPE)
        assert edge.stdout is not None
        bulk = None
        try:
            assert (await asyncio.wait_for(edge.stdout.readline(), 20)).strip() == b"up"
            await cloud.wait_for_line("tunnel up")
            bulk = await reader(stream_port, layout, "go-node")
            await rates(bulk, 1.0)
            cpu0, e0, t0 = cpu_seconds(cloud.proc.pid), cpu_seconds(edge.pid), time.monotonic()
            got = await rates(bulk, args.seconds)
            cpu = (cpu_seconds(cloud.proc.pid) - cpu0) / (time.monotonic() - t0)
            ecpu = (cpu_seconds(edge.pid) - e0) / (time.monotonic() - t0)
            mbps = statistics.median(got)
            per_msg = cpu / (mbps * 1e6 / 256) * 1e6
            print(f"go edge, 256-B messages: {mbps:.1f} MB/s (range {min(got):.1f}-{max(got):.1f}), cloudstream CPU "
                  f"{cpu * 100:.0f} %, {per_msg:.2f} us CPU per message (Go-style edge CPU {ecpu * 100:.0f} %); tree {ROOT}", flush=True)
        finally:
            if bulk is not None:
                bulk.kill()
                await bulk.wait()
            edge.kill()
            await edge.wait()
            await cloud.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="scenario", required=True)
    p = sub.add_parser("link")
    p.add_argument("--profile", default="wan-50ms-100mbit")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--pings", type=int, default=100)
    g = sub.add_parser("goedge")
    g.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(link(args) if args.scenario == "link" else goedge(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
