"""A node's tunnels as ``run_tunnel`` reports them: with several (HA, one per replica) the
callback is the newest tunnel after each change, so a tunnel seen again is not a new one and an
ended one is accounted once, whichever ends first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgestream.backends.emulator import EmulatorBackend
from edgestream.config import EdgeConfig, EmulatorConfig
from edgestream.node_endpoints import NodeEndpoints


@dataclass
class _Violations:
    total: int = 0


@dataclass(eq=False)
class FakeSession:
    messages_in: int = 0
    messages_out: int = 0
    closed_reason: str | None = None
    over_budget: bool = False
    credit_stalls: int = 0
    violations: _Violations = field(default_factory=_Violations)

    def end(self, why: str) -> None:
        self.closed_reason = why


def _node() -> NodeEndpoints:
    return NodeEndpoints(EmulatorBackend(EmulatorConfig()), EdgeConfig(node_name="edge-1"))


def _report(node: NodeEndpoints, session: Any) -> None:
    node.on_session(session)


def test_three_replicas_then_the_oldest_ends() -> None:
    node = _node()
    a, b, c = FakeSession(messages_in=1), FakeSession(messages_in=10), FakeSession(messages_in=100)
    for s in (a, b, c):
        _report(node, s)  # each comes up: reported as the newest
    assert node.sessions == [a, b, c] and node.session is c and node.connects == 3
    a.end("edge shutting down")
    _report(node, c)  # a ended, c is still the newest: not a new tunnel
    assert node.sessions == [b, c] and node.connects == 3
    assert node.disconnects["shutdown"] == 1 and node._messages[0] == 1
    b.end("connection lost: no close frame received or sent")
    c.end("connection lost: no close frame received or sent")
    _report(node, None)  # the last two end together
    assert node.sessions == [] and node.session is None
    assert sum(node.disconnects.values()) == 3 and node._messages[0] == 111
    _report(node, None)  # reported again: nothing counted twice
    assert sum(node.disconnects.values()) == 3


def test_newest_ends_first() -> None:
    node = _node()
    a, b = FakeSession(), FakeSession()
    _report(node, a)
    _report(node, b)
    b.end("edge shutting down")
    _report(node, a)  # what the supervisor reports when b ends: the newest left
    assert node.sessions == [a] and node.connects == 2 and sum(node.disconnects.values()) == 1


def test_one_tunnel_as_before() -> None:
    node = _node()
    s = FakeSession(messages_out=5)
    _report(node, s)
    s.end("keepalive timeout")
    _report(node, None)
    assert node.connects == 1 and node.disconnects["keepalive_timeout"] == 1 and node._messages[1] == 5
