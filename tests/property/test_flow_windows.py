"""Adaptive receive windows: a receiving cloud Mux and a sending edge Mux (flow feature),
random sends, deliveries, consumption, window-target changes and closes. Credit is conserved
per stream, and growth stays within the per-stream cap and the per-tunnel budget."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streamproto.tunnel import FLOW_WINDOW, ConnectRequest, DataReceived, Feature, MessageType, Mux, Role, WindowUpdate

FLOW = frozenset({Feature.FLOW, Feature.STATUS})


class Windows(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        ids = iter(range(1, 10_000))
        self.cloud = Mux(Role.CLOUD, features=FLOW, next_id=ids.__next__, stream_window_max=1 << 20,
                         window_budget=3 * FLOW_WINDOW)
        self.edge = Mux(Role.EDGE, features=FLOW)
        self.to_cloud: list[bytes] = []  # DATA in flight, in order
        self.to_edge: list[bytes] = []  # WINDOW in flight, in order
        self.buffered: dict[int, int] = {}  # received by the cloud, not consumed yet

    def _in_flight(self, queue: list[bytes], cid: int, kind: MessageType) -> int:
        from streamproto.tunnel import decode
        from streamproto.tunnel.varint import read_uvarint

        total = 0
        for raw in queue:
            m = decode(raw)
            if m.connect_id == cid and m.kind == kind:
                total += len(m.data) if kind == MessageType.DATA else read_uvarint(m.data, 0)[0]
        return total

    @rule()
    def open_stream(self) -> None:
        cid, message = self.cloud.open_stream(MessageType.LOGS_CONNECT, ConnectRequest(0, "/containerLogs/a/b/c"))
        self.edge.receive_message(message)
        self.edge.events_received()
        self.buffered[cid] = 0

    @precondition(lambda self: self.buffered)
    @rule(data=st.data(), size=st.integers(1, 64 * 1024))
    def edge_sends(self, data: st.DataObject, size: int) -> None:
        cid = data.draw(st.sampled_from(sorted(self.buffered)))
        size = min(size, self.edge.credit(cid))
        if size:
            self.to_cloud.append(self.edge.data_header(cid, size) + b"x" * size)

    @precondition(lambda self: self.to_cloud)
    @rule(n=st.integers(1, 8))
    def deliver_to_cloud(self, n: int) -> None:
        for raw in self.to_cloud[:n]:
            self.cloud.receive_message(raw)
            for event in self.cloud.events_received():
                if isinstance(event, DataReceived):
                    self.buffered[event.connect_id] += len(event.data)
        del self.to_cloud[:n]

    @precondition(lambda self: any(self.buffered.values()))
    @rule(data=st.data(), fraction=st.floats(0.01, 1.0))
    def cloud_consumes(self, data: st.DataObject, fraction: float) -> None:
        cid = data.draw(st.sampled_from(sorted(c for c, b in self.buffered.items() if b)))
        take = max(1, int(self.buffered[cid] * fraction))
        self.buffered[cid] -= take
        message = self.cloud.consumed(cid, take)
        if message is not None:
            self.to_edge.append(message)

    @precondition(lambda self: self.to_edge)
    @rule()
    def deliver_to_edge(self) -> None:
        for raw in self.to_edge:
            self.edge.receive_message(raw)
            assert all(isinstance(e, WindowUpdate) for e in self.edge.events_received())
        self.to_edge.clear()

    @rule(window=st.integers(FLOW_WINDOW // 2, 4 << 20))
    def bdp_changes(self, window: int) -> None:
        self.cloud.window_target = window

    @precondition(lambda self: self.buffered)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.buffered)))
        self.cloud.forget(cid)
        self.edge.forget(cid)
        del self.buffered[cid]
        self.to_cloud = [m for m in self.to_cloud if m[0] != cid]
        self.to_edge = [m for m in self.to_edge if m[0] != cid]

    @invariant()
    def growth_is_bounded_and_accounted(self) -> None:
        cloud = self.cloud
        assert cloud.window_extra == sum(s.recv_window - FLOW_WINDOW for s in cloud.streams.values())
        assert 0 <= cloud.window_extra <= cloud.window_budget
        assert cloud.growing == sum(s.recv_window > FLOW_WINDOW for s in cloud.streams.values())
        assert cloud.wanting == sum(s.wants_growth for s in cloud.streams.values())
        assert not any(s.wants_growth and s.recv_window > FLOW_WINDOW for s in cloud.streams.values())
        for s in cloud.streams.values():
            assert FLOW_WINDOW <= s.recv_window <= max(FLOW_WINDOW, cloud.stream_window_max)

    @invariant()
    def credit_is_conserved(self) -> None:
        """What the sender may still send + what is on its way + what waits to be consumed
        + what was consumed and not granted + grants on their way == the receive window."""
        for cid, stream in self.cloud.streams.items():
            total = (
                self.edge.credit(cid)
                + self._in_flight(self.to_cloud, cid, MessageType.DATA)
                + self.buffered[cid]
                + stream.unacked
                + self._in_flight(self.to_edge, cid, MessageType.WINDOW)
            )
            assert total == stream.recv_window, (cid, total, stream.recv_window)


Windows.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestWindows = Windows.TestCase


def _read_round_robin(streams: int, rounds: int, budget: int = 16 << 20) -> list[int]:
    """``streams`` bulk streams read in turn, each a window's worth per turn, the BDP target far
    above every share: their receive windows after ``rounds`` turns each."""
    ids = iter(range(1, 10_000))
    cloud = Mux(Role.CLOUD, features=FLOW, next_id=ids.__next__, stream_window_max=8 << 20, window_budget=budget)
    edge = Mux(Role.EDGE, features=FLOW)
    cids = []
    for _ in range(streams):
        cid, message = cloud.open_stream(MessageType.LOGS_CONNECT, ConnectRequest(0, "/containerLogs/a/b/c"))
        edge.receive_message(message)
        cids.append(cid)
    edge.events_received()
    cloud.window_target = 4 << 20
    for _ in range(rounds):
        for cid in cids:
            while size := min(edge.credit(cid), 64 * 1024):
                cloud.receive_message(edge.data_header(cid, size) + bytes(size))
                cloud.events_received()
                grant = cloud.consumed(cid, size)
                if grant is not None:
                    edge.receive_message(grant)
                    edge.events_received()
                    break  # the next stream's turn
    return [cloud.streams[c].recv_window for c in cids]


def test_the_budget_is_shared_evenly_not_first_come() -> None:
    windows = _read_round_robin(64, rounds=20)
    share = FLOW_WINDOW + (16 << 20) // 64
    assert max(windows) - min(windows) <= FLOW_WINDOW // 8, windows
    assert min(windows) >= share - FLOW_WINDOW // 8
    # two streams: each may take half of the budget (4 MiB target is below it: the target)
    assert _read_round_robin(2, rounds=20) == [4 << 20, 4 << 20]


def test_a_newcomer_gets_its_share_as_the_grown_ones_are_read() -> None:
    ids = iter(range(1, 10_000))
    cloud = Mux(Role.CLOUD, features=FLOW, next_id=ids.__next__, stream_window_max=8 << 20, window_budget=4 << 20)
    cloud.window_target = 8 << 20
    a, _ = cloud.open_stream(MessageType.LOGS_CONNECT, ConnectRequest(0, "/containerLogs/a/b/c"))
    cloud.consumed(a, 1)
    assert cloud.streams[a].recv_window == FLOW_WINDOW + 1  # growth comes as it is read: at most what was consumed
    for _ in range(64):
        cloud.consumed(a, 64 * 1024)
    assert cloud.streams[a].recv_window == FLOW_WINDOW + (4 << 20)  # alone: the whole budget
    b, _ = cloud.open_stream(MessageType.LOGS_CONNECT, ConnectRequest(0, "/containerLogs/a/b/c"))
    cloud.consumed(b, 1)  # nothing left yet: a holds it all
    assert cloud.streams[b].recv_window == FLOW_WINDOW
    for _ in range(64):  # a is read on: it gives back down to half, b takes it
        cloud.consumed(a, 64 * 1024)
        cloud.consumed(b, 64 * 1024)
    assert cloud.streams[a].recv_window == cloud.streams[b].recv_window == FLOW_WINDOW + (2 << 20)
