"""Edges probing for a new replica behind a round-robin balancer all find it soon.

A round-robin balancer gives the k-th connection to server ``k mod n``, so an edge finds the new
replica only when its probe is the new replica's turn. If the edges' probe order persists from
round to round (too little jitter), one edge can keep landing on replicas it holds for dozens of
intervals: ``tests/ha/test_scale_up.py`` waited over 40 s with a 1 s interval. This drives the
edge's own probe schedule (``_probe_after``) against a model of that balancer.
"""

from __future__ import annotations

import heapq
import random

from edgestream.config import EdgeConfig
from edgestream.replicas import _probe_after

REPLICAS = 3  # the new one is the last
EDGES = 3
TRIALS = 2000
WITHIN = 30  # probe intervals


def _intervals_until_all_found(config: EdgeConfig, rng_state: int) -> float:
    random.seed(rng_state)
    turn = random.randrange(REPLICAS)
    first = [_probe_after(config) for _ in range(EDGES)]
    due = [(t, edge) for edge, t in enumerate(first) if t is not None]
    heapq.heapify(due)
    missing = set(range(EDGES))
    now = 0.0
    while missing and now <= WITHIN:
        now, edge = heapq.heappop(due)
        if turn % REPLICAS == REPLICAS - 1:
            missing.discard(edge)
        turn += 1  # every probe takes a turn, also one of an edge that holds all three (a 409)
        after = _probe_after(config)
        assert after is not None
        heapq.heappush(due, (now + after, edge))
    return now if not missing else float("inf")


def test_every_edge_finds_a_new_replica_within_thirty_intervals() -> None:
    config = EdgeConfig(node_name="edge-1", replica_probe_interval=1.0)
    state = random.getstate()
    try:
        waits = sorted(_intervals_until_all_found(config, seed) for seed in range(TRIALS))
    finally:
        random.setstate(state)
    late = sum(1 for w in waits if w > WITHIN)
    assert late == 0, f"{late} of {TRIALS} scale-ups left an edge without the new replica after {WITHIN} intervals"
    assert waits[TRIALS // 2] < 10, waits[TRIALS // 2]


def test_no_probe_without_ha_or_interval() -> None:
    assert _probe_after(EdgeConfig(node_name="e", ha=False)) is None
    assert _probe_after(EdgeConfig(node_name="e", replica_probe_interval=0)) is None
