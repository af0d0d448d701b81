"""Which edge session serves which node: keyed by node name and by internal IP.

One session per node: a new dial for the same node replaces the old session (the old one is
closed and its streams end with an error). Nothing here assumes one replica: a future HA
layer asks ``get`` on each replica, or routes by the node's tunnel port.
"""

from __future__ import annotations

import itertools
import logging

from .edge_session import EdgeSession

__all__ = ["SessionRegistry"]

logger = logging.getLogger(__name__)


class SessionRegistry:
    def __init__(self) -> None:
        self._by_node: dict[str, EdgeSession] = {}
        self._by_ip: dict[str, EdgeSession] = {}
        # One process-wide counter, from 1 (as KubeEdge): an ID is never reused while we live.
        self.next_id = itertools.count(1).__next__

    def __len__(self) -> int:
        return len(self._by_node)

    def sessions(self) -> list[EdgeSession]:
        return list(self._by_node.values())

    def register(self, session: EdgeSession) -> EdgeSession | None:
        """Make ``session`` current for its node; return the session it replaces."""
        old = self._by_node.get(session.node)
        if old is not None and self._by_ip.get(old.internal_ip) is old:
            del self._by_ip[old.internal_ip]
        self._by_node[session.node] = session
        if session.internal_ip:
            self._by_ip[session.internal_ip] = session
        return old

    def unregister(self, session: EdgeSession) -> None:
        """Forget ``session`` unless a newer one already replaced it."""
        if self._by_node.get(session.node) is session:
            del self._by_node[session.node]
        if self._by_ip.get(session.internal_ip) is session:
            del self._by_ip[session.internal_ip]

    def get(self, node: str) -> EdgeSession | None:
        return self._by_node.get(node)

    def get_by_ip(self, ip: str) -> EdgeSession | None:
        return self._by_ip.get(ip)
