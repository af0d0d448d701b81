"""KubeEdge's tunnel-port record (``tunnelportrecord.kubeedge.io``), checked against what cloudcore
writes and reads (``server.go`` NegotiateTunnelPort/negotiatePort, ``iptables.go`` TunnelPortRecord)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudstream.iptables.rules import NatTable, PortRoute, RuleConfig, parse_save, plan_sync
from cloudstream.kube.record import ANNOTATION, FIRST_PORT, RELEASED, TunnelPortRecord, claim_in, release_in
from streamproto.tunnel.errors import ConfigError

# The record as the website's HA docs show `kubectl get cm tunnelport -nkubeedge -oyaml` (Go's json.Marshal).
DOCS = '{"ipTunnelPort":{"192.168.202.202":10351,"192.168.202.203":10352},"port":{"10351":true,"10352":true}}'


def test_parse_and_dump_round_trip_the_go_bytes() -> None:
    record = TunnelPortRecord.parse(DOCS)
    assert record.ip_ports == {"192.168.202.202": 10351, "192.168.202.203": 10352}
    assert record.ports == {10351, 10352}
    assert record.dump() == DOCS


def test_first_port_is_10351_as_negotiate_port_starts_above_server_port() -> None:
    record, port = TunnelPortRecord().claim("10.0.0.1")
    assert port == FIRST_PORT == 10351
    assert record.dump() == '{"ipTunnelPort":{"10.0.0.1":10351},"port":{"10351":true}}'


def test_an_ip_in_the_record_keeps_its_port() -> None:
    record = TunnelPortRecord.parse(DOCS)
    again, port = record.claim("192.168.202.203")
    assert port == 10352 and again == record


def test_released_ports_are_never_reused_as_kubeedge_keeps_them() -> None:
    record = TunnelPortRecord.parse(DOCS)
    released = record.release("192.168.202.202", 10351)
    assert released is not None and "192.168.202.202" not in released.ip_ports and 10351 in released.ports
    _, port = released.claim("192.168.202.204")
    assert port == 10353


def test_release_of_an_entry_someone_re_pointed_changes_nothing() -> None:
    record = TunnelPortRecord.parse(DOCS)
    assert record.release("192.168.202.202", 10352) is None
    assert record.release("10.9.9.9", 10351) is None


def test_empty_or_missing_annotation_is_an_empty_record() -> None:
    assert TunnelPortRecord.parse(None) == TunnelPortRecord.parse("") == TunnelPortRecord()
    assert TunnelPortRecord.parse("{}") == TunnelPortRecord()


@pytest.mark.parametrize("bad", ["not json", "[]", '{"port":{"abc":true}}', '{"ipTunnelPort":{"1.2.3.4":"x"}}',
                                 '{"ipTunnelPort":{"1.2.3.4":70000}}'])
def test_garbage_is_refused_with_the_annotation_named(bad: str) -> None:
    with pytest.raises(ConfigError, match="tunnelportrecord.kubeedge.io"):
        TunnelPortRecord.parse(bad)


@given(st.lists(st.tuples(st.ip_addresses(v=4).map(str), st.booleans()), max_size=30))
def test_claims_give_distinct_ports_and_go_json_keys(steps: list[tuple[str, bool]]) -> None:
    record = TunnelPortRecord()
    for ip, release in steps:
        record, port = record.claim(ip)
        if release:
            record = record.release(ip, port) or record
        # every IP holds a distinct port, every held port is recorded, the JSON reads back the same
        assert len(set(record.ip_ports.values())) == len(record.ip_ports)
        assert set(record.ip_ports.values()) <= record.ports
        raw = json.loads(record.dump())
        assert all(k.isdigit() for k in raw["port"]) and TunnelPortRecord.parse(record.dump()) == record


def test_routes_skip_non_ipv4_entries() -> None:
    record = TunnelPortRecord.parse('{"ipTunnelPort":{"10.0.0.2":10352,"fd00::1":10353,"10.0.0.1":10351},"port":{}}')
    assert record.routes() == [(10351, "10.0.0.1"), (10352, "10.0.0.2")]


def test_port_rules_are_kubeedges_tunnel_port_rules_in_our_chain_after_the_node_rules() -> None:
    config = RuleConfig(to_address="10.0.0.1", to_port=10003)
    plan = plan_sync(config, [], NatTable(), [PortRoute(10352, "10.0.0.2"), PortRoute(10351, "10.0.0.1")])
    assert plan.restore is not None
    lines = plan.restore.splitlines()
    assert ('-A KUBEEDGE-STREAM -p tcp -m tcp --dport 10351 -m comment --comment "kubeedge-stream tunnel-port 10.0.0.1" '
            '-j DNAT --to-destination 10.0.0.1:10003') in lines
    assert lines.index(next(x for x in lines if "10351" in x)) < lines.index(next(x for x in lines if "10352" in x))
    # read back as iptables-save prints it: nothing more to do, and no node rule is inferred from a port rule
    saved = "*nat\n:KUBEEDGE-STREAM - [0:0]\n" + "\n".join(x for x in lines if x.startswith("-A")) + "\nCOMMIT\n"
    current = parse_save(saved)
    assert plan_sync(config, [], current, [PortRoute(10351, "10.0.0.1"), PortRoute(10352, "10.0.0.2")]).restore is None
    assert current.nodes(config) == {}
    # an entry that goes is removed on the next sync
    shrunk = plan_sync(config, [], current, [PortRoute(10351, "10.0.0.1")])
    assert shrunk.restore is not None and "10352" not in shrunk.restore


def test_port_route_refuses_non_ipv4() -> None:
    with pytest.raises(ConfigError):
        PortRoute(10351, "fd00::1")


def test_a_released_port_comes_back_to_its_ip_only_and_other_annotations_stay() -> None:
    annotations = {ANNOTATION: DOCS, "someone.else/key": "v"}
    released = release_in(annotations, "192.168.202.202", 10351)
    assert released is not None and released["someone.else/key"] == "v"
    assert released[RELEASED] == '{"192.168.202.202":10351}'
    assert claim_in(released, "10.0.0.9")[1] == 10353  # never to another IP
    back, port = claim_in(released, "192.168.202.202")
    assert port == 10351 and back is not None and RELEASED not in back
    assert TunnelPortRecord.parse(back[ANNOTATION]) == TunnelPortRecord.parse(DOCS)
    assert claim_in(back, "192.168.202.202") == (None, 10351)  # nothing to write


def test_a_released_port_someone_else_holds_is_not_taken_back() -> None:
    taken = {ANNOTATION: '{"ipTunnelPort":{"10.0.0.2":10351},"port":{"10351":true}}', RELEASED: '{"10.0.0.1":10351}'}
    new, port = claim_in(taken, "10.0.0.1")
    assert port == 10352 and new is not None and RELEASED not in new


def test_an_unreadable_released_annotation_is_no_memory() -> None:
    assert claim_in({RELEASED: "garbage"}, "10.0.0.1")[1] == 10351
