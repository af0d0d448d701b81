"""HA mode: failover time and the per-edge memory cost of one tunnel per replica.

Three real cloudstream replicas behind a real HAProxy (TCP mode, round-robin, health checks)
on loopback, and one ``edgestream emulate --nodes N`` process dialling HAProxy.

- memory: the fleet process's RSS once every node holds its tunnels, with the replicas
  announcing 1 (every node keeps one tunnel: today's cost) and 3 (one per replica), in
  alternating rounds; reported per node;
- failover (the tunnel port balanced round-robin, then leastconn): SIGKILL one replica, then ask for logs through HAProxy every 20 ms until one is
  served (kill -> next request served); restart it on its ports and time until every node holds
  a tunnel to it again (re-attach). Repeated ``--kills`` times, a different replica each time.

    PYTHONPATH=$PWD python -m bench.ha --nodes 100 --rounds 2 --kills 3

Needs haproxy (apt-get install haproxy).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from streamcerts import Layout
from edgestream.fleet import node_configs
from edgestream.fleet_profile import FleetProfile
from testkit.haproxy import HAProxy, Pool, ensure_haproxy
from testkit.processes import Process, apiserver_tls, kubelet_request
from testkit.replicas import Replicas

CIDR = "10.79.0.0/16"


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _setup(
    layout: Layout, announce: int, nodes: int, balance: str = "roundrobin"
) -> tuple[Replicas, HAProxy, Pool, Pool]:
    replicas = Replicas(layout, 3, announce=announce, extra=("--max-pending-per-ip", str(max(100, nodes))))
    await replicas.start_all()
    tunnel_pool = Pool("tunnel", [(r.replica_id, r.tunnel_port) for r in replicas.all], balance=balance)
    api_pool = Pool("api", [(r.replica_id, r.stream_port) for r in replicas.all])
    haproxy = HAProxy(Path(tempfile.mkdtemp(prefix="bench-ha-")), [tunnel_pool, api_pool])
    await haproxy.start()
    return replicas, haproxy, tunnel_pool, api_pool


async def _fleet(layout: Layout, nodes: int, port: int) -> Process:
    return await Process.start("fleet", [
        "edgestream", "emulate", "--nodes", str(nodes), "--pki-dir", str(layout.root), "--cidr", CIDR,
        "--server", f"127.0.0.1:{port}", "--server-name", "localhost", "--ramp", "200",
        "--pod", "default/demo/app", "--log-rate", "1", "--reconnect-max", "2", "--report-every", "0",
    ])


async def _held(replicas: Replicas) -> int:
    return sum([(await replicas.state(r))["tunnels"] for r in replicas.all])


async def _wait_held(replicas: Replicas, want: int, within: float) -> float:
    began = time.monotonic()
    while (held := await _held(replicas)) < want:
        if time.monotonic() - began > within:
            raise RuntimeError(f"only {held} of {want} tunnels after {within} s")
        await asyncio.sleep(0.25)
    return time.monotonic() - began


async def memory_round(layout: Layout, nodes: int, announce: int) -> tuple[float, int]:
    replicas, haproxy, tunnel_pool, _ = await _setup(layout, announce, nodes)
    fleet = await _fleet(layout, nodes, tunnel_pool.port)
    try:
        await _wait_held(replicas, nodes * announce, within=120)
        await asyncio.sleep(3)  # settle: certificates loaded, first pings done
        dials = sum((await haproxy.server_sessions("tunnel")).values())
        return _rss_mb(fleet.proc.pid), dials
    finally:
        await fleet.stop()
        await replicas.stop_all()
        await haproxy.stop()


async def failover(layout: Layout, nodes: int, kills: int, balance: str) -> list[tuple[float, float]]:
    replicas, haproxy, tunnel_pool, api_pool = await _setup(layout, 3, nodes, balance)
    fleet = await _fleet(layout, nodes, tunnel_pool.port)
    tls = apiserver_tls(layout)
    node = node_configs(FleetProfile(nodes=nodes, pki_dir=layout.root, cidr=CIDR))[0].node_name
    out = []
    try:
        await _wait_held(replicas, nodes * 3, within=120)
        for k in range(kills):
            victim = replicas.all[k % 3]
            assert victim.process is not None
            killed = time.monotonic()
            victim.process.proc.send_signal(signal.SIGKILL)
            while True:
                try:
                    async with kubelet_request(api_pool.port, "/containerLogs/default/demo/app?tailLines=1",
                                               host=node, tls=tls) as r:
                        if r.status == 200 and await r.body():
                            break
                except (ConnectionError, OSError, asyncio.IncompleteReadError):
                    pass
                await asyncio.sleep(0.02)
            served = time.monotonic() - killed
            await victim.process.proc.wait()
            await replicas.start(victim)
            reattach = await replicas.wait_tunnels(victim, nodes, within=120)
            out.append((served, reattach))
            print(f"  kill {victim.replica_id}: next request served after {served * 1000:.0f} ms, "
                  f"all {nodes} nodes re-attached {reattach:.1f} s after its restart", flush=True)
    finally:
        await fleet.stop()
        await replicas.stop_all()
        await haproxy.stop()
    return out


async def main(ns: argparse.Namespace) -> None:
    pki = Path(tempfile.mkdtemp(prefix="bench-ha-pki-"))
    node_configs(FleetProfile(nodes=ns.nodes, pki_dir=pki, cidr=CIDR))  # certificates, once
    layout = Layout(pki)
    rss: dict[int, list[float]] = {1: [], 3: []}
    for r in range(ns.rounds):
        for announce in (1, 3) if r % 2 == 0 else (3, 1):
            mb, dials = await memory_round(layout, ns.nodes, announce)
            rss[announce].append(mb)
            print(f"round {r + 1}: {announce} tunnel(s) per node: fleet RSS {mb:.1f} MB "
                  f"({dials} dials through HAProxy for {ns.nodes * announce} tunnels)", flush=True)
    one, three = statistics.median(rss[1]), statistics.median(rss[3])
    print(f"memory: {ns.nodes} nodes, median fleet RSS {one:.1f} MB with 1 tunnel each, {three:.1f} MB with 3: "
          f"{(three - one) * 1024 / ns.nodes / 2:.1f} KiB per extra tunnel per node")
    for balance in ("roundrobin", "leastconn"):
        print(f"tunnel port balanced by {balance}:", flush=True)
        results = await failover(layout, ns.nodes, ns.kills, balance)
        served = [s for s, _ in results]
        back = [b for _, b in results]
        print(f"failover ({balance}): kill -> next request served: median {statistics.median(served) * 1000:.0f} ms, "
              f"max {max(served) * 1000:.0f} ms; re-attach of {ns.nodes} nodes: median {statistics.median(back):.1f} s, "
              f"max {max(back):.1f} s", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.ha", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="memory rounds (each runs 1 and 3 tunnels)")
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    reason = ensure_haproxy()
    if reason is not None:
        sys.exit(f"bench.ha: {reason}")
    asyncio.run(main(args))
