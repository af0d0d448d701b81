"""KubeEdge's per-port rules (the tunnel-port scheme) through real iptables in network namespaces:
``cloudstream iptables sync --tunnel-port-record`` with the annotation's JSON, as an API-server host
would run it; a connection to ANY address at a replica's port lands on that replica's 10003 (a
stand-in answering with SO_ORIGINAL_DST), a port no longer in the record goes, the node rules stay."""

from __future__ import annotations

import asyncio

import pytest

from cloudstream.iptables.backend import Result, choose, run_exec
from cloudstream.iptables.loop import IptablesLoop
from cloudstream.iptables.rules import RuleConfig
from cloudstream.iptables.settings import IptablesSettings
from cloudstream.kube.record import ANNOTATION
from cloudstream.kube.runner import KubeSide
from cloudstream.kube.settings import KubeSettings
from cloudstream.registry import SessionRegistry
from testkit.kube_api import KubeApi

from .test_iptables_manager import (  # noqa: F401  (backend, pair: fixtures)
    CHAIN, STANDIN_PORT, backend, chain_rules, cli, listeners, nat, pair, probe,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_record_entries_become_port_rules_and_leave_with_their_entry(pair, backend: str) -> None:  # noqa: F811
    record = '{"ipTunnelPort":{"127.0.0.1":10351,"10.99.0.2":10352},"port":{"10351":true,"10352":true}}'
    base = ("sync", "--node", f"edge-1={pair.node_ip}", "--stream-port", str(STANDIN_PORT))
    with listeners(pair):
        assert probe(pair, pair.node_ip, 10351) == "refused"  # no rule: nothing there
        cli(pair, backend, *base, "--tunnel-port-record", record)
        # the API server dials <node ip>:<the replica's port>: DNAT to that replica's stream port
        assert probe(pair, pair.node_ip, 10351) == f"cloud {pair.node_ip}:10351"
        assert probe(pair, pair.node_ip, 10250) == f"cloud {pair.node_ip}:10250"  # the node rule still works
        rules = chain_rules(pair, backend)
        assert any("--dport 10352" in r and "--to-destination 10.99.0.2:10003" in r for r in rules), rules
        first = nat(pair, backend)
        assert "nothing to change" in cli(pair, backend, *base, "--tunnel-port-record", record).stderr
        assert nat(pair, backend) == first  # as iptables-save prints it: byte-identical, no write
        # the replica at 127.0.0.1 released its entry (its port stays in "port"): its rule goes
        cli(pair, backend, *base, "--tunnel-port-record",
            '{"ipTunnelPort":{"10.99.0.2":10352},"port":{"10351":true,"10352":true}}')
        assert probe(pair, pair.node_ip, 10351) == "refused"
        assert [r for r in chain_rules(pair, backend) if "tunnel-port" in r] == [r for r in rules if "10352" in r]
        cli(pair, backend, "cleanup")


async def test_a_replica_claims_and_its_iptables_loop_follows_the_watched_record(  # type: ignore[no-untyped-def]
    pair, backend: str, tmp_path  # noqa: F811
) -> None:
    """The wiring of `cloudstream --kubeconfig --manage-iptables`, in process: the replica claims its
    port in an in-test Kubernetes API (real HTTPS) next to a Go cloudcore's entry, the watch feeds
    the record to the iptables loop, which writes real rules in the namespace; a connection to
    <node ip>:<our port> then reaches our stream port, and a Go cloudcore joining later gets its rule."""
    pytest.importorskip("kubernetes_asyncio", reason="the [kube] extra (kubernetes-asyncio) is not installed")

    def in_netns(argv: list[str], stdin: str | None = None) -> Result:
        return run_exec([*pair.exec_in(), *argv], stdin)  # real iptables, in the test's namespace

    api = await KubeApi().start(tmp_path)
    api.put_object("configmaps", {"metadata": {"name": "tunnelport", "namespace": "kubeedge", "annotations": {
        ANNOTATION: '{"ipTunnelPort":{"10.99.0.2":10351},"port":{"10351":true}}'}}})
    registry = SessionRegistry()
    tables, others, _ = choose(backend, run=in_netns, chain=CHAIN)
    loop = IptablesLoop(IptablesSettings(rules=RuleConfig(to_address="127.0.0.1"), debounce=0.05, max_delay=0.2),
                        registry, STANDIN_PORT, tables=(tables, others))
    side = KubeSide(KubeSettings(kubeconfig=api.kubeconfig, replica_ip="127.0.0.1", retry_base=0.01, retry_max=0.1),
                    registry, loop.set_port_routes)
    tasks = [asyncio.create_task(loop.run()), asyncio.create_task(side.run())]

    async def rules_hold(*needles: str) -> list[str]:
        for _ in range(200):  # 10 s
            rules = await asyncio.to_thread(chain_rules, pair, backend)
            if all(any(n in r for r in rules) for n in needles):
                return rules
            await asyncio.sleep(0.05)
        raise AssertionError(f"never held {needles}: {rules}")

    try:
        await asyncio.wait_for(side.claimed.wait(), 10)
        assert side.claim is not None and side.claim.port == 10352
        await rules_hold("--dport 10351 -m comment --comment \"kubeedge-stream tunnel-port 10.99.0.2\" -j DNAT "
                         "--to-destination 10.99.0.2:10003", "--dport 10352", "--to-destination 127.0.0.1:10003")
        with listeners(pair):
            assert await asyncio.to_thread(probe, pair, pair.node_ip, 10352) == f"cloud {pair.node_ip}:10352"
        cm = api.get("configmaps", "tunnelport", "kubeedge")
        assert cm is not None
        cm["metadata"]["annotations"][ANNOTATION] = (
            '{"ipTunnelPort":{"10.99.0.2":10351,"10.99.0.3":10353,"127.0.0.1":10352},"port":{"10351":true,"10352":true,'
            '"10353":true}}')
        api.put_object("configmaps", cm)  # a Go cloudcore joins
        await rules_hold("--to-destination 10.99.0.3:10003")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await api.close()
        cli(pair, backend, "cleanup")
    assert '"127.0.0.1"' not in api.get("configmaps", "tunnelport", "kubeedge")["metadata"]["annotations"][ANNOTATION]
