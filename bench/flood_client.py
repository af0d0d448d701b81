"""A hostile edge: a certified node that floods its tunnel with malformed messages.

It dials 10004 as a Go edgecore does (its real certificate, ``SessionHostNameOverride`` and
``SessionInternalIP``, Go's User-Agent, no compression), then sends 1-byte TEXT messages (an
unterminated varint: undecodable) as fast as the socket takes them, and redials at once
whenever the tunnel is closed or the dial refused, until ``seconds`` have passed.

Run it as its own process (``python -m bench.flood_client ...``, JSON stats on stdout; or
:func:`run_flood_process`): its send loop rarely yields, so in the measuring process it would
starve the very readers that time the bystander. It lives in ``bench/`` and needs only
websockets and the standard library: the tunnel flood benchmark (``bench.tunnel_flood``) and
the hostile test (``tests/hostile``) both use it; tests may import bench, never the reverse.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

__all__ = ["FloodStats", "flood", "run_flood_process"]

MALFORMED = b"\xff"
"""A varint whose continuation bit promises a byte that never comes."""


@dataclass
class FloodStats:
    dials: int = 0
    tunnels: int = 0
    """Dials that got a tunnel (101)."""
    refused: Counter[int] = field(default_factory=Counter)
    """HTTP status of refused dials -> count."""
    failed: int = 0
    """Dials that failed below HTTP (TLS, TCP)."""
    closes: Counter[int] = field(default_factory=Counter)
    """Close code the cloud sent -> count (0: no close frame)."""
    close_reasons: list[str] = field(default_factory=list)
    """The first few distinct close reasons."""
    refusal_bodies: list[str] = field(default_factory=list)
    """The first few distinct refusal bodies."""
    sent: int = 0
    elapsed: float = 0.0

    def _note(self, where: list[str], text: str) -> None:
        if text not in where and len(where) < 5:
            where.append(text)


def attacker_tls(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.check_hostname = False
    return ctx


async def flood(
    port: int,
    *,
    ca: Path,
    cert: Path,
    key: Path,
    node: str,
    ip: str,
    seconds: float,
    host: str = "127.0.0.1",
    payload: bytes = MALFORMED,
) -> FloodStats:
    """Flood for ``seconds``; return what happened."""
    tls = attacker_tls(ca, cert, key)
    headers = {"SessionHostNameOverride": node, "SessionInternalIP": ip}
    stats = FloodStats()
    began = time.monotonic()
    deadline = began + seconds
    while time.monotonic() < deadline:
        stats.dials += 1
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                ws = await connect(
                    f"wss://{host}:{port}/v1/kubeedge/connect", ssl=tls, additional_headers=headers,
                    user_agent_header="Go-http-client/1.1", compression=None, origin=None,
                    open_timeout=5, ping_interval=None, close_timeout=1, max_size=2 << 20,
                )
        except InvalidStatus as exc:
            stats.refused[exc.response.status_code] += 1
            stats._note(stats.refusal_bodies, exc.response.body.decode("utf-8", "replace").strip()[:200])
            continue
        except (OSError, InvalidHandshake, TimeoutError):
            stats.failed += 1
            continue
        stats.tunnels += 1
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                while True:
                    for _ in range(64):
                        await ws.send(payload, text=True)
                    stats.sent += 64
                    await asyncio.sleep(0)  # send() need not yield: let the close (and our timeout) in
        except ConnectionClosed as exc:
            frame = exc.rcvd
            stats.closes[frame.code if frame else 0] += 1
            if frame is not None:
                stats._note(stats.close_reasons, frame.reason)
        except TimeoutError:
            pass
        finally:
            await ws.close()
    stats.elapsed = time.monotonic() - began
    return stats


async def run_flood_process(
    port: int, *, ca: Path, cert: Path, key: Path, node: str, ip: str, seconds: float, root: Path | None = None
) -> FloodStats:
    """:func:`flood` in a child process (same interpreter); its stats once it is done."""
    root = root or Path(__file__).resolve().parents[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.flood_client", "--port", str(port), "--ca", str(ca), "--cert", str(cert),
        "--key", str(key), "--node", node, "--ip", ip, "--seconds", str(seconds),
        cwd=root, env=dict(os.environ, PYTHONPATH=str(root)), stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"the flood client failed with status {proc.returncode}")
    data = json.loads(out)
    return FloodStats(
        **{k: v for k, v in data.items() if k not in ("refused", "closes")},
        refused=Counter({int(k): v for k, v in data["refused"].items()}),
        closes=Counter({int(k): v for k, v in data["closes"].items()}),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="cloudstream's tunnel port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ca", type=Path, required=True, help="the tunnel CA (to verify the cloud)")
    parser.add_argument("--cert", type=Path, required=True, help="the attacker's (valid) edge certificate")
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--node", required=True, help="the node name the certificate is for")
    parser.add_argument("--ip", required=True, help="the SessionInternalIP to announce")
    parser.add_argument("--seconds", type=float, default=20.0)
    ns = parser.parse_args(argv)
    stats = asyncio.run(flood(ns.port, host=ns.host, ca=ns.ca, cert=ns.cert, key=ns.key, node=ns.node, ip=ns.ip,
                              seconds=ns.seconds))
    fields = {k: v for k, v in vars(stats).items() if k not in ("refused", "closes")}
    print(json.dumps({**fields, "refused": dict(stats.refused), "closes": dict(stats.closes)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
