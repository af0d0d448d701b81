"""Our HA mode behind a real HAProxy (TCP mode, round-robin, health checks) on loopback:
3 cloudstream replicas, 5 emulated edges (``edgestream emulate``) that each keep a tunnel to
every replica, the API server's requests balanced over all replicas too.

- every replica holds every node (so every edge holds 3 tunnels, never two to one replica);
- 100 requests (logs and exec) through HAProxy all succeed, and every replica served some;
- SIGKILL of one replica ends only the streams it carried; the others keep flowing; new
  requests succeed again within a bound; the replica comes back on its ports and every edge
  re-attaches to it;
- a Go-compatible edge (no extension, the tunnel dial of kubeedge-tunnel.md) keeps one tunnel,
  the replica holding it answers, the others answer a Status naming the node and themselves;
- at the end no replica holds a tunnel or stream, the fleet exits cleanly, nothing leaked here.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
from websockets.asyncio.client import connect

from streamcerts import client_context, init_lab
from edgestream.fleet import node_configs
from edgestream.fleet_profile import FleetProfile
from testkit.haproxy import HAProxy, Pool
from testkit.k8s_ws import open_ws, run_exec
from testkit.processes import MS, Process, apiserver_tls, kubelet_request
from testkit.replicas import Replicas


pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

NODES = 5
CIDR = "10.78.0.0/24"
GO_NODE, GO_IP = "go-edge", "10.78.1.9"


async def _logs(port: int, node: str, tls, tail: int = 3) -> bytes:
    async with kubelet_request(port, f"/containerLogs/default/demo/app?tailLines={tail}", host=node, tls=tls) as r:
        body = await r.body()
        assert r.status == 200, (node, r.status, body[:300])
        assert body.count(b"default/demo/app line") == tail, body[:300]
        return body


async def _exec(port: int, node: str, tls) -> None:
    ws = await open_ws(port, "/exec/default/demo/app?command=sh&command=-c&command=echo%20hi&output=1&error=1",
                       node=node, tls=tls)
    result = await run_exec(ws)
    assert result.stdout.startswith(b"hi\n") and result.exit_code == 0, (node, result)


class Follow:
    """A ``logs -f`` through HAProxy, counting lines until it ends (and how)."""

    def __init__(self, port: int, node: str, tls) -> None:
        self.lines = 0
        self.error: BaseException | None = None
        self.started = asyncio.Event()
        self.task = asyncio.create_task(self._run(port, node, tls))

    async def _run(self, port: int, node: str, tls) -> None:
        try:
            async with kubelet_request(port, "/containerLogs/default/demo/app?follow=true&tailLines=0",
                                       host=node, tls=tls) as r:
                assert r.status == 200, r.status
                self.started.set()
                async for chunk in r.chunks():
                    self.lines += chunk.count(b"\n")
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            self.error = exc
        finally:
            self.started.set()

    @property
    def ended(self) -> bool:
        return self.task.done()

    async def grows(self, by: int, within: float) -> bool:
        start = self.lines
        deadline = time.monotonic() + within * MS
        while time.monotonic() < deadline and not self.ended:
            if self.lines >= start + by:
                return True
            await asyncio.sleep(0.05)
        return self.lines >= start + by


async def _go_edge_answers(ws) -> None:
    """A Go edgecore's tunnel reader as far as logs go: answer each LOGS_CONNECT with one line
    and a REMOVE_CONNECT, ignore our REMOVEs (kubeedge-tunnel.md: types 0..6, TEXT frames)."""
    async for message in ws:
        data = message if isinstance(message, bytes) else message.encode("latin-1")
        if len(data) >= 2 and data[0] < 0x80 and data[1] == 0:  # LOGS_CONNECT, one-byte id
            await ws.send(bytes([data[0], 3]).decode("latin-1") + "hello from the go edge\n")
            await ws.send(bytes([data[0], 4]).decode("latin-1"))


async def _baseline(replicas: Replicas, replica, tls) -> dict[str, int]:
    """A replica's state after one miss (its first TLS accept on 10003, a peer question on each
    tunnel port): what it holds with no tunnel and no stream, for the leak check at the end."""
    async with kubelet_request(replica.stream_port, "/containerLogs/a/b/c", host="nobody", tls=tls) as r:
        assert r.status == 503
        await r.body()
    await asyncio.sleep(0.2)
    return await replicas.state(replica)


async def test_three_replicas_behind_haproxy(tmp_path, haproxy_installed, no_leaks) -> None:
    profile = FleetProfile(nodes=NODES, pki_dir=tmp_path / "pki", cidr=CIDR)
    configs = node_configs(profile)
    layout = init_lab(tmp_path / "pki", [c.node_name for c in configs] + [GO_NODE], node_ips={
        **{c.node_name: [c.node_ip] for c in configs}, GO_NODE: [GO_IP]})
    nodes = [c.node_name for c in configs]
    replicas = Replicas(layout)
    await replicas.start_all()
    tunnel_pool = Pool("tunnel", [(r.replica_id, r.tunnel_port) for r in replicas.all])
    api_pool = Pool("api", [(r.replica_id, r.stream_port) for r in replicas.all])
    haproxy = HAProxy(tmp_path, [tunnel_pool, api_pool])
    fleet: Process | None = None
    follows: list[Follow] = []
    tls = apiserver_tls(layout)
    try:
        await haproxy.start()
        baseline = {r.replica_id: await _baseline(replicas, r, tls) for r in replicas.all}
        fleet = await Process.start("fleet", [
            "edgestream", "emulate", "--nodes", str(NODES), "--pki-dir", str(layout.root), "--cidr", CIDR,
            "--server", f"127.0.0.1:{tunnel_pool.port}", "--server-name", "localhost", "--ramp", "50",
            "--pod", "default/demo/app", "--log-rate", "20", "--ping-interval", "1", "--ping-timeout", "5",
            "--reconnect-max", "2", "--report-every", "1",
        ])
        # -- every edge holds a tunnel to every replica, and never two to one
        for replica in replicas.all:
            await replicas.wait_tunnels(replica, NODES, within=40)
        assert all(n == 0 for n in replicas.lines("dialled again").values()), replicas.lines("dialled again")
        dials = sum((await haproxy.server_sessions("tunnel")).values())
        await asyncio.sleep(2)  # once every edge holds every replica, nobody dials
        assert sum((await haproxy.server_sessions("tunnel")).values()) == dials

        # -- 100 requests through HAProxy (logs and exec), all succeed, spread over all replicas
        before = await haproxy.server_sessions("api")
        limit = asyncio.Semaphore(10)

        async def one(k: int) -> None:
            async with limit:
                node = nodes[k % NODES]
                await (_logs(api_pool.port, node, tls) if k % 2 else _exec(api_pool.port, node, tls))

        async with asyncio.timeout(120 * MS):
            await asyncio.gather(*(one(k) for k in range(100)))
        after = await haproxy.server_sessions("api")
        served = {sid: after[sid] - before.get(sid, 0) for sid in after}
        assert sum(served.values()) >= 100 and all(n >= 20 for n in served.values()), served

        # -- SIGKILL one replica mid-stream: only its streams end
        victim = replicas.all[1]
        for k in range(6):  # round-robin: two follows on each replica
            follows.append(Follow(api_pool.port, nodes[k % NODES], tls))
            await follows[-1].started.wait()
        for f in follows:
            assert await f.grows(2, within=10), "a logs -f never flowed"
        carried = (await replicas.state(victim))["streams"]
        assert carried >= 1, "round-robin put no follow on the victim"
        killed_at = time.monotonic()
        assert victim.process is not None
        victim.process.proc.send_signal(signal.SIGKILL)
        await victim.process.proc.wait()
        async with asyncio.timeout(10 * MS):  # its streams end at once (HAProxy closes them)
            while sum(f.ended for f in follows) < carried:
                await asyncio.sleep(0.05)
        ended = [f for f in follows if f.ended]
        assert len(ended) == carried, (len(ended), carried)
        assert all(f.error is not None for f in ended), [f.error for f in ended]
        for f in follows:
            if not f.ended:
                assert await f.grows(3, within=10), "a stream on a surviving replica stopped"
        # new requests succeed within a bound
        while True:
            try:
                await _logs(api_pool.port, nodes[0], tls, tail=1)
                break
            except (AssertionError, ConnectionError, OSError, asyncio.IncompleteReadError):
                assert time.monotonic() - killed_at < 15 * MS, "no request served 15 s after the kill"
                await asyncio.sleep(0.05)
        failover = time.monotonic() - killed_at
        for k in range(20):  # and keep succeeding, on the two survivors
            await (_logs(api_pool.port, nodes[k % NODES], tls) if k % 2 else _exec(api_pool.port, nodes[k % NODES], tls))

        # -- the replica comes back on its ports; every edge re-attaches to it
        await replicas.start(victim)
        baseline[victim.replica_id] = await _baseline(replicas, victim, tls)
        reattach = await replicas.wait_tunnels(victim, NODES, within=45)
        for replica in replicas.all:
            assert (await replicas.state(replica))["tunnels"] == NODES
        print(f"failover {failover:.2f} s, re-attach {reattach:.1f} s")  # shown with -s; bench/ha.py measures

        # -- a Go-compatible edge keeps one tunnel; its replica answers, the others say so
        go_tls = client_context(layout.ca_cert, layout.edge_cert(GO_NODE), layout.edge_key(GO_NODE))
        async with connect(
            f"wss://localhost:{tunnel_pool.port}/v1/kubeedge/connect", ssl=go_tls, host="127.0.0.1",
            additional_headers={"SessionHostNameOverride": GO_NODE, "SessionInternalIP": GO_IP},
            user_agent_header="Go-http-client/1.1", compression=None,
        ) as go_edge:
            answering = asyncio.create_task(_go_edge_answers(go_edge))
            try:
                holders: list[str] = []
                async with asyncio.timeout(10 * MS):
                    while not holders:
                        holders = [r for r, n in replicas.lines(f"tunnel up: node {GO_NODE} ").items() if n]
                        await asyncio.sleep(0.05)
                assert len(holders) == 1, holders
                for replica in replicas.all:
                    async with kubelet_request(replica.stream_port, "/containerLogs/default/demo/app",
                                               host=GO_NODE, tls=tls) as r:
                        body = await r.body()
                    if replica.replica_id == holders[0]:
                        assert r.status == 200 and body == b"hello from the go edge\n", (r.status, body)
                    else:  # logs: plain text, as the kubelet's errors there
                        text = body.decode()
                        assert r.status == 503 and GO_NODE in text and replica.replica_id in text, (r.status, text)
                        assert f"holds a tunnel to replica(s) {holders[0]} (asked just now)" in text, text  # asked its peers
                # an upgrade (exec) answers metav1.Status JSON with the same message
                for replica in replicas.all:
                    if replica.replica_id == holders[0]:
                        continue
                    async with kubelet_request(
                        replica.stream_port, "/exec/default/demo/app?command=true&output=1", host=GO_NODE, tls=tls,
                        headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                 "Sec-WebSocket-Protocol": "v4.channel.k8s.io"},
                    ) as r:
                        status = json.loads(await r.body())
                    assert r.status == 503 and status["kind"] == "Status" and status["code"] == 503, status
                    assert GO_NODE in status["message"] and replica.replica_id in status["message"], status
                    assert f"replica(s) {holders[0]} (asked" in status["message"], status
                assert sum(replicas.lines(f"tunnel up: node {GO_NODE} ").values()) == 1
            finally:
                answering.cancel()
                await asyncio.gather(answering, return_exceptions=True)
    finally:
        for f in follows:
            f.task.cancel()
        await asyncio.gather(*(f.task for f in follows), return_exceptions=True)
        if fleet is not None:
            await fleet.stop()
    try:
        assert fleet is not None and fleet.proc.returncode == 0, fleet.output if fleet else ""
        # -- nothing left on any replica once the edges are gone
        for replica in replicas.all:
            base = baseline[replica.replica_id]
            deadline = time.monotonic() + 15 * MS
            while ((state := await replicas.state(replica))["tunnels"] or state["streams"]
                   or state["tasks"] > base["tasks"] or state["fds"] > base["fds"]):
                assert time.monotonic() < deadline, f"{replica.replica_id} leaked: {base} -> {state}"
                await asyncio.sleep(0.2)
            assert state["mux_streams"] == 0 and state["api_connections"] == 0, (replica.replica_id, state)
    finally:
        await replicas.stop_all()
        await haproxy.stop()
