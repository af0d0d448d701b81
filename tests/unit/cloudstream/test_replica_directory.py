"""What a replica says about a node it has no tunnel to (HA mode)."""

from __future__ import annotations

import pytest

from cloudstream import replicas as mod
from cloudstream.replicas import ReplicaDirectory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_node_that_left_is_named_with_the_replicas_it_said_it_holds() -> None:
    clock = Clock()
    d = ReplicaDirectory("r0", 3, clock=clock)
    d.tunnel_up("edge-1", {"r1", "r2", "r0"})
    assert d.elsewhere("edge-1") == (frozenset({"r1", "r2"}), 0.0)
    d.tunnel_down("edge-1")
    clock.now += 12
    text = await d.miss(["edge-1"])
    assert "replica r0 (of 3)" in text and "r1, r2" in text and "12 s ago" in text, text


async def test_unknown_node_says_so_and_one_replica_says_only_its_name() -> None:
    assert "not known here" in await ReplicaDirectory("r0", 3).miss(["edge-9"])
    assert await ReplicaDirectory("only", 1).miss(["edge-9"]) == "This is cloudstream replica only (of 1)."


async def test_a_node_that_named_no_other_replica_is_not_claimed_to_hold_this_one_only() -> None:
    d = ReplicaDirectory("r0", 2)
    d.tunnel_up("edge-1", ())  # its first dial: it held nothing yet, and later dials are not reported here
    d.tunnel_down("edge-1")
    assert "not known here" in await d.miss(["edge-1"])


async def test_old_reports_expire_and_memory_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    d = ReplicaDirectory("r0", 3, clock=clock)
    d.tunnel_up("edge-1", {"r1"})
    d.tunnel_down("edge-1")
    clock.now += mod.REMEMBER_FOR + 1
    assert d.elsewhere("edge-1") is None
    monkeypatch.setattr(mod, "MAX_REMEMBERED", 10)
    for i in range(50):
        d.tunnel_up(f"n{i}", {"r1"})
    assert len(d._holders) == 10 and d.elsewhere("n49") is not None and d.elsewhere("n0") is None


async def test_peers_are_asked_when_the_node_said_nothing() -> None:
    asked: list[str] = []

    async def lookup(node: str) -> tuple[str, ...]:
        asked.append(node)
        return ("r2",) if node == "go-edge" else ()

    d = ReplicaDirectory("r0", 3)
    d.lookup = lookup
    assert "holds a tunnel to replica(s) r2 (asked just now)" in await d.miss(["go-edge"])
    assert "no other replica holds a tunnel to this node" in await d.miss(["nobody"])
    d.tunnel_up("edge-1", {"r1"})
    d.tunnel_down("edge-1")
    assert "also held tunnels to replica(s) r1" in await d.miss(["edge-1"])  # the peers said nothing: its report
    assert asked == ["go-edge", "nobody", "edge-1"]


def test_count_source_overrides_and_is_clamped() -> None:
    d = ReplicaDirectory("r0", 3, count_source=lambda: 99)
    assert d.replicas == 16 and d.announcement().replicas == 16
