"""A scale-up (2 -> 3 replicas) behind HAProxy: edges that hold both replicas they know of find
the third through their probe dial (``replica_probe_interval``), and the first two replicas
keep their tunnels (a probe that lands on a held replica is a 409, nothing more)."""

from __future__ import annotations

import pytest

from streamcerts import Layout
from edgestream.fleet import node_configs
from edgestream.fleet_profile import FleetProfile
from testkit.haproxy import HAProxy, Pool
from testkit.processes import Process
from testkit.replicas import Replicas
from testkit.scrape import scrape, value

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

NODES = 3
CIDR = "10.78.2.0/24"


async def test_a_new_replica_is_found_by_every_edge(tmp_path, haproxy_installed, no_leaks) -> None:
    node_configs(FleetProfile(nodes=NODES, pki_dir=tmp_path / "pki", cidr=CIDR))
    layout = Layout(tmp_path / "pki")
    replicas = Replicas(layout, 3, announce=2)
    r0, r1, r2 = replicas.all
    await replicas.start(r0)
    await replicas.start(r1)
    tunnel_pool = Pool("tunnel", [(r.replica_id, r.tunnel_port) for r in replicas.all], disabled=(r2.replica_id,))
    haproxy = HAProxy(tmp_path, [tunnel_pool])
    fleet: Process | None = None
    try:
        await haproxy.start()
        fleet = await Process.start("fleet", [
            "edgestream", "emulate", "--nodes", str(NODES), "--pki-dir", str(layout.root), "--cidr", CIDR,
            "--server", f"127.0.0.1:{tunnel_pool.port}", "--server-name", "localhost", "--ramp", "50",
            "--reconnect-max", "1", "--replica-probe", "1", "--report-every", "1", "--admin-port", "0",
        ])
        admin = int((await fleet.wait_for_line(r"emulate admin on http://127\.0\.0\.1:(\d+)")).group(1))
        for replica in (r0, r1):
            await replicas.wait_tunnels(replica, NODES, within=30)
        replicas.announce = 3  # the Deployment scaled: the new pod (and, in time, the others) say 3
        await replicas.start(r2)
        await haproxy.enable("tunnel", r2.replica_id)
        await replicas.wait_tunnels(r2, NODES, within=40)
        for replica in (r0, r1):
            assert (await replicas.state(replica))["tunnels"] == NODES
        # One task per tunnel in the fleet (a node serves its last tunnel in its own task, the others
        # each in one; stop, probe and certificate watch are callbacks and timers), a probe dial's
        # helper task per node at most, and the fleet's own few (ramp, watch, report).
        since = len(fleet.lines)
        m = await fleet.wait_for_line(r"fleet: \d+/\d+ nodes up, .* (\d+) tasks$", since=since, timeout=5)
        assert int(m.group(1)) <= 3 * NODES + NODES + 4, m.group(0)
        assert sum(replicas.lines("dialled again").values()) == 0
        # The fleet's /metrics counts every tunnel of a node, not only its newest (it said NODES)
        samples = await scrape(admin)
        assert value(samples, "kubeedge_stream_tunnels_connected") == 3 * NODES
        assert value(samples, "kubeedge_stream_tunnel_connects_total") == 3 * NODES
        assert sum(v for (name, _), v in samples.items() if name == "kubeedge_stream_tunnel_disconnects_total") == 0
    finally:
        if fleet is not None:
            await fleet.stop()
        await replicas.stop_all()
        await haproxy.stop()
    assert fleet.proc.returncode == 0, fleet.output
