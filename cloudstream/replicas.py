"""This replica's identity and what it knows about where else a node is reachable (HA mode).

Every cloudstream replica serves every node that holds a tunnel to it; an edge of ours keeps a
tunnel to each replica (``edgestream/replicas.py``). A replica learns which *other* replicas a
node holds from the node itself: each dial names the replicas the edge already holds
(``streamproto/tunnel/replicas.py``). When that node's tunnel here is gone, the last list is kept for
a while, so a request that lands here can be told where the node still is.

What is *not* known here: a Go edge (no extension) tells nothing, so a replica that does not
hold it cannot name the one that does; replicas do not talk to each other.

The replica count comes from ``--replicas`` (or a hook, ``count_source``: a Kubernetes
EndpointSlice watch can set it); it is what each dial's ``101`` tells the edge.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

from streamproto.tunnel.replicas import MAX_REPLICAS, ReplicaAnnouncement

__all__ = ["MAX_REMEMBERED", "ReplicaDirectory"]

MAX_REMEMBERED = 100_000
"""Nodes whose holders we remember (one small entry each); the least recently seen go first."""
REMEMBER_FOR = 3600.0
"""Seconds a node's last held list stays useful after its tunnel here ended."""


class ReplicaDirectory:
    def __init__(
        self, replica_id: str, replicas: int = 1, count_source: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replica_id = replica_id
        self._replicas = replicas
        self.count_source = count_source
        """Optional: returns the current replica count (e.g. ready endpoints of the Service)."""
        self._clock = clock
        self.lookup: Callable[[str], Awaitable[tuple[str, ...]]] | None = None
        """Optional: asks the peer replicas which hold a node now (``peers.PeerLookup.holders``)."""
        self._holders: OrderedDict[str, tuple[frozenset[str], float, bool]] = OrderedDict()
        """node -> (other replicas it holds, when we learnt it, whether its tunnel here is up)."""

    @property
    def replicas(self) -> int:
        count = self.count_source() if self.count_source is not None else self._replicas
        return min(max(int(count), 1), MAX_REPLICAS)

    def announcement(self) -> ReplicaAnnouncement:
        return ReplicaAnnouncement(self.replica_id, self.replicas)

    def tunnel_up(self, node: str, held: Iterable[str]) -> None:
        """A node's tunnel here is up; it said it also holds ``held``."""
        self._remember(node, frozenset(held) - {self.replica_id}, up=True)

    def tunnel_down(self, node: str) -> None:
        entry = self._holders.get(node)
        if entry is not None:
            self._remember(node, entry[0], up=False)

    def _remember(self, node: str, others: frozenset[str], up: bool) -> None:
        self._holders[node] = (others, self._clock(), up)
        self._holders.move_to_end(node)
        while len(self._holders) > MAX_REMEMBERED:
            self._holders.popitem(last=False)

    def elsewhere(self, node: str) -> tuple[frozenset[str], float] | None:
        """The other replicas ``node`` last said it holds, and how many seconds ago; None if unknown."""
        entry = self._holders.get(node)
        if entry is None:
            return None
        others, when, up = entry
        age = self._clock() - when
        if not up and age > REMEMBER_FOR:
            del self._holders[node]
            return None
        return others, age

    async def miss(self, nodes: Iterable[str]) -> str:
        """The sentence a "no tunnel to this node" error gains: this replica, and where the node
        is: the peers' answer now (``lookup``), else what the node said when it last dialled here."""
        nodes = list(nodes)[:4]
        text = f"This is cloudstream replica {self.replica_id} (of {self.replicas})"
        if self.lookup is not None:
            for node in nodes:
                holders = await self.lookup(node)
                if holders:
                    return (f"{text}; node {node} holds a tunnel to replica(s) {', '.join(holders)} (asked just now): "
                            f"a request through the Service reaches one of them on retry.")
        for node in nodes:
            known = self.elsewhere(node)
            if known is not None and known[0]:
                return (f"{text}; node {node}, when it dialled here {known[1]:.0f} s ago, also held tunnels to "
                        f"replica(s) {', '.join(sorted(known[0]))}: a request through the Service may reach them.")
        if self.lookup is not None:
            return f"{text}; no other replica holds a tunnel to this node either (asked just now)."
        if self.replicas > 1:
            return (f"{text}; which replica holds this node is not known here (a Go edgecore keeps one tunnel "
                    f"and tells nothing; --replica-peers lets replicas ask each other).")
        return text + "."
