"""KubeEdge's per-port rules (the tunnel-port scheme) through real iptables in network namespaces:
``cloudstream iptables sync --tunnel-port-record`` with the annotation's JSON, as an API-server host
would run it; a connection to ANY address at a replica's port lands on that replica's 10003 (a
stand-in answering with SO_ORIGINAL_DST), a port no longer in the record goes, the node rules stay."""

from __future__ import annotations

import pytest

from .test_iptables_manager import STANDIN_PORT, backend, chain_rules, cli, listeners, nat, pair, probe  # noqa: F401

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
