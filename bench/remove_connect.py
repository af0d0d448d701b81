"""How fast the edge answers a Go cloudcore's REMOVE_CONNECT, and how many repeats it receives.

A Go cloud (v1.14+), once the API server's side of an exec hits EOF, re-sends REMOVE_CONNECT in
a tight loop until the edge's own REMOVE_CONNECT for that id arrives (spec
kubeedge-tunnel-detail.md §3.4, 6b). Here a Go-cloud-like tunnel server (TLS, no feature header,
Go's JSON, TEXT frames) opens an exec on an emulated container of a real ``edgestream`` process
(WebSocket v4 upgrade, answered 101 by the emulator), then plays that loop and times the answer.
A Go edge answers within 2-12 ms.

    python -m bench.remove_connect [--rounds 30] [--log-level INFO] [--burst 32] [--root /path/to/checkout]

``--root`` runs the edgestream of another checkout (e.g. ``git worktree add /tmp/base main``)
for a before/after comparison; the cloud side is always this one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from streamcerts import init_lab, server_context
from streamproto.tunnel import MessageType, decode, encode

ROOT = Path(__file__).resolve().parent.parent


def exec_connect(cid: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    obj = {
        "MessID": cid,
        "url": {"Scheme": "http", "Host": "127.0.0.1:10350", "Path": "/exec/default/demo/app",
                "RawQuery": "command=sh&input=1&output=1"},
        "header": {"Connection": ["Upgrade"], "Upgrade": ["websocket"], "Sec-Websocket-Key": [key],
                   "Sec-Websocket-Version": ["13"], "Sec-Websocket-Protocol": ["v4.channel.k8s.io"]},
        "method": "GET",
    }
    return encode(cid, MessageType.EXEC_CONNECT, json.dumps(obj).encode())


class GoCloud:
    def __init__(self) -> None:
        self.ws: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()
        self.waiters: dict[int, asyncio.Future[float]] = {}
        self.opened: dict[int, asyncio.Event] = {}
        self.removes: dict[int, int] = {}

    async def handler(self, ws: ServerConnection) -> None:
        if not self.ws.done():
            self.ws.set_result(ws)
        while True:
            try:
                message = decode(await ws.recv(decode=False))
            except ConnectionClosed:
                return
            cid = message.connect_id
            if message.kind == MessageType.DATA and cid in self.opened:
                self.opened[cid].set()
            elif message.kind == MessageType.REMOVE_CONNECT:
                self.removes[cid] = self.removes.get(cid, 0) + 1
                waiter = self.waiters.get(cid)
                if waiter is not None and not waiter.done():
                    waiter.set_result(time.perf_counter())


async def one_close(cloud: GoCloud, ws: ServerConnection, cid: int, burst: int) -> tuple[float, int]:
    cloud.opened[cid] = asyncio.Event()
    answered = cloud.waiters[cid] = asyncio.get_running_loop().create_future()
    await ws.send(exec_connect(cid), text=True)
    await asyncio.wait_for(cloud.opened[cid].wait(), 10)  # the emulator's 101
    await asyncio.sleep(0.05)  # the shell is up
    remove = encode(cid, MessageType.REMOVE_CONNECT)
    began = time.perf_counter()
    sent = 0
    while not answered.done() and sent < 2_000_000:  # the Go loop: REMOVE, EOF again, REMOVE ...
        # One WebSocket message each, ``burst`` per turn of our loop: Go's loop writes about
        # 200,000 a second, more than one ws.send() per turn could.
        for _ in range(burst):
            ws.protocol.send_text(remove)
        ws.send_data()
        sent += burst
        await asyncio.sleep(0)
        if ws.transport.get_write_buffer_size() > 1 << 20:
            await asyncio.sleep(0.0005)  # the edge reads slower than we write: as TCP would block Go
    return (answered.result() - began) * 1000, sent


async def main_async(rounds: int, log_level: str, root: Path, burst: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_lab(Path(tmp), ["bench-node"])
        cloud = GoCloud()
        tls = server_context(layout.server_cert, layout.server_key, layout.ca_cert, require_client_cert=True)
        async with serve(cloud.handler, "127.0.0.1", 0, ssl=tls, compression=None, ping_interval=None,
                         max_queue=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            env = dict(os.environ, PYTHONPATH=str(root), PYTHONUNBUFFERED="1")
            edge = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edgestream", "--pki-dir", str(layout.root), "--node-name", "bench-node",
                "--server", f"localhost:{port}", "--node-ip", "127.0.0.1", "--backend", "emulator",
                "--log-level", log_level, cwd=root, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                ws = await asyncio.wait_for(cloud.ws, 20)
                times, sent = [], []
                for i in range(rounds):
                    ms, n = await one_close(cloud, ws, 100 + i, burst)
                    times.append(ms)
                    sent.append(n)
                await asyncio.sleep(0.5)
                echoes = [cloud.removes.get(100 + i, 0) for i in range(rounds)]
            finally:
                edge.terminate()
                await edge.wait()
    q = statistics.quantiles(times, n=10)
    rate = sum(sent) / sum(times) * 1000
    print(f"edge from {root}, log level {log_level}, {rounds} exec closes by a Go-cloud-like peer "
          f"(burst {burst}, {rate:,.0f} REMOVE/s while waiting):")
    print(f"  REMOVE_CONNECT answered after p50 {statistics.median(times):.2f} ms, p90 {q[8]:.2f} ms, "
          f"max {max(times):.2f} ms")
    print(f"  REMOVE_CONNECTs the cloud sent per close: p50 {statistics.median(sent):.0f}, max {max(sent)}; "
          f"answers per close: {min(echoes)}..{max(echoes)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO"])
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose edgestream runs")
    parser.add_argument("--burst", type=int, default=32, help="REMOVE_CONNECTs written per turn of the loop")
    ns = parser.parse_args(argv)
    return asyncio.run(main_async(ns.rounds, ns.log_level, ns.root.resolve(), ns.burst))


if __name__ == "__main__":
    sys.exit(main())
