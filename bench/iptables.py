"""How long the iptables manager takes to converge, in a network namespace of its own (root).

    python -m bench.iptables [--nodes 1000] [--rounds 5] [--backend nft --backend legacy] [--per-rule]
    python -m bench.iptables --fleet 1000 [--backend nft]

Per backend, each round measures (wall clock, the whole ``manager.sync``: iptables-save, the
plan, one iptables-restore; split into read / plan / restore):

* ``from empty``: N nodes into an empty nat table (chain, N rules, the jump);
* ``one change``: one node gone and one new in an N-node chain (the chain is rewritten whole);
* ``no change``: a second run with the same N nodes (a save, no restore);
* ``cli change``: the same one change through ``cloudstream iptables sync --node-file``
  (process start and imports included: what a cron job or a DaemonSet pays);

``--per-rule`` adds what a rule-at-a-time manager pays (KubeEdge's ``EnsureRule``: one
``iptables -C`` and one ``iptables -A`` per rule) for the same N, once.

``--fleet N`` instead runs a real cloudstream with ``--manage-iptables`` and ``edgestream emulate
--nodes N`` in the namespace, and reports how long after the last tunnel came up the chain held
all N rules, how many iptables writes that took, and the same after the fleet is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloudstream.iptables.rules import EdgeNode, RuleConfig

ROOT = Path(__file__).resolve().parent.parent


def _nodes(n: int, shift: int = 0) -> list[tuple[str, str]]:
    return [(f"edge-{i:05d}", f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}") for i in range(1 + shift, n + 1 + shift)]


def _inside(args: argparse.Namespace) -> dict[str, object]:
    from cloudstream.iptables import manager
    from cloudstream.iptables.backend import Backend, Iptables, run_exec
    from cloudstream.iptables.rules import plan_sync

    config = RuleConfig(to_address="127.0.0.1")
    results: dict[str, object] = {"nodes": args.nodes, "rounds": args.rounds}
    for name in args.backend:
        tables = Iptables(Backend(name, f"iptables-{name}-save", f"iptables-{name}-restore"), run_exec)
        base = [EdgeNode(n, ip) for n, ip in _nodes(args.nodes)]
        changed = base[1:] + [EdgeNode("edge-new", "10.200.0.1")]
        samples: dict[str, list[float]] = {k: [] for k in
                                           ("from_empty", "one_change", "no_change", "read", "plan", "restore", "cli_change")}
        node_file = Path(tempfile.mkstemp(prefix="kes-nodes-")[1])
        node_file.write_text("".join(f"{n.name}={n.ip}\n" for n in base))
        for _ in range(args.rounds):
            manager.cleanup(config, [tables])
            t0 = time.perf_counter()
            manager.sync(config, base, tables)
            samples["from_empty"].append(time.perf_counter() - t0)
            # the parts of one change
            t0 = time.perf_counter()
            current = tables.read()
            t1 = time.perf_counter()
            plan = plan_sync(config, changed, current)
            t2 = time.perf_counter()
            assert plan.restore is not None
            tables.restore(plan.restore)
            t3 = time.perf_counter()
            samples["read"].append(t1 - t0)
            samples["plan"].append(t2 - t1)
            samples["restore"].append(t3 - t2)
            samples["one_change"].append(t3 - t0)
            t0 = time.perf_counter()
            outcome = manager.sync(config, changed, tables)
            samples["no_change"].append(time.perf_counter() - t0)
            assert not outcome.changes
            t0 = time.perf_counter()  # back to base through the command
            subprocess.run([sys.executable, "-m", "cloudstream", "iptables", "sync", "--node-file", str(node_file),
                            "--backend", name, "--log-level", "WARNING"], check=True, cwd=ROOT)
            samples["cli_change"].append(time.perf_counter() - t0)
            assert len(tables.read().chain_rules(config.chain)) == args.nodes
        node_file.unlink()
        manager.cleanup(config, [tables])
        results[name] = {k: _stats(v) for k, v in samples.items()}
        if args.per_rule:
            results[name]["per_rule_from_empty"] = _per_rule(name, config, base)  # type: ignore[index]
    return results


def _per_rule(name: str, config: RuleConfig, nodes: list[EdgeNode]) -> dict[str, float]:
    """One ``-C`` then ``-A`` per rule, as a rule-at-a-time manager does."""
    binary = f"iptables-{name}"
    subprocess.run([binary, "-t", "nat", "-N", config.chain], check=True)
    t0 = time.perf_counter()
    for node in nodes:
        spec = config.node_rule(node).split()[2:]
        spec = [s.strip('"') for s in spec]
        comment = spec.index("--comment")
        spec[comment + 1:comment + 4] = [" ".join(spec[comment + 1:comment + 4])]  # "kubeedge-stream node NAME"
        if subprocess.run([binary, "-t", "nat", "-C", config.chain, *spec], capture_output=True).returncode != 0:
            subprocess.run([binary, "-t", "nat", "-A", config.chain, *spec], check=True)
    elapsed = time.perf_counter() - t0
    subprocess.run([binary, "-t", "nat", "-F", config.chain], check=True)
    subprocess.run([binary, "-t", "nat", "-X", config.chain], check=True)
    return {"seconds": elapsed}


def _stats(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"median_ms": round(statistics.median(ms), 1), "min_ms": round(min(ms), 1), "max_ms": round(max(ms), 1)}


def _fleet(args: argparse.Namespace) -> dict[str, object]:
    """A real cloudstream --manage-iptables and an emulated fleet, all in this namespace."""
    import asyncio

    from streamcerts import init_lab
    from testkit.processes import READY, Process

    async def main() -> dict[str, object]:
        pki = Path(tempfile.mkdtemp(prefix="kes-bench-ipt-"))
        layout = init_lab(pki, [])
        backend = args.backend[0]
        cloud = await Process.start("cloudstream", [
            "cloudstream", "--pki-dir", str(layout.root), "--stream-address", "127.0.0.1", "--stream-port", "0",
            "--tunnel-address", "127.0.0.1", "--tunnel-port", "0", "--manage-iptables", "--iptables-backend", backend,
            "--log-level", "INFO"])
        m = await cloud.wait_for_line(READY)
        await cloud.wait_for_line(r"iptables \(\w+\): ")
        mark = len(cloud.lines)
        t0 = time.perf_counter()
        fleet = await Process.start("edgestream", [
            "edgestream", "emulate", "--nodes", str(args.fleet), "--server", f"127.0.0.1:{m.group(2)}",
            "--server-name", "localhost", "--pki-dir", str(layout.root), "--cidr", "10.128.0.0/16", "--log-rate", "0"])
        out: dict[str, object] = {"fleet": args.fleet, "backend": backend}
        try:
            out["all_rules_s"], out["writes_up"] = await _until_rules(cloud, backend, args.fleet, t0, mark)
            up = [line for line in cloud.lines[mark:] if "tunnel up" in line]
            writes = [line for line in cloud.lines[mark:] if re.search(r"iptables \(\w+\): \+", line)]
            out["tunnels_up"] = len(up)
            # from the last tunnel up to the end of the write that holds it (cloudstream's own log clock)
            out["lag_after_last_tunnel_s"] = round(_stamp(writes[-1]) - _stamp(up[-1]), 3) if up and writes else None
            mark = len(cloud.lines)
            t0 = time.perf_counter()
            await fleet.stop()
            out["no_rules_s"], out["writes_down"] = await _until_rules(cloud, backend, 0, t0, mark)
        finally:
            await fleet.stop()
            await cloud.stop()
            subprocess.run([sys.executable, "-m", "cloudstream", "iptables", "cleanup", "--backend", backend],
                           cwd=ROOT, capture_output=True)
            shutil.rmtree(pki, ignore_errors=True)
        return out

    return asyncio.run(main())


async def _until_rules(cloud: object, backend: str, count: int, t0: float, mark: int) -> tuple[float, int]:
    import asyncio

    deadline = time.perf_counter() + 600
    while True:
        save = subprocess.run([f"iptables-{backend}-save", "-t", "nat"], capture_output=True, text=True).stdout
        if save.count("-A KUBEEDGE-STREAM ") == count:
            elapsed = time.perf_counter() - t0
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{count} rules not reached")
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)  # a last write in flight is counted too
    lines = cloud.lines[mark:]  # type: ignore[attr-defined]
    return round(elapsed, 2), sum(1 for ln in lines if re.search(r"iptables \(\w+\): \+", ln))


def _stamp(line: str) -> float:
    """Seconds of the day from a log line's ``HH:MM:SS,mmm``."""
    m = re.search(r"(\d\d):(\d\d):(\d\d),(\d\d\d)", line)
    assert m, line
    h, mi, s, ms = (int(g) for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.iptables", description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--backend", action="append", choices=["nft", "legacy"])
    p.add_argument("--per-rule", action="store_true", help="also time one iptables -C/-A per rule (once)")
    p.add_argument("--fleet", type=int, default=0, help="N emulated edges and a real cloudstream --manage-iptables")
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.backend = args.backend or [b for b in ("nft", "legacy") if shutil.which(f"iptables-{b}-restore")]
    if args.inside:
        print(json.dumps(_fleet(args) if args.fleet else _inside(args)))
        return 0
    from testkit.netns import netns, skip_reason

    reason = skip_reason()
    if reason:
        print(f"bench.iptables: {reason}", file=sys.stderr)
        return 2
    with netns("kes-bench") as ns:
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "bench.iptables", "--inside", *(argv or sys.argv[1:])],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        )
    if done.returncode != 0:
        print(done.stdout, done.stderr, file=sys.stderr)
        return 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
