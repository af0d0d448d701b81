"""The iptables manager's sans-I/O core: rule text, the diff, the restore input.

Whether the rendered rules are exactly what iptables-save prints (so that a second run is a
no-op) is proven against real iptables in tests/integration/test_iptables_manager.py; here:
the plans' logic and the hostile inputs (node names and IPs come from edges)."""

from __future__ import annotations

import argparse

import pytest

from cloudstream.config import CloudConfig, add_arguments
from cloudstream.iptables.rules import (
    CHAIN, EdgeNode, NatTable, RuleConfig, comment_name, parse_save, plan_cleanup, plan_sync, save_quote, unique_nodes,
)
from cloudstream.iptables.settings import rule_config
from streamproto.tunnel.errors import ConfigError

CONFIG = RuleConfig(to_address="10.0.0.1")
JUMP = f"-A OUTPUT -m comment --comment kubeedge-stream -j {CHAIN}"


def table_after(plan_input: str, before: NatTable | None = None) -> NatTable:
    """What the kernel would hold after ``plan_input`` (a model of --noflush semantics for the
    lines our plans emit: chain declaration flushes/creates, -A appends, -D deletes the first
    equal rule, -X removes an empty chain)."""
    table = NatTable(set((before or NatTable()).chains), list((before or NatTable()).rules))
    for line in plan_input.splitlines():
        if line.startswith(":"):
            chain = line[1:].split()[0]
            table.chains.add(chain)
            table.rules = [r for r in table.rules if not r.startswith(f"-A {chain} ")]
        elif line.startswith("-A "):
            table.rules.append(line)
        elif line.startswith("-D "):
            table.rules.remove("-A " + line[3:])
        elif line.startswith("-X "):
            table.chains.discard(line[3:])
    return table


def test_rule_text_is_what_iptables_save_prints() -> None:
    rule = CONFIG.node_rule(EdgeNode("edge-1", "192.168.1.20"))
    assert rule == (
        f'-A {CHAIN} -d 192.168.1.20/32 -p tcp -m tcp --dport 10250 -m comment --comment "kubeedge-stream node edge-1" '
        "-j DNAT --to-destination 10.0.0.1:10003"
    )
    assert CONFIG.jump_rule("OUTPUT") == JUMP


def test_save_quote_follows_xtables() -> None:
    assert save_quote("kubeedge-stream") == "kubeedge-stream"
    assert save_quote("a b") == '"a b"'
    assert save_quote("edge.1") == '"edge.1"'
    assert save_quote('say "x"\\') == '"say \\"x\\"\\\\"'
    assert save_quote("") == '""'


@pytest.mark.parametrize("name", ['x"\n-A OUTPUT -j ACCEPT', "a\nCOMMIT", "é" * 300, "", "a b\tc\r"])
def test_a_hostile_node_name_cannot_leave_its_comment(name: str) -> None:
    text = plan_sync(CONFIG, [EdgeNode(name, "10.1.1.1")], NatTable()).restore
    assert text is not None
    lines = text.splitlines()
    assert lines == ["*nat", f":{CHAIN} - [0:0]", lines[2], JUMP, "COMMIT"]
    assert lines[2].count('"') == 2 and len(comment_name(name)) <= 200


@pytest.mark.parametrize("ip", ["::1", "0.0.0.0", "224.0.0.1", "10.1.1", "10.1.1.1/24", "edge-1"])
def test_node_ips_that_cannot_be_a_rule_are_refused(ip: str) -> None:
    with pytest.raises(ConfigError):
        EdgeNode("n", ip)


def test_node_parse_and_canonical_ip() -> None:
    assert EdgeNode.parse(" edge-1 = 10.1.1.1 ") == EdgeNode("edge-1", "10.1.1.1")
    for bad in ("edge-1", "=10.1.1.1", "edge-1:10.1.1.1"):
        with pytest.raises(ConfigError):
            EdgeNode.parse(bad)


def test_two_names_for_one_ip_is_an_error_and_order_is_numeric() -> None:
    with pytest.raises(ConfigError, match="both claim internal IP 10.1.1.1"):
        unique_nodes([EdgeNode("a", "10.1.1.1"), EdgeNode("b", "10.1.1.1")])
    nodes = unique_nodes([EdgeNode("b", "10.1.1.10"), EdgeNode("a", "10.1.1.9"), EdgeNode("a", "10.1.1.9")])
    assert [n.ip for n in nodes] == ["10.1.1.9", "10.1.1.10"]


def test_sync_from_empty_then_no_change() -> None:
    nodes = [EdgeNode("edge-1", "10.1.1.1"), EdgeNode("edge-2", "10.1.1.2")]
    plan = plan_sync(CONFIG, nodes, NatTable())
    assert plan.added == ("10.1.1.1", "10.1.1.2") and plan.jumps_added == ("OUTPUT",)
    assert plan.restore is not None and plan.restore.endswith("COMMIT\n")
    after = table_after(plan.restore)
    assert plan_sync(CONFIG, list(reversed(nodes)), after).restore is None


def test_sync_rewrites_only_our_chain_and_fixes_jumps() -> None:
    foreign = ["-A PREROUTING -j OTHER", "-A OUTPUT -d 10.99.0.1/32 -j DNAT --to-destination 127.0.0.1:1",
               "-A OTHER -p udp -j RETURN", f"-A {CHAIN}X -j RETURN"]
    mess = NatTable({CHAIN, "OTHER", f"{CHAIN}X"}, foreign + [
        JUMP, JUMP, f"-A PREROUTING -m comment --comment kubeedge-stream -j {CHAIN}", f"-A OUTPUT -j {CHAIN}",
        f"-A {CHAIN} -d 10.7.7.7/32 -p tcp -m tcp --dport 10250 -m comment --comment \"kubeedge-stream node old\" "
        "-j DNAT --to-destination 10.0.0.1:10003",
    ])
    plan = plan_sync(CONFIG, [EdgeNode("edge-1", "10.1.1.1")], mess)
    assert plan.removed == ("10.7.7.7",) and plan.added == ("10.1.1.1",) and plan.jumps_removed == 3
    assert plan.restore is not None
    assert not any(line.startswith(("-D OTHER", "-A OTHER", ":OUTPUT", ":PREROUTING")) for line in plan.restore.splitlines())
    after = table_after(plan.restore, mess)
    assert [r for r in after.rules if CHAIN not in r or r.startswith(f"-A {CHAIN}X")] == foreign
    assert after.jumps_to(CHAIN) == [JUMP]
    assert after.chain_rules(CHAIN) == [CONFIG.node_rule(EdgeNode("edge-1", "10.1.1.1"))]
    assert plan_sync(CONFIG, [EdgeNode("edge-1", "10.1.1.1")], after).restore is None


def test_prerouting_adds_a_second_jump_and_dropping_it_removes_it() -> None:
    pre = RuleConfig(to_address="10.0.0.1", prerouting=True)
    plan = plan_sync(pre, [], NatTable())
    assert plan.jumps_added == ("PREROUTING", "OUTPUT")
    assert plan.restore is not None
    after = table_after(plan.restore)
    back = plan_sync(CONFIG, [], after)
    assert back.jumps_removed == 1 and back.restore is not None
    assert table_after(back.restore, after).jumps_to(CHAIN) == [JUMP]


def test_cleanup_removes_jumps_before_the_chain_and_is_a_no_op_after() -> None:
    assert plan_cleanup(CONFIG, NatTable({"OTHER"}, ["-A OUTPUT -j OTHER"])).restore is None
    installed = table_after(plan_sync(CONFIG, [EdgeNode("e", "10.1.1.1")], NatTable()).restore or "")
    plan = plan_cleanup(CONFIG, installed)
    assert plan.restore is not None
    lines = plan.restore.splitlines()
    assert lines.index("-D " + JUMP[3:]) < lines.index(f"-X {CHAIN}")
    after = table_after(plan.restore, installed)
    assert CHAIN not in after.chains and not after.rules
    assert plan_cleanup(CONFIG, after).restore is None


def test_parse_save_reads_only_nat_and_node_names_back() -> None:
    text = (
        "# Generated by iptables-save\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\nCOMMIT\n*nat\n"
        f":PREROUTING ACCEPT [3:180]\n:{CHAIN} - [0:0]\n{JUMP}\n"
        + CONFIG.node_rule(EdgeNode("edge-1", "10.1.1.1")) + "\n"
        + CONFIG.node_rule(EdgeNode("edge.2", "10.1.1.2")) + "\nCOMMIT\n"
    )
    table = parse_save(text)
    assert table.chains == {"PREROUTING", CHAIN}
    assert "-A INPUT -j DROP" not in table.rules
    assert table.nodes(CONFIG) == {"10.1.1.1": "edge-1", "10.1.1.2": "edge.2"}


def test_rule_config_checks() -> None:
    for bad in ({"to_address": "0.0.0.0"}, {"to_address": "::1"}, {"to_address": "1.2.3.4", "to_port": 0},
                {"to_address": "1.2.3.4", "chain": "OUTPUT"}, {"to_address": "1.2.3.4", "chain": "bad chain"}):
        with pytest.raises(ConfigError):
            RuleConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="route_localnet"):
        rule_config(to_address=None, stream_address="0.0.0.0", stream_port=None, kubelet_port=None, chain=None,
                    prerouting=True)
    cfg = rule_config(to_address=None, stream_address="10.2.3.4", stream_port=10350, kubelet_port=10251, chain=None,
                      prerouting=True)
    assert (cfg.to_address, cfg.to_port, cfg.kubelet_port) == ("10.2.3.4", 10350, 10251)


def test_server_flags_off_by_default_and_on() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert CloudConfig.from_args(parser.parse_args([])).iptables is None
    on = CloudConfig.from_args(parser.parse_args(["--manage-iptables", "--stream-port", "10350",
                                                  "--iptables-backend", "legacy"]))
    assert on.iptables is not None
    assert (on.iptables.rules.to_address, on.iptables.rules.to_port, on.iptables.backend) == ("127.0.0.1", 10350, "legacy")
