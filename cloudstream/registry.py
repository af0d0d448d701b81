"""Which edge session serves which node: keyed by node name and by internal IP.

One session per node: a new dial for the same node replaces the old session (the old one is
closed and its streams end with an error). Nothing here assumes one replica: a future HA
layer asks ``get`` on each replica, or routes by the node's tunnel port.

An IP is bound to one node (KubeEdge binds nothing: the last dial announcing an IP gets the
API server's requests for it, so any certified edge could take over another node's exec).
Rules, in order:

* a certificate with IP SANs proves its IPs: the tunnel server refuses any other announced IP
  before a session exists; such a *verified* claim takes the IP from an unverified holder;
* otherwise the first live claim wins: another node announcing an IP a live session of a
  different node holds is refused (:class:`IPClaimConflict`, a 403 naming both nodes);
* an IP the edge did not announce (the dial's peer address, as KubeEdge falls back to) is
  indexed only while nobody else holds it, and never refuses a dial (NAT puts many nodes
  behind one address);
* a session only ever removes its own entries.

A node whose tunnel was closed for misbehaviour is refused (429) for one budget window.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import time
from collections.abc import Callable

from streamproto.tunnel.errors import AuthError

from .edge_session import EdgeSession, IPClaim
from .stats import CloudStats
from .replicas import ReplicaDirectory

__all__ = ["IPClaim", "IPClaimConflict", "SessionRegistry", "canonical_ip"]

logger = logging.getLogger(__name__)


def canonical_ip(text: str) -> str:
    """One spelling per address (``::FFFF:1.2.3.4`` and ``1.2.3.4`` stay distinct, as the kernel
    keeps them); anything that is not an IP is kept as given, stripped."""
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


class IPClaimConflict(AuthError):
    """Another live node holds the IP this dial announces."""

    def __init__(self, node: str, ip: str, holder: str) -> None:
        super().__init__(
            f"node {node!r} announces internal IP {ip}, which node {holder!r} already holds with a live tunnel: "
            f"fix node {node!r}'s IP (edgecore modules.edged.nodeIP, edgestream --node-ip), or issue each node a "
            f"certificate carrying its IPs (streamcerts client --cn {node} --ip IP) so cloudstream can tell who owns {ip}",
            status=403,
        )
        self.node, self.ip, self.holder = node, ip, holder


class SessionRegistry:
    def __init__(self) -> None:
        self._by_node: dict[str, EdgeSession] = {}
        self._by_ip: dict[str, EdgeSession] = {}
        self._quarantine: dict[str, float] = {}
        """node -> monotonic time until which its dials are refused (it spent its misbehaviour budget)."""
        # One process-wide counter, from 1 (as KubeEdge): an ID is never reused while we live.
        self.next_id = itertools.count(1).__next__
        self._watchers: list[Callable[[], None]] = []
        self.stats = CloudStats()
        """The process's totals for /metrics (the registry is what every part already holds)."""
        self.replicas: ReplicaDirectory | None = None
        """HA mode: this replica's name and where else nodes are (set by the tunnel server)."""

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after every change of the IP bindings; returns the unwatch function."""
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback)

    def _changed(self) -> None:
        for callback in self._watchers:
            callback()

    def bound_ips(self, verified_only: bool = False) -> dict[str, str]:
        """ip -> node for the IPs a live session announced (a dial's peer address is not a node IP);
        with ``verified_only``, only those its certificate proves (IP SAN)."""
        return {
            ip: s.node for ip, s in self._by_ip.items()
            if s.ip_claim.announced and s.closed_reason is None and (s.ip_claim.verified or not verified_only)
        }

    def __len__(self) -> int:
        return len(self._by_node)

    def sessions(self) -> list[EdgeSession]:
        return list(self._by_node.values())

    def check_claim(self, node: str, claim: IPClaim) -> None:
        """Raise :class:`IPClaimConflict` when ``node`` may not have ``claim.ip`` now.

        Called before the upgrade (so the edge gets a 403 it can read) and again by
        ``register`` (a dial may have won the race in between).
        """
        holder = self._by_ip.get(claim.ip)
        if (
            claim.announced
            and holder is not None
            and holder.node != node
            and holder.closed_reason is None  # a dead holder's entry goes with its unregister; do not wait
            and not (claim.verified and not holder.ip_claim.verified)
        ):
            raise IPClaimConflict(node, claim.ip, holder.node)

    def register(self, session: EdgeSession) -> EdgeSession | None:
        """Make ``session`` current for its node; return the session it replaces.

        Raises :class:`IPClaimConflict` (and changes nothing) when another live node holds the IP.
        """
        claim = session.ip_claim
        if claim.ip:
            self.check_claim(session.node, claim)
        old = self._by_node.get(session.node)
        if old is not None:
            self._drop_ip(old)
        self._by_node[session.node] = session
        if claim.ip:
            holder = self._by_ip.get(claim.ip)
            if holder is None or holder.node == session.node or holder.closed_reason is not None:
                self._by_ip[claim.ip] = session
            elif claim.announced:  # check_claim let it through: a verified claim over an unverified holder
                logger.warning(
                    "= node %s proves internal IP %s with its certificate; node %s, which announced it without "
                    "proof, no longer receives requests for it", session.node, claim.ip, holder.node,
                )
                self._by_ip[claim.ip] = session
            # else: an unannounced peer address someone else holds: reachable by name only
        self._changed()
        return old

    def unregister(self, session: EdgeSession) -> None:
        """Forget ``session`` unless a newer one already replaced it; only its own entries."""
        if self._by_node.get(session.node) is session:
            del self._by_node[session.node]
        self._drop_ip(session)
        self._changed()

    def _drop_ip(self, session: EdgeSession) -> None:
        ip = session.ip_claim.ip
        if ip and self._by_ip.get(ip) is session:
            del self._by_ip[ip]

    def quarantine(self, node: str, seconds: float, now: float | None = None) -> None:
        """Refuse ``node``'s dials for ``seconds``: its tunnel was closed over its budget, and a
        redial loop would otherwise cost a handshake and a tunnel per round."""
        now = time.monotonic() if now is None else now
        for name in [n for n, until in self._quarantine.items() if until <= now]:
            del self._quarantine[name]  # bounded by the nodes misbehaving within one window
        self._quarantine[node] = now + seconds

    def quarantined(self, node: str, now: float | None = None) -> float:
        """Seconds ``node`` is still refused for (0: it may dial)."""
        until = self._quarantine.get(node)
        if until is None:
            return 0.0
        left = until - (time.monotonic() if now is None else now)
        if left <= 0:
            del self._quarantine[node]
            return 0.0
        return left

    def get(self, node: str) -> EdgeSession | None:
        return self._by_node.get(node)

    def get_by_ip(self, ip: str) -> EdgeSession | None:
        session = self._by_ip.get(ip)
        if session is None:
            session = self._by_ip.get(canonical_ip(ip))
        return session
