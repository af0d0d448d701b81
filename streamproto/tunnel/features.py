"""Extensions beyond KubeEdge, negotiated at dial time.

The edge lists what it supports in the ``X-Kubeedge-Stream-Features`` request header; the
cloud answers with the subset it accepts in the same header of its ``101``. A Go cloud
ignores the header and answers without it, a Go edge never sends it: either way the
agreed set is empty and both sides speak plain KubeEdge.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

__all__ = ["FEATURES_HEADER", "FLOW_WINDOW", "Feature", "format_features", "negotiate", "parse_features"]

FEATURES_HEADER = "X-Kubeedge-Stream-Features"


class Feature(enum.Enum):
    STATUS = "status"
    """Logs/metrics answers start with a STATUS message: real HTTP errors, not empty 200s."""
    PORTFORWARD = "portforward"
    """PORTFORWARD_CONNECT (type 7) streams."""
    FLOW = "flow"
    """Per-stream credit windows (WINDOW messages): a slow reader holds back its own stream only."""
    RENEW = "renew"
    """Edge certificate renewal over the tunnel (RENEW_REQUEST/RENEW_ANSWER, ``renewal.py``): the
    edge offers it when it may rewrite its certificate files, the cloud accepts it only when it
    holds the tunnel CA's key."""
    REPLICAS = "replicas"
    """Our HA mode: the cloud names its replica and the replica count at dial time, the edge
    names the replicas it already holds and keeps one tunnel per replica (``replicas.py``)."""


FLOW_WINDOW = 256 * 1024
"""Bytes a sender may have outstanding per stream and direction when a stream opens (``flow``):
both sides assume it, so it is part of the wire contract. The receiver grows a reading
stream's window beyond it to the measured bandwidth-delay product (``bdp.py``, ``Mux``), by
plain WINDOW grants, so no new feature token is needed and an older peer of ours simply
receives more credit. Interactivity comes from the sender's scheduler (``sched.py``), not from
keeping this small; on loopback the window stays here (growth there only queues)."""


def parse_features(value: str | None) -> frozenset[Feature]:
    """Parse a header value; unknown names are ignored (a newer peer)."""
    if not value:
        return frozenset()
    known = {f.value: f for f in Feature}
    return frozenset(known[name] for token in value.split(",") if (name := token.strip().lower()) in known)


def format_features(features: Iterable[Feature]) -> str:
    return ", ".join(sorted(f.value for f in features))


def negotiate(offered: frozenset[Feature], supported: frozenset[Feature]) -> frozenset[Feature]:
    return offered & supported
