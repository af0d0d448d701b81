"""The ``replicas`` extension's headers: what a peer may send is bounded and never an error."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamproto.tunnel import Feature, parse_features
from streamproto.tunnel.replicas import (
    MAX_REPLICAS,
    ReplicaAnnouncement,
    format_announcement,
    format_held,
    parse_announcement,
    parse_held,
    valid_replica_id,
)


def test_announcement_round_trips() -> None:
    a = ReplicaAnnouncement("cloudstream-7d9f8-x2k4q", 3)
    assert format_announcement(a) == "id=cloudstream-7d9f8-x2k4q; replicas=3"
    assert parse_announcement(format_announcement(a)) == a


def test_announcement_from_a_cloud_that_names_nothing_is_none() -> None:
    assert parse_announcement(None) is None
    assert parse_announcement("") is None
    assert parse_announcement("replicas=3") is None  # no id: the edge keeps one tunnel
    assert parse_announcement("id=a b; replicas=3") is None  # not a pod name
    assert parse_announcement("id=" + "a" * 600) is None


def test_replica_count_is_clamped() -> None:
    assert parse_announcement("id=r; replicas=1000") == ReplicaAnnouncement("r", MAX_REPLICAS)
    assert parse_announcement("id=r; replicas=0") == ReplicaAnnouncement("r", 1)
    assert parse_announcement("id=r; replicas=x") == ReplicaAnnouncement("r", 1)
    assert parse_announcement("ID = r ;REPLICAS= 2; future=1") == ReplicaAnnouncement("r", 2)


def test_held_list_keeps_valid_ids_and_at_most_the_cap() -> None:
    assert parse_held("b, a,, not valid ,c") == frozenset({"a", "b", "c"})
    assert format_held(["b", "a"]) == "a, b"
    many = ", ".join(f"r{i}" for i in range(100))
    assert len(parse_held(many)) <= MAX_REPLICAS


def test_ids_are_pod_names() -> None:
    assert valid_replica_id("cloudcore-5f7c9d-abcde") and valid_replica_id("a") and valid_replica_id("host.example")
    assert not valid_replica_id("") and not valid_replica_id("-a") and not valid_replica_id("a,b")
    assert not valid_replica_id("a;b") and not valid_replica_id("a" * 254)


def test_feature_token() -> None:
    assert parse_features("status, replicas") == frozenset({Feature.STATUS, Feature.REPLICAS})


@given(st.text(max_size=700))
def test_any_header_value_parses_or_is_ignored(value: str) -> None:
    a = parse_announcement(value)
    assert a is None or (valid_replica_id(a.replica_id) and 1 <= a.replicas <= MAX_REPLICAS)
    held = parse_held(value)
    assert len(held) <= MAX_REPLICAS and all(valid_replica_id(i) for i in held)
