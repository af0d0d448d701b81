"""How fast a fleet returns after a cloud restart, and how hard it knocks meanwhile.

One real ``cloudstream`` process; N edges in *this* process, each the real
``edgestream.tunnel_client.run_tunnel`` with its own certificate (one lab CA) and an emulator
backend. All tunnels come up, the cloud is SIGKILLed, stays away ``--outage`` seconds and is
started again on the same port. Reported: time from the restarted cloud's "ready" line to each
edge's tunnel being up again (p50, p99, max), the peak accept rate (tunnels up per 100 ms and
per 1 s) and the peak dial rate (attempts per 1 s, failed ones included) during the outage.

    PYTHONPATH=$PWD python -m bench.recovery --nodes 1000 --outage 30

All edges dial from 127.0.0.1, so cloudstream's per-address cap on unauthenticated connections
(100) is raised to the fleet size: a real fleet comes from N addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from streamcerts import init_lab
from edgestream.backends.emulator import EmulatorBackend
from edgestream.config import EdgeConfig, EmulatorConfig
from edgestream.tunnel_client import run_tunnel

READY = re.compile(r"kubelet API on \S+:(\d+), tunnel on \S+:(\d+)")
ROOT = Path(__file__).resolve().parent.parent


class Cloud:
    """A cloudstream child process whose output is read (and dropped) so it never blocks."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ready: asyncio.Future[tuple[float, int]] = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, pki: Path, nodes: int, tunnel_port: int) -> Cloud:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cloudstream", "--pki-dir", str(pki), "--stream-address", "127.0.0.1",
            "--stream-port", "0", "--tunnel-address", "127.0.0.1", "--tunnel-port", str(tunnel_port),
            "--max-pending-per-ip", str(max(100, nodes)), "--max-pending-handshakes", str(max(1000, nodes)),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            if not self.ready.done() and (m := READY.search(raw.decode(errors="replace"))):
                self.ready.set_result((time.monotonic(), int(m.group(2))))

    async def kill(self) -> None:
        self.proc.kill()
        await self.proc.wait()
        await self.reader


class DialCounter(logging.Handler):
    """Counts failed dials from run_tunnel's own log records (every attempt logs, most at DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failed: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("! tunnel to"):
            self.failed.append(time.monotonic())
            if len(self.failed) <= 3:  # say why, once or thrice
                print("edge:", record.getMessage(), file=sys.stderr)


def peak(times: list[float], window: float) -> float:
    """Most events in any ``window``-long bucket, per second."""
    if not times:
        return 0.0
    buckets = Counter(int(t / window) for t in times)
    return max(buckets.values()) / window


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def run(nodes: int, outage: float, timeout: float) -> int:
    names = [f"r{i:04d}" for i in range(nodes)]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        layout = init_lab(Path(tmp), names)
        print(f"pki for {nodes} nodes in {time.monotonic() - t0:.1f} s", flush=True)
        cloud = await Cloud.start(layout.root, nodes, 0)
        _, port = await asyncio.wait_for(cloud.ready, 30)
        up_at: dict[str, float] = {}
        down_at: dict[str, float] = {}
        all_up = asyncio.Event()
        counter = DialCounter()
        edge_log = logging.getLogger("edgestream")
        edge_log.setLevel(logging.DEBUG)
        edge_log.propagate = False
        edge_log.addHandler(counter)
        stop = asyncio.Event()

        def watcher(name: str):  # type: ignore[no-untyped-def]
            def on_session(session: object) -> None:
                now = time.monotonic()
                if session is None:
                    down_at[name] = now
                    up_at.pop(name, None)
                else:
                    up_at[name] = now
                    if len(up_at) == nodes:
                        all_up.set()
            return on_session

        async with asyncio.TaskGroup() as tg:
            for i, name in enumerate(names):
                config = EdgeConfig(  # each node its own internal IP: cloudstream refuses a second owner
                    server=f"127.0.0.1:{port}", node_name=name, node_ip=f"127.1.{i // 250}.{i % 250 + 1}",
                    tls_tunnel_ca_file=layout.ca_cert, tls_tunnel_cert_file=layout.edge_cert(name),
                    tls_tunnel_private_key_file=layout.edge_key(name), backend="emulator",
                )
                backend = EmulatorBackend(EmulatorConfig())
                tg.create_task(run_tunnel(config, backend, stop, on_session=watcher(name)))
            try:
                t0 = time.monotonic()
                await asyncio.wait_for(all_up.wait(), timeout)
                print(f"{nodes} tunnels up in {time.monotonic() - t0:.1f} s (cold start)", flush=True)
                await asyncio.sleep(1)
                all_up.clear()
                killed = time.monotonic()
                await cloud.kill()
                print(f"cloud SIGKILLed; away for {outage:.0f} s", flush=True)
                await asyncio.sleep(outage)
                dials_in_outage = [t for t in counter.failed if t >= killed]
                cloud = await Cloud.start(layout.root, nodes, port)
                ready, _ = await asyncio.wait_for(cloud.ready, 30)
                try:
                    await asyncio.wait_for(all_up.wait(), timeout)
                except TimeoutError:
                    pass
                back = [up_at[n] - ready for n in names if n in up_at]
                returns = sorted(up_at[n] for n in names if n in up_at)
                failed_after = [t for t in counter.failed if t >= ready]
                print(
                    f"back after restart: {len(back)}/{nodes} edges; p50 {pct(back, 0.5):.2f} s, "
                    f"p99 {pct(back, 0.99):.2f} s, max {max(back, default=float('nan')):.2f} s "
                    f"(from the restarted cloud's ready line)"
                )
                print(
                    f"accept rate: peak {peak(returns, 0.1):.0f}/s over 100 ms, {peak(returns, 1.0):.0f}/s over 1 s; "
                    f"failed dials after the restart: {len(failed_after)}"
                )
                print(
                    f"dials while the cloud was away: {len(dials_in_outage)} in {outage:.0f} s "
                    f"(mean {len(dials_in_outage) / outage:.0f}/s, peak {peak(dials_in_outage, 1.0):.0f}/s over 1 s)"
                )
            finally:
                stop.set()
        await cloud.kill()
        return 0 if len(back) == nodes else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the cloud stays away")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up waiting for the fleet after this")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    return asyncio.run(run(args.nodes, args.outage, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
