"""``cloudstream iptables sync|cleanup|show``: the one-shot form of the manager.

``sync`` makes the nat table hold one DNAT rule per ``--node NAME=IP`` (and nothing else in our
chain); ``cleanup`` removes our chain and its jumps from every backend; ``show`` prints what is
there. ``--dry-run`` prints the iptables-restore input instead of applying it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TextIO

from streamops.cli import ENV_EPILOG, Parser
from streamproto.tunnel.errors import ConfigError

from . import manager
from .backend import Iptables, IptablesError, choose
from .rules import EdgeNode, NatTable, Plan, PortRoute, RuleConfig, plan_sync, unique_nodes
from .settings import add_rule_arguments, rule_config

__all__ = ["main"]

logger = logging.getLogger("cloudstream.iptables")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="cloudstream iptables", epilog=ENV_EPILOG,
        description="nat rules that send the API server's nodeIP:10250 connections to cloudstream's kubelet API",
    )
    p.add_argument("action", choices=["sync", "cleanup", "show"], help="sync: make the rules match --node; "
                   "cleanup: remove our chain and its jumps; show: print the rules there are")
    p.add_argument("--node", action="append", default=[], metavar="NAME=IP",
                   help="an edge node and its internal IP (repeat; sync only; default: none, an empty chain)")
    p.add_argument("--node-file", metavar="PATH",
                   help="more nodes, one NAME=IP per line (# comments; NAME=IP1 IP2: the first, as the API server "
                        "takes a node's first InternalIP), e.g. from kubectl (README); default: none")
    p.add_argument("--tunnel-port", action="append", default=[], metavar="PORT=IP",
                   help="KubeEdge's tunnel-port scheme: DNAT any TCP to PORT to IP:stream-port, one cloudcore or "
                        "cloudstream replica's entry of kubeedge/tunnelport (repeat; sync only; default: none)")
    p.add_argument("--tunnel-port-record", metavar="JSON",
                   help="every entry of the tunnelportrecord.kubeedge.io annotation's value, e.g. from kubectl "
                        "(README; default: none)")
    p.add_argument("--dry-run", action="store_true", help="print the iptables-restore input, change nothing (default: off)")
    p.add_argument("--stream-address", help="cloudstream's --stream-address, the default DNAT target (default 127.0.0.1)")
    p.add_argument("--stream-port", type=int, help="cloudstream's kubelet API port, the DNAT target port (default 10003)")
    add_rule_arguments(p)
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    return p


def main(argv: list[str], out: TextIO = sys.stdout) -> int:
    ns = build_parser().parse_args(argv)
    logging.basicConfig(level=ns.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = rule_config(
            to_address=ns.iptables_to_address, stream_address=ns.stream_address, stream_port=ns.stream_port,
            kubelet_port=ns.kubelet_port, chain=ns.iptables_chain, prerouting=ns.iptables_prerouting,
        )
        lines = list(ns.node)
        if ns.node_file:
            try:
                text = Path(ns.node_file).read_text()
            except OSError as exc:
                raise ConfigError(f"--node-file: {exc}") from None
            lines += [_first_ip(ln) for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        nodes = unique_nodes(EdgeNode.parse(n) for n in lines)
        ports = _port_routes(ns.tunnel_port, ns.tunnel_port_record)
        if (lines or ports) and ns.action != "sync":
            raise ConfigError(f"--node is for sync; {ns.action} looks only at our chain")
    except ConfigError as exc:
        print(f"cloudstream iptables: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(ns.action, config, nodes, ns.iptables_backend, ns.dry_run, out, ports)
    except ConfigError as exc:
        print(f"cloudstream iptables: {exc}", file=sys.stderr)
        return 2
    except IptablesError as exc:
        print(f"cloudstream iptables: {exc}", file=sys.stderr)
        return 1


def _first_ip(line: str) -> str:
    """``edge-1=10.0.0.7 10.0.0.8`` (kubectl's jsonpath prints every InternalIP) -> ``edge-1=10.0.0.7``."""
    name, sep, ips = line.strip().partition("=")
    return f"{name}{sep}{(ips.split() or [''])[0]}"


def _port_routes(pairs: list[str], record: str | None) -> list[PortRoute]:
    from ..kube.record import TunnelPortRecord  # sans-I/O: no Kubernetes client needed

    routes = []
    for text in pairs:
        port, sep, ip = text.partition("=")
        if not sep or not port.strip().isdigit():
            raise ConfigError(f"--tunnel-port {text!r}: expected PORT=IP, e.g. 10351=10.0.0.5")
        routes.append(PortRoute(int(port), ip.strip()))
    if record is not None:
        routes += [PortRoute(port, ip) for port, ip in TunnelPortRecord.parse(record).routes()]
    return routes


def _run(
    action: str, config: RuleConfig, nodes: list[EdgeNode], backend: str, dry_run: bool, out: TextIO,
    ports: list[PortRoute] | None = None,
) -> int:
    try:
        return _apply(action, config, nodes, backend, dry_run, out, ports or [])
    except IptablesError as exc:
        if not (dry_run and action == "sync"):
            raise
        # The rules are still worth printing where iptables cannot be read (no binary, no capability).
        print(f"# could not read the nat table ({exc})\n# the input below assumes it holds none of our rules", file=out)
        _print_plan(plan_sync(config, nodes, NatTable(), ports or []), out)
        return 0


def _apply(
    action: str, config: RuleConfig, nodes: list[EdgeNode], backend: str, dry_run: bool, out: TextIO,
    ports: list[PortRoute],
) -> int:
    tables, others, why = choose(backend, chain=config.chain)
    logger.info("iptables backend %s (%s)", tables.name, why)
    if action == "show":
        _show(config, tables, others, out)
        return 0
    if action == "cleanup":
        plans = manager.cleanup(config, [tables, *others], dry_run=dry_run)
        for name, plan in plans.items():
            if dry_run:
                print(f"# {name}", file=out)
                _print_plan(plan, out)
            elif plan.changes:
                logger.info("iptables (%s): removed chain %s (%d node rules, %d jumps)", name, config.chain,
                            len(plan.removed), plan.jumps_removed)
        if not any(p.changes for p in plans.values()):
            logger.info("iptables: no chain %s and no jump to it anywhere; nothing to remove", config.chain)
        return 0
    outcome = manager.sync(config, nodes, tables, others, dry_run=dry_run, ports=ports)
    if dry_run:
        print(f"# {tables.name}", file=out)
        _print_plan(outcome.plan, out)
        for name, plan in outcome.stale.items():
            if plan.changes:
                print(f"# {name} (our chain is stale there)", file=out)
                _print_plan(plan, out)
    else:
        logger.info("%s", outcome.summary())
    return 0


def _print_plan(plan: Plan, out: TextIO) -> None:
    out.write(plan.restore if plan.restore is not None else "# nothing to change\n")


def _show(config: RuleConfig, tables: Iptables, others: list[Iptables], out: TextIO) -> None:
    for t in [tables, *others]:
        nat = t.read(create=t is tables)
        role = "writes our rules" if t is tables else "other backend"
        present = config.chain in nat.chains
        print(f"# {t.name} ({role}): chain {config.chain} {'present' if present else 'absent'}, "
              f"{len(nat.chain_rules(config.chain))} node rules, {len(nat.jumps_to(config.chain))} jumps", file=out)
        for rule in nat.jumps_to(config.chain) + nat.chain_rules(config.chain):
            print(rule, file=out)
