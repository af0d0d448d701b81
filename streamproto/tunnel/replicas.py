"""Our HA mode's dial-time extension (the ``replicas`` feature), sans I/O.

Only after the edge offered ``replicas`` in ``X-Kubeedge-Stream-Features`` (a Go edge never
does, so a Go edge never sees any of this; a Go cloud never answers it, so our edge then keeps
one tunnel, as KubeEdge does).

- Dial (edge -> cloud): ``X-Kubeedge-Stream-Held-Replicas: a, b`` names the replicas the edge
  already holds a tunnel to. A replica that finds its own id there refuses the dial with
  ``409`` before the upgrade: no session, no stream, and the tunnel it already has to that node
  is not replaced. The list also tells every replica where else the node is reachable.
- ``101`` and ``409`` (cloud -> edge): ``X-Kubeedge-Stream-Replica: id=<replica id>; replicas=<n>``.

Both are bounded: at most ``MAX_REPLICAS`` ids, each a Kubernetes object name (pod names),
anything else is ignored, never an error (a newer peer may say more).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "HELD_HEADER",
    "MAX_REPLICAS",
    "REPLICA_HEADER",
    "ReplicaAnnouncement",
    "format_announcement",
    "format_held",
    "parse_announcement",
    "parse_held",
    "valid_replica_id",
]

REPLICA_HEADER = "X-Kubeedge-Stream-Replica"
HELD_HEADER = "X-Kubeedge-Stream-Held-Replicas"
MAX_REPLICAS = 16
"""Most tunnels one edge keeps, and most ids a held list carries: a cap on what a peer can make
us hold, far above the 2-3 replicas a cloudcore Deployment runs."""
_ID = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")


def valid_replica_id(text: str) -> bool:
    """A DNS-subdomain-like name (a pod name fits): 1..253 characters, no separators."""
    return _ID.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class ReplicaAnnouncement:
    replica_id: str
    replicas: int
    """How many replicas serve the tunnel address, as this replica knows it (1..MAX_REPLICAS)."""


def format_announcement(announcement: ReplicaAnnouncement) -> str:
    return f"id={announcement.replica_id}; replicas={announcement.replicas}"


def parse_announcement(value: str | None) -> ReplicaAnnouncement | None:
    """None when absent or unusable (no valid id): the edge then treats the cloud as one replica."""
    if not value or len(value) > 512:
        return None
    fields: dict[str, str] = {}
    for part in value.split(";")[:8]:
        key, sep, val = part.partition("=")
        if sep:
            fields[key.strip().lower()] = val.strip()
    replica_id = fields.get("id", "")
    if not valid_replica_id(replica_id):
        return None
    try:
        count = int(fields.get("replicas", "1"))
    except ValueError:
        count = 1
    return ReplicaAnnouncement(replica_id, min(max(count, 1), MAX_REPLICAS))


def format_held(ids: Iterable[str]) -> str:
    return ", ".join(sorted(ids)[:MAX_REPLICAS])


def parse_held(value: str | None) -> frozenset[str]:
    """The valid ids of a held list, at most ``MAX_REPLICAS`` of them."""
    if not value:
        return frozenset()
    ids: list[str] = []
    for token in value.split(",", MAX_REPLICAS)[:MAX_REPLICAS]:
        token = token.strip()
        if valid_replica_id(token):
            ids.append(token)
    return frozenset(ids)
