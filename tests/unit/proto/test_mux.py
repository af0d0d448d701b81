from __future__ import annotations

import json

import pytest

from streamproto.tunnel import (
    ConnectRequest,
    DataReceived,
    Feature,
    LimitExceeded,
    MessageIgnored,
    MessageType,
    Mux,
    ProtocolError,
    Role,
    StatusReceived,
    StreamClosed,
    StreamOpened,
    StreamRemoved,
    decode,
    encode,
)


def pair(features: frozenset[Feature] = frozenset()) -> tuple[Mux, Mux]:
    counter = iter(range(1, 1_000_000))
    return Mux(Role.CLOUD, features=features, next_id=counter.__next__), Mux(Role.EDGE, features=features)


def request(path: str = "/containerLogs/ns/pod/c") -> ConnectRequest:
    return ConnectRequest(0, path, "follow=true", (("Accept-Encoding", "gzip"),))


def test_open_data_remove_both_ways() -> None:
    cloud, edge = pair()
    cid, message = cloud.open_stream(MessageType.LOGS_CONNECT, request())
    assert cid == 1
    edge.receive_message(message)
    (opened,) = edge.events_received()
    assert isinstance(opened, StreamOpened) and opened.request.raw_query == "follow=true"
    assert json.loads(bytes(decode(message).data))["MessID"] == cid  # Go edges answer under MessID

    header = edge.data_header(cid, 3)
    cloud.receive_message(header + b"abc")
    (data,) = cloud.events_received()
    assert isinstance(data, DataReceived) and bytes(data.data) == b"abc"

    remove = edge.close_stream(cid)
    assert remove == encode(cid, MessageType.REMOVE_CONNECT)
    assert edge.close_stream(cid) is None  # REMOVE goes out once
    cloud.receive_message(remove)
    assert cloud.events_received() == [StreamRemoved(cid)]
    assert cloud.close_stream(cid) is not None  # our side still closes once
    assert cloud.streams == {} and edge.streams == {}


def test_cloud_close_then_echo() -> None:
    cloud, edge = pair()
    cid, message = cloud.open_stream(MessageType.EXEC_CONNECT, request("/exec/a/b/c"))
    edge.receive_message(message)
    edge.events_received()
    remove = cloud.close_stream(cid)
    assert remove is not None and cloud.close_stream(cid) is None
    edge.receive_message(remove)
    assert edge.events_received() == [StreamRemoved(cid)]
    echo = edge.close_stream(cid)
    cloud.receive_message(echo)
    assert cloud.events_received() == [StreamRemoved(cid)]
    assert cid not in cloud.streams
    # Go clouds repeat REMOVE in a loop: further ones are ignored, never a crash
    for _ in range(5):
        edge.receive_message(remove)
        assert isinstance(edge.events_received()[0], MessageIgnored)


def test_data_after_close_is_refused_locally() -> None:
    cloud, _ = pair()
    cid, _ = cloud.open_stream(MessageType.LOGS_CONNECT, request())
    cloud.close_stream(cid)
    with pytest.raises(StreamClosed):
        cloud.data_header(cid, 1)


def test_payload_limit() -> None:
    cloud, _ = pair()
    cid, _ = cloud.open_stream(MessageType.LOGS_CONNECT, request())
    with pytest.raises(LimitExceeded):
        cloud.data_header(cid, cloud.max_payload + 1)
    with pytest.raises(ValueError):
        Mux(Role.EDGE, max_payload=1 << 20)


def test_extensions_need_negotiation() -> None:
    cloud, edge = pair()
    with pytest.raises(ProtocolError):
        cloud.open_stream(MessageType.PORTFORWARD_CONNECT, request("/portForward/a/b"))
    edge.receive_message(encode(5, MessageType.PORTFORWARD_CONNECT, request().to_json()))
    assert isinstance(edge.events_received()[0], MessageIgnored)
    assert edge.status(5, 404, "x") is None

    cloud, edge = pair(frozenset(Feature))
    cid, message = cloud.open_stream(MessageType.PORTFORWARD_CONNECT, request("/portForward/a/b"))
    edge.receive_message(message)
    assert isinstance(edge.events_received()[0], StreamOpened)
    status = edge.status(cid, 404, "no such pod")
    assert status is not None and edge.status(cid, 200) is None  # once
    cloud.receive_message(status)
    assert cloud.events_received() == [StatusReceived(cid, 404, "no such pod")]


def test_stream_limit() -> None:
    counter = iter(range(1, 100))
    cloud = Mux(Role.CLOUD, max_streams=2, next_id=counter.__next__)
    cloud.open_stream(MessageType.LOGS_CONNECT, request())
    cloud.open_stream(MessageType.LOGS_CONNECT, request())
    with pytest.raises(LimitExceeded):
        cloud.open_stream(MessageType.LOGS_CONNECT, request())


def test_edge_refuses_duplicate_open_and_bad_json() -> None:
    _, edge = pair()
    message = encode(9, MessageType.LOGS_CONNECT, request().to_json())
    edge.receive_message(message)
    edge.receive_message(message)
    edge.receive_message(encode(10, MessageType.LOGS_CONNECT, b"not json"))
    events = edge.events_received()
    assert isinstance(events[0], StreamOpened)
    assert type(events[1]).__name__ == "ProtocolViolation" and events[1].connect_id == 9
    assert type(events[2]).__name__ == "ProtocolViolation" and events[2].connect_id == 10
    assert set(edge.streams) == {9}


def test_only_the_cloud_opens() -> None:
    _, edge = pair()
    with pytest.raises(ProtocolError):
        edge.open_stream(MessageType.LOGS_CONNECT, request())


def test_flow_credit_and_grants() -> None:
    from streamproto.tunnel import FLOW_WINDOW, WindowUpdate

    cloud, edge = pair(frozenset({Feature.FLOW}))
    cid, message = cloud.open_stream(MessageType.LOGS_CONNECT, request())
    edge.receive_message(message)
    edge.events_received()
    assert edge.credit(cid) == FLOW_WINDOW and cloud.credit(cid) == FLOW_WINDOW
    sent = 0
    while edge.credit(cid) >= 60_000:
        edge.data_header(cid, 60_000)
        sent += 60_000
    with pytest.raises(LimitExceeded):  # the window is spent: the sender must wait
        edge.data_header(cid, 60_000)
    assert cloud.consumed(cid, 1000) is None  # grants gather to a quarter window
    grant = cloud.consumed(cid, FLOW_WINDOW // 4)
    assert grant is not None and decode(grant).kind == MessageType.WINDOW
    before = edge.credit(cid)
    edge.receive_message(grant)
    assert edge.events_received() == [WindowUpdate(cid, 1000 + FLOW_WINDOW // 4)]
    assert edge.credit(cid) == before + 1000 + FLOW_WINDOW // 4


def test_waiting_counts_unread_bytes_of_all_streams_or_of_those_named() -> None:
    cloud, edge = pair(frozenset({Feature.FLOW}))
    cids = []
    for _ in range(3):
        cid, message = cloud.open_stream(MessageType.LOGS_CONNECT, request())
        edge.receive_message(message)
        cids.append(cid)
    edge.events_received()
    for cid, size in zip(cids, (1000, 20_000, 300), strict=True):
        cloud.receive_message(edge.data_header(cid, size) + bytes(size))
    cloud.events_received()
    cloud.consumed(cids[0], 400)
    assert cloud.waiting() == 600 + 20_000 + 300
    assert cloud.waiting([cids[0], cids[2]]) == 600 + 300  # e.g. a stalled stream left out
    assert cloud.waiting([]) == 0 and cloud.waiting([12345]) == 0  # unknown ids count nothing


def test_without_flow_credit_is_unlimited_and_window_messages_are_ignored() -> None:
    cloud, edge = pair()
    cid, message = cloud.open_stream(MessageType.LOGS_CONNECT, request())
    edge.receive_message(message)
    edge.events_received()
    for _ in range(100):
        edge.data_header(cid, 64 * 1024)  # a Go peer has no windows
    assert cloud.consumed(cid, 1 << 20) is None
    edge.receive_message(encode(cid, MessageType.WINDOW, b"\x10"))
    assert isinstance(edge.events_received()[0], MessageIgnored)
