"""A cloud Mux and an edge Mux back to back, driven by random operations against a model."""

from __future__ import annotations

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streamproto.tunnel import (
    ConnectRequest,
    DataReceived,
    MessageType,
    Mux,
    Role,
    StreamClosed,
    StreamOpened,
    StreamRemoved,
    decode,
)


class TwoMuxes(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        ids = iter(range(1, 10_000))
        self.cloud = Mux(Role.CLOUD, next_id=ids.__next__)
        self.edge = Mux(Role.EDGE)
        self.open: set[int] = set()  # model: streams neither side has closed
        self.cloud_closed: set[int] = set()
        self.edge_closed: set[int] = set()
        self.removes_sent: Counter[tuple[str, int]] = Counter()
        self.received: dict[int, bytes] = {}
        self.sent: dict[int, bytes] = {}

    def deliver(self, to: Mux, message: bytes) -> None:
        to.receive_message(message)
        for event in to.events_received():
            if isinstance(event, DataReceived):
                self.received[event.connect_id] = self.received.get(event.connect_id, b"") + bytes(event.data)
            assert not type(event).__name__ == "ProtocolViolation", event

    @rule(kind=st.sampled_from([MessageType.LOGS_CONNECT, MessageType.EXEC_CONNECT, MessageType.METRIC_CONNECT]))
    def open_stream(self, kind: MessageType) -> None:
        cid, message = self.cloud.open_stream(kind, ConnectRequest(0, "/containerLogs/a/b/c"))
        self.edge.receive_message(message)
        (event,) = self.edge.events_received()
        assert isinstance(event, StreamOpened) and event.connect_id == cid
        self.open.add(cid)

    @precondition(lambda self: self.open)
    @rule(data=st.data(), payload=st.binary(min_size=1, max_size=64))
    def edge_sends(self, data: st.DataObject, payload: bytes) -> None:
        cid = data.draw(st.sampled_from(sorted(self.open)))
        if cid in self.edge_closed or cid in self.cloud_closed:
            try:  # either side ended it: nothing more may be sent
                self.edge.data_header(cid, len(payload))
            except StreamClosed:
                return
            raise AssertionError("data allowed on a closed stream")
        self.deliver(self.cloud, self.edge.data_header(cid, len(payload)) + payload)
        self.sent[cid] = self.sent.get(cid, b"") + payload

    @precondition(lambda self: self.open)
    @rule(data=st.data(), by_cloud=st.booleans())
    def close(self, data: st.DataObject, by_cloud: bool) -> None:
        cid = data.draw(st.sampled_from(sorted(self.open)))
        local, peer, name = (self.cloud, self.edge, "cloud") if by_cloud else (self.edge, self.cloud, "edge")
        message = local.close_stream(cid)
        closed = self.cloud_closed if by_cloud else self.edge_closed
        if cid in closed:
            assert message is None  # REMOVE goes out once
            return
        assert message is not None and decode(message).kind == MessageType.REMOVE_CONNECT
        closed.add(cid)
        self.removes_sent[(name, cid)] += 1
        peer.receive_message(message)
        events = peer.events_received()
        assert events and isinstance(events[0], StreamRemoved) or type(events[0]).__name__ == "MessageIgnored"
        if cid in self.cloud_closed and cid in self.edge_closed:
            self.open.discard(cid)

    @precondition(lambda self: self.cloud_closed)
    @rule(data=st.data())
    def data_after_local_close_is_refused(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.cloud_closed)))
        try:
            self.cloud.data_header(cid, 1)
        except StreamClosed:
            return
        raise AssertionError("the cloud sent data on a stream it closed")

    @invariant()
    def removes_at_most_once(self) -> None:
        assert all(n == 1 for n in self.removes_sent.values())

    @invariant()
    def bytes_arrive_in_order(self) -> None:
        for cid, sent in self.sent.items():
            assert self.received.get(cid, b"") == sent

    @invariant()
    def finished_streams_leave_no_state(self) -> None:
        done = self.cloud_closed & self.edge_closed
        assert not done & set(self.cloud.streams) and not done & set(self.edge.streams)


TwoMuxes.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_two_muxes = TwoMuxes.TestCase
