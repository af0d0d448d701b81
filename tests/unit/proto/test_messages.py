from __future__ import annotations

import pytest

from streamproto.tunnel import FrameBuffer, FrameError, MessageType, decode, encode, encode_header
from streamproto.tunnel.varint import encode_uvarint, read_uvarint


def test_known_encoding() -> None:
    assert encode(300, MessageType.DATA, b"hi") == bytes.fromhex("ac02036869")
    assert encode_header(1, MessageType.REMOVE_CONNECT) == b"\x01\x04"


def test_decode_returns_a_view_not_a_copy() -> None:
    message = encode(7, MessageType.DATA, b"payload")
    decoded = decode(message)
    assert isinstance(decoded.data, memoryview)
    assert decoded.data.obj is message  # the payload is a window onto the received bytes
    assert bytes(decoded.data) == b"payload"


@pytest.mark.parametrize("raw", [b"", b"\x80", b"\x01", b"\x01\x80", b"\xff" * 10 + b"\x01\x03"])
def test_go_rejected_messages_raise_frame_error(raw: bytes) -> None:
    with pytest.raises(FrameError):
        decode(raw)


def test_unknown_type_decodes_as_int() -> None:
    assert decode(bytes.fromhex("05077b7d")).kind == MessageType.PORTFORWARD_CONNECT
    m = decode(bytes.fromhex("05ffffffff0f"))
    assert m.kind == 0xFFFFFFFF and not isinstance(m.kind, MessageType)


def test_non_minimal_varints_are_accepted_as_go_does() -> None:
    assert read_uvarint(b"\x80\x00", 0) == (0, 2)
    assert read_uvarint(bytes.fromhex("81808000"), 0) == (1, 4)


def test_varint_limits() -> None:
    assert encode_uvarint((1 << 64) - 1) == b"\xff" * 9 + b"\x01"
    with pytest.raises(ValueError):
        encode_uvarint(1 << 64)
    with pytest.raises(ValueError):
        encode_uvarint(-1)


@pytest.mark.parametrize("cid", [0, 1, 127, 128, 300, 16384, (1 << 64) - 1])
def test_frame_buffer_seals_in_place(cid: int) -> None:
    fb = FrameBuffer(1024)
    area = fb.writable()
    area[:5] = b"hello"
    sealed = fb.seal(cid, MessageType.DATA, 5)
    assert sealed.obj is fb._buf  # same buffer: the header went into the headroom
    assert bytes(sealed) == encode(cid, MessageType.DATA, b"hello")


def test_frame_buffer_bounds() -> None:
    with pytest.raises(ValueError):
        FrameBuffer(1 << 20)
    fb = FrameBuffer(8)
    with pytest.raises(ValueError):
        fb.seal(1, MessageType.DATA, 9)


def test_message_str_elides_payload() -> None:
    text = str(decode(encode(1, MessageType.DATA, b"A" * 10_000)))
    assert "10000 bytes" in text and len(text) < 200
