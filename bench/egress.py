"""What the egress-selector front costs over dialling 10003 directly, both paths in one run,
interleaved (direct, CONNECT, direct, CONNECT, ...), as kube-apiserver uses them:

* logs, new connection: TCP + TLS (+ CONNECT + TLS inside) + ``GET /containerLogs...?tailLines=1``
  until the first byte of the answer (exec/attach/port-forward always dial anew);
* logs, pooled connection: the same GET on a kept-alive connection (logs and node proxy reuse them);
* exec echo: ``exec cat`` over SPDY/3.1 (what the API server speaks to a kubelet), 1 byte typed,
  1 byte back, on one session per path, pings alternating between the two.

    python -m bench.egress [--rounds 200] [--pings 400]

Real processes (cloudstream with ``--egress-port 0``, one emulated edge), TLS on every hop; the
client is ``testkit.egress`` (kube-apiserver's ``tunnelHTTPConnect``) on asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from streamcerts import client_context, init_lab
from streamproto.aio.spdy import SpdyConnection, SpdyStream, upgrade
from testkit.egress import egress_dial
from testkit.processes import apiserver_tls

from . import stacks
from .core import machine

NODE_IP = "127.0.3.1"
LOGS = "/containerLogs/default/shell/sh?tailLines=1"
EXEC = "/exec/default/shell/sh?command=cat&input=1&output=1"

Dial = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def first_byte(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(f"GET {LOGS} HTTP/1.1\r\nHost: {NODE_IP}:10250\r\nUser-Agent: Go-http-client/1.1\r\n\r\n".encode())
    await reader.readexactly(1)
    await reader.readuntil(b"0\r\n\r\n")  # the rest of the (small, chunked) answer: the connection is reusable


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (TimeoutError, ConnectionError, OSError):
        pass


class Echo:
    def __init__(self, conn: SpdyConnection, task: asyncio.Task[None], stdin: SpdyStream, stdout: SpdyStream,
                 writer: asyncio.StreamWriter) -> None:
        self.conn, self.task, self.stdin, self.stdout, self.writer = conn, task, stdin, stdout, writer

    @classmethod
    async def open(cls, dial: Dial) -> Echo:
        reader, writer = await dial()
        answer = await upgrade(reader, writer, EXEC, host=f"{NODE_IP}:10250", protocols=["v4.channel.k8s.io"])
        assert answer.status == 101 and answer.conn is not None, (answer.status, answer.body)
        task = asyncio.create_task(answer.conn.run())
        streams = {t: await answer.conn.open_stream([("streamtype", t)]) for t in ("error", "stdin", "stdout")}
        for s in streams.values():
            await s.wait_reply()
        return cls(answer.conn, task, streams["stdin"], streams["stdout"], writer)

    async def ping(self, byte: bytes) -> float:
        began = time.perf_counter()
        await self.stdin.write(byte)
        got = await self.stdout.read()
        assert got == byte, got
        return (time.perf_counter() - began) * 1000

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await close(self.writer)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (clock ticks; summed over many samples the rounding averages out)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100)
    return f"p50 {statistics.median(values):7.3f} ms   p90 {q[89]:7.3f} ms   p99 {q[98]:7.3f} ms"


async def main_async(rounds: int, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_lab(Path(tmp) / "pki", [stacks.NODE])
        async with stacks.ours(layout, cloud_args=("--egress-port", "0"), edge_args=("--node-ip", NODE_IP)) as stack:
            cloud = stack.processes[0]
            egress_port = int((await cloud.wait_for_line(r"egress front on \S+:(\d+)")).group(1))
            inner = apiserver_tls(layout)
            outer = client_context(layout.stream_ca, layout.apiserver_client_cert, layout.apiserver_client_key)

            async def direct() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                return await asyncio.open_connection("127.0.0.1", stack.port, ssl=inner, server_hostname=None)

            async def via_egress() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                return await egress_dial(f"{NODE_IP}:10250", inner_tls=inner, tcp=("127.0.0.1", egress_port),
                                         outer_tls=outer, server_hostname="127.0.0.1")

            paths = {"direct 10003": direct, "egress CONNECT": via_egress}
            pid = cloud.proc.pid
            cpu: dict[str, float] = {p: 0.0 for p in paths}
            new: dict[str, list[float]] = {p: [] for p in paths}
            pooled: dict[str, list[float]] = {p: [] for p in paths}
            conns = {p: await dial() for p, dial in paths.items()}
            for i in range(rounds + 10):  # 10 warm-up rounds
                order = list(paths.items()) if i % 2 == 0 else list(reversed(paths.items()))
                for name, dial in order:
                    began, cpu_began = time.perf_counter(), cpu_seconds(pid)
                    reader, writer = await dial()
                    await first_byte(reader, writer)
                    took = (time.perf_counter() - began) * 1000
                    await close(writer)
                    if i >= 10:
                        cpu[name] += cpu_seconds(pid) - cpu_began
                    began = time.perf_counter()
                    await first_byte(*conns[name])
                    again = (time.perf_counter() - began) * 1000
                    if i >= 10:
                        new[name].append(took)
                        pooled[name].append(again)
            for _, writer in conns.values():
                await close(writer)
            echoes = {p: await Echo.open(dial) for p, dial in paths.items()}
            rtts: dict[str, list[float]] = {p: [] for p in paths}
            try:
                for i in range(count + 30):
                    for name in (paths if i % 2 == 0 else reversed(list(paths))):
                        rtt = await echoes[name].ping(bytes([65 + i % 26]))
                        if i >= 30:
                            rtts[name].append(rtt)
            finally:
                for echo in echoes.values():
                    await echo.close()
    m = machine()
    print(f"egress front vs direct 10003: {rounds} rounds, {count} pings, interleaved; TLS on every hop; "
          f"cloudstream on uvloop, client on asyncio; python {m['python']}, {m['openssl']}, {m['cores']} cores, "
          f"load {m['load_average']}")
    for title, data in (("logs, new connection, to first byte", new), ("logs, pooled connection, to first byte", pooled),
                        ("exec echo round trip (SPDY)", rtts)):
        print(f"{title}:")
        for name, values in data.items():
            print(f"  {name:15s} {summary(values)}")
        a, b = (statistics.median(v) for v in data.values())
        print(f"  CONNECT adds   {b - a:+.3f} ms at p50 ({b / a:.2f}x)")
        if data is new:
            print("  cloudstream CPU per new connection + request: " + ", ".join(
                f"{name} {cpu[name] * 1000 / rounds:.2f} ms" for name in paths))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200, help="logs requests per path and kind (default: 200)")
    parser.add_argument("--pings", type=int, default=400, help="exec echo pings per path (default: 400)")
    ns = parser.parse_args(argv)
    return asyncio.run(main_async(ns.rounds, ns.pings))


if __name__ == "__main__":
    sys.exit(main())
