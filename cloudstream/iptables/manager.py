"""One sync or cleanup run: read, plan, write once per backend (blocking; the loop runs it in a thread)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from .backend import Iptables
from .rules import EdgeNode, Plan, PortRoute, RuleConfig, plan_cleanup, plan_sync

__all__ = ["Outcome", "cleanup", "sync"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    backend: str
    plan: Plan
    inherited: dict[str, str] = field(default_factory=dict)
    """ip -> node name of the rules the chain held before this run."""
    stale: dict[str, Plan] = field(default_factory=dict)
    """backend name -> the cleanup of our chain found there (another backend than ours)."""

    @property
    def changes(self) -> bool:
        return self.plan.changes or any(p.changes for p in self.stale.values())

    def summary(self) -> str:
        p = self.plan
        if not self.changes:
            return f"iptables ({self.backend}): nothing to change"
        parts = [f"iptables ({self.backend}): +{len(p.added)} -{len(p.removed)} node rules ({p.rules} in the chain)"]
        if p.jumps_added:
            parts.append(f"jump added from {','.join(p.jumps_added)}")
        if p.jumps_removed:
            parts.append(f"{p.jumps_removed} stray jumps removed")
        parts += [f"our chain removed from {name}" for name, s in self.stale.items() if s.changes]
        return "; ".join(parts)


def sync(
    config: RuleConfig, nodes: Iterable[EdgeNode], tables: Iptables, others: Iterable[Iptables] = (), dry_run: bool = False,
    ports: Iterable[PortRoute] = (),
) -> Outcome:
    """Make ``tables``' nat table hold exactly ``nodes``' (and ``ports``') rules; remove our chain from ``others``."""
    current = tables.read()
    outcome = Outcome(tables.name, plan_sync(config, nodes, current, ports), current.nodes(config))
    if outcome.plan.restore is not None and not dry_run:
        tables.restore(outcome.plan.restore)
    for other in others:
        stale = plan_cleanup(config, other.read(create=False))
        outcome.stale[other.name] = stale
        if stale.restore is not None and not dry_run:
            logger.warning("removing our chain %s from the %s backend: %s writes the rules", config.chain, other.name, tables.name)
            other.restore(stale.restore)
    return outcome


def cleanup(config: RuleConfig, backends: Iterable[Iptables], dry_run: bool = False) -> dict[str, Plan]:
    """Remove our chain and every jump to it, from every backend that has them."""
    plans = {}
    for tables in backends:
        plans[tables.name] = plan = plan_cleanup(config, tables.read(create=False))
        if plan.restore is not None and not dry_run:
            tables.restore(plan.restore)
    return plans
