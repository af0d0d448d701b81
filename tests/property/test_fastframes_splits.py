"""FastFrames over any cut of the byte stream into reads: every message comes out once and in
order, through the fast path or websockets' own parser (a real sans-I/O ``Protocol``), whatever
the frame sizes (7-, 16- and 64-bit lengths) and wherever a read ends: inside a header, inside
a payload, exactly on a boundary."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import SERVER, Protocol, State

from streamproto.aio.fastframes import FastFrames, TextFramer


class _Ws:
    """What FastFrames needs of a websockets connection: its protocol, and a ``data_received``
    that parses at once and hands each frame on (as the asyncio connection does)."""

    def __init__(self, out: list[bytes]) -> None:
        self.protocol = Protocol(SERVER, state=State.OPEN, max_size=1 << 20)
        self.out = out

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.out.append(bytes(event.data))


sizes = st.one_of(st.integers(0, 130), st.integers(60_000, 70_000), st.sampled_from([125, 126, 65_535, 65_536]))


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(st.tuples(sizes, st.booleans()), min_size=1, max_size=12),
       cuts=st.lists(st.integers(1, 200_000), max_size=20), refuse=st.sets(st.integers(0, 11), max_size=2))
def test_any_cut_delivers_every_message_once_in_order(messages: list[tuple[int, bool]], cuts: list[int],
                                                        refuse: set[int]) -> None:
    framer = TextFramer(masked=True)  # what an edge (the WebSocket client) sends
    payloads, stream = [], b""
    for i, (size, ping) in enumerate(messages):
        payload = i.to_bytes(2, "big") + os.urandom(size)
        payloads.append(payload)
        stream += framer.frame(payload)
        if ping:  # a control frame: the fast path hands it, and what follows, to websockets
            stream += bytes((0x89, 0x84)) + os.urandom(4) + b"ping"
    got: list[bytes] = []
    ws = _Ws(got)

    def deliver(message: bytes | memoryview) -> bool:
        if bytes(message[:2]) and int.from_bytes(message[:2], "big") in refuse:
            return False  # "would have to wait": this one goes the slow way
        got.append(bytes(message))
        return True

    fast = FastFrames(ws, deliver, lambda: True)
    assert fast.active
    at = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        if cut > at:
            fast.data_received(stream[at:cut])
            at = cut
    assert got == payloads
