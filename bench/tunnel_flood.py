"""One certified edge floods its tunnel with malformed messages; does another node notice?

    python -m bench.tunnel_flood [--seconds 20] [--cloud-arg=--tunnel-max-violations=100 ...]

Real processes on loopback, TLS on: cloudstream, a "bystander" emulated edge whose ``logs -f``
(200 lines/s) is read through 10003, and an "attacker" (``bench.flood_client``: its real
certificate, Go-edge headers, 1-byte malformed TEXT messages at full speed, redialling at once
whenever closed or refused). Reported: the bystander's longest gap during the flood, the
cloudstream log volume the flood caused (lines, bytes), a new ``GET /containerLogs`` for the
bystander issued mid-flood (time to its whole answer), and what the attacker saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from streamcerts import init_lab
from testkit.processes import apiserver_tls, kubelet_request, start_cloud, start_edge

from .flood_client import FloodStats, run_flood_process

FOLLOW = "/containerLogs/default/demo/app?follow=true"


class Follow:
    def __init__(self) -> None:
        self.last = time.monotonic()
        self.max_gap = 0.0
        self.chunks = 0
        self.gaps: list[tuple[float, float]] = []
        """(gap, when) for gaps over 50 ms, ``when`` relative to the last reset."""
        self.began = time.monotonic()

    def reset(self) -> None:
        self.last, self.max_gap, self.began, self.gaps = time.monotonic(), 0.0, time.monotonic(), []

    async def run(self, port: int, tls) -> None:  # type: ignore[no-untyped-def]
        async with kubelet_request(port, FOLLOW, host="bystander", tls=tls) as response:
            assert response.status == 200, response.status
            async for _ in response.chunks():
                now = time.monotonic()
                self.max_gap = max(self.max_gap, now - self.last)
                if now - self.last > 0.05 and len(self.gaps) < 20:
                    self.gaps.append((round((now - self.last) * 1000, 1), round(self.last - self.began, 2)))
                self.last = now
                self.chunks += 1


async def timed_request(port: int, tls) -> tuple[float, int, int]:  # type: ignore[no-untyped-def]
    began = time.monotonic()
    async with kubelet_request(port, "/containerLogs/default/demo/app?tailLines=10", host="bystander", tls=tls) as r:
        body = await r.body()
    return time.monotonic() - began, r.status, len(body)


async def _no_attack(seconds: float) -> FloodStats:
    began = time.monotonic()
    await asyncio.sleep(seconds)
    return FloodStats(elapsed=time.monotonic() - began)


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_lab(Path(tmp) / "pki", ["bystander", "attacker"])
        cloud, stream_port, tunnel_port = await start_cloud(layout, *args.cloud_arg)
        edge = None
        try:
            edge = await start_edge(layout, "bystander", tunnel_port, "--node-ip", "127.0.0.1",
                                    "--emulate-log-rate", "200")
            await cloud.wait_for_line("tunnel up: node bystander")
            tls = apiserver_tls(layout)
            follow = Follow()
            follower = asyncio.create_task(follow.run(stream_port, tls))
            await asyncio.sleep(2)
            idle_request = await timed_request(stream_port, tls)
            follow.reset()
            since = len(cloud.lines)
            if args.no_attack:  # the same measurement without the attacker: this machine's own noise
                attack = asyncio.create_task(_no_attack(args.seconds))
            else:
                attack = asyncio.create_task(run_flood_process(
                    tunnel_port, ca=layout.ca_cert, cert=layout.edge_cert("attacker"), key=layout.edge_key("attacker"),
                    node="attacker", ip="127.0.1.2", seconds=args.seconds,
                ))
            await asyncio.sleep(args.seconds / 2)
            mid_request = await timed_request(stream_port, tls)
            stats = await attack
            gap = follow.max_gap
            await asyncio.sleep(1)  # lines the flood caused that are still on their way
            lines = cloud.lines[since:]
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        finally:
            if edge is not None:
                await edge.stop()
            await cloud.stop()
    return {
        "python": platform.python_version(),
        "seconds": round(stats.elapsed, 1),
        "bystander_max_gap_ms": round(gap * 1000, 1),
        "bystander_chunks": follow.chunks,
        "bystander_gaps_over_50ms": follow.gaps,
        "cloud_log_lines": len(lines),
        "cloud_log_bytes": sum(len(line) + 1 for line in lines),
        "request_idle_ms": round(idle_request[0] * 1000, 1),
        "request_mid_flood_ms": round(mid_request[0] * 1000, 1),
        "request_mid_flood_status": mid_request[1],
        "attacker_dials": stats.dials,
        "attacker_tunnels": stats.tunnels,
        "attacker_refused": dict(stats.refused),
        "attacker_failed": stats.failed,
        "attacker_sent": stats.sent,
        "attacker_closes": dict(stats.closes),
        "close_reasons": stats.close_reasons,
        "refusals": stats.refusal_bodies[:2],
        "sample_log_lines": [line[:200] for line in lines[:8]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--cloud-arg", action="append", default=[], help="an extra cloudstream flag (repeat)")
    parser.add_argument("--no-attack", action="store_true", help="measure the bystander alone (the noise floor)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
