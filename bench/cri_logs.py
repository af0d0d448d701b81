"""Log throughput from a real container through the whole chain (needs root: starts containerd).

A busybox container writes ``--megabytes`` of 100-byte lines as fast as it can; containerd
turns them into its CRI log file. Then ``GET /containerLogs`` through cloudstream:10003 ->
tunnel -> edgestream (CRI backend: reads and parses the CRI file) delivers the whole log.
Reported: containerd's own write rate (the container's speed limit) and the chain's rate.

    python -m bench.cri_logs [--megabytes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from certs import client_context, init_lab
from testkit.processes import start_cloud, start_edge
from testkit.cri import RealStack

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "tests/realstack/setup.sh"


async def fetch_all(port: int, layout, path: str) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    tls = client_context(layout.stream_ca, layout.apiserver_client_cert, layout.apiserver_client_key)
    tls.check_hostname = False
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")
    began = time.monotonic()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench-node\r\n\r\n".encode())
    status = await reader.readline()
    assert status.startswith(b"HTTP/1.1 200"), status
    while await reader.readline() != b"\r\n":
        pass
    total = 0
    while True:
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            break
        await reader.readexactly(size + 2)
        total += size
    elapsed = time.monotonic() - began
    writer.close()
    return total, elapsed


async def run(megabytes: int) -> int:
    rs = Path(tempfile.mkdtemp(prefix="kes-bench-rs-"))
    env = dict(os.environ, RS=str(rs), PYTHON=sys.executable)
    up = subprocess.run(["bash", str(SETUP), "up"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        print(up.stdout, up.stderr)
        return 1
    stack = RealStack.from_rs(rs)
    try:
        pod = stack.run_pod("bulk")
        line = "x" * 99
        began = time.monotonic()
        cid = stack.run_container(pod, "writer", ["sh", "-c", f"yes {line} | head -c {megabytes * 1_000_000}; sleep 3600"])
        log_path = Path(stack.container_status(cid).log_path)
        last, stable_since = -1, time.monotonic()
        while True:  # containerd writes the CRI file; wait until it stops growing
            size = log_path.stat().st_size if log_path.exists() else 0
            if size != last:
                last, stable_since = size, time.monotonic()
            elif time.monotonic() - stable_since > 1.0:
                break
            await asyncio.sleep(0.1)
        write_secs = stable_since - began
        with tempfile.TemporaryDirectory() as tmp:
            layout = init_lab(Path(tmp) / "pki", ["bench-node"])
            cloud, stream_port, tunnel_port = await start_cloud(layout)
            edge = await start_edge(layout, "bench-node", tunnel_port, "--backend", "cri", "--cri-endpoint", stack.endpoint)
            try:
                for _ in range(100):
                    try:
                        await fetch_all(stream_port, layout, "/containerLogs/default/bulk/writer?tailLines=1")
                        break
                    except AssertionError:
                        await asyncio.sleep(0.1)
                results = [await fetch_all(stream_port, layout, "/containerLogs/default/bulk/writer") for _ in range(3)]
            finally:
                await edge.stop()
                await cloud.stop()
        total, best = max(results, key=lambda r: r[0] / r[1])
        print(f"container wrote {megabytes} MB of 100-byte lines; containerd's CRI file: {last / 1e6:.0f} MB "
              f"in {write_secs:.1f} s ({megabytes / write_secs:.0f} MB/s of container output)")
        print(f"chain delivered {total / 1e6:.0f} MB of log content in {best:.2f} s: {total / best / 1e6:.0f} MB/s "
              f"(best of 3; file parsed by the edge, TLS on both hops)")
        stack.remove_pod(pod)
    finally:
        stack.close()
        subprocess.run(["bash", str(SETUP), "down"], env=env, capture_output=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=100)
    return asyncio.run(run(parser.parse_args(argv).megabytes))


if __name__ == "__main__":
    sys.exit(main())
