"""How long a replica takes to hold its tunnel port when N replicas start at once.

    python -m bench.tunnelport_race [--replicas 1 2 3] [--rounds 30] [--json]
    python -m bench.tunnelport_race --processes [--replicas 2 3] [--rounds 5]

Against ``testkit.kube_api`` (real HTTPS, bearer token, the API server's resourceVersion
conflicts) on loopback. One round: an empty store, then N claimers started together, each with
its own client (kubeconfig load, TLS connection, then GET/POST/PUT as ``cloudstream/kube`` does).
Two modes:

* ``natural``: the replicas simply start at once (what a rollout gives);
* ``forced``: the endpoint holds the first N reads until all N arrived, so every replica reads the
  same state and all but one must lose and retry (the worst case).

Reported per N and mode: time from start to claimed port (median, p90, max over every replica of
every round), rounds per claim, conflicts per round, and that every round ended with N distinct
ports in one consistent record. KubeEdge's cloudcore has no retry: its guard is a random 0-9 s sleep
before the one attempt (a lost race panics the process), so its start-to-port time is 0-9 s plus
one request, 4.5 s on average.

``--processes``: N real cloudstream processes started together (``--kubeconfig``, a replica IP
each); time from spawn to the "tunnel port" log line, Python start-up and imports included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from cloudstream.kube.client import core_v1
from cloudstream.kube.record import ANNOTATION, TunnelPortRecord
from cloudstream.kube.settings import KubeSettings
from cloudstream.kube.tunnelport import TunnelPortClaimer
from testkit.kube_api import KubeApi
from testkit.processes import Process


async def one_round(api: KubeApi, n: int, forced: bool) -> list[tuple[float, int, int, int]]:
    api.store.clear()
    if forced:
        api.rendezvous(n)
    start = time.perf_counter()

    async def replica(i: int) -> tuple[float, int, int, int]:
        s = KubeSettings(kubeconfig=api.kubeconfig, replica_ip=f"10.244.{i}.7")
        async with core_v1(s) as core:
            claim = await TunnelPortClaimer(core, s).claim()
        return time.perf_counter() - start, claim.port, claim.rounds, claim.conflicts

    results = list(await asyncio.gather(*(replica(i) for i in range(n))))
    cm = api.get("configmaps", "tunnelport", "kubeedge")
    assert cm is not None
    record = TunnelPortRecord.parse(cm["metadata"]["annotations"][ANNOTATION])
    ports = sorted(r[1] for r in results)
    assert ports == list(range(10351, 10351 + n)) and sorted(record.ip_ports.values()) == ports, (ports, record)
    return results


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main_async(replicas: list[int], rounds: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        api = await KubeApi().start(Path(tmp))
        try:
            await one_round(api, 1, False)  # warm-up: imports, first TLS context
            for n in replicas:
                for forced in (False, True):
                    if forced and n == 1:
                        continue
                    times, claim_rounds, conflicts = [], [], []
                    for _ in range(rounds):
                        results = await one_round(api, n, forced)
                        times += [r[0] for r in results]
                        claim_rounds += [r[2] for r in results]
                        conflicts.append(sum(r[3] for r in results))
                    out.append({
                        "replicas": n, "mode": "forced" if forced else "natural", "rounds": rounds,
                        "median_ms": round(statistics.median(times) * 1000, 1), "p90_ms": round(pct(times, 0.9) * 1000, 1),
                        "max_ms": round(max(times) * 1000, 1),
                        "rounds_per_claim": round(statistics.mean(claim_rounds), 2),
                        "conflicts_per_round": round(statistics.mean(conflicts), 2),
                    })
        finally:
            await api.close()
    return out


CLAIM_LINE = r"tunnel port \d+ for .*\((\d+) rounds, (\d+) conflicts, ([\d.]+) s\)"
"""cloudstream/kube/tunnelport.py's log line: rounds, conflicts, the claim's own seconds."""


async def claimed(p: Process, start: float) -> tuple[float, float, int, int]:
    """(spawn to the claim line, the claim's own seconds, its rounds, its conflicts)."""
    m = await p.wait_for_line(CLAIM_LINE, timeout=60)
    return time.perf_counter() - start, float(m[3]), int(m[1]), int(m[2])


async def processes_async(replicas: list[int], rounds: int) -> list[dict[str, object]]:
    from streamcerts import init_lab

    out: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        layout = init_lab(Path(tmp) / "pki", ["edge-1"])
        api = await KubeApi().start(Path(tmp))
        try:
            for n in replicas:
                times: list[float] = []
                claims: list[float] = []
                claim_rounds: list[int] = []
                conflicts: list[int] = []
                for _ in range(rounds):
                    api.store.clear()
                    start = time.perf_counter()
                    procs = await asyncio.gather(*(Process.start(f"cloudstream-{i}", [
                        "cloudstream", "--pki-dir", str(layout.root), "--stream-address", "127.0.0.1", "--stream-port", "0",
                        "--tunnel-address", "127.0.0.1", "--tunnel-port", "0", "--kubeconfig", str(api.kubeconfig),
                        "--replica-ip", f"10.244.{i}.7"]) for i in range(n)))
                    try:
                        got = await asyncio.gather(*(claimed(p, start) for p in procs))
                        times += [g[0] for g in got]
                        claims += [g[1] for g in got]
                        claim_rounds += [g[2] for g in got]
                        conflicts.append(sum(g[3] for g in got))
                    finally:
                        await asyncio.gather(*(p.stop() for p in procs))
                out.append({"replicas": n, "mode": "process", "rounds": rounds,
                            "median_ms": round(statistics.median(times) * 1000), "p90_ms": round(pct(times, 0.9) * 1000),
                            "max_ms": round(max(times) * 1000), "rounds_per_claim": round(statistics.mean(claim_rounds), 2),
                            "conflicts_per_round": round(statistics.mean(conflicts), 2)})
                out.append({"replicas": n, "mode": "  claim", "rounds": rounds,
                            "median_ms": round(statistics.median(claims) * 1000, 1),
                            "p90_ms": round(pct(claims, 0.9) * 1000, 1), "max_ms": round(max(claims) * 1000, 1),
                            "rounds_per_claim": "", "conflicts_per_round": ""})
        finally:
            await api.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tunnelport_race", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--processes", action="store_true", help="real cloudstream processes (start-up included)")
    args = parser.parse_args()
    if args.processes:
        rows = asyncio.run(processes_async(args.replicas, args.rounds))
    else:
        rows = asyncio.run(main_async(args.replicas, args.rounds))
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'N':>2} {'mode':8} {'median ms':>10} {'p90 ms':>8} {'max ms':>8} {'rounds/claim':>13} {'409s/round':>11}")
    for r in rows:
        print(f"{r['replicas']:>2} {r['mode']:8} {r['median_ms']:>10} {r['p90_ms']:>8} {r['max_ms']:>8} "
              f"{r['rounds_per_claim']:>13} {r['conflicts_per_round']:>11}")


if __name__ == "__main__":
    main()
