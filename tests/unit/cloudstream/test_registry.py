"""The registry's rules: one session per node, an IP bound to one live node, own entries only."""

from __future__ import annotations

import pytest

from cloudstream.config import CloudConfig
from cloudstream.edge_session import EdgeSession, IPClaim
from cloudstream.registry import IPClaimConflict, SessionRegistry, canonical_ip


def session(registry: SessionRegistry, node: str, ip: str, *, verified: bool = False, announced: bool = True) -> EdgeSession:
    # The registry reads node, ip_claim and closed_reason; the WebSocket is never touched here.
    return EdgeSession(
        None,  # type: ignore[arg-type]
        node=node, internal_ip=ip, features=frozenset(), config=CloudConfig(), next_id=registry.next_id,
        ip_claim=IPClaim(ip, announced=announced, verified=verified),
    )


async def test_second_node_claiming_a_live_ip_is_refused_naming_both() -> None:
    registry = SessionRegistry()
    victim = session(registry, "victim", "10.0.0.1")
    assert registry.register(victim) is None
    attacker = session(registry, "attacker", "10.0.0.1")
    with pytest.raises(IPClaimConflict) as caught:
        registry.check_claim("attacker", attacker.ip_claim)
    with pytest.raises(IPClaimConflict):
        registry.register(attacker)
    message = str(caught.value)
    assert "'attacker'" in message and "'victim'" in message and "10.0.0.1" in message and "--ip" in message
    assert caught.value.error_status_hint == 403
    assert registry.get_by_ip("10.0.0.1") is victim and registry.get("attacker") is None


async def test_leaving_removes_only_own_entries() -> None:
    registry = SessionRegistry()
    a, b = session(registry, "a", "10.0.0.1"), session(registry, "b", "10.0.0.2")
    registry.register(a)
    registry.register(b)
    registry.unregister(b)
    assert registry.get_by_ip("10.0.0.1") is a and registry.get("a") is a
    assert registry.get_by_ip("10.0.0.2") is None and registry.get("b") is None
    # A session refused for its IP never registered: unregistering it (handler's finally) removes nothing.
    intruder = session(registry, "intruder", "10.0.0.1")
    with pytest.raises(IPClaimConflict):
        registry.register(intruder)
    registry.unregister(intruder)
    assert registry.get_by_ip("10.0.0.1") is a


async def test_a_redial_replaces_the_nodes_own_session_even_with_a_new_ip() -> None:
    registry = SessionRegistry()
    first = session(registry, "a", "10.0.0.1")
    registry.register(first)
    second = session(registry, "a", "10.0.0.1")
    assert registry.register(second) is first
    registry.unregister(first)  # the old one's cleanup runs after the new one registered
    assert registry.get("a") is second and registry.get_by_ip("10.0.0.1") is second
    moved = session(registry, "a", "10.0.0.9")
    assert registry.register(moved) is second
    assert registry.get_by_ip("10.0.0.1") is None and registry.get_by_ip("10.0.0.9") is moved


async def test_a_dead_holder_does_not_block_the_ip() -> None:
    registry = SessionRegistry()
    old = session(registry, "old", "10.0.0.1")
    registry.register(old)
    old.closed_reason = "connection lost"  # closed, its unregister not run yet
    new = session(registry, "new", "10.0.0.1")
    registry.register(new)
    registry.unregister(old)
    assert registry.get_by_ip("10.0.0.1") is new


async def test_a_verified_claim_takes_the_ip_from_an_unverified_holder_not_from_a_verified_one() -> None:
    registry = SessionRegistry()
    squatter = session(registry, "squatter", "10.0.0.1")
    registry.register(squatter)
    owner = session(registry, "owner", "10.0.0.1", verified=True)
    registry.register(owner)
    assert registry.get_by_ip("10.0.0.1") is owner and registry.get("squatter") is squatter
    registry.unregister(squatter)
    assert registry.get_by_ip("10.0.0.1") is owner
    with pytest.raises(IPClaimConflict):
        registry.register(session(registry, "twin", "10.0.0.1", verified=True))


async def test_an_unannounced_peer_address_never_refuses_and_never_takes_over() -> None:
    registry = SessionRegistry()
    a = session(registry, "a", "192.0.2.1", announced=False)  # two nodes behind one NAT address
    b = session(registry, "b", "192.0.2.1", announced=False)
    registry.register(a)
    registry.register(b)
    assert registry.get("b") is b and registry.get_by_ip("192.0.2.1") is a
    registry.unregister(a)
    assert registry.get_by_ip("192.0.2.1") is None  # b never held it: reachable by name


async def test_lookups_use_one_spelling_per_address() -> None:
    registry = SessionRegistry()
    a = session(registry, "a", canonical_ip("fd00:0::1"))
    registry.register(a)
    assert registry.get_by_ip("FD00::1") is a and registry.get_by_ip("fd00::0:1") is a
    assert canonical_ip(" 10.0.0.1 ") == "10.0.0.1" and canonical_ip("edge-host") == "edge-host"


def test_quarantine_expires() -> None:
    registry = SessionRegistry()
    registry.quarantine("attacker", 10.0, now=100.0)
    assert registry.quarantined("attacker", now=105.0) == pytest.approx(5.0)
    assert registry.quarantined("victim", now=105.0) == 0.0
    assert registry.quarantined("attacker", now=110.0) == 0.0
    registry.quarantine("x", 1.0, now=0.0)
    registry.quarantine("y", 1.0, now=5.0)  # expired entries go as new ones come
    assert list(registry._quarantine) == ["y"]
