"""The hand-written WebSocket shortcuts against websockets itself, the reference:

- ``TextFramer`` (the tunnel's sender): every frame it writes parses with websockets' own
  ``Frame.parse`` to the same TEXT message, masked as the side requires, with keys that differ;
- ``simple_frames`` + ``WsChannel.receive`` (the emulator's exec channel): any mix of frames a
  client may send (data, fragments, pings, a close), cut at any points, yields exactly the
  messages websockets' ``ServerProtocol`` alone yields, and the same end.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from edgestream.backends.ws_channels import WsChannel
from streamproto.aio.fastframes import TextFramer, simple_frames
from testkit.k8s_ws import parse_frames

SIZES = st.one_of(st.integers(0, 130), st.sampled_from([125, 126, 127, 65535, 65536, 70_000]))


def _parse(data: bytes, masked: bool) -> tuple[Frame, bytes]:
    frames, rest = parse_frames(data, mask=masked)
    assert len(frames) == 1
    return frames[0], rest


@settings(max_examples=60, deadline=None)
@given(masked=st.booleans(), sizes=st.lists(SIZES, min_size=1, max_size=4), seed=st.integers(0, 255))
def test_text_framer_writes_what_websockets_reads(masked: bool, sizes: list[int], seed: int) -> None:
    framer = TextFramer(masked)
    for size in sizes:
        payload = bytes((seed + i) % 256 for i in range(size))
        wire = framer.frame(memoryview(payload))
        frame, rest = _parse(wire, masked)
        assert (frame.opcode, frame.fin, frame.data, rest) == (Opcode.TEXT, True, payload, b"")
        assert bool(wire[1] & 0x80) == masked


@settings(max_examples=80, deadline=None)
@given(masked=st.booleans(), head=st.binary(max_size=9), sizes=st.lists(SIZES, min_size=1, max_size=3),
       seed=st.integers(0, 255))
def test_text_framer_frames_a_header_and_a_body_as_one_message(masked: bool, head: bytes, sizes: list[int],
                                                                seed: int) -> None:
    """``frame(header, body)`` (no join first) is the frame of ``header + body``, whatever the
    header's length does to the mask's cycle."""
    framer = TextFramer(masked)
    for size in sizes:
        body = bytes((seed + 3 * i) % 256 for i in range(size))
        wire = framer.frame(head, memoryview(body))
        frame, rest = _parse(wire, masked)
        assert (frame.opcode, frame.fin, frame.data, rest) == (Opcode.TEXT, True, head + body, b"")


def test_text_framer_takes_keys_from_a_pool_that_refills() -> None:
    framer = TextFramer(True)
    keys = [framer.frame(b"x")[2:6] for _ in range(3 * TextFramer.POOL // 4)]
    assert len(set(keys)) > len(keys) - 5  # 32-bit keys from os.urandom: collisions all but impossible


def _open_protocol() -> ServerProtocol:
    protocol = ServerProtocol(max_size=1 << 20)
    protocol.receive_data(
        b"GET /exec HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    request = [e for e in protocol.events_received() if isinstance(e, Request)][0]
    protocol.send_response(protocol.accept(request))
    protocol.data_to_send()
    assert protocol.state is State.OPEN
    return protocol


FRAMES = st.lists(st.one_of(
    st.tuples(st.just("binary"), st.binary(max_size=300)),
    st.tuples(st.just("text"), st.text(max_size=20).map(str.encode)),
    st.tuples(st.just("fragmented"), st.binary(min_size=2, max_size=50)),
    st.tuples(st.just("ping"), st.binary(max_size=10)),
    st.tuples(st.just("big"), st.binary(min_size=126, max_size=126).map(lambda b: b * 600)),
), max_size=12)


def _client_bytes(frames: list[tuple[str, bytes]], close: bool) -> bytes:
    out = []
    for kind, data in frames:
        if kind == "fragmented":
            out += [Frame(Opcode.BINARY, data[:1], fin=False).serialize(mask=True, extensions=[]),
                    Frame(Opcode.CONT, data[1:], fin=True).serialize(mask=True, extensions=[])]
        else:
            opcode = {"binary": Opcode.BINARY, "big": Opcode.BINARY, "text": Opcode.TEXT, "ping": Opcode.PING}[kind]
            out.append(Frame(opcode, data).serialize(mask=True, extensions=[]))
    if close:
        out.append(Frame(Opcode.CLOSE, Close(1000, "bye").serialize()).serialize(mask=True, extensions=[]))
    return b"".join(out)


def _reference(wire: bytes) -> list[bytes]:
    protocol = _open_protocol()
    protocol.receive_data(wire)
    return [f.data for f in protocol.events_received() if f.opcode in (Opcode.BINARY, Opcode.TEXT)]


@settings(max_examples=150, deadline=None)
@given(frames=FRAMES, close=st.booleans(), cuts=st.lists(st.integers(0, 80_000), max_size=6))
def test_channel_receive_yields_what_websockets_yields(frames: list[tuple[str, bytes]], close: bool,
                                                       cuts: list[int]) -> None:
    wire = _client_bytes(frames, close)
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    channel = WsChannel(None, _open_protocol())  # type: ignore[arg-type]  # receive() needs no stream
    got: list[bytes] = []
    over = False
    for a, b in zip(points, points[1:], strict=False):
        messages, over = channel.receive(memoryview(wire)[a:b])
        got += messages
    assert got == _reference(wire)
    assert over == close
    plain = all(kind in ("binary", "text", "big") for kind, _ in frames)
    assert channel._fast == (plain and not close)  # websockets took over at the first other frame only


def test_simple_frames_stops_at_the_first_other_frame() -> None:
    wire = _client_bytes([("binary", b"\x00a"), ("ping", b"p"), ("binary", b"\x00b")], False)
    messages, pos, refused = simple_frames(wire, True, None)
    assert (messages, refused) == ([b"\x00a"], True)
    assert wire[pos] == 0x89  # the ping's first byte: websockets gets everything from there
    messages, pos, refused = simple_frames(wire[:pos - 1], True, None)  # the first frame cut short
    assert (messages, pos, refused) == ([], 0, False)
    assert simple_frames(wire, False, None)[2]  # unmasked where masking is due: refused
    assert simple_frames(wire, True, 1)[2]  # over the size limit: refused
