"""Per-node serving certificates on 10003: what the first request to a new node IP costs (a leaf
issued, ECDSA P-256, in a worker thread) against one whose leaf is cached, and the handshake of
the default path (no serving CA) against another checkout.

    python -m bench.serving_certs [--nodes 40] [--rounds 3] [--compare /tmp/base-live]

Real processes: cloudstream (``--stream-address 0.0.0.0``, the serving CA), ``edgestream emulate``
with N nodes on 127.0.2.x (no DNAT: the local address picks the node). For each node, timed in
this process: a new TCP connection + TLS handshake as the API server makes it (serving CA
pinned, the node IP checked) + ``GET /healthz`` answered by the node, first (leaf issued) and
again (cached). Medians over the nodes, per round. ``--compare DIR``: the default path's
handshake (no serving CA, the stream certificate, 127.0.0.1) interleaved between this checkout
and DIR (e.g. a ``git worktree add /tmp/base-live main``), rounds alternating which goes first.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import re
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

from streamcerts import Layout, create_ca, init_lab, write_pem
from testkit.processes import MS, Process, start_cloud

CIDR = "127.0.2.0/24"


async def timed_request(ip: str, port: int, tls: ssl.SSLContext, path: str = "/healthz") -> tuple[float, float]:
    """(handshake ms, whole request ms) of one new connection."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(ip, port, ssl=tls, server_hostname=ip if tls.check_hostname else None)
    t1 = time.perf_counter()
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {ip}:10250\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read(-1)
        t2 = time.perf_counter()
        if not data.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{ip}: {data[:200]!r}")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
    return (t1 - t0) * 1e3, (t2 - t0) * 1e3


async def handshake_ms(port: int, tls: ssl.SSLContext) -> float:
    t0 = time.perf_counter()
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname=None)
    took = (time.perf_counter() - t0) * 1e3
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass
    return took


def apiserver(layout: Layout, ca: Path, check_ip: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(str(layout.apiserver_client_cert), str(layout.apiserver_client_key))
    ctx.check_hostname = check_ip
    return ctx


async def first_vs_cached(layout: Layout, nodes: int) -> dict[str, float]:
    serving = layout.root / "serving"
    cloud, port, tunnel_port = await start_cloud(
        layout, "--stream-address", "0.0.0.0", "--serving-ca-cert-file", str(serving / "ca.crt"),
        "--serving-ca-key-file", str(serving / "ca.key"),
    )
    fleet = await Process.start("fleet", [
        "edgestream", "emulate", "--nodes", str(nodes), "--pki-dir", str(layout.root), "--server",
        f"localhost:{tunnel_port}", "--cidr", CIDR, "--name", "edge-{i:03d}", "--log-rate", "1", "--history", "1",
        "--log-level", "WARNING", "--ramp", "1000",
    ])
    try:
        tls = apiserver(layout, serving / "ca.crt", check_ip=True)
        ips = [str(ip) for ip in list(ipaddress.ip_network(CIDR).hosts())[:nodes]]
        first: list[tuple[float, float]] = []
        cached: list[tuple[float, float]] = []
        for ip in ips:  # a node may still be dialling: wait for its tunnel (its /healthz answers 200)
            deadline = time.monotonic() + 30 * MS
            while True:
                try:
                    first.append(await timed_request(ip, port, tls))
                    break
                except (RuntimeError, ssl.SSLError, ConnectionError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            cached.append(await timed_request(ip, port, tls))
        issued = [line for line in cloud.lines if re.search(r"serving certificate for node", line)]
    finally:
        await fleet.stop()
        await cloud.stop()
    return {
        "first_handshake": statistics.median(h for h, _ in first), "first_request": statistics.median(r for _, r in first),
        "cached_handshake": statistics.median(h for h, _ in cached), "cached_request": statistics.median(r for _, r in cached),
        "retried": float(len(issued) > nodes),
    }


async def default_handshakes(layout: Layout, root: Path | None, count: int) -> float:
    cloud, port, _ = await start_cloud(layout, root=root)
    try:
        tls = apiserver(layout, layout.stream_ca, check_ip=False)
        for _ in range(20):  # warm-up
            await handshake_ms(port, tls)
        return statistics.median([await handshake_ms(port, tls) for _ in range(count)])
    finally:
        await cloud.stop()


async def main_async(nodes: int, rounds: int, compare: Path | None, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_lab(Path(tmp) / "pki", [])
        ca, key = create_ca("kubelet-serving-ca")
        write_pem(layout.root / "serving/ca.crt", ca, key, layout.root / "serving/ca.key")
        print(f"per-node serving certificates, {nodes} nodes, python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION}")
        for r in range(rounds):
            m = await first_vs_cached(layout, nodes)
            print(f"  round {r + 1}: first request to a node IP (leaf issued): handshake {m['first_handshake']:.2f} ms, "
                  f"request {m['first_request']:.2f} ms; cached: handshake {m['cached_handshake']:.2f} ms, "
                  f"request {m['cached_request']:.2f} ms (medians over {nodes} nodes)")
        if compare is not None:
            print(f"default path (no serving CA), TLS handshake median of {count}, this tree vs {compare}:")
            ours_all: list[float] = []
            base_all: list[float] = []
            for r in range(rounds):
                order = [(None, ours_all), (compare, base_all)]
                for root, into in order if r % 2 == 0 else reversed(order):
                    into.append(await default_handshakes(layout, root, count))
                print(f"  round {r + 1}: this tree {ours_all[-1]:.2f} ms, base {base_all[-1]:.2f} ms")
            print(f"  median of rounds: this tree {statistics.median(ours_all):.2f} ms, "
                  f"base {statistics.median(base_all):.2f} ms, ratio {statistics.median(ours_all) / statistics.median(base_all):.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--handshakes", type=int, default=200, help="per default-path sample (200)")
    parser.add_argument("--compare", type=Path, help="another checkout: compare the default path's handshake")
    ns = parser.parse_args(argv)
    return asyncio.run(main_async(ns.nodes, ns.rounds, ns.compare, ns.handshakes))


if __name__ == "__main__":
    sys.exit(main())
