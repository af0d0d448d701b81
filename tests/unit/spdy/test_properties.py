"""Hypothesis: round trips through both roles, any chunking, and total decoding of junk."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproto.spdy import (
    DataReceived,
    Event,
    HeaderCompressor,
    HeaderDecompressor,
    Role,
    Session,
    StreamEnded,
    StreamOpened,
    decode_header_block,
    encode_header_block,
)
from streamproto.spdy import events as spdy_events

names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-:", min_size=1, max_size=20)
values = st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=40)
header_lists = st.lists(st.tuples(names, values), max_size=8, unique_by=lambda p: p[0])


@given(header_lists)
def test_header_block_round_trip(headers: list[tuple[str, str]]) -> None:
    assert decode_header_block(encode_header_block(headers)) == tuple(headers)


@given(st.lists(header_lists, min_size=1, max_size=6))
def test_shared_zlib_context_round_trip(blocks: list[list[tuple[str, str]]]) -> None:
    out, inp = HeaderCompressor(), HeaderDecompressor()
    for headers in blocks:
        assert inp.decompress(out.compress(headers)) == tuple(headers)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def _collapse(events: list[Event]) -> list[Event]:
    """Adjacent DataReceived of one stream joined: chunking may cut a frame's payload."""
    out: list[Event] = []
    for e in events:
        if isinstance(e, DataReceived) and out and isinstance(out[-1], DataReceived) and out[-1].stream_id == e.stream_id:
            out[-1] = DataReceived(e.stream_id, out[-1].data + e.data)
        else:
            out.append(e)
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(header_lists, st.binary(max_size=3000), st.booleans()), min_size=1, max_size=5),
       st.lists(st.integers(min_value=0), max_size=12))
def test_client_to_server_any_chunking(streams, cuts) -> None:
    client = Session(Role.CLIENT)
    for headers, payload, fin in streams:
        sid = client.open_stream(headers)
        client.send_data(sid, payload, fin=fin)
    wire = client.data_to_send()
    whole, pieces = Session(Role.SERVER), Session(Role.SERVER)
    whole.receive_data(wire)
    for piece in _split(wire, cuts):
        pieces.receive_data(piece)
    a, b = _collapse(whole.events_received()), _collapse(pieces.events_received())
    assert a == b
    opened = [e for e in a if isinstance(e, StreamOpened)]
    assert [e.headers for e in opened] == [tuple(h) for h, _, _ in streams]
    for (_headers, payload, fin), event in zip(streams, opened, strict=True):
        got = b"".join(e.data for e in a if isinstance(e, DataReceived) and e.stream_id == event.stream_id)
        assert got == payload
        assert (StreamEnded(event.stream_id) in a) == fin


KNOWN = tuple(getattr(spdy_events, n) for n in spdy_events.__all__)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([Role.CLIENT, Role.SERVER]))
def test_any_bytes_give_events_never_exceptions(junk: bytes, role: Role) -> None:
    session = Session(role)
    session.receive_data(b"\x80\x03" + junk)
    session.receive_data(junk)
    assert all(isinstance(e, KNOWN) for e in session.events_received())
    session.data_to_send()
