"""``edgestream emulate --nodes 50`` against a real cloudstream: every node gets its own tunnel
with its own certificate (IP SAN = its node IP), nodes are reached through 10003 by name and by
IP (logs, logs -f, exec, port-forward, stats), churn takes nodes away and brings them back, and
at the end cloudstream holds nothing (tunnels, streams, tasks, fds) and the fleet process
exits cleanly with no task left."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time

import pytest

from edgestream.fleet import node_configs
from edgestream.fleet_profile import FleetProfile
from streamcerts import Layout
from tests.conftest import MS

from .framework import Process, apiserver_tls, kubelet_request, start_cloud
from .k8s_ws import open_ws, run_exec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

NODES = 50
CIDR = "10.77.0.0/24"
STATE = re.compile(r"state (.*)$")


async def _state(cloud: Process) -> dict[str, int]:
    since = len(cloud.lines)
    cloud.proc.send_signal(signal.SIGUSR1)
    m = await cloud.wait_for_line(STATE, since=since, timeout=10)
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def _fd_kinds(proc: Process) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{proc.proc.pid}/fd"):
        try:
            kind = os.readlink(f"/proc/{proc.proc.pid}/fd/{fd}").split(":")[0]
        except OSError:
            continue
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


async def _retry(what, attempt, within: float = 15.0):
    """A churned node is away for a moment: try again until it is back (bounded)."""
    deadline = time.monotonic() + within * MS
    while True:
        try:
            return await attempt()
        except (AssertionError, ConnectionError, OSError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {within} s: {exc}") from exc
            await asyncio.sleep(0.2)


async def test_fleet_of_50_nodes_in_one_process(tmp_path) -> None:
    profile = FleetProfile(nodes=NODES, pki_dir=tmp_path / "pki", cidr=CIDR)
    configs = node_configs(profile)  # the lab the cloud and the fleet share (the fleet keeps these)
    layout = Layout(tmp_path / "pki")
    cloud, port, tunnel_port = await start_cloud(layout)
    fleet: Process | None = None
    try:
        tls = apiserver_tls(layout)
        # Warm up first: uvloop opens one /dev/null for good on the first TLS connection it accepts.
        async with kubelet_request(port, "/containerLogs/a/b/c", host="no-such-node", tls=tls) as r:
            assert r.status == 503
            await r.body()
        baseline = await _state(cloud)
        base_fds = _fd_kinds(cloud)
        fleet = await Process.start("fleet", [
            "edgestream", "emulate", "--nodes", str(NODES), "--pki-dir", str(layout.root), "--cidr", CIDR,
            "--server", f"localhost:{tunnel_port}", "--ramp", "100", "--report-every", "1",
            "--pod", "default/demo/app", "--pod", "default/web/nginx", "--log-rate", "50",
            "--churn-rate", "4", "--churn-down", "0.3", "--ping-interval", "0.5", "--ping-timeout", "5",
        ])
        await fleet.wait_for_line(rf"all {NODES} nodes up", timeout=60)
        up = await _state(cloud)
        assert up["tunnels"] >= NODES - 3, up  # churn keeps a node or two away at any moment
        # One task per tunnel in cloudstream (its handler); keepalives share one timer.
        assert up["tasks"] - baseline["tasks"] <= up["tunnels"] + 2, (baseline, up)
        # And one per node in the fleet: the node's task runs its tunnel loop and, with its one tunnel up,
        # reads that tunnel itself (stop, probe and certificate watch are callbacks and timers), plus the
        # fleet's own few (ramp, watch, churn, report, a churned node's return). Main before: 9 per node.
        since = len(fleet.lines)
        m = await fleet.wait_for_line(r"fleet: \d+/\d+ nodes up, .* (\d+) tasks$", since=since, timeout=5)
        assert int(m.group(1)) <= NODES + 12, m.group(0)

        async def logs(node: str, host: str) -> None:
            async with kubelet_request(port, "/containerLogs/default/demo/app?tailLines=3", host=host, tls=tls) as r:
                body = await r.body()
                assert r.status == 200, (node, r.status, body[:200])
                assert body.count(b"default/demo/app line") == 3, body

        async def follow(host: str) -> None:
            async with kubelet_request(port, "/containerLogs/default/web/nginx?follow=true&tailLines=0",
                                       host=host, tls=tls) as r:
                assert r.status == 200, r.status
                seen = b""
                async for chunk in r.chunks():
                    seen += chunk
                    if seen.count(b"\n") >= 5:
                        break
                assert b"default/web/nginx line" in seen

        async def exec_echo(host: str) -> None:
            ws = await open_ws(port, "/exec/default/demo/app?command=sh&command=-c&command=echo%20hi%3B%20hostname"
                               "&output=1&error=1", node=host, tls=tls)
            result = await run_exec(ws)
            assert result.stdout.startswith(b"hi\n"), result
            assert result.exit_code == 0, result.status

        async def port_forward(host: str) -> None:
            ws = await open_ws(port, "/portForward/default/web?port=8080", node=host, tls=tls,
                               protocols=["v4.channel.k8s.io"])
            try:
                firsts = {}
                while len(firsts) < 2:
                    message = await ws.recv()
                    firsts[message[0]] = message[1:]
                await ws.send(b"\x00ping " + host.encode())
                assert await ws.recv() == b"\x00ping " + host.encode()
            finally:
                await ws.close()

        async def stats(node: str, host: str) -> None:
            async with kubelet_request(port, "/stats/summary", host=host, tls=tls) as r:
                body = await r.body()
                assert r.status == 200, (r.status, body[:200])
                assert json.loads(body)["node"]["nodeName"] == node

        picks = [0, 17, 33, NODES - 1]
        for i in picks:
            node, ip = configs[i].node_name, configs[i].node_ip
            assert ip == profile.node_ip(i)
            await _retry(f"logs of {node} by name", lambda n=node: logs(n, n))
            await _retry(f"logs of {node} by IP {ip}", lambda n=node, a=ip: logs(n, a))
            await _retry(f"logs -f of {node}", lambda n=node: follow(n))
            await _retry(f"exec on {node}", lambda a=ip: exec_echo(a))
            await _retry(f"port-forward to {node}", lambda n=node: port_forward(n))
            await _retry(f"stats of {node}", lambda n=node: stats(n, n))
        # Streams on many nodes at once.
        await asyncio.gather(*(_retry(f"logs of node {i}", lambda i=i: logs(configs[i].node_name, configs[i].node_ip))
                               for i in range(0, NODES, 2)))

        # Churn happened: nodes left with a clean close and came back.
        await fleet.wait_for_line(r"fleet: .* [1-9]\d* churned", timeout=20)
        downs = [line for line in cloud.lines if "tunnel down" in line and "1001" in line]
        assert downs, "no node left the fleet"
        left = {re.search(r"node (\S+)", line).group(1) for line in downs}  # type: ignore[union-attr]
        assert left <= {c.node_name for c in configs}

        assert await fleet.stop(signal.SIGTERM) == 0, fleet.output
        await fleet.wait_for_line(r"fleet: stopped \d+ nodes, 0 tasks left", timeout=5)
        fleet = None
        # Nothing left in cloudstream: no tunnel, no stream, tasks and fds back to the baseline.
        deadline = time.monotonic() + 15 * MS
        while True:
            after = await _state(cloud)
            settled = (after["tunnels"] == 0 and after["streams"] == 0 and after["mux_streams"] == 0
                       and after["tasks"] <= baseline["tasks"] and after["fds"] <= baseline["fds"])
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert settled, f"cloudstream did not settle: {baseline} -> {after}; {base_fds} -> {_fd_kinds(cloud)}"
    finally:
        if fleet is not None:
            await fleet.stop(signal.SIGKILL)
        await cloud.stop()
