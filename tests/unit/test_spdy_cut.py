"""SpdyCut: the bytes it adds after a cut are read by a real SPDY client session as the kubelet's
failure (error stream data + FIN, stdout/stderr FIN), and it adds nothing where that would be a lie
or corrupt the session (mid-frame, unreplied or ended error stream, GOAWAY, not SPDY)."""

from __future__ import annotations

import json

import pytest

from cloudstream.kubelet_api.spdy_cut import SpdyCut, is_spdy_upgrade
from streamproto.spdy import Role, Session
from streamproto.spdy.events import DataReceived, StreamEnded

HEAD = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: %s\r\n\r\n")
KINDS = ("error", "stdin", "stdout", "stderr")


def _setup(protocol: bytes = b"v4.channel.k8s.io", chunk: int = 0):
    """A client and a server session with exec's streams set up, and a SpdyCut that saw both
    directions (in ``chunk``-byte pieces when given, to cross frame boundaries)."""
    client, server, cut = Session(Role.CLIENT), Session(Role.SERVER), SpdyCut()
    ids = {kind: client.open_stream([("streamtype", kind)]) for kind in KINDS}
    up = client.data_to_send()
    client.send_data(ids["stdin"], b"hello")
    up += client.data_to_send()
    for piece in _pieces(up, chunk):
        cut.observe(memoryview(piece))
    server.receive_data(up)
    server.events_received()
    for sid in ids.values():
        server.reply(sid)
    server.send_data(ids["stdout"], b"hello")
    down = HEAD % protocol + server.data_to_send()
    for piece in _pieces(down, chunk):
        cut.feed(piece)
    client.receive_data(down[len(HEAD % protocol):])
    client.events_received()
    return client, server, cut, ids


def _pieces(data: bytes, chunk: int) -> list[bytes]:
    return [data] if not chunk else [data[i : i + chunk] for i in range(0, len(data), chunk)]


@pytest.mark.parametrize("chunk", [0, 1, 3, 7])
def test_v4_ending_is_a_failure_status_on_the_error_stream_then_fins(chunk: int) -> None:
    client, _, cut, ids = _setup(chunk=chunk)
    assert not cut.watching  # the client's first DATA frame ended the watch
    ending = cut.ending("node edge-1: the tunnel closed")
    client.receive_data(ending)
    events = client.events_received()
    data = [e for e in events if isinstance(e, DataReceived)]
    assert [e.stream_id for e in data] == [ids["error"]]
    status = json.loads(data[0].data)
    assert status["status"] == "Failure" and status["code"] == 500 and "edge-1" in status["message"]
    ended = {e.stream_id for e in events if isinstance(e, StreamEnded)}
    assert ended == {ids["error"], ids["stdout"], ids["stderr"]}
    assert not client.closed


def test_v1_to_v3_get_the_message_as_text() -> None:
    client, _, cut, ids = _setup(b"v3.channel.k8s.io")
    client.receive_data(cut.ending("the tunnel closed"))
    data = [e for e in client.events_received() if isinstance(e, DataReceived)]
    assert data[0].data == b"the tunnel closed"


def test_nothing_mid_frame() -> None:
    _, server, cut, ids = _setup()
    server.send_data(ids["stdout"], b"x" * 1000)
    cut.feed(server.data_to_send()[:500])
    assert cut.ending("cut") == b""


def test_nothing_once_the_edge_ended_the_error_stream_or_went_away() -> None:
    _, server, cut, ids = _setup()
    server.send_data(ids["error"], b"", fin=True)
    cut.feed(server.data_to_send())
    assert cut.ending("cut") == b""
    _, server, cut, ids = _setup()
    server.reset(ids["error"])
    cut.feed(server.data_to_send())
    assert cut.ending("cut") == b""


def test_nothing_before_the_edge_replied_to_the_error_stream() -> None:
    client, cut = Session(Role.CLIENT), SpdyCut()
    client.open_stream([("streamtype", "error")])
    up = client.data_to_send()
    cut.observe(memoryview(up))
    cut.feed(HEAD % b"v4.channel.k8s.io")
    assert cut.ending("cut") == b""


def test_a_refused_upgrade_or_garbage_from_the_client_adds_nothing() -> None:
    cut = SpdyCut()
    cut.feed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    assert cut.ending("cut") == b""
    _, _, cut, _ = _setup()
    fresh = SpdyCut()
    assert fresh.observe(memoryview(b"\x80\x03\x00\x01\x00\x00\x00\x0e" + b"\x00" * 10 + b"garbage!")) is False
    fresh.feed(HEAD % b"v4.channel.k8s.io")
    assert fresh.ending("cut") == b""


def test_watching_is_bounded() -> None:
    cut = SpdyCut()
    ping = b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"
    for _ in range(64 * 1024 // len(ping)):
        if not cut.observe(memoryview(ping)):
            break
    assert not cut.observe(memoryview(ping))


def test_is_spdy_upgrade() -> None:
    assert is_spdy_upgrade("SPDY/3.1") and not is_spdy_upgrade("websocket") and not is_spdy_upgrade(None)
