"""Reading ``iptables-save -t nat`` for the doctor: is there a DNAT rule that brings the API
server's connection for a node IP to cloudstream's kubelet API port, and is its chain reached
from OUTPUT/PREROUTING? Pure parsing, plus reading every installed backend's nat table through
the iptables manager's backends (each call bounded by doctor's timeout).

It recognises any such rule: ours (``cloudstream iptables``, chain KUBEEDGE-STREAM, one rule per
node IP), KubeEdge's iptables-manager (chain TUNNEL-PORT, one rule per cloudcore, matched by port
and *any* destination) and hand-written ones (KubeEdge's debug doc).
"""

from __future__ import annotations

import asyncio
import ipaddress
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ..iptables.backend import Iptables, IptablesError, Result, find_backends, run_exec

__all__ = ["DnatRule", "parse_nat", "read_nat", "rules_for"]

_ENTRY = ("OUTPUT", "PREROUTING")


@dataclass(frozen=True, slots=True)
class DnatRule:
    chain: str
    destination: str | None
    """``-d`` (a network), None: any."""
    dport: int | None
    to_address: str
    to_port: int | None
    text: str

    def matches(self, ip: str) -> bool:
        if self.destination is None:
            return True
        try:
            return ipaddress.ip_address(ip) in ipaddress.ip_network(self.destination, strict=False)
        except ValueError:
            return False


def parse_nat(text: str) -> tuple[list[DnatRule], dict[str, set[str]]]:
    """(every DNAT rule, chain -> the chains it jumps to)."""
    rules: list[DnatRule] = []
    jumps: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line.startswith("-A "):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        chain = words[1]
        opts: dict[str, str] = {}
        for i, w in enumerate(words[:-1]):
            if w.startswith("-") and not words[i + 1].startswith("-"):
                opts.setdefault(w, words[i + 1])
        target = opts.get("-j", "")
        if target != "DNAT":
            if target:
                jumps.setdefault(chain, set()).add(target)
            continue
        to = opts.get("--to-destination") or opts.get("--to", "")
        host, _, port = to.rpartition(":") if to.count(":") == 1 else (to, "", "")
        dport = opts.get("--dport")
        rules.append(DnatRule(chain, opts.get("-d"), int(dport) if dport and dport.isdigit() else None,
                              host, int(port) if port.isdigit() else None, line))
    return rules, jumps


def _reached(chain: str, jumps: dict[str, set[str]]) -> bool:
    """Is ``chain`` OUTPUT/PREROUTING, or jumped to from them (through any depth)?"""
    seen, todo = set(), list(_ENTRY)
    while todo:
        c = todo.pop()
        if c == chain:
            return True
        if c in seen:
            continue
        seen.add(c)
        todo += jumps.get(c, ())
    return False


def rules_for(ip: str, stream_port: int, rules: list[DnatRule], jumps: dict[str, set[str]]) -> tuple[list[DnatRule], list[DnatRule]]:
    """(rules for ``ip`` to ``stream_port`` that OUTPUT/PREROUTING reach, such rules that nothing reaches)."""
    mine = [r for r in rules if r.matches(ip) and r.to_port == stream_port]
    return [r for r in mine if _reached(r.chain, jumps)], [r for r in mine if not _reached(r.chain, jumps)]


async def read_nat(timeout: float) -> tuple[dict[str, str] | None, str]:
    """({backend: ``iptables-save -t nat`` output}, "") for every installed backend (the kernel
    applies the legacy and the nft tables both), or (None, why they could not be read). Read
    through the iptables manager's backends (``cloudstream.iptables.backend``)."""
    def run(argv: Sequence[str], stdin: str | None = None) -> Result:
        """The manager's runner, with doctor's timeout (the thread ends when the check does)."""
        return run_exec(argv, stdin, timeout)

    def read() -> dict[str, str]:
        out = {}
        for name, backend in find_backends(run=run).items():
            table = Iptables(backend, run)
            out[name] = table.save_text() if table.has_nat() else ""
        return out

    try:
        texts = await asyncio.to_thread(read)
    except IptablesError as exc:
        return None, str(exc)
    if not texts:
        return None, "iptables-save is not installed (apt-get install iptables)"
    return texts, ""
