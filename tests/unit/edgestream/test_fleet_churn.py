"""Fleet churn keeps one tunnel loop per node: a node still leaving (its tunnel closing) or away
must not be picked again. Before, a node picked twice came back twice: two tunnel loops for one
node, each dial replacing the other's tunnel every few seconds, for good (seen in CI: the fleet
never had all 50 nodes up)."""

from __future__ import annotations

import asyncio

from edgestream.fleet import Fleet, FleetNode, node_configs
from edgestream.fleet_profile import FleetProfile


async def test_a_churned_node_comes_back_once(tmp_path, monkeypatch) -> None:
    profile = FleetProfile(nodes=2, pki_dir=tmp_path / "pki", cidr="10.77.0.0/24", churn_rate=400.0,
                           churn_down=0.02, ramp=1000.0, report_every=0.0)
    running: dict[str, int] = {}
    most: dict[str, int] = {}

    async def fake_run(node: FleetNode) -> None:  # a tunnel loop that takes a while to close
        running[node.name] = running.get(node.name, 0) + 1
        most[node.name] = max(most.get(node.name, 0), running[node.name])
        node.up = True
        try:
            await node.stop.wait()
            await asyncio.sleep(0.01)  # the close handshake: churn runs meanwhile
        finally:
            node.up = False
            running[node.name] -= 1

    monkeypatch.setattr(FleetNode, "_run", fake_run)
    fleet = Fleet(profile, node_configs(profile))
    stop = asyncio.Event()
    runner = asyncio.create_task(fleet.run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(runner, 5)

    assert fleet.churned >= 10, fleet.churned  # churn did run, many times over each node
    assert most == {n.name: 1 for n in fleet.nodes}, most
    assert all(count == 0 for count in running.values()), running
    assert not any(n.away for n in fleet.nodes)
