"""Log throughput from a real container through the whole chain (needs root: starts containerd).

``--runs`` busybox containers each write ``--megabytes`` of 100-byte lines as fast as they can;
containerd turns them into CRI log files. Then ``GET /containerLogs`` through cloudstream:10003
-> tunnel -> edgestream (CRI backend: reads and parses the CRI file) delivers each whole log.
Reported, median and range over the runs (the same count on both sides): containerd's own
write rate (the container's speed limit), timed from the first to the last line's CRI
timestamp (container creation and start are not in it), and the chain's rate.

    python -m bench.cri_logs [--megabytes 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from streamcerts import client_context, init_lab
from testkit.processes import start_cloud, start_edge
from testkit.cri import RealStack

from .stacks import Containerd



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


def cri_time(line: bytes) -> float:
    """The timestamp containerd put at the head of a CRI log line (RFC 3339, nanoseconds), as epoch seconds."""
    stamp = line.split(b" ", 1)[0].decode()
    whole, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole).replace(tzinfo=timezone.utc).timestamp() + float("0." + (frac or "0"))


def write_window(log_path: Path) -> float:
    """Seconds between the first and the last line containerd wrote (its own timestamps: container
    creation and start are outside the window)."""
    with log_path.open("rb") as f:
        first = f.readline()
        f.seek(max(0, log_path.stat().st_size - 4096))
        last = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return cri_time(last) - cri_time(first)


async def wait_written(log_path: Path, timeout: float = 120.0) -> int:
    """Wait until the CRI file stops growing (not timed: the window comes from its timestamps)."""
    last, stable_since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        size = log_path.stat().st_size if log_path.exists() else 0
        if size != last:
            last, stable_since = size, time.monotonic()
        elif size and time.monotonic() - stable_since > 1.0:
            break
        await asyncio.sleep(0.1)
    return last


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.0f} MB/s (range {min(values):.0f}-{max(values):.0f})"


async def measure(stack: RealStack, megabytes: int, runs: int = 3) -> dict[str, list[float]]:
    """``runs`` containers, each writing ``megabytes`` MB; each log fetched once through the chain.
    Returns MB/s per run: containerd's write rate (from its timestamps) and the chain's."""
    pod = stack.run_pod("bulk")
    line = "x" * 99
    writes, names = [], []
    try:
        for i in range(runs):
            cid = stack.run_container(pod, f"writer{i}", ["sh", "-c", f"yes {line} | head -c {megabytes * 1_000_000}; "
                                                                    "sleep 3600"])
            log_path = Path(stack.container_status(cid).log_path)
            await wait_written(log_path)
            writes.append(megabytes / write_window(log_path))
            names.append(f"writer{i}")
        chain = []
        with tempfile.TemporaryDirectory() as tmp:
            layout = init_lab(Path(tmp) / "pki", ["bench-node"])
            cloud, stream_port, tunnel_port = await start_cloud(layout)
            edge = await start_edge(layout, "bench-node", tunnel_port, "--backend", "cri", "--cri-endpoint", stack.endpoint)
            try:
                for _ in range(100):
                    try:
                        await fetch_all(stream_port, layout, "/containerLogs/default/bulk/writer0?tailLines=1")
                        break
                    except AssertionError:
                        await asyncio.sleep(0.1)
                for name in names:
                    total, took = await fetch_all(stream_port, layout, f"/containerLogs/default/bulk/{name}")
                    chain.append(total / took / 1e6)
            finally:
                await edge.stop()
                await cloud.stop()
    finally:
        stack.remove_pod(pod)
    return {"containerd_write_MBps": writes, "chain_MBps": chain}


async def run(megabytes: int, runs: int) -> int:
    ctd = Containerd()
    try:
        async with ctd.use():
            assert ctd.stack is not None
            result = await measure(ctd.stack, megabytes, runs)
    except RuntimeError as exc:  # no root, or containerd would not start
        print(exc)
        return 1
    print(f"{runs} containers, each writing {megabytes} MB of 100-byte lines:")
    print(f"  containerd writing the container's output (first to last line, its own timestamps): "
          f"{spread(result['containerd_write_MBps'])}")
    print(f"  the chain delivering each whole log (CRI file parsed by the edge, TLS on both hops): "
          f"{spread(result['chain_MBps'])}")
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3, help="containers written and logs fetched (one each)")
    ns = parser.parse_args(argv)
    return asyncio.run(run(ns.megabytes, ns.runs))


if __name__ == "__main__":
    sys.exit(main())
