#!/usr/bin/env python3
"""A local lab on one machine, no cluster: a CA, cloudstream, one emulated edge node, and a
``kubectl logs -f`` equivalent through cloudstream's kubelet API (10003) printed here.

    make lab                      # follow for 10 s, then stop everything
    make lab LAB_ARGS=--forever   # follow until Ctrl-C

The HTTPS client presents the API server's kubelet-client certificate, exactly as a real
kube-apiserver does when it calls ``GET https://<node>:10250/containerLogs/...``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamcerts import Layout, client_context, init_lab  # noqa: E402

NODE = "edge-lab-1"
READY = re.compile(rb"kubelet API on \S+:(\d+), tunnel on \S+:(\d+)")
TUNNEL_UP = re.compile(rb"tunnel up: node (\S+)")


async def start(argv: list[str], name: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", *argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


async def relay_output(proc: asyncio.subprocess.Process, prefix: str, ready: asyncio.Future | None,
                       up: asyncio.Future | None = None) -> None:
    assert proc.stdout is not None
    async for line in proc.stdout:
        if ready is not None and not ready.done() and (m := READY.search(line)):
            ready.set_result((int(m.group(1)), int(m.group(2))))
        if up is not None and not up.done() and TUNNEL_UP.search(line):
            up.set_result(None)
        sys.stderr.write(f"  [{prefix}] {line.decode(errors='replace')}")


async def follow_logs(layout: Layout, port: int, seconds: float | None) -> int:
    ctx = client_context(layout.stream_ca, layout.apiserver_client_cert, layout.apiserver_client_key)
    ctx.check_hostname = False  # the API server dials the node's IP; the lab's cert names localhost
    path = "/containerLogs/default/demo/app?follow=true&tailLines=5&timestamps=true"
    deadline = None if seconds is None else time.monotonic() + seconds
    for _ in range(50):  # wait until the edge's tunnel is up
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {NODE}:10250\r\nUser-Agent: lab\r\n\r\n".encode())
        status = (await reader.readline()).decode().strip()
        if status.startswith("HTTP/1.1 200"):
            break
        body = await reader.read(2000)
        writer.close()
        if "no edge node" not in body.decode(errors="replace"):
            print(status, body.decode(errors="replace"))
            return 1
        await asyncio.sleep(0.2)
    else:
        print("the edge never connected")
        return 1
    print(f"\n$ GET https://127.0.0.1:{port}{path}   (Host: {NODE})\n{status}", flush=True)
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    try:
        while deadline is None or time.monotonic() < deadline:
            timeout = None if deadline is None else max(0.01, deadline - time.monotonic())
            try:
                size_line = await asyncio.wait_for(reader.readline(), timeout)
            except TimeoutError:
                break
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                break
            chunk = await reader.readexactly(size + 2)
            sys.stdout.write(chunk[:-2].decode(errors="replace"))
            sys.stdout.flush()
    finally:
        writer.close()
    return 0


def try_it(layout: Layout, port: int, forever: bool) -> str:
    """What a user can send the lab themselves: the API server's request, as curl."""
    curl = (f"curl --cert {layout.apiserver_client_cert} --key {layout.apiserver_client_key} "
            f"--cacert {layout.stream_ca} -H 'Host: {NODE}' 'https://127.0.0.1:{port}")
    when = "while it runs" if forever else "with LAB_ARGS=--forever, which keeps the lab up"
    return (f"\nTry it {when} (cloudstream's kubelet API is on port {port} here, 10003 in a deployment):\n"
            f"  {curl}/containerLogs/default/demo/app?tailLines=3'\n"
            f"  {curl}/stats/summary'      # also /metrics/resource, /healthz")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=str(ROOT / ".lab"), help="where the lab keeps its PKI")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to follow")
    parser.add_argument("--forever", action="store_true")
    args = parser.parse_args()
    layout = init_lab(Path(args.dir) / "pki", [NODE])
    print(f"PKI in {layout.root} (KubeEdge layout: ca/rootCA.crt, certs/server.crt, ...)")
    cloud = await start(
        ["cloudstream", "--pki-dir", str(layout.root), "--stream-address", "127.0.0.1", "--stream-port", "0",
         "--tunnel-address", "127.0.0.1", "--tunnel-port", "0"], "cloudstream")
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    up: asyncio.Future = asyncio.get_running_loop().create_future()
    tasks = [asyncio.create_task(relay_output(cloud, "cloudstream", ready, up))]
    edge = None
    try:
        stream_port, tunnel_port = await asyncio.wait_for(ready, 30)
        edge = await start(
            ["edgestream", "--pki-dir", str(layout.root), "--node-name", NODE, "--server", f"localhost:{tunnel_port}",
             "--node-ip", "127.0.0.1", "--backend", "emulator", "--emulate", "default/demo/app",
             "--emulate-log-rate", "5"], "edgestream")
        tasks.append(asyncio.create_task(relay_output(edge, "edgestream", None)))
        try:  # the first request after the node's tunnel is up (before it, cloudstream answers 503)
            await asyncio.wait_for(up, 30)
        except TimeoutError:
            print("the edge never connected (see edgestream's lines above)")
            return 1
        print(try_it(layout, stream_port, args.forever), flush=True)
        return await follow_logs(layout, stream_port, None if args.forever else args.seconds)
    finally:
        for proc in (edge, cloud):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
        for task in tasks:
            task.cancel()
        print("\nlab stopped")


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
