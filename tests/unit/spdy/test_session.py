"""The SPDY session state machine: both roles back to back, hostile input, flow control."""

from __future__ import annotations

from streamproto.spdy import (
    DataReceived,
    FrameIgnored,
    GoAwayReceived,
    HeaderCompressor,
    PingReceived,
    Role,
    RstStatus,
    SendFlow,
    Session,
    SessionConfig,
    SessionTerminated,
    StreamEnded,
    StreamOpened,
    StreamReplied,
    StreamReset,
    WindowUpdated,
)
import pytest

from streamproto.spdy.frames import FrameType, control_header

from streamproto.tunnel.errors import LimitExceeded, ProtocolError, StreamClosed


def pump(a: Session, b: Session) -> list:
    b.receive_data(a.data_to_send())
    return b.events_received()


def test_exec_shaped_exchange() -> None:
    """What kubectl and a kubelet do: error/stdout/stderr streams, output, status, RST, GOAWAY."""
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    ids = [client.open_stream([("streamtype", t)]) for t in ("error", "stdout", "stderr")]
    assert ids == [1, 3, 5]
    opened = pump(client, server)
    assert [e.header("streamtype") for e in opened] == ["error", "stdout", "stderr"]
    for sid in ids:
        server.reply(sid)
    server.send_data(3, b"hi\n")
    server.end_stream(3)
    server.end_stream(5)
    server.send_data(1, b'{"metadata":{},"status":"Success"}')
    server.end_stream(1)
    events = pump(server, client)
    assert [type(e) for e in events[:3]] == [StreamReplied] * 3
    assert DataReceived(3, b"hi\n") in events and StreamEnded(3) in events and StreamEnded(1) in events
    for sid in ids:
        client.reset(sid, RstStatus.CANCEL)
    client.goaway()
    events = pump(client, server)
    # the client never half-closed: the server learns the end from the resets
    assert [e for e in events if isinstance(e, StreamReset)] == [StreamReset(i, RstStatus.CANCEL) for i in ids]
    assert isinstance(events[-1], GoAwayReceived) and not server.streams


def test_peer_stream_rules() -> None:
    client, server = Session(Role.CLIENT), Session(Role.SERVER, SessionConfig(max_streams=2))
    for _ in range(3):
        client.open_stream([("streamtype", "data")])
    events = pump(client, server)
    assert [type(e) for e in events] == [StreamOpened, StreamOpened, StreamReset]
    assert events[2].status == RstStatus.REFUSED_STREAM and not events[2].remote
    assert server.data_to_send() == control_header(FrameType.RST_STREAM, 0, 8) + bytes.fromhex("00000005 00000003")
    # a server-parity id from the client is refused, the session lives on
    rogue = Session(Role.SERVER)  # opens even ids, like a client gone wrong
    rogue._deflate = client._deflate
    rogue.open_stream([("streamtype", "x")])
    events = pump(rogue, server)
    assert isinstance(events[0], StreamReset) and events[0].status == RstStatus.PROTOCOL_ERROR
    assert not server.closed


def test_bad_header_block_ends_the_session() -> None:
    server = Session(Role.SERVER)
    body = (1).to_bytes(4, "big") + bytes(6) + b"not zlib at all"
    server.receive_data(control_header(FrameType.SYN_STREAM, 0, len(body)) + body)
    events = server.events_received()
    assert isinstance(events[-1], SessionTerminated) and "inflate" in events[-1].error
    assert server.data_to_send() == bytes.fromhex("80030007 00000008 00000000 00000001")
    server.receive_data(b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")  # dead: ignored
    assert server.events_received() == [] and server.data_to_send() == b""


def test_limits_on_control_frames_and_header_blocks() -> None:
    server = Session(Role.SERVER, SessionConfig(max_control_frame=1024))
    server.receive_data(control_header(FrameType.SYN_STREAM, 0, 5000))
    assert isinstance(server.events_received()[-1], SessionTerminated)
    server = Session(Role.SERVER, SessionConfig(max_header_block=1000))
    block = HeaderCompressor().compress([("x", "y" * 5000)])
    body = (1).to_bytes(4, "big") + bytes(6) + block
    server.receive_data(control_header(FrameType.SYN_STREAM, 0, len(body)) + body)
    assert isinstance(server.events_received()[-1], SessionTerminated)


def test_unknown_control_frames_are_skipped_and_junk_is_bounded() -> None:
    server = Session(Role.SERVER, SessionConfig(max_ignored=4))
    server.receive_data(b"\x80\x03\x00\x0a\x00\x00\x00\x03abc")  # CREDENTIAL (type 10): skipped
    assert isinstance(server.events_received()[0], FrameIgnored)
    for _ in range(3):
        server.receive_data(bytes.fromhex("00000009 00000001") + b"x")  # data for a stream never opened
    assert not server.closed
    server.receive_data(bytes.fromhex("00000009 00000001") + b"x")
    assert server.closed and isinstance(server.events_received()[-1], SessionTerminated)


def test_pings_are_echoed() -> None:
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    client.ping()
    assert pump(client, server) == [PingReceived(1)]
    assert server.data_to_send() == bytes.fromhex("80030006 00000004 00000001")


def test_goaway_refuses_streams_the_peer_never_saw() -> None:
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    client.open_stream([("a", "1")])
    pump(client, server)
    client.open_stream([("a", "2")])
    client.data_to_send()  # lost in flight
    server.goaway()
    events = pump(server, client)
    assert events[0] == GoAwayReceived(1, 0)
    assert events[1] == StreamReset(3, RstStatus.REFUSED_STREAM, remote=True, reason="GOAWAY")
    with pytest.raises(ProtocolError):
        client.open_stream([("a", "3")])


def test_strict_send_window_and_window_updates() -> None:
    client = Session(Role.CLIENT, SessionConfig(send_flow=SendFlow.STRICT))
    server = Session(Role.SERVER)
    sid = client.open_stream([("streamtype", "stdin")])
    pump(client, server)
    server.reply(sid)
    pump(server, client)
    client.send_data(sid, bytes(65536))
    assert client.send_window(sid) == 0
    with pytest.raises(LimitExceeded):
        client.send_data(sid, b"x")
    events = pump(client, server)
    assert sum(len(e.data) for e in events if isinstance(e, DataReceived)) == 65536
    server.consumed(sid, 65536)
    events = pump(server, client)
    assert WindowUpdated(0, 65536) in events and WindowUpdated(sid, 65536) in events
    assert client.send_window(sid) == 65536


def test_auto_flow_binds_only_for_peers_that_do_flow_control() -> None:
    """Go's spdystream never sends WINDOW_UPDATE: writing past 64 KiB must not stall."""
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    sid = client.open_stream([("streamtype", "stdout")])
    pump(client, server)
    server.reply(sid)
    server.send_data(sid, bytes(200_000))  # no window binds yet
    assert not server.flow_enforced
    client.consumed(sid, 200_000)
    pump(client, server)  # our own client hands credit back: now the server knows it does flow control
    assert server.flow_enforced and server.send_window(sid) == 65536  # 64 KiB - 200 000 + 200 000


def test_fin_needs_no_window() -> None:
    """Enforcement can start while a window is overdrawn (AUTO): an empty FIN still goes out."""
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    sid = client.open_stream([("streamtype", "stdout")])
    pump(client, server)
    server.reply(sid)
    server.send_data(sid, bytes(100_000))
    client.send_settings({7: 65536})  # the peer shows it does flow control: windows bind, overdrawn
    pump(client, server)
    assert server.flow_enforced and server.send_window(sid) == 0
    server.end_stream(sid)
    assert StreamEnded(sid) in pump(server, client)


def test_receive_window_enforcement_is_optional() -> None:
    client = Session(Role.CLIENT, SessionConfig(send_flow=SendFlow.OFF))
    server = Session(Role.SERVER, SessionConfig(enforce_receive_window=True))
    sid = client.open_stream([("streamtype", "stdin")])
    pump(client, server)
    server.reply(sid)
    client.send_data(sid, bytes(70_000))
    events = pump(client, server)
    assert StreamReset(sid, RstStatus.FLOW_CONTROL_ERROR, remote=False,
                       reason="the peer overran its flow-control window") in events


def test_commands_on_closed_streams() -> None:
    client = Session(Role.CLIENT)
    sid = client.open_stream([("a", "b")], fin=True)
    with pytest.raises(StreamClosed):
        client.send_data(sid, b"x")
    with pytest.raises(StreamClosed):
        client.send_data(99, b"x")
    client.end_stream(99)  # a no-op, like closing twice
