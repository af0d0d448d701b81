"""Hypothesis: the codec round-trips, and decoding is total (Message or FrameError)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproto.tunnel import FrameBuffer, FrameError, Mux, Role, decode, encode

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@given(u64, u64, st.binary(max_size=4096))
def test_round_trip(cid: int, kind: int, data: bytes) -> None:
    message = decode(encode(cid, kind, data))
    assert (message.connect_id, int(message.kind), bytes(message.data)) == (cid, kind, data)


@given(u64, st.integers(0, 127), st.binary(max_size=2048))
def test_frame_buffer_matches_encode(cid: int, kind: int, data: bytes) -> None:
    fb = FrameBuffer(4096)
    fb.writable()[: len(data)] = data
    assert bytes(fb.seal(cid, kind, len(data))) == encode(cid, kind, data)


@settings(max_examples=2000)
@given(st.binary(max_size=64))
def test_decode_is_total(raw: bytes) -> None:
    try:
        decode(raw)
    except FrameError:
        pass


@settings(max_examples=1000)
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_mux_never_raises_on_garbage(messages: list[bytes]) -> None:
    """Fuzz: arbitrary bytes into both roles produce events, never an exception."""
    for role in (Role.CLOUD, Role.EDGE):
        mux = Mux(role, next_id=iter(range(1, 1000)).__next__)
        for raw in messages:
            mux.receive_message(raw)
            mux.events_received()
